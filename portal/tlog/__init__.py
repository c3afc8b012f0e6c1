"""The audit transparency log: RFC 9162 Merkle tree over the audit events, stored as C2SP tlog-tiles, with
C2SP checkpoints signed as C2SP signed notes (Ed25519) and copied to a witness outside the database.

- :mod:`~portal.tlog.merkle`    RFC 9162 hashing, proofs and their verification (pure functions);
- :mod:`~portal.tlog.note`      C2SP signed notes and Ed25519 keys, C2SP checkpoints;
- :mod:`~portal.tlog.keys`      the log's keys from the settings (never from the database);
- :mod:`~portal.tlog.entries`   log entries read straight from the event table;
- :mod:`~portal.tlog.tiles`     tile storage, tile paths, proofs read from tiles in O(log n);
- :mod:`~portal.tlog.sequencer` gives unsequenced events their log index and signs a checkpoint;
- :mod:`~portal.tlog.locks`     one sequencer (and one witness publisher) at a time;
- :mod:`~portal.tlog.nudge`     asks a worker to seal after a commit, never making the request wait;
- :mod:`~portal.tlog.witness`   where checkpoints go besides the database;
- :mod:`~portal.tlog.guard`     the append-only triggers the database must have;
- :mod:`~portal.tlog.verify`    recomputes the tree and checks every checkpoint (``manage.py verify_audit``);
- :mod:`~portal.tlog.evidence`  inclusion proofs for evidence packs;
- :mod:`~portal.tlog.jcs`       canonical JSON (RFC 8785 style) for the digests an evidence pack's export logs;
- :mod:`~portal.tlog.views`     ``/log/checkpoint`` and ``/log/tile/…`` for monitors.

See docs/audit-log.md.
"""
