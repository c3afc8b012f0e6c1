"""Client lifecycle: the only code that changes ``Client.state``, and every owner action on a client.

The gate every path goes through (agent RFC 7592, owner and approver pages, the API, admin, SCIM, sweeps,
break glass, reconciliation all call these functions): approved ceilings are checked on renewal, holds are
never undone except by ``inventory.containment``, and containment cascades to descendants.

The package is split by job; import from here (the public API below) or from the module that holds a name:

- :mod:`~inventory.lifecycle.errors` — what it refuses with (``LifecycleError`` and its kinds);
- :mod:`~inventory.lifecycle.state` — the shared rules: transition check, audit snapshot, row lock, who acts;
- :mod:`~inventory.lifecycle.transitions` — one client changes state (``client_transition``) and cascades;
- :mod:`~inventory.lifecycle.holds` — suspensions only security or an admin may lift;
- :mod:`~inventory.lifecycle.renewals` — renew, file for review, apply an approved renewal, the ceiling;
- :mod:`~inventory.lifecycle.owner_actions` — retire, suspend, resume, rotate key;
- :mod:`~inventory.lifecycle.transfers` — transfer offer/accept/decline, orphan take-over (owner quota);
- :mod:`~inventory.lifecycle.flags` — the sweeps' flags (orphaned, stale) and the IdP-disabled record;
- :mod:`~inventory.lifecycle.bulk` — set-based transitions for sweeps and break glass.
"""

from inventory.lifecycle.bulk import (
    TRANSITION_FIELDS,
    BulkResult,
    clients_transition_many,
    live_lineage_ids,
    outbox_insert_many,
    outbox_nudge,
)
from inventory.lifecycle.errors import (
    ClientHeld,
    IllegalTransition,
    LifecycleError,
    PermissionRefused,
    hold_description,
)
from inventory.lifecycle.flags import client_flag_stale, client_mark_orphaned, client_record_idp_disabled
from inventory.lifecycle.holds import HOLD_FIELDS, Hold, hold_in_place
from inventory.lifecycle.owner_actions import client_resume, client_retire, client_rotate_key, client_suspend
from inventory.lifecycle.renewals import (
    RenewalOutcome,
    client_apply_renewal,
    client_ceiling,
    client_extend_on_use,
    client_renew,
    renewal_needs_review,
    renewal_review_reasons,
    tier_ttl_ceiling,
)
from inventory.lifecycle.state import check_transition, client_snapshot
from inventory.lifecycle.transfers import (
    client_take_over,
    client_transfer_accept,
    client_transfer_decline,
    client_transfer_offer,
)
from inventory.lifecycle.transitions import client_transition, suspend_descendants, suspended_ancestor

__all__ = [
    "HOLD_FIELDS",
    "TRANSITION_FIELDS",
    "BulkResult",
    "ClientHeld",
    "Hold",
    "IllegalTransition",
    "LifecycleError",
    "PermissionRefused",
    "RenewalOutcome",
    "check_transition",
    "client_apply_renewal",
    "client_ceiling",
    "client_extend_on_use",
    "client_flag_stale",
    "client_mark_orphaned",
    "client_record_idp_disabled",
    "client_renew",
    "client_resume",
    "client_retire",
    "client_rotate_key",
    "client_snapshot",
    "client_suspend",
    "client_take_over",
    "client_transfer_accept",
    "client_transfer_decline",
    "client_transfer_offer",
    "client_transition",
    "clients_transition_many",
    "hold_description",
    "hold_in_place",
    "live_lineage_ids",
    "outbox_insert_many",
    "outbox_nudge",
    "renewal_needs_review",
    "renewal_review_reasons",
    "suspend_descendants",
    "suspended_ancestor",
    "tier_ttl_ceiling",
]
