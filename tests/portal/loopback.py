"""A real HTTP server on loopback for tests of code that calls IdPs (reachability probes, call metrics)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.server.hits.append((self.command, self.path))
        status = self.server.statuses.get(self.path, self.server.status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args) -> None:
        pass


@contextmanager
def http_server(status: int = 200, statuses: dict[str, int] | None = None) -> Iterator[ThreadingHTTPServer]:
    """Answers every request with ``statuses[path]`` or ``status`` and records ``(method, path)`` in ``.hits``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.hits = []
    server.status = status
    server.statuses = dict(statuses or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
