"""Approvals' writes: every function here is one transaction with one audit event (or runs in its caller's).

- ``tokens`` — initial access tokens: mint, revoke;
- ``decisions`` — approve, deny, withdraw a registration or renewal request (separation of duties, four eyes);
- ``clients`` — the client an approved registration request becomes (policy auto-approval and human approval);
- ``lapse`` — pending requests nobody decided in time;
- ``trust`` — trusted issuers and trusted CIMD domains, as Django admin edits them (the configuration API);
- ``errors`` — what they raise.

RFC 7591/7592 registration itself is ``approvals.oauth2``. Import from this package; the modules are its layout.
"""

from approvals.services.clients import request_client_create
from approvals.services.decisions import (
    MIN_TTL_SECONDS,
    decision_blocker,
    request_approve,
    request_deny,
    request_parties,
    request_withdraw,
    request_withdraw_by_registrant,
)
from approvals.services.errors import (
    DecisionConflict,
    DecisionError,
    DecisionForbidden,
    DecisionInvalid,
    ServiceError,
    TokenError,
)
from approvals.services.lapse import request_lapse_due
from approvals.services.tokens import MAX_TOKEN_TTL_SECONDS, TOKEN_PREFIX, token_mint, token_revoke

__all__ = [
    "MAX_TOKEN_TTL_SECONDS",
    "MIN_TTL_SECONDS",
    "TOKEN_PREFIX",
    "DecisionConflict",
    "DecisionError",
    "DecisionForbidden",
    "DecisionInvalid",
    "ServiceError",
    "TokenError",
    "decision_blocker",
    "request_approve",
    "request_client_create",
    "request_deny",
    "request_lapse_due",
    "request_parties",
    "request_withdraw",
    "request_withdraw_by_registrant",
    "token_mint",
    "token_revoke",
]
