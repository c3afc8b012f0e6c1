"""The audit log, read-only, for monitors and auditors (c2sp.org/tlog-tiles):

- ``GET /log/checkpoint``            the latest signed checkpoint (text/plain);
- ``GET /log/tile/<L>/<N>[.p/<W>]``  Merkle tree tiles;
- ``GET /log/tile/entries/<N>[.p/<W>]`` entry bundles (each event's log entry, uint16-length-prefixed).

Readable by security and admin users (session) and by API tokens holding the ``log:read`` right
(``Authorization: Token <token>``), whatever their user's role. Everything served is covered by a checkpoint.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.http import require_GET

from portal.api.authentication import api_token_lookup
from portal.audit import leaf_data
from portal.models import AuditEvent, LogCheckpoint, LogTile, TokenRight
from portal.roles import Role, has_role
from portal.tlog.tiles import HASH, TILE_WIDTH, encode_entry_bundle, parse_tile_path

IMMUTABLE = "private, max-age=31536000, immutable"


def _text(status: int, message: str, **headers: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers.items():
        response[name] = value
    return response


def _denied(request) -> HttpResponse | None:
    """None when the caller may read the log; else the 401/403 to send."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "token" or not raw.strip():
            return _text(401, "use Authorization: Token <token>", **{"WWW-Authenticate": "Token"})
        token = api_token_lookup(raw.strip())
        if token is None:
            return _text(401, "invalid or expired token", **{"WWW-Authenticate": "Token"})
        if TokenRight.LOG_READ not in (token.rights or []):
            return _text(403, "this token has no log:read right")
        return None
    if request.user.is_authenticated:
        return (
            None if has_role(request.user, Role.SECURITY, Role.ADMIN) else _text(403, "security or admin role needed")
        )
    return _text(
        401, "sign in, or use Authorization: Token <token> with the log:read right", **{"WWW-Authenticate": "Token"}
    )


@require_GET
def checkpoint(request):
    denied = _denied(request)
    if denied:
        return denied
    latest = LogCheckpoint.objects.order_by("-tree_size").values_list("note", flat=True).first()
    if latest is None:
        return _text(404, "the audit log has no checkpoint yet")
    response = HttpResponse(latest, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "private, max-age=1"
    return response


@require_GET
def tile(request, path: str):
    denied = _denied(request)
    if denied:
        return denied
    parsed = parse_tile_path(path)
    if parsed is None:
        return _text(404, "not a tile path: tile/<L>/<N>[.p/<W>] (c2sp.org/tlog-tiles)")
    level, index, width = parsed
    if level == "entries":
        return _entries(index, width)
    hashes = LogTile.objects.filter(level=level, tile_index=index).values_list("hashes", flat=True).first()
    if hashes is None or len(hashes) < width * HASH or (width == TILE_WIDTH and len(hashes) != TILE_WIDTH * HASH):
        return _text(404, "no such tile (yet)")
    response = HttpResponse(bytes(hashes[: width * HASH]), content_type="application/octet-stream")
    response["Cache-Control"] = IMMUTABLE
    return response


def _entries(index: int, width: int) -> HttpResponse:
    first = index * TILE_WIDTH
    size = LogCheckpoint.objects.order_by("-tree_size").values_list("tree_size", flat=True).first() or 0
    if first + width > size:
        return _text(404, "no such entry bundle (yet)")
    events = list(AuditEvent.objects.filter(log_index__gte=first, log_index__lt=first + width).order_by("log_index"))
    if [e.log_index for e in events] != list(range(first, first + width)):
        return _text(500, "the log is missing entries: run manage.py verify_audit")
    try:
        body = encode_entry_bundle(leaf_data(e) for e in events)
    except ValueError as exc:
        return _text(500, str(exc))
    response = HttpResponse(body, content_type="application/octet-stream")
    response["Cache-Control"] = IMMUTABLE
    return response
