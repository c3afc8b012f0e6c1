"""Mint an initial access token for an owner; prints only the token on stdout."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals.services import TokenError, token_mint
from portal.audit import Actor


class Command(BaseCommand):
    help = "Mint an RFC 7591 initial access token. Only the token is printed (stdout); keep it secret."

    def add_arguments(self, parser):
        parser.add_argument("--owner", required=True, help="username of the owner (sponsor)")
        parser.add_argument("--purpose", required=True)
        parser.add_argument("--scopes", required=True, help='space-separated, e.g. "tickets:read docs:read"')
        parser.add_argument("--ttl", type=int, required=True, help="max lifetime of clients it registers (seconds)")
        parser.add_argument("--max-uses", type=int, default=1)
        parser.add_argument("--valid-days", type=int, default=7, help="how long the token itself is valid")
        parser.add_argument("--internal-only", action="store_true")
        parser.add_argument(
            "--network",
            action="append",
            default=[],
            help="a CIDR block registrations with the token must come from (repeatable; default: anywhere)",
        )
        parser.add_argument(
            "--approval-window",
            default="",
            help="when people may approve its high-risk requests, e.g. 'Mon-Fri 08:00-18:00 Europe/Berlin' "
            "(default: the policy's or the global window)",
        )
        parser.add_argument(
            "--team", help="slug of the owner's team its clients belong to (default: the owner's own team)"
        )

    def handle(self, *args, **opts):
        from datetime import timedelta

        User = get_user_model()
        try:
            owner = User.objects.get(username=opts["owner"])
        except User.DoesNotExist:
            raise CommandError(f"no such user: {opts['owner']}")
        if opts["valid_days"] < 1:
            raise CommandError("--valid-days must be at least 1")
        from inventory.selectors.owners import default_team_of, teams_of

        if opts["team"]:
            team = teams_of(owner).filter(slug=opts["team"]).first()
            if team is None:
                raise CommandError(f"{owner.get_username()} is not in a team with slug {opts['team']!r}")
        else:
            team = default_team_of(owner)
        try:
            _, plaintext = token_mint(
                actor=Actor.system("mint_access_token"),
                owner=owner,
                purpose=opts["purpose"],
                scopes=opts["scopes"].split(),
                max_ttl_seconds=opts["ttl"],
                max_uses=opts["max_uses"],
                internal_only=opts["internal_only"],
                valid_for=timedelta(days=opts["valid_days"]),
                allowed_networks=opts["network"],
                approval_window=opts["approval_window"],
                team=team,
            )
        except TokenError as exc:
            raise CommandError(str(exc))
        self.stdout.write(plaintext)
