"""The log's keys, from the settings: never from the database (a database-only attacker must not sign).

``REGISTRAR_LOG_SIGNING_KEY`` holds the signer key itself, ``REGISTRAR_LOG_SIGNING_KEY_FILE`` a file with
it; in embedded and development mode the file is generated on first use (``REGISTRAR_LOG_GENERATE_KEY``).
The verifier key is the signer's public half unless ``REGISTRAR_LOG_VERIFIER_KEY`` names it (a process that
only shows proofs needs nothing more). Retired keys stay trusted for the checkpoints they signed through
``REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.logs import log_event
from portal.tlog.note import NoteError, Signer, Verifier, generate_signer, parse_signer_key, parse_verifier_key

logger = logging.getLogger(__name__)
_signers: dict[tuple, Signer] = {}
_verifiers: dict[tuple, Verifier] = {}


class LogKeyUnavailable(ImproperlyConfigured):
    """The process has no signer key (or no key at all) for the audit log."""


def _settings_key() -> tuple:
    return (
        settings.REGISTRAR_LOG_SIGNING_KEY,
        settings.REGISTRAR_LOG_SIGNING_KEY_FILE,
        settings.REGISTRAR_LOG_GENERATE_KEY,
        settings.REGISTRAR_LOG_VERIFIER_KEY,
        tuple(settings.REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS),
        settings.REGISTRAR_LOG_ORIGIN,
    )


def _read_key_file(path: Path, *, generate: bool) -> Signer:
    if not path.exists():
        if not generate:
            raise LogKeyUnavailable(f"the audit log key file {path} does not exist (REGISTRAR_LOG_SIGNING_KEY_FILE)")
        path.parent.mkdir(parents=True, exist_ok=True)
        signer = generate_signer(settings.REGISTRAR_LOG_ORIGIN)
        try:  # O_EXCL: two processes starting at once keep the first one's key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(signer.encoded + "\n")
            log_event(
                logger, "log_key_generated", level=logging.WARNING, path=path, verifier_key=signer.verifier.encoded
            )
    try:
        return parse_signer_key(path.read_text())
    except NoteError as exc:
        raise LogKeyUnavailable(f"the audit log key file {path} is not a signer key: {exc}")


def log_signer() -> Signer:
    """The key the sequencer signs checkpoints with; LogKeyUnavailable when this process has none."""
    key = ("signer", *_settings_key())
    if key not in _signers:
        if settings.REGISTRAR_LOG_SIGNING_KEY:
            _signers[key] = parse_signer_key(settings.REGISTRAR_LOG_SIGNING_KEY)
        elif settings.REGISTRAR_LOG_SIGNING_KEY_FILE:
            _signers[key] = _read_key_file(
                Path(settings.REGISTRAR_LOG_SIGNING_KEY_FILE), generate=settings.REGISTRAR_LOG_GENERATE_KEY
            )
        else:
            raise LogKeyUnavailable("no audit log signer key here (REGISTRAR_LOG_SIGNING_KEY or _FILE)")
    return _signers[key]


def log_verifier() -> Verifier:
    """The log's current public key."""
    key = ("verifier", *_settings_key())
    if key not in _verifiers:
        if settings.REGISTRAR_LOG_VERIFIER_KEY:
            _verifiers[key] = parse_verifier_key(settings.REGISTRAR_LOG_VERIFIER_KEY)
        else:
            _verifiers[key] = log_signer().verifier
    return _verifiers[key]


def log_verifiers() -> list[Verifier]:
    """Every key whose checkpoints this log accepts: the current one, then the retired ones."""
    return [log_verifier(), *(parse_verifier_key(k) for k in settings.REGISTRAR_LOG_PREVIOUS_VERIFIER_KEYS)]


def log_origin() -> str:
    """The log's origin line: the name of its key."""
    return log_verifier().name
