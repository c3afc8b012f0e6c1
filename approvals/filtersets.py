"""One FilterSet for the review queue: the HTML page and GET /api/v1/requests/ both use it."""

from __future__ import annotations

from datetime import timedelta

import django_filters
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from approvals.choices import RequestState
from approvals.models import RegistrationRequest
from inventory.choices import RiskTier
from inventory.models import IdPConnection, Team

AGE_CHOICES = (
    ("ok", "Within SLA"),
    ("warn", "Approaching SLA"),
    ("late", "Past SLA"),
)


class RequestFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_q", label="Search")
    state = django_filters.ChoiceFilter(choices=RequestState.choices, label="State")
    tier = django_filters.ChoiceFilter(field_name="risk_tier", choices=RiskTier.choices, label="Tier")
    owner = django_filters.CharFilter(field_name="owner__username", lookup_expr="iexact", label="Owner")
    team = django_filters.ModelChoiceFilter(queryset=Team.objects.order_by("name"), label="Team")
    idp = django_filters.ModelChoiceFilter(queryset=IdPConnection.objects.order_by("name"), label="IdP")
    scope = django_filters.CharFilter(method="filter_scope", label="Scope")
    age = django_filters.ChoiceFilter(choices=AGE_CHOICES, method="filter_age", label="Age")

    class Meta:
        model = RegistrationRequest
        fields = ["q", "state", "tier", "owner", "team", "idp", "scope", "age"]

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(client_name__icontains=value)
            | Q(software_id__icontains=value)
            | Q(purpose__icontains=value)
            | Q(public_id=value)
            | Q(owner__username__icontains=value)
        )

    def filter_scope(self, queryset, name, value):
        # Matching the quoted name in the JSON text works on PostgreSQL and SQLite alike
        # (JSON containment lookups are PostgreSQL-only and `make run` uses SQLite).
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(requested_scopes__icontains=f'"{value}"')

    def filter_age(self, queryset, name, value):
        now = timezone.now()
        warn = now - timedelta(hours=settings.REGISTRAR_SLA_WARN_HOURS)
        late = now - timedelta(hours=settings.REGISTRAR_SLA_LATE_HOURS)
        if value == "ok":
            return queryset.filter(created_at__gt=warn)
        if value == "warn":
            return queryset.filter(created_at__lte=warn, created_at__gt=late)
        if value == "late":
            return queryset.filter(created_at__lte=late)
        return queryset
