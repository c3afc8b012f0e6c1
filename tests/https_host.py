"""A local HTTPS host with a test CA (``trustme``), for code that fetches URLs through ``portal.safefetch``.

Import the fixtures where needed (``from tests.https_host import https_host, loopback_fetches  # noqa: F401``):

- ``https_host``: one server per test session on 127.0.0.1 and a certificate for ``localhost``, ``127.0.0.1`` and
  ``*.example.test``; each test starts with no routes. ``https_host.serve(path, body=…, status=…, headers=…,
  drip=…)`` sets an answer, ``https_host.url(path, host=…)`` builds a URL, ``https_host.hits(path)`` counts
  requests that reached it.
- ``loopback_fetches``: the test-only settings that let the fetcher reach this host (loopback allowed, the test CA
  trusted) and a resolver override, ``loopback_fetches.names[host] = [addresses]``; ``*.example.test`` resolves
  to 127.0.0.1 unless a test says otherwise. Nothing ever connects to an address other than loopback: the
  fetcher refuses special-use addresses before connecting.
"""

from __future__ import annotations

import atexit
import json
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from portal import safefetch


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str | None] = field(default_factory=dict)
    drip: float | None = None  # seconds between bytes: a body that trickles in


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        self.server.hits[path] += 1
        answer = self.server.routes.get(path, Answer(status=404, body=b'{"error": "not found"}'))
        self.send_response(answer.status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(answer.body)), **answer.headers}
        for name, value in headers.items():
            if value is not None:  # None drops a default header (e.g. Content-Length: the body ends at close)
                self.send_header(name, value)
        self.end_headers()
        try:
            if answer.drip is None:
                self.wfile.write(answer.body)
                return
            for byte in answer.body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(answer.drip)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the fetcher hung up, as it should


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        self.routes: dict[str, Answer] = {}
        self.hits: Counter[str] = Counter()


class HttpsHost:
    """The server and its CA; see the module docstring."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1", "*.example.test")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._dir = tempfile.TemporaryDirectory(prefix="https-host-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self._thread = threading.Thread(target=self._server.serve_forever, name="https-host", daemon=True)
        self._thread.start()

    def url(self, path: str = "/", *, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def serve(
        self,
        path: str,
        body: bytes | str | dict | list = b"",
        *,
        status: int = 200,
        headers: dict[str, str | None] | None = None,
        drip: float | None = None,
    ) -> str:
        """Answer GET ``path`` like this from now on; returns the URL (host ``localhost``)."""
        if isinstance(body, dict | list):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self._server.routes[path] = Answer(status=status, body=body, headers=dict(headers or {}), drip=drip)
        return self.url(path)

    def hits(self, path: str) -> int:
        return self._server.hits[path]

    def reset(self) -> None:
        self._server.routes.clear()
        self._server.hits.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._dir.cleanup()


_shared: HttpsHost | None = None


def shared_host() -> HttpsHost:
    """The one server of this test process, started on first use (stopped with the process)."""
    global _shared
    if _shared is None:
        _shared = HttpsHost()
        atexit.register(_shared.close)
    return _shared


@pytest.fixture
def https_host():
    host = shared_host()
    host.reset()
    yield host
    host.reset()


@dataclass
class LoopbackFetches:
    """What ``loopback_fetches`` set up: ``names`` maps a host name to the addresses it resolves to."""

    host: HttpsHost
    names: dict[str, list[str]]

    def resolve(self, name: str, port: int) -> list[str]:
        if name in self.names:
            return list(self.names[name])
        if name == "localhost" or name.endswith(".example.test"):
            return ["127.0.0.1"]
        raise OSError(f"test resolver: {name} is unknown")


@pytest.fixture
def loopback_fetches(settings, monkeypatch, https_host):
    settings.REGISTRAR_FETCH_ALLOW_LOOPBACK = True
    settings.REGISTRAR_FETCH_CA_FILE = https_host.ca_file
    setup = LoopbackFetches(host=https_host, names={})
    monkeypatch.setattr(safefetch, "resolve", setup.resolve)
    return setup
