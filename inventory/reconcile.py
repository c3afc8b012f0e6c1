"""Reconciliation: compare what each IdP holds with the inventory, and say (or fix) where they differ.

For one IdP connection (:func:`reconcile_connection`), clients are read from the database *first* and the
IdP listed second, so a delivery finishing in between is seen as "still pending" and left alone:

* **Known clients** (matched by ``idp_client_id``): an active client whose scopes or enabled state differ
  at the IdP has *drift*; it is recorded on ``Client.drift`` and, when the connection has ``repair_drift``,
  repaired by queueing an UPDATE (or DISABLE, for a suspended client) through the outbox. An ended client
  still present at the IdP gets a DELETE queued. An active client missing at the IdP is drift too
  (UPDATE recreates it).
* **Correlation marker** (``registrar_id`` sent at create): a client the IdP holds under a marker naming a
  Registrar client that never stored an id (its create crashed after the IdP answered) is *adopted*; if
  that Registrar client has ended, or already has another id, the IdP's copy is a duplicate and deleted.
* **Unknown clients** (no marker we know) are recorded as unmanaged ``Client`` rows (``managed=False``,
  ``created_via=discovered``, ``discovered_at``, no owner): shadow NHIs for security to adopt or remove.

Clients with a pending outbox entry are skipped: delivery owns them until it is done. One audit event is
written per run, plus one per adoption, duplicate removal and discovery. ``dry_run`` changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from django.db import transaction
from django.utils import timezone

from inventory.choices import (
    ENDED_STATES,
    ClientState,
    CreatedVia,
    OutboxOperation,
    OutboxStatus,
)
from inventory.connectors.base import RemoteClient
from inventory.connectors.errors import ConnectorError, NotSupported
from inventory.lifecycle import client_transition
from inventory.models import Client, IdPConnection, OutboxEntry
from inventory.outbox import outbox_enqueue
from inventory.outbox.push import connector_for
from inventory.services import new_registration_id
from portal.audit import Actor, audit_record
from portal.censor import censor
from portal.logs import log_event

logger = logging.getLogger(__name__)

RECONCILE_ACTOR = Actor.system("reconcile")
# Ended states in which the client must be gone at the IdP (an expired client may stay, disabled).
_MUST_BE_GONE = frozenset({ClientState.RETIRED, ClientState.REVOKED, ClientState.DEPROVISIONED})


@dataclass
class ReconcileReport:
    idp: str
    dry_run: bool = False
    remote_total: int = 0
    drift: list[dict] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    ended_present: list[str] = field(default_factory=list)
    adopted: list[dict] = field(default_factory=list)
    duplicates_deleted: list[dict] = field(default_factory=list)
    discovered: list[dict] = field(default_factory=list)
    skipped_pending: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when the IdP and the inventory agree (nothing drifted, found, adopted or removed)."""
        return not (
            self.drift
            or self.ended_present
            or self.adopted
            or self.duplicates_deleted
            or self.discovered
            or self.errors
        )

    def summary(self) -> dict:
        return asdict(self) | {"is_empty": self.is_empty}

    def counts(self) -> dict:
        return {
            "remote_total": self.remote_total,
            "drift": len(self.drift),
            "repaired": len(self.repaired),
            "ended_present": len(self.ended_present),
            "adopted": len(self.adopted),
            "duplicates_deleted": len(self.duplicates_deleted),
            "discovered": len(self.discovered),
            "skipped_pending": self.skipped_pending,
            "errors": len(self.errors),
        }

    def lines(self) -> list[str]:
        head = f"{self.idp}: {self.remote_total} client(s) at the IdP" + (" (dry run)" if self.dry_run else "")
        out = [head]
        for item in self.drift:
            out.append(f"  drift       {item['registration_id']} {item['idp_client_id']}: {item['differences']}")
        out += [f"  repaired    {rid}" for rid in self.repaired]
        out += [f"  ended, still at IdP (delete queued) {rid}" for rid in self.ended_present]
        out += [f"  adopted     {a['registration_id']} -> {a['idp_client_id']}" for a in self.adopted]
        out += [
            f"  duplicate   {d['idp_client_id']} of {d['registration_id']} deleted" for d in self.duplicates_deleted
        ]
        out += [f"  unmanaged   {d['idp_client_id']} {d['name']!r}" for d in self.discovered]
        out += [f"  error       {e}" for e in self.errors]
        if self.is_empty:
            out.append("  in sync")
        return out


