"""Fetching a Client ID Metadata Document safely, and caching it within bounds (draft-ietf-oauth-client-id-
metadata-document-03 §6 and docs/cimd.md).

``get_document(url)`` returns a ``CimdDocument`` — the body, its SHA-256, the parsed JSON and the
``CimdReview`` of ``approvals.cimd.document`` — or raises ``CimdRefused`` whose ``code`` is one stable word and
``reason`` says why, for a person:

=================  ==============================================================================================
code               refused when
=================  ==============================================================================================
``url``            the URL is not a CIMD client_id (https, a path, no dot segments, no fragment, no credentials)
``dns`` …          every refusal of ``portal.safefetch``: ``dns``, ``address`` (special-use addresses, checked on
``protocol``       the address actually connected to, so DNS rebinding cannot get round it), ``connect``,
                   ``tls``, ``timeout`` (the whole fetch, body included, within REGISTRAR_CIMD_TIMEOUT_SECONDS),
                   ``redirect`` (never followed), ``status`` (only 200), ``too_large`` (more than
                   REGISTRAR_CIMD_MAX_BYTES, 5 KB by default), ``encoding``, ``protocol``
``json``           the body is not I-JSON (malformed, NaN, unpaired surrogates, nested too deeply)
``keys``           (``key_set``) the keys behind ``jwks_uri`` cannot be fetched or break the key-set rules
``invalid``        the document breaks a rule of ``validate_cimd_document``; ``reasons`` lists every problem
=================  ==============================================================================================

Caching (Django's cache, shared by every process): a **valid** document is kept for its ``Cache-Control:
max-age`` clamped to [REGISTRAR_CIMD_CACHE_MIN_SECONDS, REGISTRAR_CIMD_CACHE_MAX_SECONDS] (5 minutes and 3 days
by default; ``no-store``, ``no-cache`` or no max-age count as the minimum). Nothing that failed is ever cached
as valid: a refusal is remembered, as a refusal, for REGISTRAR_CIMD_NEGATIVE_CACHE_SECONDS (60 s), so a client
hammering a broken URL does not make Registrar hammer its host. ``refresh=True`` skips both caches (the drift
check and "fetch now").

One fetch in flight per URL: callers in one process wait on a per-URL lock; across processes a short lock in
the cache makes the others wait for the first fetch's result (up to the fetch deadline) instead of fetching
again.
"""

from __future__ import annotations

import hashlib
import threading
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache

from approvals.cimd.document import CimdReview, client_id_url_problems, validate_cimd_document
from approvals.metadata import MetadataError
from inventory.keys import KeySetError, jwks_fetch
from portal import jsonbody, safefetch

ACCEPT = "application/json"
_PREFIX = "cimd:v1:"
_LOCKS = [threading.Lock() for _ in range(64)]  # striped per-URL locks: bounded memory, rare sharing
_POLL_SECONDS = 0.05


class CimdRefused(Exception):
    """The document at ``url`` was refused. ``code`` is one word (module docstring), ``reason`` one sentence,
    ``reasons`` every problem when the document itself is invalid; ``cached`` says the refusal was remembered
    from an earlier fetch."""

    def __init__(self, code: str, reason: str, *, url: str, reasons: list[str] | None = None, cached: bool = False):
        self.code = code
        self.reason = reason
        self.url = url
        self.reasons = list(reasons or [reason])
        self.cached = cached
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True)
class CimdDocument:
    """A fetched, valid document. ``fetched_at``/``expires_at`` are Unix times; ``max_age`` is the clamped
    cache lifetime and ``cache_control`` the header it came from."""

    url: str
    body: bytes
    sha256: str
    document: dict[str, Any]
    review: CimdReview
    fetched_at: float
    expires_at: float
    max_age: int
    cache_control: str
    address: str
    from_cache: bool = False

    @property
    def text(self) -> str:
        """The body as fetched (valid UTF-8: it parsed as JSON), for showing to an approver."""
        return self.body.decode("utf-8", "replace")


