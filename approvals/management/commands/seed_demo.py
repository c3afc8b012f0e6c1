"""Load demo data: scope catalogue, IdP connections, people with roles, teams, clients in every state.

Idempotent: running it again resets the demo users' passwords and adds nothing twice.

Over 400 lines on purpose: the demo is one story (people, clients in every state, a queue, a CIMD client, an
anonymous MCP profile) told in order, each part a method that uses the services every other path uses.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from approvals.services import token_mint
from inventory.catalogue import DEMO_SCOPES
from inventory.choices import ClientState, CreatedVia, IdPKind, RiskTier
from inventory.lifecycle import client_transition
from inventory.models import Client, IdPConnection, ScopeDefinition, Team
from inventory.services import client_create
from portal.audit import Actor

PEOPLE = [
    # username, first, last, roles, superuser
    ("admin", "Ada", "Admin", ["admin"], True),
    ("alice", "Alice", "Owner", ["owner"], False),
    ("dave", "Dave", "Owner", ["owner"], False),
    ("bob", "Bob", "Approver", ["approver"], False),
    ("carol", "Carol", "Approver", ["approver"], False),
    ("ciso", "Cleo", "Ciso", ["security"], False),
]

# name, owner, team, scopes, tier, final state, days to expiry, via, purpose
CLIENTS = [
    (
        "ticket-triage-bot",
        "alice",
        "Support",
        ["tickets:read", "docs:read"],
        RiskTier.LOW,
        ClientState.ACTIVE,
        0.5,
        CreatedVia.TOKEN,
        "Labels incoming support tickets",
    ),
    (
        "release-notes-agent",
        "alice",
        "Platform",
        ["repo:read", "docs:read"],
        RiskTier.MEDIUM,
        ClientState.ACTIVE,
        5,
        CreatedVia.TOKEN,
        "Drafts release notes from merged pull requests",
    ),
    (
        "refund-assistant",
        "dave",
        "Support",
        ["payments:refund", "tickets:read"],
        RiskTier.HIGH,
        ClientState.ACTIVE,
        0.8,
        CreatedVia.SOFTWARE_STATEMENT,
        "Issues refunds under 50 EUR after review",
    ),
    (
        "metrics-summariser",
        "dave",
        "Platform",
        ["metrics:read"],
        RiskTier.LOW,
        ClientState.SUSPENDED,
        0.7,
        CreatedVia.TOKEN,
        "Posts daily metric summaries",
    ),
    (
        "calendar-helper",
        "alice",
        "Support",
        ["calendar:read"],
        RiskTier.LOW,
        ClientState.EXPIRED,
        -1,
        CreatedVia.TOKEN,
        "Finds meeting slots",
    ),
    (
        "old-crm-sync",
        "dave",
        "Data",
        ["crm:read"],
        RiskTier.MEDIUM,
        ClientState.RETIRED,
        2,
        CreatedVia.ADMIN,
        "Synced CRM contacts to the warehouse (replaced)",
    ),
    (
        "leaked-key-agent",
        "alice",
        "Data",
        ["db:prod:read"],
        RiskTier.HIGH,
        ClientState.REVOKED,
        0.5,
        CreatedVia.TOKEN,
        "Nightly data-quality checks (key leaked, revoked)",
    ),
    (
        "ancient-exporter",
        "dave",
        "Data",
        ["crm:read"],
        RiskTier.MEDIUM,
        ClientState.DEPROVISIONED,
        -10,
        CreatedVia.ADMIN,
        "Exported CRM data before the migration",
    ),
    (
        "docs-indexer",
        "alice",
        "Platform",
        ["docs:read"],
        RiskTier.LOW,
        ClientState.PROVISIONING,
        1,
        CreatedVia.TOKEN,
        "Indexes the knowledge base for search",
    ),
]

_PATHS = {
    ClientState.PROVISIONING: [],
    ClientState.ACTIVE: [ClientState.ACTIVE],
    ClientState.SUSPENDED: [ClientState.ACTIVE, ClientState.SUSPENDED],
    ClientState.EXPIRED: [ClientState.ACTIVE, ClientState.EXPIRED],
    ClientState.RETIRED: [ClientState.ACTIVE, ClientState.RETIRED],
    ClientState.REVOKED: [ClientState.ACTIVE, ClientState.REVOKED],
    ClientState.DEPROVISIONED: [ClientState.ACTIVE, ClientState.RETIRED, ClientState.DEPROVISIONED],
}


class Command(BaseCommand):
    help = "Load demo data (idempotent). Passwords: --password, else REGISTRAR_DEMO_PASSWORD, else generated."

    def add_arguments(self, parser):
        parser.add_argument("--password", help="password for every demo user")

    def handle(self, *args, **opts):
        password = opts.get("password") or settings.REGISTRAR_DEMO_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        with transaction.atomic():
            self._scopes()
            users = self._people(password)
            teams = self._teams(users)
            dryrun, default_idp = self._idps()
            created = self._clients(users, teams, dryrun)
            issues = self._lifecycle_policy(users) if created else 0
            token_text = self._token(users, teams, default_idp)
            queued = self._pending_requests(token_text)
            cimd = self._cimd_client(users, default_idp)
            anonymous = self._anonymous(users, teams, default_idp)
        self.stdout.write(self.style.SUCCESS(f"demo data ready: {created} new clients, {queued} requests in the queue"))
        if created:
            self.stdout.write(
                f"lifecycle policy v1 (monitor only): {issues} compliance issues; /inventory/lifecycle-policy/"
            )
        self.stdout.write("users: " + ", ".join(f"{u} ({'/'.join(r)})" for u, _, _, r, _ in PEOPLE))
        if generated:
            self.stdout.write(f"generated password for every demo user: {password}")
        else:
            self.stdout.write("password: as given (--password / REGISTRAR_DEMO_PASSWORD)")
        if cimd:
            self.stdout.write(f"CIMD client {cimd}: pinned document and a pending change (docs/cimd.md)")
        self.stdout.write(
            f"anonymous MCP registration: profile 'MCP clients (demo)' on for {default_idp.name} "
            f"({anonymous} demo registrations coalesced); POST /oauth2/register with no token (docs/mcp.md)"
        )
        if token_text:
            self.stdout.write(f"initial access token for alice (purpose 'Demo: support triage agents'): {token_text}")

    def _scopes(self):
        for name, description, sensitivity, category in DEMO_SCOPES:
            ScopeDefinition.objects.update_or_create(
                name=name, defaults={"description": description, "sensitivity": sensitivity, "category": category}
            )

    def _people(self, password):
        User = get_user_model()
        users = {}
        for username, first, last, roles, superuser in PEOPLE:
            user, _ = User.objects.get_or_create(
                username=username,
                defaults={"first_name": first, "last_name": last, "email": f"{username}@example.com"},
            )
            user.is_superuser = user.is_staff = superuser
            user.is_active = True
            user.set_password(password)
            user.save()
            user.groups.set(Group.objects.filter(name__in=roles))
            # Verified, as a directory-provisioned address is: allauth lets a person turn on two-factor
            # authentication only with a verified e-mail address.
            EmailAddress.objects.update_or_create(
                user=user, email=user.email, defaults={"verified": True, "primary": True}
            )
            users[username] = user
        users["alice"].manager = users["admin"]
        users["alice"].save(update_fields=["manager"])
        return users

    def _teams(self, users):
        teams = {}
        for name, members in (("Support", ["alice", "dave"]), ("Platform", ["alice"]), ("Data", ["dave"])):
            team, _ = Team.objects.get_or_create(
                name=name, defaults={"slug": name.lower(), "notify_email": f"{name.lower()}@example.com"}
            )
            team.members.add(*(users[m] for m in members))
            teams[name] = team
        return teams

    def _idps(self):
        dryrun, _ = IdPConnection.objects.get_or_create(
            name="Demo dry-run IdP",
            defaults={
                "kind": IdPKind.DRY_RUN,
                "config": {"issuer": "https://dry-run.invalid", "token_endpoint": "https://dry-run.invalid/token"},
            },
        )
        demo_url = os.environ.get("REGISTRAR_DEMO_IDP_URL")
        if demo_url:
            demo_url = demo_url.rstrip("/")
            idp, _ = IdPConnection.objects.update_or_create(
                name="Demo OpenID provider",
                defaults={
                    "kind": IdPKind.RFC7591,
                    "config": {
                        "issuer": demo_url,
                        "registration_endpoint": f"{demo_url}/reg",
                        "token_endpoint": f"{demo_url}/token",
                        "list_endpoint": f"{demo_url}/admin/clients",
                        "admin_update": True,  # adopted shadow clients are updated through its admin API
                    },
                    "secrets": {
                        "initial_access_token": os.environ.get("IDP_INITIAL_ACCESS_TOKEN", "dev-initial-access-token"),
                        "admin_token": os.environ.get("IDP_ADMIN_TOKEN", "dev-admin-token"),
                    },
                },
            )
        else:
            idp = dryrun
        IdPConnection.objects.exclude(pk=idp.pk).update(is_default=False)
        IdPConnection.objects.filter(pk=idp.pk).update(is_default=True)
        return dryrun, idp

    def _clients(self, users, teams, idp):
        created = 0
        now = timezone.now()
        seeder = Actor.system("seed_demo")
        for name, owner, team, scopes, tier, state, days, via, purpose in CLIENTS:
            if Client.objects.filter(name=name).exists():
                continue
            client = client_create(
                actor=seeder,
                idp=idp,
                name=name,
                owner=users[owner],
                team=teams[team],
                purpose=purpose,
                scopes=scopes,
                expires_at=now + timedelta(days=days),
                risk_tier=tier,
                created_via=via,
                policy_version=1,
                internal_only=tier == RiskTier.LOW,
                provision=False,
                software_id=f"demo/{name}",
                reason="demo data",
            )
            if state != ClientState.PROVISIONING:
                client.idp_client_id = f"dryrun-{client.registration_id}"
                client.last_synced_at = now
                client.save(update_fields=["idp_client_id", "last_synced_at"])
            for target in _PATHS[state]:
                client_transition(client=client, target=target, actor=seeder, reason="demo data", push_to_idp=False)
            created += 1
        return created

    def _lifecycle_policy(self, users) -> int:
        """Attestation overdue for alice's release-notes-agent (medium tier, 90 days) and dave's refund-assistant
        (high tier, 30 days; also short of a second sponsor), a last use reported for two clients, and the
        default lifecycle policy published as monitor only, its compliance issues flagged."""
        from inventory.lifecycle_policies import active_lifecycle_rules, flag_issues, lifecycle_policy_publish
        from inventory.lifecycle_policies.rules import DEFAULT_RULES
        from inventory.models import LifecyclePolicy

        now = timezone.now()
        for name, days in (("release-notes-agent", 100), ("refund-assistant", 40)):
            Client.objects.filter(name=name).update(
                created_at=now - timedelta(days=days), activated_at=now - timedelta(days=days)
            )
        for name, hours in (("ticket-triage-bot", 2), ("refund-assistant", 30)):
            Client.objects.filter(name=name).update(
                last_used_at=now - timedelta(hours=hours), last_used_source="idp:demo (seed_demo)"
            )
        if not LifecyclePolicy.objects.exists():
            lifecycle_policy_publish(
                actor=Actor.system("seed_demo"),
                rules=DEFAULT_RULES,
                monitor_only=True,
                note="demo: issues shown, nothing enforced; preview before enforcing",
                created_by=users["admin"],
            )
        flags = flag_issues(active_lifecycle_rules(), now=now)
        return sum(flags.flagged.values())

    def _token(self, users, teams, idp):
        _, plaintext = token_mint(
            actor=Actor.system("seed_demo"),
            owner=users["alice"],
            purpose="Demo: support triage agents",
            scopes=["tickets:read", "docs:read", "tickets:write", "repo:write"],
            max_ttl_seconds=7 * 86400,
            max_uses=100,
            internal_only=False,
            idp=idp,
            team=teams["Support"],
        )
        return plaintext

    def _pending_requests(self, token_text: str) -> int:
        """Registrations made through the real intake path, so the review queue has work in it."""
        from joserfc.jwk import ECKey

        from approvals.choices import RequestState
        from approvals.models import RegistrationRequest
        from approvals.oauth2.credentials import requester_authenticate
        from approvals.oauth2.register import registration_submit

        if RegistrationRequest.objects.filter(state=RequestState.PENDING).exists():
            return 0
        jwks = {"keys": [ECKey.generate_key("P-256").as_dict(private=False) | {"kid": "demo"}]}
        bodies = [
            {
                "client_name": "ticket-writer",
                "scope": "tickets:read tickets:write",
                "internal_only": True,
                "purpose": "Drafts replies to support tickets for a human to send",
                "requested_ttl": 3 * 86400,
            },
            {
                "client_name": "release-pusher",
                "scope": "repo:write",
                "internal_only": True,
                "purpose": "Tags releases and pushes changelog commits",
                "requested_ttl": 12 * 3600,
            },
            {
                "client_name": "kb-crawler",
                "scope": "docs:read",
                "internal_only": False,
                "purpose": "Indexes the public help centre",
                "requested_ttl": 86400,
            },
        ]
        queued = 0
        for body in bodies:
            requester = requester_authenticate(bearer=token_text, body=body | {"jwks": jwks})
            submission = registration_submit(requester=requester, body=body | {"jwks": jwks}, source_ip="127.0.0.1")
            queued += submission.reg_request.state == RequestState.PENDING
        return queued

    def _cimd_client(self, users, idp) -> str | None:
        """A Client ID Metadata Document client, pre-registered by alice through the intake and approved by bob,
        so its document is pinned; then a re-fetched document that adds a redirect host, so a change waits for
        review with its diff (/inventory/<id>/, /approvals/). Under ``make run`` the document is really served
        (``portal.management.demo_documents``: HTTPS on loopback with a demo CA) — the widened one, so the worker's
        drift check fetches it and finds the change already waiting. Without that host (``seed_demo`` alone) the
        URL does not answer, and once the pin's next check comes (the cache maximum) the drift task flags it."""
        import hashlib
        import json

        from approvals.cimd.document import validate_cimd_document
        from approvals.cimd.fetch import CimdDocument
        from approvals.cimd.pinning import pin_judge
        from approvals.models import CimdPin
        from approvals.oauth2.credentials import Requester
        from approvals.oauth2.register import registration_submit
        from approvals.services import request_approve
        from portal.management.demo_documents import active_host

        host = active_host()
        path = "/desk/oauth/client.json"
        url = host.base_url + path if host is not None else "https://desk.example.com/oauth/client.json"
        document = {
            "client_id": url,
            "client_name": "Desk Assistant",
            "client_uri": "https://desk.example.com/",
            "redirect_uris": ["https://desk.example.com/oauth/callback"],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        body = json.dumps(document).encode()
        widened = document | {"redirect_uris": [*document["redirect_uris"], "https://desk-partner.example.net/cb"]}
        widened_body = json.dumps(widened).encode()
        if host is not None:
            host.serve(path, widened_body)  # what the vendor serves now: a change that waits for review
        if CimdPin.objects.exists():
            return None
        review = validate_cimd_document(url, document, purpose="Answers service desk questions in the browser")
        md = review.metadata.to_response_dict() | {"scope": "tickets:read", "internal_only": True}
        requester = Requester(
            via=CreatedVia.CIMD,
            owner=users["alice"],
            actor=Actor.user(users["alice"]),
            audit_fields={"submitted_by": "alice", "cimd_url": url},
            request_fields={
                "submitted_by": users["alice"],
                "cimd_url": url,
                "cimd_sha256": hashlib.sha256(body).hexdigest(),
                "cimd_document": document,
            },
            policy_inputs={"cimd_host": review.host, "cimd_trusted_domain": None},
            public_web_clients=True,
            idp=idp,
        )
        submission = registration_submit(requester=requester, body=md, source_ip="127.0.0.1")
        request_approve(
            reg_request=submission.reg_request, approver=users["bob"], reason="demo: the desk vendor's document"
        )
        pin = CimdPin.objects.get(client__registration_id=submission.reg_request.public_id)
        now = timezone.now()
        fetched = CimdDocument(
            url=url,
            body=widened_body,
            sha256=hashlib.sha256(widened_body).hexdigest(),
            document=widened,
            review=validate_cimd_document(url, widened),
            fetched_at=now.timestamp(),
            expires_at=now.timestamp() + settings.REGISTRAR_CIMD_CACHE_MAX_SECONDS,
            max_age=settings.REGISTRAR_CIMD_CACHE_MAX_SECONDS,
            cache_control="max-age=259200",
            address="",
        )
        pin_judge(pin_id=pin.pk, fetched=fetched, keys=None, now=now)
        if host is not None:  # the worker's drift check fetches the served document within a minute or two
            CimdPin.objects.filter(pk=pin.pk).update(next_check_at=now)
        return submission.reg_request.public_id

    def _anonymous(self, users, teams, idp) -> int:
        """One anonymous registration profile (docs/mcp.md) on the demo's default IdP, and MCP clients that
        registered through it, one of them three times (coalesced into one client), and a "legacy" MCP bridge that
        registered three times before coalescing was on (the DCR-debt view's duplicates). Returns the coalesced count."""
        from approvals.models import AnonymousProfile, RegistrationRequest
        from approvals.oauth2.anonymous import anonymous_requester
        from approvals.oauth2.register import registration_submit
        from portal.audit import audit_record

        profile, made = AnonymousProfile.objects.update_or_create(
            idp=idp,
            defaults={
                "name": "MCP clients (demo)",
                "enabled": True,
                "owner": users["alice"],
                "team": teams["Platform"],
                "allowed_scopes": ["tickets:read", "docs:read", "calendar:read", "metrics:read"],
                "redirect_domains": ["mcp.example.com"],
                "application_types": ["native", "web"],
                "max_ttl_seconds": 7 * 86400,
            },
        )
        if made:
            audit_record(
                actor=Actor.system("seed_demo"),
                action="anonymous_profile.create",
                object_type="anonymous_profile",
                object_id=profile.pk,
                after={"name": profile.name, "idp": idp.name, "enabled": True, "team": teams["Platform"].name},
                reason="demo data",
            )
        done = RegistrationRequest.objects.filter(profile=profile)
        if not done.exists():
            requester_profile = AnonymousProfile.objects.select_related("owner", "team", "idp").get(pk=profile.pk)
            mcp = {
                "client_name": "Example MCP Client",
                "redirect_uris": ["http://127.0.0.1:33418/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "application_type": "native",
                "scope": "tickets:read docs:read",
                "software_id": "com.example.mcp-client",
                "software_version": "1.4.0",
            }
            notes = mcp | {"client_name": "Notes MCP", "software_id": "org.example.notes-mcp", "scope": "docs:read"}
            legacy = mcp | {"client_name": "Legacy MCP bridge", "software_id": "com.example.legacy-bridge"}
            requester_profile.coalesce = False  # as it registered before coalescing was switched on
            for _ in range(3):
                registration_submit(
                    requester=anonymous_requester(requester_profile), body=legacy, source_ip="127.0.0.1"
                )
            requester_profile.coalesce = True
            for body in (mcp, mcp, notes, mcp):
                registration_submit(requester=anonymous_requester(requester_profile), body=body, source_ip="127.0.0.1")
        return sum(done.values_list("coalesced_count", flat=True))
