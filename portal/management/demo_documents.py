"""The demo's Client ID Metadata Document host (``make run`` only; docs/cimd.md "The demo").

A small HTTPS server on loopback, with a certificate from a throwaway CA made at start-up under ``DATA_DIR``, so the
demo's CIMD client has a document Registrar really fetches: the web server and the worker are started with
``REGISTRAR_FETCH_CA_FILE`` (that CA) and ``REGISTRAR_FETCH_ALLOW_LOOPBACK``, which the settings refuse outside
embedded mode — production keeps refusing special-use addresses. Documents are set with :meth:`serve`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "localhost"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for localhost/127.0.0.1 signed by it: (CA file, certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Registrar demo document CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


class DocumentHost:
    """Serves ``{path: body}`` over HTTPS on 127.0.0.1 (a daemon thread); 404 for anything else."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.ca_file, cert_file, key_file = _certificates(directory)
        self.documents: dict[str, bytes] = {}
        documents = self.documents

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                body = documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=300")
                payload = body if body is not None else b'{"error": "not_found"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: the demo's console is busy
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-documents", daemon=True)

    @property
    def base_url(self) -> str:
        return f"https://{HOST}:{self.server.server_address[1]}"

    def serve(self, path: str, body: bytes) -> str:
        self.documents[path] = body
        return self.base_url + path

    def start(self) -> DocumentHost:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_ACTIVE: DocumentHost | None = None


def active_host() -> DocumentHost | None:
    """The document host ``rundemo`` started in this process, if any (``seed_demo`` serves its document there)."""
    return _ACTIVE


def set_active_host(host: DocumentHost | None) -> None:
    global _ACTIVE
    _ACTIVE = host
