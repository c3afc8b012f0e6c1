"""Structured logging: one configuration for every process, two formats, and the ids each line carries.

``LOG_FORMAT=kv`` (the default in embedded mode) writes ``key=value`` lines for people at a terminal;
``LOG_FORMAT=json`` (the default in production) writes one JSON object per line for a log pipeline. Both add
the **request id** (set by ``portal.middleware.RequestIdMiddleware``; in a Celery task, the id of the request
that enqueued it) and the **Celery task id** (set around each task by ``portal.celery``) to every line, so one
registration can be followed from the web server through the worker that delivered it to the IdP.

The web server (Django's ``LOGGING``), the Celery worker and beat (``portal.celery`` applies the same
``LOGGING``) and gunicorn's own error and access lines (``contrib/gunicorn.conf.py``) all use the formatters
below. This module imports nothing from Django, so gunicorn's master process can use it before the app loads.

Writing a line: every module logs through its own ``logger = logging.getLogger(__name__)``, and an event with
values goes through :func:`log_event` — ``log_event(logger, "outbox_delivered", entry_id=5, client_id=7)``
writes ``event=outbox_delivered entry_id=5 client_id=7``, each value censored (:func:`portal.censor.censor`,
the audit chain's censor) and quoted when it holds a space, a quote or ``=``, so a line always parses back
into the same fields. A fixed message without values may be a plain ``logger.info("event=…")``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from portal.censor import censor

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The request that enqueued the running Celery task (sent along as a message header), and the task's own id.
_origin_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("origin_request_id", default="")
_task_id: contextvars.ContextVar[str] = contextvars.ContextVar("celery_task_id", default="")


def current_request_id() -> str:
    """The id of the HTTP request being answered ("" outside one)."""
    return _request_id.get()


def bind_request_id(request_id: str) -> contextvars.Token:
    return _request_id.set(request_id)


def unbind_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


def current_task_id() -> str:
    """The id of the Celery task being run ("" outside one)."""
    return _task_id.get()


def bind_task(task_id: str, origin_request_id: str = "") -> tuple[contextvars.Token, contextvars.Token]:
    return _task_id.set(task_id or ""), _origin_request_id.set(origin_request_id or "")


def unbind_task(tokens: tuple[contextvars.Token, contextvars.Token]) -> None:
    _task_id.reset(tokens[0])
    _origin_request_id.reset(tokens[1])


def ids_snapshot() -> tuple[str, str, str]:
    """The current request, origin request and task ids, to carry to another thread (:func:`run_with_ids`)."""
    return _request_id.get(), _origin_request_id.get(), _task_id.get()


def run_with_ids(ids: tuple[str, str, str], fn, *args):
    """Call ``fn(*args)`` with the ids of :func:`ids_snapshot` bound (e.g. on a thread pool's thread)."""
    tokens = _request_id.set(ids[0]), _origin_request_id.set(ids[1]), _task_id.set(ids[2])
    try:
        return fn(*args)
    finally:
        _task_id.reset(tokens[2])
        _origin_request_id.reset(tokens[1])
        _request_id.reset(tokens[0])


def log_ids() -> tuple[str, str]:
    """``(request id, task id)`` for the current line; the request id falls back to the task's origin."""
    return _request_id.get() or _origin_request_id.get(), _task_id.get()


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    extra_keys: Iterable[str] = (),
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """One ``event=<event> key=value ...`` line on ``logger``: values censored (``extra_keys``: a caller's own
    secret parameters), quoted when needed; ``None`` values left out. Costs one level check when ``level`` is
    off."""
    if not logger.isEnabledFor(level):
        return
    safe = censor(fields, extra_keys=extra_keys) if fields else fields
    rendered = "".join(f" {key}={_render(value)}" for key, value in safe.items() if value is not None)
    # stacklevel=2: the record's file, line and function are the caller's, not this helper's.
    logger.log(level, "event=%s%s", event, rendered, exc_info=exc_info, stacklevel=2)


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _render(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is written as a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _utc_timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class KeyValueFormatter(logging.Formatter):
    """``2026-01-31T12:00:00.123Z level=INFO logger=name request_id=… task_id=… <message>``.

    The ids appear when there is one; messages are already ``event=… key=value`` by convention.
    """

    def format(self, record: logging.LogRecord) -> str:
        request_id, task_id = log_ids()
        parts = [_utc_timestamp(record), f"level={record.levelname}", f"logger={record.name}"]
        if request_id:
            parts.append(f"request_id={request_id}")
        if task_id:
            parts.append(f"task_id={task_id}")
        parts.append(record.getMessage())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, ``request_id``, ``task_id``,
    ``process``, any ``extra=`` fields, and ``exc_info`` with the traceback. Both ids are present on every
    line (``null`` when there is none), so a pipeline can index them without guessing."""

    def format(self, record: logging.LogRecord) -> str:
        request_id, task_id = log_ids()
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id or None,
            "task_id": task_id or None,
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


FORMATTERS: dict[str, type[logging.Formatter]] = {"kv": KeyValueFormatter, "json": JsonFormatter}


def formatter(log_format: str) -> logging.Formatter:
    return FORMATTERS[log_format]()


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dictionary every Registrar process uses (Django's ``LOGGING``).

    One handler on the root logger; Django's own loggers (``django``, ``django.server``) lose the handlers
    Django gives them by default and propagate to it, so no line escapes the format.
    """
    if log_format not in FORMATTERS:
        raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(FORMATTERS)}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": f"{__name__}.{FORMATTERS[log_format].__name__}"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"handlers": [], "level": level, "propagate": True},
            "django.server": {"handlers": [], "level": level, "propagate": True},
            "django.db.backends": {"level": "WARNING"},
            # One INFO line per IdP call is noise (and CPU) at worker speed; connectors log their own
            # censored key=value events.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
