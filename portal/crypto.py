"""Secrets at rest: Fernet encryption for IdP credentials, SHA-256 hashes for bearer tokens."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.REGISTRAR_ENCRYPTION_KEYS])


def encrypt_json(value: Any) -> str:
    return _fernet().encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()


def decrypt_json(token: str) -> Any:
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise ValueError("cannot decrypt: wrong REGISTRAR_ENCRYPTION_KEY or corrupted value")


class EncryptedJSONField(models.TextField):
    """A JSON value stored as Fernet ciphertext. Never filter on it; it is opaque to the database."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return {}
        return decrypt_json(value)

    def to_python(self, value):
        if isinstance(value, dict | list) or value is None:
            return value or {}
        if isinstance(value, str) and value:
            try:
                return decrypt_json(value)
            except ValueError:
                return json.loads(value)
        return {}

    def get_prep_value(self, value):
        if value in (None, {}, []):
            return ""
        return encrypt_json(value)

    def value_to_string(self, obj):
        return "********"


def hash_token(token: str) -> str:
    """Bearer tokens are stored as SHA-256: they are long random strings, so no salt/stretching is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str, nbytes: int = 32) -> str:
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"