def reconcile_connection(
    *, idp: IdPConnection, dry_run: bool = False, actor: Actor = RECONCILE_ACTOR
) -> ReconcileReport:
    report = ReconcileReport(idp=idp.name, dry_run=dry_run)
    if idp.is_dry_run:
        return report  # a dry-run connection holds nothing anywhere: there is nothing to compare
    clients = list(
        Client.objects.filter(idp=idp).only(
            "id",
            "registration_id",
            "idp_client_id",
            "idp_state",
            "state",
            "scopes",
            "managed",
            "drift",
            "name",
            "policy_version",
            "idp_id",
        )
    )
    pending = set(OutboxEntry.objects.filter(idp=idp, status=OutboxStatus.PENDING).values_list("client_id", flat=True))
    by_idp_id = {c.idp_client_id: c for c in clients if c.idp_client_id}
    by_registration_id = {c.registration_id: c for c in clients}

    try:
        with connector_for(idp) as connector:
            remotes = list(connector.list())
            report.remote_total = len(remotes)
            seen: set[str] = set()
            for remote in remotes:
                seen.add(remote.client_id)
                known = by_idp_id.get(remote.client_id)
                if known is not None:
                    _check_known(report, idp, known, remote, pending, dry_run)
                else:
                    _check_unknown(report, idp, connector, remote, by_registration_id, pending, dry_run, actor)
            _check_missing(report, idp, clients, seen, pending, dry_run)
    except NotSupported as exc:
        report.errors.append(f"cannot list clients: {exc}")
    except ConnectorError as exc:
        report.errors.append(f"{type(exc).__name__}: {exc}")

    if not dry_run:
        _record_drift(report, clients)
        with transaction.atomic():
            IdPConnection.objects.filter(pk=idp.pk).update(last_reconciled_at=timezone.now())
            audit_record(
                actor=actor,
                action="idp.reconciled",
                object_type="idp",
                object_id=idp.pk,
                after={"idp": idp.name, **report.counts()},
            )
    log_event(logger, "reconciled", idp=idp.name, dry_run=dry_run, **report.counts())
    return report


def reconcile_all_connections(*, dry_run: bool = False, name: str | None = None) -> list[ReconcileReport]:
    connections = IdPConnection.objects.filter(enabled=True)
    if name:
        connections = connections.filter(name=name)
    return [reconcile_connection(idp=idp, dry_run=dry_run) for idp in connections.order_by("name")]


# -- the checks -------------------------------------------------------------------------------------------


def _check_known(report, idp, client: Client, remote: RemoteClient, pending: set[int], dry_run: bool) -> None:
    if client.pk in pending:
        report.skipped_pending += 1
        return
    if not client.managed:
        return  # a shadow client we already recorded; security decides what happens to it
    if client.state in ENDED_STATES:
        if client.state in _MUST_BE_GONE or remote.enabled:
            report.ended_present.append(client.registration_id)
            if not dry_run:
                outbox_enqueue(client=client, operation=OutboxOperation.DELETE)
        return
    differences: dict = {}
    if client.state == ClientState.SUSPENDED:
        if remote.enabled:
            differences["enabled"] = {"inventory": False, "idp": True}
    else:
        if not remote.enabled:
            differences["enabled"] = {"inventory": True, "idp": False}
        if sorted(set(remote.scopes)) != sorted(set(client.scopes or [])):
            differences["scopes"] = {"inventory": sorted(client.scopes or []), "idp": sorted(remote.scopes)}
    if differences:
        _drift(
            report,
            idp,
            client,
            differences,
            dry_run,
            OutboxOperation.DISABLE if client.state == ClientState.SUSPENDED else OutboxOperation.UPDATE,
        )


def _check_missing(report, idp, clients: list[Client], seen: set[str], pending: set[int], dry_run: bool) -> None:
    for client in clients:
        if (
            client.managed
            and client.state == ClientState.ACTIVE
            and client.idp_client_id
            and client.idp_client_id not in seen
            and not (client.idp_state or {}).get("deleted")
        ):
            if client.pk in pending:
                report.skipped_pending += 1
                continue
            _drift(report, idp, client, {"missing": True}, dry_run, OutboxOperation.UPDATE)


def _drift(report, idp, client: Client, differences: dict, dry_run: bool, repair_with: str) -> None:
    report.drift.append(
        {"registration_id": client.registration_id, "idp_client_id": client.idp_client_id, "differences": differences}
    )
    if idp.repair_drift and not dry_run:
        outbox_enqueue(client=client, operation=repair_with)
        report.repaired.append(client.registration_id)


