"""The outbox: every change Registrar makes at an identity provider is written as an ``OutboxEntry`` in the
transaction of the change, and delivered after it commits — exactly once, in order, without holding a
transaction open over HTTP.

The modules, in the order an entry meets them:

- ``write`` — :func:`outbox_enqueue` in the caller's transaction, and the nudge to a worker once it commits;
- ``leases`` — which entries are due, and the conditional UPDATEs that lease each to exactly one worker;
- ``push`` — the IdP side: connectors (cached per process), the spec sent, the call each operation makes, and
  adoption by correlation marker after a crash between the IdP's answer and our commit;
- ``journal`` — the same for an IdP that cannot list: intent and answer written around every call;
- ``record`` — what a delivery came to: delivered (one entry, or many creates at once), retry with backoff, dead;
- ``deliver`` — one client's queue (Celery's ``deliver_client_outbox``, the registration API's inline 201 path);
- ``batch`` — many clients' heads at once (what the periodic ``requeue_outbox`` hands out), calls on a pool;
- ``dead_letters`` — a person's Retry or "Mark resolved" of a dead entry;
- ``config`` — the ``REGISTRAR_OUTBOX_*`` knobs.

Tasks live in ``inventory.tasks``. Only the writing side is importable from the package itself (the lifecycle
writes entries, and recording a delivery goes through the lifecycle); import delivery from its module, e.g.
``from inventory.outbox.deliver import deliver_client_outbox``.
"""

from inventory.outbox.dead_letters import OutboxError, outbox_resolve, outbox_retry
from inventory.outbox.write import outbox_enqueue, outbox_nudge

__all__ = ["OutboxError", "outbox_enqueue", "outbox_nudge", "outbox_resolve", "outbox_retry"]
