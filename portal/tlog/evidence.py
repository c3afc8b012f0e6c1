"""Evidence that verifies offline: for a set of events, each one's log entry and inclusion proof against
the latest signed checkpoint (``tools/verify_evidence.py`` checks it with the log's public key alone).

A fixed number of queries whatever the number of events: the checkpoint with its witness receipt, then every
tile the proofs need in one read.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from portal.audit import leaf_data
from portal.models import AuditEvent, LogCheckpoint, LogWitnessReceipt
from portal.tlog import merkle
from portal.tlog.keys import LogKeyUnavailable, log_verifiers
from portal.tlog.note import NoteError, open_checkpoint
from portal.tlog.tiles import MissingTile, proofs


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class EventProof:
    log_index: int
    leaf: bytes
    proof: list[bytes]


@dataclass
class LogEvidence:
    """Proofs for some events against one checkpoint. ``status`` is what Registrar itself concluded by
    verifying them (``verified``, ``failed`` or ``empty``), for the page; the pack carries the material."""

    checkpoint: LogCheckpoint | None
    witnessed_at: dt.datetime | None = None
    witness: str = ""
    proofs: dict[int, EventProof] = field(default_factory=dict)  # by event id
    pending: list[int] = field(default_factory=list)  # event ids not sealed (yet)
    status: str = "empty"
    failure: str = ""

    @property
    def tree_size(self) -> int:
        return self.checkpoint.tree_size if self.checkpoint else 0


def log_evidence(events: Sequence[AuditEvent]) -> LogEvidence:
    """Inclusion proofs for ``events`` against the latest checkpoint, verified here before anyone sees them."""
    checkpoint = LogCheckpoint.objects.order_by("-tree_size").first()
    evidence = LogEvidence(checkpoint)
    if checkpoint is None:
        evidence.pending = [e.id for e in events]
        return evidence
    receipt = (
        LogWitnessReceipt.objects.filter(checkpoint=checkpoint)
        .order_by("witnessed_at")
        .values_list("witnessed_at", "witness")
        .first()
    )
    if receipt:
        evidence.witnessed_at, evidence.witness = receipt
    size = checkpoint.tree_size
    sealed = [(e, e.log_index) for e in events if e.log_index is not None and e.log_index < size]
    evidence.pending = [e.id for e in events if e.log_index is None or e.log_index >= size]
    try:
        paths, _ = proofs([index for _, index in sealed], size)
    except MissingTile as exc:
        evidence.status, evidence.failure = "failed", f"the log's storage lacks a tile ({exc})"
        return evidence
    for event, index in sealed:
        evidence.proofs[event.id] = EventProof(index, leaf_data(event), paths[index])
    evidence.status, evidence.failure = _verify(checkpoint, evidence)
    return evidence


def _verify(checkpoint: LogCheckpoint, evidence: LogEvidence) -> tuple[str, str]:
    try:
        signed, _ = open_checkpoint(checkpoint.note, log_verifiers())
    except (NoteError, LogKeyUnavailable) as exc:
        return "failed", f"checkpoint {evidence.tree_size} does not verify: {exc}"
    for event_id, p in evidence.proofs.items():
        try:
            merkle.verify_inclusion(p.log_index, signed.size, merkle.leaf_hash(p.leaf), p.proof, signed.root)
        except merkle.ProofError:
            return "failed", f"event #{event_id} is not in the tree checkpoint {signed.size} signs"
    return ("verified" if evidence.proofs else "empty"), ""
