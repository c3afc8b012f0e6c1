"""Run the whole demo in one terminal: demo IdP, seed data, Celery worker + beat, web server.

Used by ``make run``. Ctrl-C (SIGINT) or SIGTERM stops the children together — politely, then by force after
a bound — and waits for each, so none is left running or defunct; if the server or the worker dies, the rest
are stopped too. Nothing here is needed in production, where gunicorn, workers and beat run as separate
services.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

# Celery's own lines for every task: beat's "Sending due task", the worker's "received" and "succeeded" — three a
# second for the audit log's sequencer alone — and "Discarding revoked task" for each expired one left from a
# previous run. The demo's worker keeps these loggers at WARNING (failures still show); Registrar's own lines
# (event=…) are untouched.
QUIET_CELERY_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace", "celery.worker.request")
STOP_TIMEOUT = 10.0  # seconds a child gets to exit after SIGTERM before it is killed


def demo_worker(argv: list[str]) -> None:
    """The demo's ``celery worker`` (``argv`` as its command line, from ``worker``), minus the per-task lines."""
    from celery import signals

    from portal.celery import app

    def quiet(**_kwargs) -> None:
        for name in QUIET_CELERY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)

    # Connected after portal.celery's receiver (which applies LOGGING), so it runs after it; the embedded beat
    # process is forked from this one and inherits the levels.
    signals.setup_logging.connect(quiet, weak=False)
    app.worker_main(argv)


class _Stop(Exception):
    """A signal asked the demo to stop (raised from the handler, so a blocking wait is interrupted)."""


class Command(BaseCommand):
    help = "Start the demo: IdP (if Node.js is present), worker + beat, and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--idp-port", type=int, default=int(os.environ.get("IDP_PORT", "9400")))
        parser.add_argument("--no-idp", action="store_true", help="use the dry-run connector only")
        parser.add_argument(
            "--docs-port",
            type=int,
            default=int(os.environ.get("DEMO_DOCS_PORT", "9401")),
            help="HTTPS port on 127.0.0.1 for the demo's Client ID Metadata Documents",
        )

    def handle(self, *args, **opts):
        self.children: list[tuple[str, subprocess.Popen]] = []
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        failed = False
        try:
            env = dict(os.environ)
            # The demo IdP advertises Registrar's /oauth2/register as its registration_endpoint (docs/mcp.md).
            env.setdefault("IDP_REGISTRATION_ENDPOINT", f"http://{opts['addr']}/oauth2/register")
            idp_url = None if opts["no_idp"] else self._start_idp(opts["idp_port"], env)
            if idp_url:
                os.environ["REGISTRAR_DEMO_IDP_URL"] = idp_url
                env["REGISTRAR_DEMO_IDP_URL"] = idp_url
            docs_url = self._start_documents(opts["docs_port"], env)
            call_command("seed_demo")
            python = sys.executable
            worker = self._spawn(
                "worker",
                [
                    python,
                    "-c",
                    "import sys; from portal.management.commands.rundemo import demo_worker; demo_worker(sys.argv[1:])",
                    "worker",
                    "--beat",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    "2",
                    "--pool",
                    "threads",
                    "--schedule",
                    str(Path(settings.DATA_DIR) / "celerybeat-schedule"),
                ],
                env,
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nRegistrar is starting on http://{opts['addr']}/  — log in as admin (admin), alice or dave (owners), "
                    "bob, carol (approvers) or ciso (security) with the password printed above.\n"
                    f"Demo IdP: {idp_url or 'dry-run connector (Node.js not found)'}\n"
                    f"Demo metadata documents: {docs_url or 'not served'}\n"
                    f"Audit log: checkpoints signed by the worker every second, copied to the witness "
                    f"{', '.join(settings.REGISTRAR_LOG_WITNESS)}; key {settings.REGISTRAR_LOG_SIGNING_KEY_FILE or 'from the environment'}\n"
                )
            )
            server = self._spawn("web server", [python, "manage.py", "runserver", opts["addr"], "--noreload"], env)
            # Poll rather than block in wait(): a signal then lands in sleep() and raises _Stop cleanly, and a
            # child that dies on its own (a port in use, a crash) stops the demo instead of leaving it half up.
            while not failed:
                time.sleep(0.5)
                for name, proc in (("web server", server), ("worker", worker)):
                    if proc.poll() is not None:
                        self.stderr.write(f"the {name} exited with status {proc.returncode}: stopping the demo")
                        failed = True
        except _Stop:
            pass
        finally:
            self._stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if failed:
            sys.exit(1)

    def _on_signal(self, signum, _frame) -> None:
        raise _Stop(signal.Signals(signum).name)

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR)
        self.children.append((name, proc))
        return proc

    def _start_documents(self, port: int, env: dict) -> str | None:
        """The demo's CIMD document host (HTTPS on loopback, a demo CA); the web server and the worker trust that CA
        and may fetch from loopback — which the settings allow in embedded mode only (docs/cimd.md "The demo")."""
        from portal.management.demo_documents import DocumentHost, set_active_host

        if not settings.EMBEDDED:
            return None
        try:
            host = DocumentHost(Path(settings.DATA_DIR) / "demo-documents", port=port).start()
        except OSError as exc:
            self.stdout.write(self.style.WARNING(f"the demo document host did not start ({exc}); no CIMD fetches"))
            return None
        set_active_host(host)
        env["REGISTRAR_FETCH_CA_FILE"] = str(host.ca_file)
        env["REGISTRAR_FETCH_ALLOW_LOOPBACK"] = "1"
        self._documents = host
        return host.base_url

    def _start_idp(self, port: int, env: dict) -> str | None:
        script = Path(settings.BASE_DIR) / "tests" / "idp" / "server.mjs"
        modules = script.parent / "node_modules"
        if not (shutil.which("node") and script.exists() and modules.exists()):
            self.stdout.write("Node.js or the demo IdP's packages are missing: using the dry-run connector.")
            return None
        proc = subprocess.Popen(
            ["node", str(script)], env=env | {"IDP_PORT": str(port)}, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None  # stdout=PIPE
        self.children.append(("IdP", proc))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                try:
                    return json.loads(line)["issuer"]
                except (ValueError, KeyError):
                    continue
            if proc.poll() is not None:
                break
        self.stdout.write(self.style.WARNING("the demo IdP did not start; using the dry-run connector"))
        return None

    def _stop(self) -> None:
        """Stop every child (newest first) and reap it: SIGTERM, then SIGKILL past ``STOP_TIMEOUT``."""
        for signum in (signal.SIGTERM, signal.SIGINT):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        children = list(reversed(getattr(self, "children", [])))
        for _, proc in children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        ended = {}
        for name, proc in children:
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                ended[name] = f"exit {code}" if code >= 0 else signal.Signals(-code).name
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                ended[name] = f"killed after {STOP_TIMEOUT:.0f} s"
        documents = getattr(self, "_documents", None)
        if documents is not None:
            documents.stop()
        if ended:
            self.stdout.write("demo stopped: " + ", ".join(f"{n} ({ended[n]})" for n, _ in self.children))
