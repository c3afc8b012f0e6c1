"""DRY RUN connector (kind ``dry-run``): talks to no IdP at all.

It records in memory what it *would* send and answers with fake ids ``dryrun-<registrar_id>``, so a demo or
a staging install can exercise the whole approval -> provisioning -> retirement flow without an identity
provider. Nothing it "creates" can obtain a token anywhere. :meth:`DryRunConnector.list` returns nothing,
so reconciliation against a dry-run connection never reports drift.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from inventory.connectors.base import BaseConnector, ClientSpec, PushResult, RemoteClient
from inventory.connectors.errors import NotFound
from inventory.connectors.registry import register
from portal.logs import log_event

logger = logging.getLogger(__name__)

DRYRUN_PREFIX = "dryrun-"


@register
class DryRunConnector(BaseConnector):
    """DRY RUN: pretends to push clients; records each call in ``self.calls`` (per instance)."""

    kind: ClassVar[str] = "dry-run"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: ``(operation, client_id, payload)`` tuples, in call order: what a real connector would have sent.
        self.calls: list[tuple[str, str, dict]] = []
        self._clients: dict[str, ClientSpec] = {}

    @property
    def issuer(self) -> str:
        return self.config.get("issuer", "https://dry-run.invalid")

    @property
    def token_endpoint(self) -> str:
        return self.config.get("token_endpoint", f"{self.issuer.rstrip('/')}/token")

    def probe(self) -> None:
        """Always reachable: there is nothing to reach."""

    def _record(self, operation: str, client_id: str, payload: dict) -> None:
        self.calls.append((operation, client_id, payload))
        log_event(logger, "connector_dry_run", kind=self.kind, operation=operation, client_id=client_id)

    def create(self, spec: ClientSpec) -> PushResult:
        client_id = spec.client_id or f"{DRYRUN_PREFIX}{spec.registrar_id}"
        self._clients[client_id] = spec
        self._record("create", client_id, self.censor(dataclasses.asdict(spec)))
        state: dict[str, Any] = {"dry_run": True}
        if spec.client_id:  # an id Registrar chose (a CIMD URL): a fresh instance answers from the state
            state["registrar_id"] = spec.registrar_id
        return PushResult(client_id=client_id, remote_state=state)

    def get(self, client_id: str, remote_state: Mapping[str, Any]) -> RemoteClient:
        spec = self._clients.get(client_id)
        if spec is None:
            chosen = remote_state.get("registrar_id")
            if not client_id.startswith(DRYRUN_PREFIX) and not chosen:
                raise NotFound(f"dry-run: no client {client_id}")
            # A fresh instance (another worker) has no memory: answer from the id (or the state) alone.
            return RemoteClient(
                client_id=client_id,
                registrar_id=chosen or client_id.removeprefix(DRYRUN_PREFIX),
                enabled=True,
                scopes=[],
                metadata={"dry_run": True},
            )
        return RemoteClient(
            client_id=client_id,
            registrar_id=spec.registrar_id,
            enabled=spec.enabled,
            scopes=list(spec.scopes),
            metadata={"dry_run": True, "client_name": spec.client_name},
        )

    def update(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        self._clients[client_id] = spec
        self._record("update", client_id, self.censor(dataclasses.asdict(spec)))
        return PushResult(client_id=client_id, remote_state=dict(remote_state))

    def disable(self, client_id: str, spec: ClientSpec, remote_state: Mapping[str, Any]) -> PushResult:
        self._clients[client_id] = dataclasses.replace(spec, enabled=False)
        self._record("disable", client_id, {})
        return PushResult(client_id=client_id, remote_state=dict(remote_state))

    def delete(self, client_id: str, remote_state: Mapping[str, Any]) -> None:
        self._clients.pop(client_id, None)
        self._record("delete", client_id, {})

    def list(self) -> Iterator[RemoteClient]:
        return iter(())