def cache_seconds(cache_control: str) -> int:
    """The cache lifetime a ``Cache-Control`` header earns, clamped to the configured bounds."""
    low = int(settings.REGISTRAR_CIMD_CACHE_MIN_SECONDS)
    high = int(settings.REGISTRAR_CIMD_CACHE_MAX_SECONDS)
    max_age: int | None = None
    for directive in (cache_control or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip()
        if name in ("no-store", "no-cache"):
            return low
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isdigit():
                max_age = int(value[:12])
    return low if max_age is None else max(low, min(high, max_age))


def _key(kind: str, url: str) -> str:
    return _PREFIX + kind + ":" + hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def _lock_for(url: str) -> threading.Lock:
    return _LOCKS[zlib.crc32(url.encode("utf-8", "surrogatepass")) % len(_LOCKS)]


def _cached(url: str, *, newer_than: float = 0.0) -> CimdDocument | None:
    """The valid cached document, or raise the cached refusal, or None; only entries made after ``newer_than``."""
    hit = cache.get(_key("doc", url))
    fresh = isinstance(hit, CimdDocument) and hit.url == url and hit.expires_at > time.time()
    if fresh and hit.fetched_at >= newer_than:
        return replace(hit, from_cache=True)
    refusal = cache.get(_key("neg", url))
    if isinstance(refusal, dict) and refusal.get("url") == url and refusal.get("at", 0.0) >= newer_than:
        raise CimdRefused(refusal["code"], refusal["reason"], url=url, reasons=refusal["reasons"], cached=True)
    return None


def get_document(url: str, *, refresh: bool = False, purpose: str | None = None) -> CimdDocument:
    """The valid document at ``url`` (cached within bounds unless ``refresh``), or CimdRefused saying why.

    ``purpose`` re-checks the document with the submitter's purpose (the cached review carries a placeholder).
    """
    problems = client_id_url_problems(url)
    if problems:
        raise CimdRefused("url", "; ".join(problems), url=str(url)[:2000], reasons=problems)
    result = _get(url, refresh=refresh)
    if purpose is not None:
        try:
            review = validate_cimd_document(url, result.document, purpose=purpose)
        except MetadataError as exc:
            raise CimdRefused("invalid", exc.description, url=url, reasons=exc.reasons)
        result = replace(result, review=review)
    return result


def _get(url: str, *, refresh: bool) -> CimdDocument:
    if not refresh:
        hit = _cached(url)
        if hit is not None:
            return hit
    with _lock_for(url):
        if not refresh:  # another thread of this process may have fetched it meanwhile
            hit = _cached(url)
            if hit is not None:
                return hit
        timeout = float(settings.REGISTRAR_CIMD_TIMEOUT_SECONDS)
        lock_key = _key("lock", url)
        started = time.time()
        if not cache.add(lock_key, "1", timeout=int(timeout) + 5):
            # Another process is fetching it: wait for its answer (up to the fetch deadline) and use it.
            deadline = time.monotonic() + timeout + 1
            while time.monotonic() < deadline and cache.get(lock_key) is not None:
                time.sleep(_POLL_SECONDS)
            hit = _cached(url, newer_than=started if refresh else 0.0)
            if hit is not None:
                return hit
            cache.add(lock_key, "1", timeout=int(timeout) + 5)  # it gave up or died: fetch it here
        try:
            return _fetch_and_store(url, timeout)
        finally:
            cache.delete(lock_key)


def _fetch_and_store(url: str, timeout: float) -> CimdDocument:
    try:
        return _fetch(url, timeout)
    except CimdRefused as refusal:
        seconds = int(settings.REGISTRAR_CIMD_NEGATIVE_CACHE_SECONDS)
        cache.delete(_key("doc", url))  # never serve an older valid copy after a refusal
        if seconds > 0:
            entry = {
                "at": time.time(),
                "url": url,
                "code": refusal.code,
                "reason": refusal.reason,
                "reasons": refusal.reasons,
            }
            cache.set(_key("neg", url), entry, timeout=seconds)
        raise


def _fetch(url: str, timeout: float) -> CimdDocument:
    max_bytes = int(settings.REGISTRAR_CIMD_MAX_BYTES)
    try:
        result = safefetch.fetch(url, max_bytes=max_bytes, timeout=timeout, accept=ACCEPT)
    except safefetch.FetchRefused as exc:
        raise CimdRefused(exc.code, exc.reason, url=url)
    try:
        document = jsonbody.loads(result.body)
    except ValueError as exc:
        raise CimdRefused("json", f"the document is not valid JSON ({exc})", url=url)
    try:
        review = validate_cimd_document(url, document)
    except MetadataError as exc:
        raise CimdRefused("invalid", exc.description, url=url, reasons=exc.reasons)
    cache_control = result.headers.get("cache-control", "")
    max_age = cache_seconds(cache_control)
    now = time.time()
    fetched = CimdDocument(
        url=url,
        body=result.body,
        sha256=hashlib.sha256(result.body).hexdigest(),
        document=document,
        review=review,
        fetched_at=now,
        expires_at=now + max_age,
        max_age=max_age,
        cache_control=cache_control,
        address=result.address,
    )
    cache.delete(_key("neg", url))
    cache.set(_key("doc", url), fetched, timeout=max_age)
    return fetched


def key_set(document: CimdDocument) -> dict[str, Any] | None:
    """The public keys of a ``private_key_jwt`` document: its inline ``jwks``, or the set at its ``jwks_uri``
    fetched (``inventory.keys.jwks_fetch``: the same safe fetcher and key rules as every other path); None
    for a public client. CimdRefused("keys", …) names every problem with the keys."""
    metadata = document.review.metadata
    if metadata.jwks is not None:
        return metadata.jwks
    if metadata.jwks_uri is None:
        return None
    try:
        return jwks_fetch(metadata.jwks_uri).jwks
    except KeySetError as exc:
        raise CimdRefused("keys", "; ".join(exc.problems), url=document.url, reasons=exc.problems)


def forget(url: str) -> None:
    """Drop whatever is cached for ``url`` (valid or refused)."""
    cache.delete_many([_key("doc", url), _key("neg", url)])


__all__ = ["CimdDocument", "CimdRefused", "cache_seconds", "forget", "get_document", "key_set"]
