"""Create a management-API token for a user; prints only the token (shown once, stored hashed)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portal.audit import Actor, audit_record
from portal.crypto import hash_token, new_token
from portal.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for /api/v1 (Authorization: Token <token>). Only the token is printed."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True)
        parser.add_argument("--name", required=True, help="what the token is for")
        parser.add_argument("--days", type=int, default=90, help="validity in days (0 = no expiry)")

    def handle(self, *args, **opts):
        User = get_user_model()
        try:
            user = User.objects.get(username=opts["user"], is_active=True)
        except User.DoesNotExist:
            raise CommandError(f"no active user named {opts['user']!r}")
        if opts["days"] < 0:
            raise CommandError("--days must be 0 or more")
        plaintext = new_token("rapi")
        token = ApiToken.objects.create(
            user=user,
            name=opts["name"],
            prefix=plaintext[:12],
            token_hash=hash_token(plaintext),
            expires_at=timezone.now() + timedelta(days=opts["days"]) if opts["days"] else None,
        )
        audit_record(actor=Actor.system("create_api_token"), action="api_token.create", object_type="api_token",
                     object_id=token.pk, after={"user": user.username, "name": token.name, "prefix": token.prefix})
        self.stdout.write(plaintext)
