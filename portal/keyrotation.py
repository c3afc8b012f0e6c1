"""Re-encrypting every stored secret with the current ``REGISTRAR_ENCRYPTION_KEY`` (the last step of a rotation).

During a rotation the new key is ``REGISTRAR_ENCRYPTION_KEY`` and the old ones are ``REGISTRAR_OLD_ENCRYPTION_KEYS``:
new writes use the new key, old values still decrypt. :func:`encryption_key_rotate` rewrites the old values so
the old keys can be dropped (docs/deploy.md, "Rotating the encryption key").

It covers every column of type :class:`portal.crypto.EncryptedJSONField`, found through the model registry rather
than named here: the field is the kernel's, and so is keeping all of its values readable. Rows are rewritten in
batches, each with a conditional UPDATE (the ciphertext must still be the one read): a value a worker changed
meanwhile was already written with the new key and is left alone, never overwritten with stale content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.functions import Cast

from portal.audit import Actor, audit_record
from portal.crypto import EncryptedJSONField


@dataclass
class RotationResult:
    rewritten: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: int = 0
    columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "rewritten": self.rewritten,
            "current": self.current,
            "changed_meanwhile": self.changed_meanwhile,
            "unreadable": self.unreadable,
        }


def encrypted_columns() -> list[tuple[type[models.Model], models.Field]]:
    return [
        (model, model_field)
        for model in apps.get_models()
        for model_field in model._meta.concrete_fields
        if isinstance(model_field, EncryptedJSONField)
    ]


def _keys() -> tuple[Fernet, MultiFernet]:
    fernets = [Fernet(key.encode()) for key in settings.REGISTRAR_ENCRYPTION_KEYS]
    return fernets[0], MultiFernet(fernets)


def rotate_rows(
    model: type[models.Model],
    model_field: models.Field,
    rows: list[tuple[int, str]],
    result: RotationResult,
    *,
    dry_run: bool = False,
) -> None:
    """Rewrite ``rows`` (primary key, ciphertext as read) with the current key, each only if still as read."""
    current, every = _keys()
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model_field.column)
    pk_column = connection.ops.quote_name(model._meta.pk.column)
    sql = f"UPDATE {table} SET {column} = %s WHERE {pk_column} = %s AND {column} = %s"  # noqa: S608 - quoted names
    with transaction.atomic(), connection.cursor() as cursor:
        for pk, token in rows:
            try:
                current.decrypt(token.encode())
                result.current += 1
                continue
            except InvalidToken:
                pass
            try:
                rotated = every.rotate(token.encode()).decode()
            except InvalidToken:
                result.unreadable += 1
                continue
            if dry_run:
                result.rewritten += 1
                continue
            cursor.execute(sql, [rotated, pk, token])
            if cursor.rowcount == 1:
                result.rewritten += 1
            else:
                result.changed_meanwhile += 1


def encryption_key_rotate(*, actor: Actor, dry_run: bool = False, batch_size: int = 500) -> RotationResult:
    """Re-encrypt every stored secret with the current key; one audit event with the counts (none on a dry run)."""
    result = RotationResult()
    for model, model_field in encrypted_columns():
        result.columns.append(f"{model._meta.label}.{model_field.name}")
        last_pk = None
        while True:
            # Cast: the ciphertext as stored, not the field's decrypted value (nor a filter value it would encrypt).
            queryset = (
                model._base_manager.annotate(ciphertext=Cast(model_field.attname, models.TextField()))
                .exclude(ciphertext="")
                .order_by("pk")
            )
            if last_pk is not None:
                queryset = queryset.filter(pk__gt=last_pk)
            rows = list(queryset.values_list("pk", "ciphertext")[:batch_size])
            if not rows:
                break
            rotate_rows(model, model_field, rows, result, dry_run=dry_run)
            last_pk = rows[-1][0]
    if not dry_run:
        audit_record(
            actor=actor,
            action="encryption_key.rotated",
            object_type="encryption_key",
            object_id="current",
            after=result.as_dict() | {"columns": result.columns},
        )
    return result
