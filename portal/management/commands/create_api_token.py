"""Create an API token for a user; prints only the token (shown once, stored hashed).

``--right api`` (the default) lets it use the management API as its user; ``--right log:read`` lets a monitor
read the audit log's checkpoint and tiles (``/log/…``) and nothing else.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portal.audit import Actor, audit_record
from portal.crypto import hash_token, new_token
from portal.models import ApiToken, TokenRight


class Command(BaseCommand):
    help = "Create an API token (Authorization: Token <token>) for /api/v1 or the audit log. Only the token is printed."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True)
        parser.add_argument("--name", required=True, help="what the token is for")
        parser.add_argument("--days", type=int, default=90, help="validity in days (0 = no expiry)")
        parser.add_argument(
            "--right",
            action="append",
            dest="rights",
            metavar="RIGHT",
            help=f"what the token may do, repeatable: {', '.join(TokenRight.values)} (default: api)",
        )

    def handle(self, *args, **opts):
        User = get_user_model()
        try:
            user = User.objects.get(username=opts["user"], is_active=True)
        except User.DoesNotExist:
            raise CommandError(f"no active user named {opts['user']!r}")
        if opts["days"] < 0:
            raise CommandError("--days must be 0 or more")
        rights = sorted(set(opts["rights"] or [TokenRight.API.value]))
        unknown = [r for r in rights if r not in TokenRight.values]
        if unknown:
            raise CommandError(f"unknown right {unknown[0]!r}: choose from {', '.join(TokenRight.values)}")
        plaintext = new_token("rapi")
        token = ApiToken.objects.create(
            user=user,
            name=opts["name"],
            prefix=plaintext[:12],
            token_hash=hash_token(plaintext),
            expires_at=timezone.now() + timedelta(days=opts["days"]) if opts["days"] else None,
            rights=rights,
        )
        audit_record(
            actor=Actor.system("create_api_token"),
            action="api_token.create",
            object_type="api_token",
            object_id=token.pk,
            after={"user": user.username, "name": token.name, "prefix": token.prefix, "rights": rights},
        )
        self.stdout.write(plaintext)
