"""Reads on a replica: what may read a PostgreSQL streaming standby, and when it must not (issue 22).

With ``DATABASE_REPLICA_URL`` set, settings add a ``replica`` database alias, :class:`ReplicaRouter` and
:class:`ReadYourWritesMiddleware`; unset, none of them exists and nothing here runs.

**Opt in, never by default.** A read goes to the replica only inside a *read scope*: the views that opted in with
:func:`replica_reads` (HTML) or :class:`ReplicaReadsMixin` (API) — dashboards, reports, the inventory list and
search, exports, the read-only API — entered after the request is authenticated (the session, the user, the API
token are read from the primary). Everything else reads the primary: the lifecycle gate and services, POSTs,
the admin, the RFC 7591/7592 endpoints, Celery tasks and commands (no request, no scope).

**The primary wins whenever in doubt.** Inside a scope a read still goes to the primary when

* the request has written (:meth:`ReplicaRouter.db_for_write` saw a write, or its method is not GET/HEAD);
* the same person wrote in an earlier request less than the lag bound ago (a marker in the cache, set by the
  middleware when a request writes; Redis when several web machines share it): they read their own writes;
* the default connection is inside ``transaction.atomic`` (reads that decide a write, ``select_for_update``,
  which Django routes as a write anyway);
* the replica lags more than ``REGISTRAR_REPLICA_MAX_LAG_SECONDS`` (default 5) or cannot be reached, as
  :class:`ReplicaHealth` measured it (at most once a second per process); one warning line when it stops being
  usable, one when it is back;
* the model is a session (a login must never look logged out).

A replica that fails *during* a view (a connection refused, reset, or a query cancelled by recovery) does not
take the page down: :func:`replica_reads` and the mixin mark the replica down and run the view again on the
primary (these views only read, so running one twice is safe). A streamed export that has started cannot be
restarted; it was checked against the lag bound when it began.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.http import StreamingHttpResponse

from portal.logs import log_event
from portal.unavailable import is_database_unavailable

logger = logging.getLogger(__name__)

__all__ = [
    "REPLICA",
    "ReadYourWritesMiddleware",
    "ReplicaHealth",
    "ReplicaReadsMixin",
    "ReplicaRouter",
    "health",
    "read_alias",
    "read_connection",
    "replica_configured",
    "replica_reads",
]

REPLICA = "replica"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Apps whose rows are never read from the replica, whatever the scope.
PRIMARY_ONLY_APPS = frozenset({"sessions"})
# SQLSTATE of a standby cancelling a query that conflicts with recovery (40001): done again on the primary.
RECOVERY_CONFLICT = "40001"
WRITER_KEY = "registrar:db:wrote:{}"


@dataclass
class RequestState:
    """What the router knows about the request (or stream chunk) being served in this context."""

    wrote: bool = False  # something was written (the router saw a write)
    scope: bool = False  # inside a read scope that may use the replica
    used_replica: bool = False  # a read was routed to the replica


_state: ContextVar[RequestState | None] = ContextVar("registrar_db_state", default=None)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def current_state() -> RequestState | None:
    return _state.get()


def read_alias() -> str:
    """The alias a read should use now: ``replica`` only inside a read scope that has not written, outside any
    transaction of the default connection. The replica's health was checked when the scope was entered."""
    state = _state.get()
    if state is None or not state.scope or state.wrote:
        return DEFAULT_DB_ALIAS
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    state.used_replica = True
    return REPLICA


def read_connection():
    """The connection raw-SQL selectors should read with (``read_connection().cursor()``), routed like the ORM."""
    return connections[read_alias()]


class ReplicaRouter:
    """Django database router: writes to ``default``; reads to ``replica`` only as :func:`read_alias` decides."""

    def db_for_read(self, model, **hints: Any) -> str:
        if model is not None and model._meta.app_label in PRIMARY_ONLY_APPS:
            return DEFAULT_DB_ALIAS
        return read_alias()

    def db_for_write(self, model, **hints: Any) -> str:
        state = _state.get()
        if state is not None:
            state.wrote = True  # every later read of this request (or chunk) goes to the primary
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints: Any) -> bool:
        return True  # one database, two copies of it

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return False if db == REPLICA else None  # the standby replays the primary's migrations


# --- the replica's health ------------------------------------------------------------------------------------

