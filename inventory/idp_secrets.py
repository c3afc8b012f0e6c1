"""IdP connection credentials: set or clear them (write-only), and test a connection with them.

Credentials live encrypted in ``IdPConnection.secrets`` (:class:`portal.crypto.EncryptedJSONField`). Nothing
here returns, logs or audits a value: callers learn *which* credentials are set (:func:`idp_secret_status`),
never what they are. Two interfaces call these services: Django admin's write-only secrets form and "test
connection" button (``inventory.idp_secrets_admin``) and ``manage.py set_idp_secret`` (automation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction

from inventory.connectors import Misconfigured
from inventory.connectors.errors import ConnectorError
from inventory.connectors.registry import get_connector_class
from inventory.models import IdPConnection
from portal.audit import Actor, audit_record
from portal.censor import censor
from portal.logs import log_event

logger = logging.getLogger(__name__)

# How secrets appear in audit events: that one was set, never its value.
SET = "set"
CLEARED = "cleared"


class IdPSecretError(ValueError):
    """A secret name the connection's kind does not use, or an empty value."""


def secret_names(kind: str) -> tuple[list[str], list[str]]:
    """(required, optional) credential names for a connector kind, each sorted."""
    try:
        cls = get_connector_class(kind)
    except Misconfigured:
        return [], []
    return sorted(cls.required_secrets), sorted(cls.optional_secrets - cls.required_secrets)


def idp_secret_status(idp: IdPConnection) -> dict[str, bool]:
    """Every credential name the kind uses (and any other one stored), mapped to whether a value is set."""
    required, optional = secret_names(idp.kind)
    stored = idp.secrets or {}
    names = [*required, *optional, *sorted(set(stored) - set(required) - set(optional))]
    return {name: bool(stored.get(name)) for name in names}


@transaction.atomic
def idp_secrets_set(
    *,
    idp: IdPConnection,
    actor: Actor,
    values: dict[str, str] | None = None,
    clear: list[str] | tuple[str, ...] = (),
    reason: str = "",
) -> list[str]:
    """Set (or replace) and clear credentials of one connection; one audit event naming what changed.

    Only names the kind uses may be set (a typo would otherwise sit unused while the connector still lacks
    the credential); any stored name may be cleared. Returns the names changed ([] changes nothing, records
    nothing).
    """
    values = {name: value for name, value in (values or {}).items() if value is not None}
    required, optional = secret_names(idp.kind)
    allowed = set(required) | set(optional)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise IdPSecretError(
            f"{idp.kind} connections use no credential named {', '.join(unknown)}; "
            f"known: {', '.join(sorted(allowed)) or 'none'}"
        )
    empty = sorted(name for name, value in values.items() if not str(value).strip())
    if empty:
        raise IdPSecretError(f"empty value for {', '.join(empty)}: clear a credential instead of setting it empty")
    locked = IdPConnection.objects.select_for_update().get(pk=idp.pk)
    secrets = dict(locked.secrets or {})
    changes: dict[str, str] = {}
    for name in clear:
        if name in secrets and name not in values:
            del secrets[name]
            changes[name] = CLEARED
    for name, value in values.items():
        value = str(value).strip()
        if secrets.get(name) != value:
            changes[name] = SET
        secrets[name] = value
    if not changes:
        return []
    # Names only, in lists: a key like "admin_token" would itself be censored as a secret, hiding what changed.
    before = {"stored": sorted(name for name in changes if name in (locked.secrets or {}))}
    after = {verb: sorted(n for n, c in changes.items() if c == verb) for verb in (SET, CLEARED)}
    locked.secrets = secrets
    locked.save(update_fields=["secrets"])
    audit_record(
        actor=actor,
        action="idp.secrets_set",
        object_type="idp",
        object_id=locked.pk,
        before=before,
        after={verb: names for verb, names in after.items() if names},
        reason=reason or f"credentials {', '.join(f'{n} {c}' for n, c in sorted(changes.items()))}",
    )
    idp.secrets = secrets
    log_event(logger, "idp_secrets_set", idp=locked.name, names=",".join(sorted(changes)), actor=actor.label)
    return sorted(changes)


@dataclass
class ConnectionTest:
    """What "test connection" found: ``ok`` and one line per step, none of them holding a secret."""

    ok: bool
    steps: list[str] = field(default_factory=list)
    error: str = ""

    def summary(self) -> str:
        lines = [*self.steps]
        if self.error:
            lines.append(f"failed: {self.error}")
        return "; ".join(lines)


def idp_connection_test(*, idp: IdPConnection, actor: Actor, timeout: float | None = None) -> ConnectionTest:
    """Call the IdP with the stored credentials (reachability, then each credential) and record the outcome.

    Changes nothing at the IdP or here, except one ``idp.connection_test`` audit event with the outcome: who
    tried a connection's credentials, and when, is part of the record.
    """
    from inventory.outbox.push import connector_for

    result = ConnectionTest(ok=False)
    stored = [v for v in (idp.secrets or {}).values() if isinstance(v, str)]
    connector = None
    try:
        connector = connector_for(idp, timeout=timeout)
        connector.probe()
        result.steps.append(f"reachable: {connector.issuer}")
        result.steps.extend(connector.check_credentials() or ["no credentials to check for this kind"])
        result.ok = True
    except ConnectorError as exc:
        text = str(exc)
        if exc.detail:
            text = f"{text}: {exc.detail}"
        result.error = str(censor(text, secret_values=stored))
    except Exception as exc:  # a bug or an unexpected answer: reported by type and censored text
        result.error = str(censor(f"{type(exc).__name__}: {exc}", secret_values=stored))
    finally:
        if connector is not None:
            connector.close()
    audit_record(
        actor=actor,
        action="idp.connection_test",
        object_type="idp",
        object_id=idp.pk,
        after={"ok": result.ok, "steps": result.steps, "error": result.error},
        reason="connection test with the stored credentials",
    )
    log_event(logger, "idp_connection_test", idp=idp.name, ok=result.ok)
    return result
