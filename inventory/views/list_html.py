"""The security inventory list's HTML built in Python: its table rows and its filter form's options.

The list is the hottest page of the product (every search is one), and through the template engine its 50 rows
were ~1,200 variable lookups and escapes a page. Built here instead, each value escaped with ``html.escape``
once; the tests pin the markup cell by cell, so this stays what the templates rendered.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from inventory.choices import ClientState, RiskTier
from inventory.models import IdPConnection

# One row of the inventory's table, built in Python: 50 rows through the template engine were ~1,200 variable
# lookups and escapes, and format_html per row (a lazy-aware conditional_escape per value) still ~3 ms a page.
# Every value is escaped with ``html.escape`` (what ``django.utils.html.escape`` does, without its lazy wrapper).
_ROW = (
    '<tr data-row data-href="{url}">\n'
    '  <td><a href="{url}">{name}</a>{badges}</td>\n'
    '  <td class="small"><code>{idp_client_id}</code></td>\n'
    '  <td><span class="state-{state}">{state_label}</span></td>\n'
    '  <td><span class="badge-{risk_tier}">{tier_label}</span></td>\n'
    '  <td>{owner}{inactive}<br><span class="muted small">{team}</span></td>\n'
    '  <td class="small">{idp}</td>\n'
    '  <td class="small">{purpose}</td>\n'
    '  <td class="small">{expires}</td>\n'
    '  <td class="small">{last_used}</td>\n'
    '  <td class="num">{depth}</td>\n'
    '  <td class="nowrap small"><time datetime="{created_iso}">{created}</time></td>\n'
    "</tr>\n"
)
_INACTIVE = ' <span class="badge-high">inactive</span>'
# The values rows_html reads (every sort column among them, for the page's cursors): the page's rows are named
# tuples of these (keyset_paginate's ``fields``), not clients with their owner, team and IdP built as models.
# Usernames and team names are never NULL, so a NULL one means the client has no owner or no team.
LIST_COLUMNS = (
    "registration_id",
    "name",
    "managed",
    "orphaned_at",
    "stale_at",
    "sync_failed",
    "idp_client_id",
    "state",
    "risk_tier",
    "owner__username",
    "owner__is_active",
    "team__name",
    "idp__name",
    "purpose",
    "expires_at",
    "last_used_at",
    "last_used_source",
    "depth",
    "created_at",
)


def _purpose(text: str) -> str:
    """What ``|truncatechars:80`` showed; a short ASCII purpose (the common case) is returned as it is."""
    if len(text) <= 80 and text.isascii():
        return text
    return Truncator(text).chars(80)


def rows_html(rows, *, list_url: str) -> SafeString:
    """The table body for ``rows`` (named tuples of ``LIST_COLUMNS``), every value escaped."""
    # the choices' labels once per page (get_FOO_display hashes the value and translates the label per call)
    states = {value: escape(str(label)) for value, label in ClientState.choices}
    tiers = {value: escape(str(label)) for value, label in RiskTier.choices}
    tz = timezone.get_current_timezone()  # what timezone.localtime() looks up per value
    html = []
    for c in rows:
        owner, team, state, tier = c.owner__username, c.team__name, escape(c.state), escape(c.risk_tier)
        url = escape(f"{list_url}{c.registration_id}/")
        badges = ""
        if not c.managed:
            badges += ' <span class="badge-neutral">shadow</span>'
        if c.orphaned_at is not None:
            badges += ' <span class="badge-high">orphaned</span>'
        if c.stale_at is not None:
            badges += ' <span class="badge-medium">stale</span>'
        if c.sync_failed:
            badges += ' <span class="badge-high">sync failed</span>'
        created = _iso(c.created_at, tz)
        html.append(
            _ROW.format(
                url=url,
                name=escape(c.name),
                badges=badges,
                idp_client_id=escape(c.idp_client_id or "—"),
                state=state,
                state_label=states.get(c.state, state),
                risk_tier=tier,
                tier_label=tiers.get(c.risk_tier, tier),
                owner=escape(owner) if owner is not None else "(no owner)",
                inactive=_INACTIVE if owner is not None and not c.owner__is_active else "",
                team=escape(team) if team is not None else "",
                idp=escape(c.idp__name),
                purpose=escape(_purpose(c.purpose)) or "—",
                expires=_time(_iso(c.expires_at, tz)),
                last_used=_time(_iso(c.last_used_at, tz), title=f"reported by {c.last_used_source or 'unknown'}"),
                depth=c.depth,
                created_iso=created,
                created=_shown(created, time=False) if created else "",
            )
        )
    return mark_safe("".join(html))  # noqa: S308 - every value above is escaped


def _iso(value, tz) -> str:
    """portal.templatetags.registrar_dates' iso_datetime, with the time zone looked up once per page: ISO 8601
    (digits, "-", ":", "T", "." and "+" only, nothing to escape), or "" for no date."""
    if not isinstance(value, datetime):
        return ""
    return (value.astimezone(tz) if value.utcoffset() is not None else value).isoformat()


def _time(iso: str, title: str = "") -> str:
    """A ``<time>`` for an ISO date-time (registrar_dates' short_datetime as its text), "never" for none."""
    if not iso:
        return "never"
    text = _shown(iso, time=True)
    if title:
        return f'<time datetime="{iso}" title="{escape(title)}">{text}</time>'
    return f'<time datetime="{iso}">{text}</time>'


def _shown(iso: str, *, time: bool) -> str:
    """registrar_dates' short_datetime ("%Y-%m-%d %H:%M") or short_date ("%Y-%m-%d"), cut from the ISO text."""
    if iso[:1] == "0":  # a year before 1000: strftime's %Y is not zero-padded, isoformat's is
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M" if time else "%Y-%m-%d")
    return f"{iso[:10]} {iso[11:16]}" if time else iso[:10]


FLAG_FILTERS = (
    ("orphaned", "Orphaned"),
    ("stale", "Stale"),
    ("unmanaged", "Unmanaged"),
    ("sync_failed", "Sync failed"),
)


def form_choices(params) -> dict:
    """Options for the filter form, rendered as plain loops (Django's widget templates cost ~20 ms here).

    No team options: the teams grow with the organisation, so the team field is a text input whose suggestions
    come from ``inventory:team-options`` as the user types (inventory.views.teams.team_picker_options)."""
    return {
        "list_url": reverse("inventory:list"),
        "idp_choices": list(IdPConnection.objects.order_by("name").values_list("name", flat=True)),
        "flag_fields": [{"name": n, "label": label, "value": params.get(n, "")} for n, label in FLAG_FILTERS],
    }


# The filter form's selects whose options come from the FilterSet's fields: "state" -> "state_options", ...
SELECTS = {"state": "multiple", "tier": "multiple", "created_via": "multiple", "failing": "single", "sort": "single"}


def select_options(form) -> dict[str, SafeString]:
    """Each select's ``<option>``s, the submitted ones selected, as one escaped string per select.

    What the template's loops rendered (``{% for value, label in f.fields.state.choices %}`` with
    ``{% if value in f.state.value %}``): 40 options each asking the bound field for its value were ~1 ms a page.
    "failing" leaves out its empty choice (the template writes its own "—" option); "sort" keeps it."""
    options = {}
    for name, kind in SELECTS.items():
        current = form[name].value()
        if kind == "multiple":
            chosen = current if isinstance(current, list | tuple) else ()
        else:
            chosen = (current,)
        html = []
        for value, label in form.fields[name].choices:
            if name == "failing" and not value:
                continue
            selected = " selected" if value in chosen else ""
            html.append(f'<option value="{escape(str(value))}"{selected}>{escape(str(label))}</option>')
        options[f"{name}_options"] = mark_safe("".join(html))  # noqa: S308 - values and labels escaped
    return options


def sort_links(params, current: str) -> dict[str, dict[str, str]]:
    """For each sortable column: the URL that sorts by it (toggling direction) and the aria-sort value."""
    query = params.copy()
    for drop in ("after", "before", "sort"):
        query.pop(drop, None)
    prefix = "?" + query.urlencode()  # the filters, then the column's sort last (as QueryDict appends it)
    if len(prefix) > 1:
        prefix += "&"
    links = {}
    for key in ("name", "state", "tier", "created", "expires", "depth"):
        if current == key:
            sort, aria = f"-{key}", "ascending"
        elif current == f"-{key}":
            sort, aria = key, "descending"
        else:
            sort, aria = key, "none"
        links[key] = {"url": prefix + urlencode({"sort": sort}), "aria": aria}
    return links
