"""The ONE client FilterSet: the /inventory/ page, its CSV/JSON exports and ``GET /api/v1/clients/`` use it.

Every filter is a query-string parameter, so a filtered, sorted inventory is a shareable URL.
``sort`` is validated here but applied by the keyset paginator (inventory.pagination), which must know
the sort column to build its cursor.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.utils.translation import gettext_lazy as _

from inventory.choices import LIVE_STATES, ClientState, CreatedVia, RiskTier
from inventory.models import Client, IdPConnection, Team
from inventory.pagination import SORT_CHOICES
from inventory.reports.controls import CLIENT_CONTROL_KEYS, CONTROLS_BY_KEY, failing_clients
from inventory.selectors import client_search, is_postgres

CONTROL_CHOICES = [(key, CONTROLS_BY_KEY[key].name) for key in CLIENT_CONTROL_KEYS]


class ClientFilterSet(django_filters.FilterSet):
    # distinct=False on the multiple-choice filters: they filter plain columns, and a DISTINCT over every
    # selected column would force PostgreSQL to sort all matches instead of reading one index range.

    q = django_filters.CharFilter(
        label=_("Search"),
        method="filter_q",
        help_text=_("Name, client id, purpose, owner, team, software id, SPIFFE ID"),
    )
    state = django_filters.MultipleChoiceFilter(label=_("State"), choices=ClientState.choices, distinct=False)
    live = django_filters.BooleanFilter(label=_("Live"), method="filter_live")
    tier = django_filters.MultipleChoiceFilter(
        label=_("Risk tier"), field_name="risk_tier", choices=RiskTier.choices, distinct=False
    )
    idp = django_filters.ModelChoiceFilter(label=_("IdP"), queryset=IdPConnection.objects.all(), to_field_name="name")
    owner = django_filters.CharFilter(label=_("Owner (username)"), field_name="owner__username")
    # A team's slug, typed or picked from the suggestions (inventory.views.teams.team_picker_options): a text input,
    # never a <select>, so rendering the form does not load every team. Validating the slug is one indexed get.
    team = django_filters.ModelChoiceFilter(
        label=_("Team"),
        queryset=Team.objects.all(),
        to_field_name="slug",
        widget=forms.TextInput,
        error_messages={"invalid_choice": _("No team has the slug “%(value)s”.")},
    )
    scope = django_filters.CharFilter(label=_("Holds scope"), method="filter_scope")
    expires_before = django_filters.IsoDateTimeFilter(
        label=_("Expires before"), field_name="expires_at", lookup_expr="lt"
    )
    expires_after = django_filters.IsoDateTimeFilter(
        label=_("Expires after"), field_name="expires_at", lookup_expr="gte"
    )
    orphaned = django_filters.BooleanFilter(
        label=_("Orphaned"), field_name="orphaned_at", lookup_expr="isnull", exclude=True
    )
    stale = django_filters.BooleanFilter(label=_("Stale"), field_name="stale_at", lookup_expr="isnull", exclude=True)
    unmanaged = django_filters.BooleanFilter(label=_("Unmanaged (shadow)"), field_name="managed", exclude=True)
    sync_failed = django_filters.BooleanFilter(label=_("Sync failed"), field_name="sync_failed")
    created_via = django_filters.MultipleChoiceFilter(
        label=_("Created via"), choices=CreatedVia.choices, distinct=False
    )
    depth = django_filters.NumberFilter(label=_("Lineage depth"), field_name="depth")
    min_depth = django_filters.NumberFilter(label=_("Lineage depth at least"), field_name="depth", lookup_expr="gte")
    failing = django_filters.ChoiceFilter(label=_("Failing control"), choices=CONTROL_CHOICES, method="filter_failing")
    sort = django_filters.ChoiceFilter(
        label=_("Sort"), choices=SORT_CHOICES, method="filter_noop", empty_label=_("newest first")
    )

    class Meta:
        model = Client
        fields: list[str] = []

    def filter_q(self, queryset, name, value):
        return client_search(queryset, value)

    def filter_live(self, queryset, name, value):
        if value is None:
            return queryset
        return queryset.filter(state__in=LIVE_STATES) if value else queryset.exclude(state__in=LIVE_STATES)

    def filter_scope(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if is_postgres():
            return queryset.filter(scopes__contains=[value])  # GIN-able JSON containment
        # SQLite stores JSON as text: match the quoted element.
        return queryset.filter(scopes__icontains=f'"{value}"')

    def filter_failing(self, queryset, name, value):
        return failing_clients(value, queryset) if value else queryset

    def filter_noop(self, queryset, name, value):
        return queryset


def active_filters(filterset: ClientFilterSet) -> dict[str, object]:
    """Cleaned, non-empty filter values (for 'showing N clients matching …' and export file names)."""
    if not filterset.is_valid():
        return {}
    return {k: v for k, v in filterset.form.cleaned_data.items() if v not in (None, "", [], ()) and k != "sort"}
