"""factory_boy factories shared by the whole suite."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals.models import InitialAccessToken, RegistrationRequest
from inventory.ceilings import default_ttl_ceiling
from inventory.choices import ClientState, IdPKind, RiskTier, ScopeCategory, Sensitivity
from inventory.models import Client, IdPConnection, ScopeDefinition, Team
from portal.crypto import hash_token
from portal.models import User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(*Group.objects.filter(name__in=extracted))


class ScopeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ScopeDefinition
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"scope{n}:read")
    description = "test scope"
    sensitivity = Sensitivity.LOW
    category = ScopeCategory.INTERNAL_TOOL


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class IdPFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IdPConnection
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"idp-{n}")
    kind = IdPKind.DRY_RUN
    config = factory.LazyFunction(lambda: {"issuer": "https://idp.test", "token_endpoint": "https://idp.test/token"})


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    registration_id = factory.Sequence(lambda n: f"reg_test{n:06d}")
    idp = factory.SubFactory(IdPFactory, name="default-test-idp")
    idp_client_id = factory.Sequence(lambda n: f"idp-client-{n}")
    name = factory.Sequence(lambda n: f"agent-{n}")
    owner = factory.SubFactory(UserFactory)
    purpose = "test purpose"
    scopes = factory.LazyFunction(lambda: ["tickets:read"])
    audiences = factory.LazyFunction(list)
    risk_tier = RiskTier.LOW
    state = ClientState.ACTIVE
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=12))
    # As an approval would have left it: the scopes and audiences it holds, the tier's default lifetime.
    ceiling_scopes = factory.LazyAttribute(lambda c: list(c.scopes))
    ceiling_ttl_seconds = factory.LazyAttribute(lambda c: default_ttl_ceiling(c.risk_tier))
    ceiling_audiences = factory.LazyAttribute(lambda c: list(c.audiences))


class TokenFactory(factory.django.DjangoModelFactory):
    """Use ``TokenFactory(plaintext="...")`` to know the bearer value."""

    class Meta:
        model = InitialAccessToken
        exclude = ("plaintext",)

    plaintext = factory.Sequence(lambda n: f"rat_test_token_{n:08d}")
    owner = factory.SubFactory(UserFactory)
    purpose = "test token"
    prefix = factory.LazyAttribute(lambda t: t.plaintext[:12])
    token_hash = factory.LazyAttribute(lambda t: hash_token(t.plaintext))
    allowed_scopes = factory.LazyFunction(lambda: ["tickets:read"])
    max_ttl_seconds = 86400
    max_uses = 10
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=1))


class RequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegistrationRequest

    public_id = factory.Sequence(lambda n: f"reg_req{n:06d}")
    via = "token"
    client_name = factory.Sequence(lambda n: f"requested-agent-{n}")
    purpose = "test request"
    owner = factory.SubFactory(UserFactory)
    requested_scopes = factory.LazyFunction(lambda: ["tickets:read"])
    risk_tier = RiskTier.MEDIUM
    approvals_needed = 1
    policy_version = 1
