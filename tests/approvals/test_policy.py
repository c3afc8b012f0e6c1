"""Unit and property tests for the pure policy engine (no Django, no database)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from approvals.policy import (
    DEFAULT_THRESHOLDS,
    REASON_CODES,
    TIER_RANK,
    PolicyConfig,
    Reason,
    RegistrationContext,
    ScopeInfo,
    Verdict,
    evaluate,
    redirect_uri_problems,
)

DAY = 86400
CATALOGUE = {
    "tickets:read": ScopeInfo("tickets:read", "low", "internal_tool"),
    "wiki:read": ScopeInfo("wiki:read", "low", "internal_tool"),
    "chat:post": ScopeInfo("chat:post", "low", "saas_api"),
    "metrics:read": ScopeInfo("metrics:read", "low", "internal_tool"),
    "crm:write": ScopeInfo("crm:write", "medium", "saas_api"),
    "repo:read": ScopeInfo("repo:read", "low", "source_control"),
    "db:prod": ScopeInfo("db:prod", "high", "production_data"),
    "payroll:read": ScopeInfo("payroll:read", "high", "other"),
}
CONFIG = PolicyConfig(version=7)


def make_ctx(**overrides) -> RegistrationContext:
    """A low-risk registration via an initial access token; override what a test is about."""
    values = {
        "requested_scopes": ("tickets:read",),
        "catalogue": CATALOGUE,
        "requested_ttl": 3600,
        "redirect_uris": (),
        "application_type": "web",
        "token_endpoint_auth_method": "private_key_jwt",
        "internal_only": True,
        "owner_active": True,
        "owner_live_clients": 3,
        "via": "token",
        "ceiling_scopes": None,
        "ceiling_ttl": None,
        "ceiling_internal_only": False,
        "parent_scopes": None,
        "parent_remaining_ttl": None,
        "parent_depth": None,
        "parent_tier": None,
    }
    values.update(overrides)
    return RegistrationContext(**values)


def spawn_ctx(**overrides) -> RegistrationContext:
    values = {
        "via": "spawn",
        "parent_scopes": frozenset({"tickets:read", "wiki:read"}),
        "parent_remaining_ttl": 2 * 3600,
        "parent_depth": 1,
        "parent_tier": "low",
    }
    values.update(overrides)
    return make_ctx(**values)


def codes(verdict: Verdict) -> list[str]:
    return [r.code for r in verdict.reasons]


# --- config -------------------------------------------------------------------------------------------


def test_default_thresholds_match_design():
    assert DEFAULT_THRESHOLDS == {
        "low_ttl_seconds": DAY,
        "medium_ttl_seconds": 7 * DAY,
        "high_ttl_seconds": DAY,
        "low_max_scopes": 3,
        "max_spawn_depth": 3,
        "max_children_per_parent": 10,
        "max_live_clients_per_owner": 50,
        "allow_shared_secret": False,
        "approvals_medium": 1,
        "approvals_high": 2,
        "default_ttl_seconds": 3600,
        "high_categories": ["source_control", "production_data", "identity_admin"],
        "key_based_methods": ["private_key_jwt", "self_signed_tls_client_auth", "tls_client_auth"],
        "max_statement_lifetime_seconds": 3600,
        "low_allowed_networks": [],
        "medium_allowed_networks": [],
        "high_allowed_networks": [],
        "high_approval_window": "",
    }


def test_config_round_trips_through_dict():
    config = PolicyConfig(version=4, low_max_scopes=5, high_categories=("production_data",))
    assert PolicyConfig.from_dict(config.to_dict(), version=4) == config


def test_config_from_dict_ignores_unknown_keys_and_uses_given_version():
    config = PolicyConfig.from_dict({"low_max_scopes": 2, "colour": "blue", "version": 99}, version=3)
    assert config.version == 3
    assert config.low_max_scopes == 2
    assert config.medium_ttl_seconds == 7 * DAY


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"low_ttl_seconds": "86400"}, "low_ttl_seconds must be an integer, got str"),
        ({"low_ttl_seconds": 0}, "low_ttl_seconds must be between 1 and"),
        ({"max_spawn_depth": -1}, "max_spawn_depth must be between 0 and 100, got -1"),
        ({"max_children_per_parent": -1}, "max_children_per_parent must be between 0 and 100000, got -1"),
        ({"max_children_per_parent": "10"}, "max_children_per_parent must be an integer, got str"),
        ({"approvals_medium": True}, "approvals_medium must be an integer, got bool"),
        ({"approvals_medium": 2, "approvals_high": 1}, "approvals_high must be at least approvals_medium"),
        ({"allow_shared_secret": "no"}, "allow_shared_secret must be true or false"),
        ({"high_categories": "source_control"}, "high_categories must be a list of non-empty strings"),
        ({"key_based_methods": ["private_key_jwt", "client_secret_jwt"]}, "must not include client_secret_jwt"),
    ],
)
def test_config_from_dict_rejects_bad_values(data, message):
    with pytest.raises(ValueError, match="invalid policy config") as excinfo:
        PolicyConfig.from_dict(data, version=1)
    assert message in str(excinfo.value)


def test_config_lists_every_problem_at_once():
    with pytest.raises(ValueError) as excinfo:
        PolicyConfig.from_dict({"low_ttl_seconds": -5, "low_max_scopes": "3"}, version=0)
    text = str(excinfo.value)
    assert "version" in text
    assert "low_ttl_seconds" in text
    assert "low_max_scopes" in text


def test_config_from_dict_needs_a_mapping():
    with pytest.raises(ValueError, match="must be a mapping"):
        PolicyConfig.from_dict([("low_max_scopes", 2)], version=1)


def test_context_rejects_unknown_via_and_application_type():
    with pytest.raises(ValueError, match="via"):
        make_ctx(via="email")
    with pytest.raises(ValueError, match="application_type"):
        make_ctx(application_type="ios")
    with pytest.raises(ValueError, match="parent_tier"):
        make_ctx(parent_tier="critical")


def test_scope_info_rejects_unknown_sensitivity():
    with pytest.raises(ValueError, match="sensitivity"):
        ScopeInfo("x", "extreme", "other")


# --- tiers and outcomes -------------------------------------------------------------------------------


def test_low_tier_is_auto_approved():
    verdict = evaluate(make_ctx(), CONFIG)
    assert verdict == Verdict(
        policy_version=7,
        tier="low",
        outcome="auto_approve",
        reasons=(),
        granted_scopes=("tickets:read",),
        ttl_seconds=3600,
        approvals_needed=0,
        error=None,
    )


def test_medium_scope_needs_one_approver():
    verdict = evaluate(make_ctx(requested_scopes=("crm:write",)), CONFIG)
    assert (verdict.tier, verdict.outcome, verdict.approvals_needed) == ("medium", "review", 1)
    assert codes(verdict) == ["medium_sensitivity_scope"]
    assert "'crm:write'" in verdict.reasons[0].message


def test_not_internal_only_is_medium():
    verdict = evaluate(make_ctx(internal_only=False), CONFIG)
    assert verdict.tier == "medium"
    assert codes(verdict) == ["not_internal_only"]


@pytest.mark.parametrize("method", ["none", "client_secret_basic"])
def test_not_key_based_auth_is_medium(method):
    config = PolicyConfig(version=1, allow_shared_secret=True)
    verdict = evaluate(make_ctx(token_endpoint_auth_method=method), config)
    assert verdict.tier == "medium"
    assert codes(verdict) == ["not_key_based_auth"]
    assert repr(method) in verdict.reasons[0].message


@pytest.mark.parametrize("method", ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"])
def test_key_based_auth_methods_stay_low(method):
    assert evaluate(make_ctx(token_endpoint_auth_method=method), CONFIG).tier == "low"


def test_more_than_low_max_scopes_is_medium():
    four = ("tickets:read", "wiki:read", "chat:post", "metrics:read")
    assert evaluate(make_ctx(requested_scopes=four[:3]), CONFIG).tier == "low"
    verdict = evaluate(make_ctx(requested_scopes=four), CONFIG)
    assert verdict.tier == "medium"
    assert codes(verdict) == ["too_many_scopes"]
    assert "4 scopes" in verdict.reasons[0].message


def test_duplicate_scopes_count_once():
    verdict = evaluate(make_ctx(requested_scopes=("tickets:read",) * 5), CONFIG)
    assert verdict.tier == "low"
    assert verdict.granted_scopes == ("tickets:read",)


def test_high_sensitivity_scope_needs_two_approvers():
    verdict = evaluate(make_ctx(requested_scopes=("payroll:read",)), CONFIG)
    assert (verdict.tier, verdict.outcome, verdict.approvals_needed) == ("high", "review", 2)
    assert codes(verdict) == ["high_sensitivity_scope"]


def test_high_risk_category_is_high_even_for_low_sensitivity():
    verdict = evaluate(make_ctx(requested_scopes=("repo:read",)), CONFIG)
    assert verdict.tier == "high"
    assert codes(verdict) == ["high_risk_category"]
    assert "'source_control'" in verdict.reasons[0].message


def test_high_categories_are_configurable():
    config = PolicyConfig(version=2, high_categories=("saas_api",))
    assert evaluate(make_ctx(requested_scopes=("repo:read",)), config).tier == "low"
    assert evaluate(make_ctx(requested_scopes=("chat:post",)), config).tier == "high"


def test_approvals_needed_come_from_config():
    config = PolicyConfig(version=2, approvals_medium=2, approvals_high=3)
    assert evaluate(make_ctx(internal_only=False), config).approvals_needed == 2
    assert evaluate(make_ctx(requested_scopes=("db:prod",)), config).approvals_needed == 3


def test_every_risk_reason_is_listed_not_just_the_deciding_one():
    verdict = evaluate(
        make_ctx(
            requested_scopes=("db:prod", "crm:write", "tickets:read", "wiki:read"),
            internal_only=False,
            token_endpoint_auth_method="none",
            application_type="native",
        ),
        CONFIG,
    )
    assert verdict.tier == "high"
    assert codes(verdict) == [
        "high_sensitivity_scope",
        "medium_sensitivity_scope",
        "not_internal_only",
        "not_key_based_auth",
        "too_many_scopes",
    ]


# --- refusals -----------------------------------------------------------------------------------------


def assert_refused(verdict: Verdict, code: str, error: str = "invalid_client_metadata") -> Reason:
    assert verdict.tier == "refused"
    assert verdict.outcome == "refuse"
    assert verdict.error == error
    assert verdict.granted_scopes == ()
    assert verdict.ttl_seconds == 0
    assert verdict.approvals_needed == 0
    assert codes(verdict) == [code]
    return verdict.reasons[0]


def test_unknown_scope_is_refused():
    reason = assert_refused(evaluate(make_ctx(requested_scopes=("tickets:read", "root")), CONFIG), "unknown_scope")
    assert "'root'" in reason.message


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("http://app.example.com/cb", "insecure_redirect_uri"),
        ("ftp://app.example.com/cb", "insecure_redirect_uri"),
        ("com.example.app:/cb", "insecure_redirect_uri"),
        ("https://*.example.com/cb", "wildcard_redirect_uri"),
        ("https://app.example.com/cb/*", "wildcard_redirect_uri"),
        ("https://app.example.com/cb#frag", "redirect_uri_fragment"),
        ("https://app.example.com/cb#", "redirect_uri_fragment"),
        ("https:///cb", "malformed_redirect_uri"),
        ("https://app.example.com:99999/cb", "malformed_redirect_uri"),
        ("https://[::1/cb", "malformed_redirect_uri"),
        ("https://app.example.com/c b", "malformed_redirect_uri"),
        ("", "malformed_redirect_uri"),
    ],
)
def test_bad_redirect_uri_is_refused_as_invalid_redirect_uri(uri, code):
    verdict = evaluate(make_ctx(redirect_uris=("https://app.example.com/ok", uri)), CONFIG)
    assert_refused(verdict, code, error="invalid_redirect_uri")


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:8123/cb", "http://[::1]:8123/cb", "http://localhost/cb", "HTTP://LOCALHOST:9/cb"]
)
def test_http_loopback_is_allowed_for_native_apps_only(uri):
    assert evaluate(make_ctx(redirect_uris=(uri,), application_type="native"), CONFIG).outcome == "auto_approve"
    assert_refused(evaluate(make_ctx(redirect_uris=(uri,)), CONFIG), "insecure_redirect_uri", "invalid_redirect_uri")


@pytest.mark.parametrize("uri", ["http://localhost.evil.example/cb", "http://127.0.0.2/cb", "http://10.0.0.1/cb"])
def test_loopback_lookalikes_are_insecure_even_for_native(uri):
    verdict = evaluate(make_ctx(redirect_uris=(uri,), application_type="native"), CONFIG)
    assert_refused(verdict, "insecure_redirect_uri", "invalid_redirect_uri")


def test_redirect_uri_problems_can_list_several_for_one_uri():
    problems = redirect_uri_problems("http://*.example.com/cb#x", "web")
    assert [p.code for p in problems] == ["wildcard_redirect_uri", "redirect_uri_fragment", "insecure_redirect_uri"]


def test_scope_outside_token_ceiling_is_refused():
    verdict = evaluate(make_ctx(requested_scopes=("wiki:read",), ceiling_scopes=frozenset({"tickets:read"})), CONFIG)
    reason = assert_refused(verdict, "scope_above_ceiling")
    assert "'wiki:read'" in reason.message
    assert "initial access token" in reason.message


def test_scope_outside_issuer_ceiling_is_unapproved_software_statement():
    ctx = make_ctx(via="software_statement", requested_scopes=("wiki:read",), ceiling_scopes=frozenset())
    reason = assert_refused(evaluate(ctx, CONFIG), "scope_above_ceiling", error="unapproved_software_statement")
    assert "trusted issuer" in reason.message


def test_internal_only_credential_refuses_external_client():
    ctx = make_ctx(internal_only=False, ceiling_internal_only=True)
    assert_refused(evaluate(ctx, CONFIG), "internal_only_required")
    ss = make_ctx(internal_only=False, ceiling_internal_only=True, via="software_statement")
    assert_refused(evaluate(ss, CONFIG), "internal_only_required", error="unapproved_software_statement")
    assert evaluate(make_ctx(ceiling_internal_only=True), CONFIG).outcome == "auto_approve"


def test_scope_outside_parent_is_refused():
    reason = assert_refused(evaluate(spawn_ctx(requested_scopes=("chat:post",)), CONFIG), "scope_above_parent")
    assert "'chat:post'" in reason.message


def test_owner_inactive_is_refused():
    assert_refused(evaluate(make_ctx(owner_active=False), CONFIG), "owner_inactive")


def test_owner_at_quota_is_refused():
    assert evaluate(make_ctx(owner_live_clients=49), CONFIG).outcome == "auto_approve"
    reason = assert_refused(evaluate(make_ctx(owner_live_clients=50), CONFIG), "owner_over_quota")
    assert "50" in reason.message


def test_spawn_depth_over_limit_is_refused():
    assert evaluate(spawn_ctx(parent_depth=2), CONFIG).outcome == "auto_approve"
    reason = assert_refused(evaluate(spawn_ctx(parent_depth=3), CONFIG), "spawn_depth_exceeded")
    assert "depth 4" in reason.message
    assert "limit is 3" in reason.message


def test_spawn_without_parent_context_is_refused():
    assert_refused(evaluate(spawn_ctx(parent_tier=None), CONFIG), "parent_context_missing")


def test_spawn_from_expired_parent_is_refused():
    assert_refused(evaluate(spawn_ctx(parent_remaining_ttl=0), CONFIG), "parent_expired")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "client_secret_jwt"])
def test_shared_secret_is_refused_where_forbidden(method):
    reason = assert_refused(evaluate(make_ctx(token_endpoint_auth_method=method), CONFIG), "shared_secret_forbidden")
    assert repr(method) in reason.message
    allowed = PolicyConfig(version=1, allow_shared_secret=True)
    assert evaluate(make_ctx(token_endpoint_auth_method=method), allowed).tier == "medium"


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_ttl_is_refused(ttl):
    assert_refused(evaluate(make_ctx(requested_ttl=ttl), CONFIG), "invalid_ttl")


def test_zero_ceiling_ttl_is_refused():
    assert_refused(evaluate(make_ctx(ceiling_ttl=0), CONFIG), "invalid_ttl_ceiling")


def test_refusal_lists_every_reason():
    ctx = make_ctx(
        requested_scopes=("nope", "wiki:read"),
        ceiling_scopes=frozenset({"tickets:read"}),
        redirect_uris=("http://app.example.com/cb",),
        token_endpoint_auth_method="client_secret_post",
        owner_active=False,
        owner_live_clients=80,
    )
    verdict = evaluate(ctx, CONFIG)
    assert verdict.tier == "refused"
    assert verdict.error == "invalid_client_metadata"  # not only redirect problems
    assert codes(verdict) == [
        "owner_inactive",
        "owner_over_quota",
        "unknown_scope",
        "scope_above_ceiling",
        "scope_above_ceiling",
        "shared_secret_forbidden",
        "insecure_redirect_uri",
    ]
    for reason in verdict.reasons:
        assert reason.message in verdict.error_description


# --- lifetime -----------------------------------------------------------------------------------------


def test_default_ttl_when_none_requested():
    verdict = evaluate(make_ctx(requested_ttl=None), CONFIG)
    assert verdict.ttl_seconds == 3600
    assert verdict.reasons == ()


@pytest.mark.parametrize(
    ("overrides", "ceiling"),
    [
        ({}, DAY),
        ({"internal_only": False}, 7 * DAY),
        ({"requested_scopes": ("db:prod",)}, DAY),
    ],
)
def test_ttl_is_clamped_to_tier_ceiling(overrides, ceiling):
    verdict = evaluate(make_ctx(requested_ttl=30 * DAY, **overrides), CONFIG)
    assert verdict.ttl_seconds == ceiling
    clamp = [r for r in verdict.reasons if r.code == "ttl_clamped"]
    assert len(clamp) == 1
    assert f"{ceiling}s" in clamp[0].message
    assert f"{verdict.tier}-tier" in clamp[0].message


def test_ttl_is_clamped_to_token_ceiling():
    verdict = evaluate(make_ctx(requested_ttl=7200, ceiling_ttl=600), CONFIG)
    assert verdict.ttl_seconds == 600
    assert codes(verdict) == ["ttl_clamped_to_ceiling"]
    assert "600s (10min)" in verdict.reasons[0].message


def test_ttl_is_clamped_to_parent_remaining_life():
    verdict = evaluate(spawn_ctx(requested_ttl=None, parent_remaining_ttl=1200), CONFIG)
    assert verdict.ttl_seconds == 1200
    assert codes(verdict) == ["ttl_clamped_to_parent"]


def test_every_binding_ttl_bound_is_a_reason_and_the_smallest_wins():
    verdict = evaluate(spawn_ctx(requested_ttl=3 * DAY, ceiling_ttl=2 * DAY, parent_remaining_ttl=5000), CONFIG)
    assert verdict.ttl_seconds == 5000
    assert codes(verdict) == ["ttl_clamped", "ttl_clamped_to_ceiling", "ttl_clamped_to_parent"]


def test_ttl_bounds_above_the_request_add_no_reason():
    verdict = evaluate(make_ctx(requested_ttl=600, ceiling_ttl=3600), CONFIG)
    assert verdict.ttl_seconds == 600
    assert verdict.reasons == ()


# --- spawned children ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("parent_tier", "approvals"), [("medium", 1), ("high", 2)])
def test_child_is_never_lower_tier_than_parent(parent_tier, approvals):
    verdict = evaluate(spawn_ctx(parent_tier=parent_tier), CONFIG)
    assert verdict.tier == parent_tier
    assert verdict.outcome == "review"
    assert verdict.approvals_needed == approvals
    assert codes(verdict) == ["inherited_parent_tier"]


def test_child_keeps_its_own_higher_tier():
    ctx = spawn_ctx(parent_scopes=frozenset({"db:prod"}), requested_scopes=("db:prod",), parent_tier="medium")
    verdict = evaluate(ctx, CONFIG)
    assert verdict.tier == "high"
    assert "inherited_parent_tier" not in codes(verdict)


def test_low_child_of_low_parent_is_auto_approved():
    verdict = evaluate(spawn_ctx(), CONFIG)
    assert verdict.outcome == "auto_approve"
    assert verdict.ttl_seconds == 3600


# --- storage ------------------------------------------------------------------------------------------


def test_verdict_round_trips_through_dict():
    verdict = evaluate(make_ctx(requested_scopes=("db:prod", "wiki:read"), requested_ttl=9 * DAY), CONFIG)
    data = verdict.to_dict()
    assert data["reasons"][0] == {"code": "high_sensitivity_scope", "message": "scope 'db:prod' has high sensitivity"}
    assert data["granted_scopes"] == ["db:prod", "wiki:read"]
    assert Verdict.from_dict(data) == verdict


def test_refused_verdict_dict_carries_the_error():
    data = evaluate(make_ctx(owner_active=False), CONFIG).to_dict()
    assert data["error"] == "invalid_client_metadata"
    assert data["ttl_seconds"] == 0
    assert data["granted_scopes"] == []


# --- properties ---------------------------------------------------------------------------------------

SCOPE_NAMES = sorted(CATALOGUE) + ["unknown:a", "unknown:b"]
scope_sets = st.frozensets(st.sampled_from(SCOPE_NAMES))
ttls = st.integers(min_value=1, max_value=60 * DAY)
tiers = st.sampled_from(["low", "medium", "high"])


@st.composite
def configs(draw) -> PolicyConfig:
    approvals_medium = draw(st.integers(1, 3))
    return PolicyConfig(
        version=draw(st.integers(1, 50)),
        low_ttl_seconds=draw(ttls),
        medium_ttl_seconds=draw(ttls),
        high_ttl_seconds=draw(ttls),
        low_max_scopes=draw(st.integers(0, 6)),
        max_spawn_depth=draw(st.integers(0, 4)),
        max_live_clients_per_owner=draw(st.integers(0, 60)),
        allow_shared_secret=draw(st.booleans()),
        approvals_medium=approvals_medium,
        approvals_high=draw(st.integers(approvals_medium, 4)),
        default_ttl_seconds=draw(ttls),
        high_categories=tuple(draw(st.sets(st.sampled_from(["source_control", "production_data", "saas_api"])))),
    )


@st.composite
def contexts(draw, spawn: bool | None = None) -> RegistrationContext:
    is_spawn = draw(st.booleans()) if spawn is None else spawn
    via = "spawn" if is_spawn else draw(st.sampled_from(["token", "software_statement", "admin"]))
    return RegistrationContext(
        requested_scopes=tuple(draw(st.lists(st.sampled_from(SCOPE_NAMES), max_size=6))),
        catalogue=CATALOGUE,
        requested_ttl=draw(st.none() | ttls),
        redirect_uris=tuple(
            draw(
                st.lists(
                    st.sampled_from(
                        [
                            "https://app.example.com/cb",
                            "http://127.0.0.1:7000/cb",
                            "http://app.example.com/cb",
                            "https://*.example.com/cb",
                        ]
                    ),
                    max_size=2,
                )
            )
        ),
        application_type=draw(st.sampled_from(["web", "native"])),
        token_endpoint_auth_method=draw(
            st.sampled_from(["private_key_jwt", "tls_client_auth", "client_secret_basic", "none"])
        ),
        internal_only=draw(st.booleans()),
        owner_active=draw(st.booleans()),
        owner_live_clients=draw(st.integers(0, 60)),
        via=via,
        ceiling_scopes=draw(st.none() | scope_sets),
        ceiling_ttl=draw(st.none() | ttls),
        ceiling_internal_only=draw(st.booleans()),
        parent_scopes=draw(scope_sets) if is_spawn else None,
        parent_remaining_ttl=draw(st.integers(0, 30 * DAY)) if is_spawn else None,
        parent_depth=draw(st.integers(0, 5)) if is_spawn else None,
        parent_tier=draw(tiers) if is_spawn else None,
    )


def tier_ceiling(config: PolicyConfig, tier: str) -> int:
    return {"low": config.low_ttl_seconds, "medium": config.medium_ttl_seconds, "high": config.high_ttl_seconds}[tier]


@settings(max_examples=400)
@given(contexts(), configs())
def test_property_grants_stay_within_request_ceiling_and_parent(ctx, config):
    verdict = evaluate(ctx, config)
    assert verdict.policy_version == config.version
    assert all(r.code in REASON_CODES for r in verdict.reasons)
    for scope in verdict.granted_scopes:
        assert scope in ctx.requested_scopes
        assert scope in ctx.catalogue
        assert ctx.ceiling_scopes is None or scope in ctx.ceiling_scopes
        assert ctx.parent_scopes is None or scope in ctx.parent_scopes
    assert len(set(verdict.granted_scopes)) == len(verdict.granted_scopes)


@settings(max_examples=400)
@given(contexts(), configs())
def test_property_ttl_never_exceeds_any_bound(ctx, config):
    verdict = evaluate(ctx, config)
    if verdict.tier == "refused":
        return
    assert verdict.ttl_seconds >= 1
    assert verdict.ttl_seconds <= (ctx.requested_ttl or config.default_ttl_seconds)
    assert verdict.ttl_seconds <= tier_ceiling(config, verdict.tier)
    assert ctx.ceiling_ttl is None or verdict.ttl_seconds <= ctx.ceiling_ttl
    assert ctx.parent_remaining_ttl is None or verdict.ttl_seconds <= ctx.parent_remaining_ttl


@settings(max_examples=400)
@given(contexts(spawn=True), configs())
def test_property_child_never_outranks_parent(ctx, config):
    verdict = evaluate(ctx, config)
    if verdict.tier == "refused":
        return
    assert TIER_RANK[verdict.tier] >= TIER_RANK[ctx.parent_tier]
    assert set(verdict.granted_scopes) <= ctx.parent_scopes
    assert verdict.ttl_seconds <= ctx.parent_remaining_ttl
    assert ctx.parent_depth + 1 <= config.max_spawn_depth


@settings(max_examples=400)
@given(contexts(), configs())
def test_property_outcome_matches_tier(ctx, config):
    verdict = evaluate(ctx, config)
    if verdict.tier == "refused":
        assert verdict.outcome == "refuse"
        assert verdict.ttl_seconds == 0
        assert verdict.granted_scopes == ()
        assert verdict.approvals_needed == 0
        assert verdict.error in ("invalid_client_metadata", "invalid_redirect_uri", "unapproved_software_statement")
        assert verdict.reasons
        assert all(REASON_CODES[r.code] == "refusal" for r in verdict.reasons)
    else:
        assert verdict.error is None
        assert all(REASON_CODES[r.code] != "refusal" for r in verdict.reasons)
        expected = {"low": ("auto_approve", 0), "medium": ("review", config.approvals_medium)}
        expected["high"] = ("review", config.approvals_high)
        assert (verdict.outcome, verdict.approvals_needed) == expected[verdict.tier]
        if verdict.tier == "low":
            assert ctx.internal_only
            assert ctx.token_endpoint_auth_method in config.key_based_methods


@settings(max_examples=200)
@given(contexts(), configs(), st.sampled_from(SCOPE_NAMES))
def test_property_asking_for_more_never_lowers_the_tier(ctx, config, extra):
    """Monotonicity: asking for one more scope can refuse or raise the tier, never lower it."""
    before = evaluate(ctx, config)
    after = evaluate(dataclasses.replace(ctx, requested_scopes=(*ctx.requested_scopes, extra)), config)
    if before.tier == "refused" or after.tier == "refused":
        assert before.tier != "refused" or after.tier == "refused"
        return
    assert TIER_RANK[after.tier] >= TIER_RANK[before.tier]