def _check_unknown(
    report,
    idp,
    connector,
    remote: RemoteClient,
    by_registration_id: dict,
    pending: set[int],
    dry_run: bool,
    actor: Actor,
) -> None:
    owner_client = by_registration_id.get(remote.registrar_id) if remote.registrar_id else None
    if owner_client is None or not owner_client.managed:
        if Client.objects.filter(idp=idp, idp_client_id=remote.client_id).exists():
            return
        report.discovered.append({"idp_client_id": remote.client_id, "name": _remote_name(remote)})
        if not dry_run:
            _record_unmanaged(idp, remote, actor)
        return
    if owner_client.pk in pending:
        report.skipped_pending += 1  # its delivery will adopt or clean up
        return
    has_other_id = bool(owner_client.idp_client_id) and not (owner_client.idp_state or {}).get("deleted")
    if owner_client.state in ENDED_STATES or has_other_id:
        report.duplicates_deleted.append(
            {"registration_id": owner_client.registration_id, "idp_client_id": remote.client_id}
        )
        if not dry_run:
            connector.delete(remote.client_id, {})
            audit_record(
                actor=actor,
                action="client.idp_duplicate_deleted",
                object_type="client",
                object_id=owner_client.registration_id,
                after={
                    "idp": idp.name,
                    "duplicate_client_id": remote.client_id,
                    "kept_client_id": owner_client.idp_client_id,
                },
            )
        return
    report.adopted.append({"registration_id": owner_client.registration_id, "idp_client_id": remote.client_id})
    if not dry_run:
        _adopt(idp, owner_client, remote, actor)


@transaction.atomic
def _adopt(idp: IdPConnection, client: Client, remote: RemoteClient, actor: Actor) -> None:
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if locked.outbox.filter(status=OutboxStatus.PENDING).exists():
        return  # a delivery started meanwhile; it adopts by marker itself
    locked.idp_client_id = remote.client_id
    locked.idp_state = {"adopted": True}
    locked.last_synced_at = timezone.now()
    # The create that crashed (and maybe dead-lettered) is now fulfilled.
    locked.outbox.filter(status=OutboxStatus.DEAD, operation=OutboxOperation.CREATE).update(
        status=OutboxStatus.SUPERSEDED
    )
    locked.sync_failed = locked.outbox.filter(status=OutboxStatus.DEAD).exists()
    locked.save(update_fields=["idp_client_id", "idp_state", "last_synced_at", "sync_failed"])
    audit_record(
        actor=actor,
        action="client.idp_adopted",
        object_type="client",
        object_id=locked.registration_id,
        after={"idp": idp.name, "idp_client_id": remote.client_id},
        policy_version=locked.policy_version,
    )
    if locked.state == ClientState.PROVISIONING:
        client_transition(
            client=locked,
            target=ClientState.ACTIVE,
            actor=actor,
            reason="found at the IdP by its correlation marker",
            push_to_idp=False,
        )


@transaction.atomic
def _record_unmanaged(idp: IdPConnection, remote: RemoteClient, actor: Actor) -> Client:
    now = timezone.now()
    client = Client.objects.create(
        registration_id=new_registration_id(),
        idp=idp,
        idp_client_id=remote.client_id,
        name=_remote_name(remote),
        owner=None,
        scopes=sorted(set(remote.scopes)),
        metadata=censor(remote.metadata),
        state=ClientState.ACTIVE if remote.enabled else ClientState.SUSPENDED,
        created_via=CreatedVia.DISCOVERED,
        managed=False,
        discovered_at=now,
        state_changed_at=now,
        last_synced_at=now,
        auth_method=str(remote.metadata.get("token_endpoint_auth_method") or "unknown")[:64],
    )
    audit_record(
        actor=actor,
        action="client.discovered",
        object_type="client",
        object_id=client.registration_id,
        after={"idp": idp.name, "idp_client_id": remote.client_id, "scopes": client.scopes, "enabled": remote.enabled},
    )
    return client


def _record_drift(report: ReconcileReport, clients: list[Client]) -> None:
    drifted = {item["registration_id"]: item["differences"] for item in report.drift}
    for client in clients:
        new = drifted.get(client.registration_id)
        if new is not None:
            Client.objects.filter(pk=client.pk).update(drift={**new, "found_at": timezone.now().isoformat()})
        elif client.drift is not None and client.registration_id not in report.ended_present:
            Client.objects.filter(pk=client.pk).update(drift=None)


def _remote_name(remote: RemoteClient) -> str:
    name = remote.metadata.get("client_name")
    return (name if isinstance(name, str) and name else remote.client_id)[:200]