# How stale the standby may be, bounded from the primary's WAL position and not from the standby alone: a
# standby cut off from its primary (a partition the WAL receiver has not timed out on yet, 60 s by default)
# still says it replayed all it received. Each check asks the primary for its flushed WAL position first, then
# the standby for what it replayed; the standby is then at most as stale as the time since the latest check whose
# primary position it has replayed (0 when it has replayed the one just taken), and never staler than the age of
# its last replayed commit (everything after that is what it misses). An idle primary writes nothing new, so a
# standby that replayed everything stays current however long ago that was.
PRIMARY_SQL = "SELECT pg_current_wal_flush_lsn()::text"
STANDBY_SQL = """
SELECT pg_is_in_recovery(),
       pg_last_wal_replay_lsn()::text,
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
"""


def parse_lsn(text: str | None) -> int | None:
    """A pg_lsn's text (``16/B374D848``) as an integer, None for NULL."""
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def lag_seconds(
    *,
    in_recovery: bool,
    replayed: int | None,
    positions: Iterable[tuple[float, int]],
    now: float,
    replay_age: float | None,
) -> float:
    """The most a read of the standby can miss, in seconds: ``positions`` are (monotonic time, primary WAL
    position) of the checks so far, the last one just taken; ``replayed`` the standby's replay position; ``inf``
    when nothing bounds it."""
    if not in_recovery:
        return 0.0  # a primary (a promoted standby, the test mirror): current
    if replayed is None:
        return math.inf  # nothing replayed yet
    positions = list(positions)
    if positions and positions[-1][1] <= replayed:
        return 0.0  # replayed everything the primary had flushed when this check began
    caught_up_at = [moment for moment, position in positions if position <= replayed]
    bound = now - max(caught_up_at) if caught_up_at else math.inf
    if replay_age is not None:
        bound = min(bound, replay_age)
    return max(0.0, bound)


class ReplicaHealth:
    """Whether this process may read the replica: measured at most every ``interval`` seconds (one thread
    measures, the others use the last answer), every ``retry_after_failure`` seconds while it cannot be reached
    (so a replica that hangs costs one connect timeout per period, not one per request)."""

    interval = 1.0
    retry_after_failure = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._positions: deque[tuple[float, int]] = deque(maxlen=120)  # (monotonic time, primary WAL position)
        self.ok = False
        self.lag: float | None = None
        self.reason = "not checked yet"
        self._next_check = 0.0
        self._logged_down = False  # the warning for the current bad spell has been logged

    def usable(self) -> bool:
        if time.monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return self.ok
        try:
            if time.monotonic() >= self._next_check:  # another thread may have measured meanwhile
                self._check()
        finally:
            self._lock.release()
        return self.ok

    def _check(self) -> None:
        try:
            lag = self.measure()
        except Exception as exc:  # any failure to measure means: read the primary
            self._set(False, None, f"unreachable: {_first_line(exc)}", self.retry_after_failure)
            return
        bound = settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS
        if lag > bound:
            self._set(False, lag, f"lag {lag:.1f} s over the {bound:g} s bound", self.interval)
        else:
            self._set(True, lag, "ok", self.interval)

    def measure(self) -> float:
        """The most the replica can be behind, in seconds (:func:`lag_seconds`; raises when the replica or the
        primary cannot be asked)."""
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(PRIMARY_SQL)
            (primary,) = cursor.fetchone()
        asked = time.monotonic()
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(STANDBY_SQL)
            in_recovery, replayed, replay_age = cursor.fetchone()
        if primary is not None:  # NULL: the primary is itself in recovery (a misconfiguration), nothing to compare
            self._positions.append((asked, parse_lsn(primary) or 0))
        return lag_seconds(
            in_recovery=in_recovery,
            replayed=parse_lsn(replayed),
            positions=self._positions,
            now=time.monotonic(),
            replay_age=replay_age,
        )

    def mark_down(self, exc: BaseException) -> None:
        """A view met the replica failing: read the primary until the next check."""
        with self._lock:
            self._set(False, None, f"failed during a request: {_first_line(exc)}", self.retry_after_failure)
        with contextlib.suppress(Exception):
            connections[REPLICA].close()

    def _set(self, ok: bool, lag: float | None, reason: str, recheck: float) -> None:
        was_ok, self.ok, self.lag, self.reason = self.ok, ok, lag, reason
        self._next_check = time.monotonic() + recheck
        if not ok and not self._logged_down:
            self._logged_down = True
            log_event(logger, "replica_unusable", level=logging.WARNING, reason=reason, reads="primary")
        elif ok and not was_ok and self._logged_down:
            self._logged_down = False
            log_event(logger, "replica_usable", level=logging.WARNING, lag_s=round(lag or 0.0, 2), reads="replica")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


health = ReplicaHealth()


# --- read-your-writes across requests ------------------------------------------------------------------------


def _writer_key(user) -> str | None:
    pk = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
    return None if pk is None else WRITER_KEY.format(pk)


