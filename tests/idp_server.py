"""Start and stop the test OpenID provider (``tests/idp/server.mjs``) from Python.

Used as a pytest session fixture by the connector and integration tests, and by the demo (``make run``),
so nothing here imports pytest. Example::

    with IdPProcess() as idp:
        print(idp.issuer, idp.registration_endpoint)

The provider listens on 127.0.0.1 on a free port and prints one JSON line ``{"issuer": ..., "port": ...}``
when it is ready; its stderr (library warnings, shutdown notes) goes to a temporary log file whose path
is ``.log_path`` (kept after stop, for post-mortems).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

IDP_DIR = Path(__file__).resolve().parent / "idp"
DEFAULT_INITIAL_ACCESS_TOKEN = "dev-initial-access-token"
DEFAULT_ADMIN_TOKEN = "dev-admin-token"


class IdPStartError(RuntimeError):
    """The provider could not be installed or did not announce itself in time."""


class IdPProcess:
    """One ``node tests/idp/server.mjs`` child process.

    ``scopes`` (space-separated or a list) pins the provider to a fixed scope list; by default it accepts
    any scope a client registers. ``port=0`` picks a free port. ``listing=False`` starts it as a plain RFC
    7591/7592 IdP with no admin API (``IDP_LISTING=off``): :meth:`connector_config` then names no listing, and
    only the test console (:attr:`console_clients_endpoint`) shows what it holds. ``sso_clients`` and ``users``
    make it the company's IdP for people's single sign-on too (see ``IDP_SSO_CLIENTS`` / ``IDP_USERS`` in
    server.mjs); :meth:`user_update` changes a person there (disable them, change their groups).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        initial_access_token: str = DEFAULT_INITIAL_ACCESS_TOKEN,
        admin_token: str = DEFAULT_ADMIN_TOKEN,
        scopes: str | list[str] | None = None,
        node: str | None = None,
        npm: str | None = None,
        startup_timeout: float = 60.0,
        idp_dir: Path = IDP_DIR,
        listing: bool = True,
        sso_clients: list[dict] | None = None,
        users: list[dict] | None = None,
        usage: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.listing = listing
        self.sso_clients = sso_clients or []
        self.users = users or []
        # Report token issuance to Registrar: {"url", "token", "idp", "flush_ms"} (IDP_USAGE_* in server.mjs).
        self.usage = usage
        # Other IDP_* settings of server.mjs (IDP_REGISTRATION_ENDPOINT, IDP_AUTO_CONSENT).
        self.extra_env = extra_env or {}
        self.initial_access_token = initial_access_token
        self.admin_token = admin_token
        self.scopes = " ".join(scopes) if isinstance(scopes, list) else scopes
        self.node = node or shutil.which("node") or "node"
        self.npm = npm or shutil.which("npm") or "npm"
        self.startup_timeout = startup_timeout
        self.idp_dir = idp_dir
        self.issuer: str | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    # -- endpoints (fixed by oidc-provider's default routes and our server.mjs) -----------------------

    def _url(self, path: str) -> str:
        if self.issuer is None:
            raise RuntimeError("IdPProcess is not running; call start() first")
        return f"{self.issuer}{path}"

    @property
    def registration_endpoint(self) -> str:
        return self._url("/reg")

    @property
    def token_endpoint(self) -> str:
        return self._url("/token")

    @property
    def introspection_endpoint(self) -> str:
        return self._url("/token/introspection")

    @property
    def revocation_endpoint(self) -> str:
        return self._url("/token/revocation")

    @property
    def jwks_uri(self) -> str:
        return self._url("/jwks")

    @property
    def admin_clients_endpoint(self) -> str:
        return self._url("/admin/clients")

    @property
    def console_clients_endpoint(self) -> str:
        """What the provider truly holds, in either mode (GET; DELETE ``…/<client_id>``; the admin token):
        the operator's console, for tests to check and to act as the person a sync failure asks for."""
        return self._url("/_test/clients")

    def user_update(self, sub: str, **changes) -> dict:
        """PATCH a person at the IdP (``active=False`` disables them, ``groups=[...]`` moves them)."""
        import httpx

        answer = httpx.patch(
            self._url(f"/_test/users/{sub}"), json=changes, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        answer.raise_for_status()
        return answer.json()

    def connector_config(self) -> tuple[dict, dict]:
        """``(config, secrets)`` for the ``rfc7591`` connector pointed at this provider."""
        config = {
            "issuer": self.issuer,
            "registration_endpoint": self.registration_endpoint,
            "token_endpoint": self.token_endpoint,
        }
        secrets = {"initial_access_token": self.initial_access_token}
        if self.listing:
            config["list_endpoint"] = self.admin_clients_endpoint
            secrets["admin_token"] = self.admin_token
        return config, secrets

    # -- lifecycle -------------------------------------------------------------------------------------

    def ensure_installed(self) -> None:
        """Run ``npm ci`` once if ``node_modules`` is missing (the lock file is committed)."""
        if (self.idp_dir / "node_modules" / "oidc-provider").is_dir():
            return
        logger.info("idp_npm_ci dir=%s", self.idp_dir)
        result = subprocess.run(
            [self.npm, "ci", "--no-audit", "--no-fund"],
            cwd=self.idp_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise IdPStartError(f"npm ci failed in {self.idp_dir}:\n{result.stdout}\n{result.stderr}")

    def start(self) -> IdPProcess:
        if self._process is not None:
            return self
        self.ensure_installed()
        env = {
            **os.environ,
            "IDP_PORT": str(self.port),
            "IDP_INITIAL_ACCESS_TOKEN": self.initial_access_token,
            "IDP_ADMIN_TOKEN": self.admin_token,
            "IDP_LISTING": "on" if self.listing else "off",
            "IDP_SSO_CLIENTS": json.dumps(self.sso_clients),
            "IDP_USERS": json.dumps(self.users),
        }
        env.pop("IDP_SCOPES", None)
        for key in ("url", "token", "idp", "flush_ms"):
            env.pop(f"IDP_USAGE_{key.upper()}", None)
            if self.usage and self.usage.get(key):
                env[f"IDP_USAGE_{key.upper()}"] = str(self.usage[key])
        if self.scopes:
            env["IDP_SCOPES"] = self.scopes
        for key in ("IDP_REGISTRATION_ENDPOINT", "IDP_AUTO_CONSENT"):
            env.pop(key, None)
        env.update(self.extra_env)
        fd, log_name = tempfile.mkstemp(prefix="registrar-idp-", suffix=".log")
        self.log_path = Path(log_name)
        self._log_file = os.fdopen(fd, "wb")
        self._process = subprocess.Popen(
            [self.node, "server.mjs"],
            cwd=self.idp_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
        )
        try:
            announcement = self._read_announcement()
        except BaseException:
            self.stop()
            raise
        self.issuer = announcement["issuer"]
        self.port = int(announcement["port"])
        logger.info("idp_started issuer=%s pid=%s log=%s", self.issuer, self._process.pid, self.log_path)
        return self

    def _read_announcement(self) -> dict:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IdPStartError(f"IdP did not start within {self.startup_timeout}s; {self._log_tail()}")
                if not selector.select(timeout=min(remaining, 0.5)):
                    if self._process.poll() is not None:
                        raise IdPStartError(f"IdP exited with {self._process.returncode}; {self._log_tail()}")
                    continue
                chunk = os.read(self._process.stdout.fileno(), 4096)
                if not chunk:
                    self._process.wait(timeout=5)
                    raise IdPStartError(f"IdP exited with {self._process.returncode}; {self._log_tail()}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0]
        try:
            return json.loads(line)
        except ValueError as exc:
            raise IdPStartError(f"unexpected first line from IdP: {line!r}") from exc

    def _log_tail(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        if self.log_path is None or not self.log_path.exists():
            return "no log"
        return "stderr: " + self.log_path.read_text(errors="replace")[-2000:]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (the server closes gracefully), then SIGKILL if it does not exit in ``timeout``."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout)
            if process.stdout is not None:
                process.stdout.close()
            logger.info("idp_stopped pid=%s returncode=%s", process.pid, process.returncode)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.issuer = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/idp_server.py
    import signal

    logging.basicConfig(level=logging.INFO)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    with IdPProcess(port=int(os.environ.get("IDP_PORT", "0"))) as idp:
        print(json.dumps({"issuer": idp.issuer, "log": str(idp.log_path)}), flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
