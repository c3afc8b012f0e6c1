"""The fast table date filters render what Django's date filter would, in the current time zone."""

from __future__ import annotations

import datetime as dt

from django.template import Context, Template
from django.utils import timezone

from portal.templatetags.registrar_dates import iso_datetime, short_date, short_datetime

WHEN = dt.datetime(2026, 11, 28, 19, 41, 7, tzinfo=dt.UTC)


def test_formats_match_djangos_date_filter_in_the_current_time_zone(settings):
    reference = Template('{{ v|date:"c" }}|{{ v|date:"Y-m-d H:i" }}|{{ v|date:"Y-m-d" }}')
    fast = Template("{% load registrar_dates %}{{ v|iso_datetime }}|{{ v|short_datetime }}|{{ v|short_date }}")
    for zone in ("UTC", "Europe/Berlin", "America/Los_Angeles"):
        with timezone.override(zone):
            assert fast.render(Context({"v": WHEN})) == reference.render(Context({"v": WHEN})), zone


def test_non_dates_render_empty():
    assert (iso_datetime(None), short_datetime(""), short_date("x")) == ("", "", "")
