"""Witnesses: where every checkpoint goes besides the database (``REGISTRAR_LOG_WITNESS``).

A database-only attacker can rewrite the events, the tiles and the stored checkpoints, but not a copy of the
checkpoints kept elsewhere: ``verify_audit --witness`` finds any tree that does not extend what the witness
saw (a cut tail, a rewritten event). Two kinds are built in:

- a **directory** (the default, ``data/witness`` in embedded mode): one append-only JSON-lines file per day,
  each line ``{"witnessed_at", "tree_size", "checkpoint"}``; point it at storage the application cannot
  rewrite (``chattr +a``, a WORM mount, an object-storage bucket with retention lock: docs/audit-log.md);
- **syslog** (``syslog:`` for the local socket, ``syslog://host:514`` over UDP): one line per checkpoint,
  for a log collector that keeps its own copy. It cannot be read back here.

A checkpoint reaching a witness leaves a ``LogWitnessReceipt`` (what the explain page shows). A witness that
fails is retried on the next sequencer run, in tree order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from portal.logs import log_event
from portal.models import LogCheckpoint, LogWitnessReceipt
from portal.tlog.locks import WITNESS_LOCK, try_lock

logger = logging.getLogger(__name__)
CATCH_UP_BATCH = 200


@dataclass(frozen=True)
class WitnessedCheckpoint:
    note: str
    witnessed_at: str
    source: str


class DirectoryWitness:
    """Append-only JSON-lines files, one per UTC day, in ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"dir:{self.path}"

    def record(self, checkpoint: LogCheckpoint) -> dt.datetime:
        now = timezone.now()
        self.path.mkdir(parents=True, exist_ok=True)
        line = (
            json.dumps(
                {"witnessed_at": now.isoformat(), "tree_size": checkpoint.tree_size, "checkpoint": checkpoint.note}
            )
            + "\n"
        )
        target = self.path / f"checkpoints-{now:%Y-%m-%d}.jsonl"
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return now

    def checkpoints(self) -> Iterator[WitnessedCheckpoint]:
        if not self.path.is_dir():
            raise FileNotFoundError(f"witness directory {self.path} does not exist")
        for file in sorted(self.path.glob("checkpoints-*.jsonl")):
            with file.open(encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    where = f"{file.name}:{number}"
                    try:
                        record = json.loads(line)
                        yield WitnessedCheckpoint(record["checkpoint"], record.get("witnessed_at", ""), where)
                    except (ValueError, KeyError, TypeError):
                        yield WitnessedCheckpoint("", "", where)  # unreadable: the verifier reports it


class SyslogWitness:
    """One syslog line per checkpoint (write-only from here)."""

    def __init__(self, spec: str) -> None:
        parts = urlsplit(spec)
        if parts.hostname:
            address: str | tuple[str, int] = (parts.hostname, parts.port or 514)
        else:
            address = parts.path or "/dev/log"
        self.name = f"syslog:{address}" if isinstance(address, str) else f"syslog:{address[0]}:{address[1]}"
        self.handler = logging.handlers.SysLogHandler(address=address, facility="auth")
        self.handler.ident = "registrar-audit-log: "

    def record(self, checkpoint: LogCheckpoint) -> dt.datetime:
        now = timezone.now()
        message = json.dumps({"tree_size": checkpoint.tree_size, "checkpoint": checkpoint.note})
        self.handler.emit(logging.LogRecord("registrar.audit_log", logging.INFO, __file__, 0, message, None, None))
        return now

    def checkpoints(self) -> Iterator[WitnessedCheckpoint]:
        raise NotImplementedError("a syslog witness cannot be read back; compare with the collector's copy")


def witness_from_spec(spec: str) -> DirectoryWitness | SyslogWitness:
    if spec.startswith("syslog:"):
        return SyslogWitness(spec)
    if "://" in spec:
        raise ImproperlyConfigured(f"REGISTRAR_LOG_WITNESS: unknown witness {spec!r} (a directory or syslog:…)")
    return DirectoryWitness(spec)


def configured_witnesses() -> list[DirectoryWitness | SyslogWitness]:
    return [witness_from_spec(spec) for spec in settings.REGISTRAR_LOG_WITNESS]


def witness_publish() -> int:
    """Send every checkpoint a witness has not acknowledged yet, oldest first; returns how many deliveries
    succeeded. Failures are logged and retried on the next call. One publisher at a time (a lock), so a
    witness does not receive the same checkpoint twice from two overlapping runs."""
    with transaction.atomic():
        if not try_lock(transaction.get_connection(), WITNESS_LOCK):
            return 0
        return _publish()


def _publish() -> int:
    delivered = 0
    for witness in configured_witnesses():
        last = (
            LogWitnessReceipt.objects.filter(witness=witness.name)
            .order_by("-checkpoint_id")
            .values_list("checkpoint_id", flat=True)
            .first()
        )
        pending = LogCheckpoint.objects.filter(id__gt=last or 0).order_by("id")[:CATCH_UP_BATCH]
        for checkpoint in pending:
            try:
                witnessed_at = witness.record(checkpoint)
            except Exception:  # noqa: BLE001 - a witness being down must not stop the log; retried next run
                log_event(
                    logger,
                    "log_witness_failed",
                    level=logging.ERROR,
                    witness=witness.name,
                    tree_size=checkpoint.tree_size,
                    exc_info=True,
                )
                break
            LogWitnessReceipt.objects.create(checkpoint=checkpoint, witness=witness.name, witnessed_at=witnessed_at)
            delivered += 1
    return delivered
