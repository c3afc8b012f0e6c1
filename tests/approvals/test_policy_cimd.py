"""The policy's CIMD inputs: trusted domains, redirects on the domain, loopback redirects (approvals.policy)."""

from __future__ import annotations

import pytest

from approvals.policy import OUTCOME_AUTO_APPROVE, OUTCOME_REVIEW, PolicyConfig, domain_covers, evaluate
from tests.approvals.test_policy import make_ctx

CONFIG = PolicyConfig(version=7)


def cimd_ctx(**overrides):
    values = {
        "via": "cimd",
        "redirect_uris": ("https://app.example.com/callback",),
        "token_endpoint_auth_method": "none",
        "cimd_host": "app.example.com",
        "cimd_trusted_domain": "example.com",
    }
    values.update(overrides)
    return make_ctx(**values)


def codes(verdict):
    return [r.code for r in verdict.reasons]


def test_a_public_client_on_a_trusted_domain_with_redirects_on_it_auto_approves_at_low():
    verdict = evaluate(cimd_ctx(), CONFIG)
    assert (verdict.tier, verdict.outcome, verdict.policy_version) == ("low", OUTCOME_AUTO_APPROVE, 7)
    assert codes(verdict) == []


def test_an_untrusted_domain_goes_to_review():
    verdict = evaluate(cimd_ctx(cimd_trusted_domain=None), CONFIG)
    assert verdict.tier == "medium" and verdict.outcome == OUTCOME_REVIEW
    assert codes(verdict) == ["cimd_untrusted_domain", "not_key_based_auth"]
    assert "app.example.com, which is not a trusted CIMD domain" in verdict.reasons[0].message


def test_a_redirect_off_the_trusted_domain_goes_to_review():
    verdict = evaluate(cimd_ctx(redirect_uris=("https://app.example.com/cb", "https://evil.example.net/cb")), CONFIG)
    assert verdict.outcome == OUTCOME_REVIEW
    assert codes(verdict) == ["cimd_redirect_off_domain", "not_key_based_auth"]
    assert "evil.example.net, outside the trusted domain example.com" in verdict.reasons[0].message


def test_a_loopback_redirect_goes_to_review_even_on_a_trusted_domain():
    verdict = evaluate(cimd_ctx(application_type="native", redirect_uris=("http://127.0.0.1:33418/cb",)), CONFIG)
    assert verdict.outcome == OUTCOME_REVIEW
    assert codes(verdict) == ["cimd_loopback_redirect", "not_key_based_auth"]


def test_subdomains_only_when_the_trusted_domain_includes_them():
    assert evaluate(cimd_ctx(cimd_trusted_subdomains=False, cimd_trusted_domain="app.example.com"), CONFIG).tier == (
        "low"
    )
    verdict = evaluate(cimd_ctx(cimd_trusted_subdomains=False, redirect_uris=("https://app.example.com/cb",)), CONFIG)
    assert codes(verdict) == ["cimd_redirect_off_domain", "not_key_based_auth"]


def test_high_scopes_stay_high_on_a_trusted_domain():
    verdict = evaluate(cimd_ctx(requested_scopes=("db:prod",)), CONFIG)
    assert verdict.tier == "high" and verdict.approvals_needed == CONFIG.approvals_high


def test_a_shared_secret_method_is_still_not_key_based():
    verdict = evaluate(
        cimd_ctx(token_endpoint_auth_method="client_secret_jwt"), PolicyConfig(version=1, allow_shared_secret=True)
    )
    assert "not_key_based_auth" in codes(verdict)


def test_private_key_jwt_on_an_untrusted_domain_is_medium_for_the_domain_alone():
    verdict = evaluate(cimd_ctx(token_endpoint_auth_method="private_key_jwt", cimd_trusted_domain=None), CONFIG)
    assert codes(verdict) == ["cimd_untrusted_domain"]


def test_non_cimd_registrations_are_unaffected():
    verdict = evaluate(
        make_ctx(via="pre_registration", redirect_uris=("http://127.0.0.1/cb",), application_type="native"), CONFIG
    )
    assert verdict.outcome == OUTCOME_AUTO_APPROVE and codes(verdict) == []


@pytest.mark.parametrize(
    ("domain", "host", "subdomains", "covered"),
    [
        ("example.com", "example.com", True, True),
        ("example.com", "app.example.com", True, True),
        ("example.com", "app.example.com", False, False),
        ("example.com", "badexample.com", True, False),
        ("example.com", "example.com.evil.net", True, False),
        ("Example.COM.", "APP.example.com", True, True),
        ("", "example.com", True, False),
    ],
)
def test_domain_covers(domain, host, subdomains, covered):
    assert domain_covers(domain, host, include_subdomains=subdomains) is covered
