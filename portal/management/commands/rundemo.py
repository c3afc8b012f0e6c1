"""Run the whole demo in one terminal: demo IdP, seed data, Celery worker + beat, web server.

Used by ``make run``. Children are stopped together on Ctrl-C. Nothing here is needed in
production, where gunicorn, workers and beat run as separate services.
"""

from __future__ import annotations

import json
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


class Command(BaseCommand):
    help = "Start the demo: IdP (if Node.js is present), worker + beat, and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--idp-port", type=int, default=int(os.environ.get("IDP_PORT", "9400")))
        parser.add_argument("--no-idp", action="store_true", help="use the dry-run connector only")

    def handle(self, *args, **opts):
        self.children: list[subprocess.Popen] = []
        signal.signal(signal.SIGTERM, lambda *_: self._stop(0))
        try:
            env = dict(os.environ)
            idp_url = None if opts["no_idp"] else self._start_idp(opts["idp_port"], env)
            if idp_url:
                os.environ["REGISTRAR_DEMO_IDP_URL"] = idp_url
                env["REGISTRAR_DEMO_IDP_URL"] = idp_url
            call_command("seed_demo")
            python = sys.executable
            self._spawn(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
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
                    f"Audit log: checkpoints signed by the worker every second, copied to the witness "
                    f"{', '.join(settings.REGISTRAR_LOG_WITNESS)}; key {settings.REGISTRAR_LOG_SIGNING_KEY_FILE or 'from the environment'}\n"
                )
            )
            server = self._spawn([python, "manage.py", "runserver", opts["addr"], "--noreload"], env)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self._stop(None)

    def _spawn(self, argv: list[str], env: dict) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR)
        self.children.append(proc)
        return proc

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
        self.children.append(proc)
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

    def _stop(self, exit_code):
        for proc in reversed(getattr(self, "children", [])):
            if proc.poll() is None:
                proc.terminate()
        for proc in getattr(self, "children", []):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if exit_code is not None:
            sys.exit(exit_code)
