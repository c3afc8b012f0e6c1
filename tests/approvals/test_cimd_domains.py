"""Trusted CIMD domains: what may be one, which one covers a host, and the audited admin that edits them."""

# ruff: noqa: F811 - fixtures imported from the admin invariant tests are test parameters here

from __future__ import annotations

import pytest

from approvals.cimd.domains import domain_problem, trusted_domain_for
from approvals.models import TrustedCimdDomain
from tests.invariants.test_admin_audited import form_data, mark, only_event, save, staff, url  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("domain", "fragment"),
    [
        ("", "required"),
        ("com", "DNS name"),
        ("*.example.com", "wildcard"),
        ("https://example.com", "no scheme"),
        ("example.com:443", "port"),
        ("-bad.example.com", "DNS name"),
        ("10.0.0.1", "IP address"),
        ("a" * 64 + ".com", "DNS name"),
    ],
)
def test_what_cannot_be_a_trusted_domain(domain, fragment):
    problem = domain_problem(domain)
    assert problem and fragment in problem, problem


@pytest.mark.parametrize("domain", ["example.com", "apps.example.co.uk", "xn--bcher-kva.example"])
def test_dns_names_can_be_trusted_domains(domain):
    assert domain_problem(domain) is None


def test_the_most_specific_enabled_domain_covers_a_host():
    TrustedCimdDomain.objects.create(domain="example.com", include_subdomains=True)
    exact = TrustedCimdDomain.objects.create(domain="app.example.com", include_subdomains=False)
    TrustedCimdDomain.objects.create(domain="other.example", include_subdomains=True, enabled=False)
    assert trusted_domain_for("APP.example.com.") == exact
    assert trusted_domain_for("x.app.example.com").domain == "example.com"
    assert trusted_domain_for("example.com").domain == "example.com"
    assert trusted_domain_for("badexample.com") is None
    assert trusted_domain_for("a.other.example") is None
    assert trusted_domain_for("") is None


def test_without_subdomains_only_the_exact_host_is_covered():
    TrustedCimdDomain.objects.create(domain="example.com", include_subdomains=False)
    assert trusted_domain_for("example.com").domain == "example.com"
    assert trusted_domain_for("app.example.com") is None


def test_admins_add_change_and_delete_trusted_domains_audited(client, staff, mark):
    save(client, url(TrustedCimdDomain, "add"), {"domain": " Apps.Example.COM. ", "note": "our SaaS", "enabled": "on"})
    row = TrustedCimdDomain.objects.get()
    assert row.domain == "apps.example.com" and not row.include_subdomains
    assert only_event(mark(), "trusted_cimd_domain.admin_create").after["domain"] == "apps.example.com"
    data = form_data(client, url(TrustedCimdDomain, "change", row.pk)) | {"include_subdomains": "on"}
    save(client, url(TrustedCimdDomain, "change", row.pk), data)
    changed = mark()[-1]
    assert (changed.action, changed.before, changed.after) == (
        "trusted_cimd_domain.admin_change",
        {"include_subdomains": False},
        {"include_subdomains": True},
    )
    assert client.post(url(TrustedCimdDomain, "delete", row.pk), {"post": "yes"}).status_code == 302
    assert mark()[-1].action == "trusted_cimd_domain.admin_delete"


def test_the_admin_refuses_a_bad_domain(client, staff, mark):
    response = client.post(url(TrustedCimdDomain, "add"), {"domain": "*.example.com", "enabled": "on", "_save": "1"})
    assert response.status_code == 200 and "wildcard" in response.content.decode()
    assert not TrustedCimdDomain.objects.exists() and mark() == []