def recently_wrote(user) -> bool:
    """Whether ``user`` wrote less than the lag bound ago (True when the cache cannot say)."""
    key = _writer_key(user)
    if key is None:
        return False
    try:
        return cache.get(key) is not None
    except Exception:  # the cache is down: the primary is always right
        return True


def remember_write(user) -> None:
    key = _writer_key(user)
    if key is None:
        return
    # One second more than the bound: the lag a scope trusted may be a check interval old.
    timeout = math.ceil(settings.REGISTRAR_REPLICA_MAX_LAG_SECONDS + health.interval)
    with contextlib.suppress(Exception):  # no cache: this person's next reads may lag by up to the bound
        cache.set(key, 1, timeout=timeout)


class ReadYourWritesMiddleware:
    """Gives each request its :class:`RequestState`; when the request wrote (or is not GET/HEAD), remembers its
    user as a recent writer. Placed before the session middleware so the session's own save counts too."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        state = RequestState()
        token = _state.set(state)
        try:
            response = self.get_response(request)
            if state.wrote or request.method not in SAFE_METHODS:
                remember_write(getattr(request, "user", None))
            return response
        finally:
            _state.reset(token)


# --- read scopes ------------------------------------------------------------------------------------------------


def _may_use_replica(request) -> bool:
    if request.method not in SAFE_METHODS or not replica_configured():
        return False
    state = _state.get()
    if state is not None and state.wrote:
        return False
    return not recently_wrote(getattr(request, "user", None)) and health.usable()


def _replica_failed(exc: BaseException, state: RequestState) -> bool:
    """Whether ``exc`` is the replica failing (not the primary, not the query's own fault)."""
    if not state.used_replica or not connections[REPLICA].errors_occurred:
        return False
    cause = exc.__cause__ or exc.__context__
    return is_database_unavailable(exc) or getattr(cause, "sqlstate", None) == RECOVERY_CONFLICT


@contextlib.contextmanager
def _scope(active: bool) -> Iterator[RequestState]:
    outer = _state.get()
    state = RequestState(wrote=outer.wrote if outer else False, scope=active)
    token = _state.set(state)
    try:
        yield state
    finally:
        _state.reset(token)
        if outer is not None and state.wrote:
            outer.wrote = True


def _run_scoped(call: Callable[[], Any], request) -> Any:
    """``call()`` in a read scope (when the replica may be used), again on the primary if the replica fails."""
    if not _may_use_replica(request):
        return call()
    with _scope(True) as state:
        try:
            response = call()
        except (OperationalError, InterfaceError) as exc:
            if not _replica_failed(exc, state):
                raise
            health.mark_down(exc)
            failed = True
        else:
            failed = False
    if failed:  # again, on the primary
        with _scope(False):
            return call()
    if isinstance(response, StreamingHttpResponse) and not response.is_async:
        response.streaming_content = _stream_in_scope(response.streaming_content)  # type: ignore[arg-type]
    return response


def _stream_in_scope(chunks: Iterable) -> Iterator:
    """A streamed body (an export) produced in a read scope of its own, entered around each chunk: the scope
    never leaks into the server's code between chunks, and each chunk may run in another thread (ASGI)."""
    iterator = iter(chunks)
    while True:
        with _scope(True):
            try:
                chunk = next(iterator)
            except StopIteration:
                return
        yield chunk


def replica_reads(view: Callable) -> Callable:
    """For read-only views (GET/HEAD): their reads may go to the replica. Put it *under* the decorator that checks
    the login and the role, so that the session and the user are read from the primary first."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        return _run_scoped(lambda: view(request, *args, **kwargs), request)

    return wrapped


class ReplicaReadsMixin:
    """For DRF views: GET/HEAD may read the replica once the caller is authenticated and allowed. A viewset
    limits it to some actions with ``replica_actions``."""

    replica_actions: tuple[str, ...] | None = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # type: ignore[misc]  # authentication, permissions, throttles
        state = _state.get()
        if state is None or state.scope or getattr(self, "_replica_refused", False):
            return
        action = getattr(self, "action", None)
        if self.replica_actions is not None and action not in self.replica_actions:
            return
        if _may_use_replica(request):
            state.scope = True

    def dispatch(self, request, *args, **kwargs):
        with _scope(False) as state:  # initial() turns it on once the caller is known and allowed
            try:
                return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
            except (OperationalError, InterfaceError) as exc:
                if not _replica_failed(exc, state):
                    raise
                health.mark_down(exc)
        self._replica_refused = True  # again, on the primary
        try:
            with _scope(False):
                return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        finally:
            self._replica_refused = False
