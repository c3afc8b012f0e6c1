"""The dashboard counts live clients by registration path: dynamic registration (deprecated by MCP), CIMD,
pre-registered, discovered (docs/cimd.md)."""

from __future__ import annotations

import pytest

from inventory.choices import ClientState
from inventory.counts import counts_fold
from inventory.selectors.dashboard import dashboard_data
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_reports(settings):
    settings.REGISTRAR_REPORT_CACHE_SECONDS = 0


@pytest.fixture
def estate(idp, owner):
    for via, n in (("token", 3), ("software_statement", 1), ("spawn", 1), ("cimd", 2), ("pre_registration", 1)):
        for _ in range(n):
            ClientFactory(idp=idp, owner=owner, created_via=via)
    ClientFactory(idp=idp, owner=owner, created_via="admin")
    ClientFactory(idp=idp, owner=owner, created_via="discovered", managed=False)
    ClientFactory(idp=idp, owner=owner, created_via="cimd", state=ClientState.RETIRED)  # not live


@pytest.mark.parametrize("folded", [False, True], ids=["deltas-unfolded", "folded"])
def test_live_clients_by_registration_path(estate, folded):
    if folded:
        counts_fold()
    data = dashboard_data()
    assert [(key, n) for key, _label, n in data["by_registration_path"]] == [
        ("dcr", 5),
        ("anonymous", 0),
        ("cimd", 2),
        ("pre_registered", 2),
        ("discovered", 1),
    ]
    assert data["totals"]["live"] == 10


def test_the_page_and_the_summary_csv_show_the_paths(client, security_user, estate):
    client.force_login(security_user)
    page = client.get("/dashboards/").content.decode()
    assert 'data-path="dcr"' in page and "Dynamic registration (RFC 7591, deprecated by MCP)" in page
    csv = client.get("/dashboards/summary.csv").content.decode()
    assert "live_via_dcr,5" in csv and "live_via_cimd,2" in csv and "live_via_pre_registered,2" in csv
