"""Set, replace or clear one credential of an IdP connection, for automation (the admin has a form too).

The value is read from standard input (``-``, the default) or from a file (``--file``), never from the command
line, where any local user could read it in the process list and the shell would keep it in its history::

    vault read -field=secret kv/keycloak | manage.py set_idp_secret keycloak-prod admin_client_secret
    manage.py set_idp_secret keycloak-prod admin_client_secret --file /run/secrets/kc --test
    manage.py set_idp_secret keycloak-prod admin_token --clear
    manage.py set_idp_secret keycloak-prod --list

One trailing newline is dropped (``echo`` and most files end with one). Prints which credential changed,
never a value; the change is audited as ``idp.secrets_set`` (system actor ``manage.py set_idp_secret``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inventory.idp_secrets import IdPSecretError, idp_connection_test, idp_secret_status, idp_secrets_set
from inventory.models import IdPConnection
from portal.audit import Actor

ACTOR = "manage.py set_idp_secret"


class Command(BaseCommand):
    help = "Set or clear an IdP connection's credential; the value comes from stdin or --file, never argv."

    def add_arguments(self, parser):
        parser.add_argument("connection", help="the IdP connection's name (Django admin → IdP connections)")
        parser.add_argument("secret", nargs="?", help="credential name, e.g. admin_client_secret (see --list)")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--file", help="read the value from this file instead of standard input")
        source.add_argument("--clear", action="store_true", help="remove the credential")
        source.add_argument("--list", action="store_true", help="list the credentials and whether each is set")
        parser.add_argument("--test", action="store_true", help="then test the connection with the stored credentials")
        parser.add_argument("--reason", default="", help="recorded in the audit event")

    def handle(self, *args, **opts):
        try:
            idp = IdPConnection.objects.get(name=opts["connection"])
        except IdPConnection.DoesNotExist:
            names = ", ".join(IdPConnection.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no IdP connection named {opts['connection']!r} (there are: {names})")
        actor = Actor.system(ACTOR)
        if opts["list"]:
            for name, is_set in idp_secret_status(idp).items():
                self.stdout.write(f"{name}: {'set' if is_set else 'not set'}")
        elif opts["secret"]:
            name = opts["secret"]
            try:
                if opts["clear"]:
                    changed = idp_secrets_set(idp=idp, actor=actor, clear=[name], reason=opts["reason"])
                else:
                    changed = idp_secrets_set(
                        idp=idp, actor=actor, values={name: self._read(opts["file"])}, reason=opts["reason"]
                    )
            except IdPSecretError as exc:
                raise CommandError(str(exc))
            verb = "cleared" if opts["clear"] else "set"
            self.stdout.write(f"{idp.name}: {name} {verb}" if changed else f"{idp.name}: {name} unchanged")
        elif not opts["test"]:
            raise CommandError("name a credential to set (see --list), or pass --list or --test")
        if opts["test"]:
            result = idp_connection_test(idp=idp, actor=actor)
            for step in result.steps:
                self.stdout.write(f"ok: {step}")
            if not result.ok:
                raise CommandError(f"connection test failed: {result.error}")

    def _read(self, file: str | None) -> str:
        if file and file != "-":
            try:
                value = Path(file).read_text()
            except OSError as exc:
                raise CommandError(f"cannot read {file}: {exc.strerror}")
        else:
            if sys.stdin is None or sys.stdin.isatty():
                raise CommandError("pipe the value on standard input (or use --file); it is never taken from argv")
            value = sys.stdin.read()
        value = value.removesuffix("\n").removesuffix("\r")
        if not value.strip():
            raise CommandError("the value is empty (use --clear to remove a credential)")
        return value
