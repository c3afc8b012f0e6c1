"""Structured logs: JSON or key=value, with the request id and the Celery task id on every line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery import shared_task
from django.http import HttpResponse
from django.test import RequestFactory

from portal.celery import app
from portal.logs import JsonFormatter, KeyValueFormatter, bind_task, log_event, logging_config, unbind_task
from portal.middleware import RequestIdMiddleware

ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger("registrar.tests.logs")


class Capture(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured():
    """A handler with each formatter on the test logger, for the duration of a test."""
    handlers = {"json": Capture(JsonFormatter()), "kv": Capture(KeyValueFormatter())}
    for handler in handlers.values():
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handlers
    for handler in handlers.values():
        logger.removeHandler(handler)


def _logging_view(request):
    logger.info("event=inside_request path=%s", request.path)
    return HttpResponse("ok")


def test_lines_logged_while_answering_a_request_carry_its_id(captured):
    middleware = RequestIdMiddleware(_logging_view)
    response = middleware(RequestFactory().get("/somewhere", HTTP_X_REQUEST_ID="req-abc-12345"))
    assert response["X-Request-ID"] == "req-abc-12345"
    entry = json.loads(captured["json"].lines[-1])
    assert entry["request_id"] == "req-abc-12345"
    assert entry["task_id"] is None
    assert entry["message"] == "event=inside_request path=/somewhere"
    assert entry["level"] == "INFO" and entry["logger"] == "registrar.tests.logs"
    assert entry["ts"].endswith("Z")
    assert " request_id=req-abc-12345 event=inside_request" in captured["kv"].lines[-1]
    # Outside the request the id is gone again.
    logger.info("event=after")
    assert json.loads(captured["json"].lines[-1])["request_id"] is None
    assert "request_id=" not in captured["kv"].lines[-1]


@shared_task(name="tests.portal.test_logs.log_something")
def log_something() -> str:
    logger.warning("event=inside_task")
    return "done"


def test_lines_logged_by_a_celery_task_carry_its_task_id_and_the_originating_request(captured):
    result = log_something.apply(task_id="task-0001-abcd", headers={"registrar_request_id": "req-from-web-1"})
    assert result.get() == "done"
    entry = json.loads(captured["json"].lines[-1])
    assert entry["task_id"] == "task-0001-abcd"
    assert entry["request_id"] == "req-from-web-1"
    assert "task_id=task-0001-abcd" in captured["kv"].lines[-1]
    logger.info("event=after_task")
    assert json.loads(captured["json"].lines[-1])["task_id"] is None


def test_published_messages_carry_the_request_id_and_the_send_time():
    from kombu import Connection

    from portal.logs import bind_request_id, unbind_request_id

    token = bind_request_id("req-publisher-77")
    try:
        with Connection("memory://") as conn:
            queue = conn.SimpleQueue("registrar-test-publish")
            log_something.apply_async(
                connection=conn, queue="registrar-test-publish", routing_key="registrar-test-publish"
            )
            message = queue.get(timeout=5)
            headers = message.headers
            message.ack()
            queue.close()
    finally:
        unbind_request_id(token)
    assert headers["registrar_request_id"] == "req-publisher-77"
    assert isinstance(headers["registrar_sent_at"], float)


def test_extra_fields_and_tracebacks_become_json_fields(captured):
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("event=failed", extra={"client_id": 42})
    entry = json.loads(captured["json"].lines[-1])
    assert entry["client_id"] == 42
    assert "ValueError: boom" in entry["exc_info"]
    tokens = bind_task("t-1")
    try:
        logger.info("event=x")
    finally:
        unbind_task(tokens)
    assert json.loads(captured["json"].lines[-1])["task_id"] == "t-1"


def test_one_configuration_for_both_formats():
    for log_format, formatter in (("json", "JsonFormatter"), ("kv", "KeyValueFormatter")):
        config = logging_config(log_format=log_format, level="INFO")
        assert config["formatters"]["structured"]["()"] == f"portal.logs.{formatter}"
        assert config["root"] == {"handlers": ["console"], "level": "INFO"}
        assert config["loggers"]["django"]["handlers"] == []  # Django's own handlers removed: no unformatted line
    with pytest.raises(ValueError, match="xml"):
        logging_config(log_format="xml", level="INFO")


# Production shape needs its secrets whatever else a test sets.
SECRETS = {
    "SECRET_KEY": "s" * 50,
    "REGISTRAR_ENCRYPTION_KEY": "5bOBxsI9hZ2CcMZSjTuAL2XDfw3wF5VpDJmX5dlQRqY=",
    "REGISTRAR_LOG_VERIFIER_KEY": "registrar.test/audit-log+23489aee+AXSUlzg7vliEFEkSv1ltpOE4hvrbzW/P86mqZQOZI9fZ",
}


def _settings_log(env: dict[str, str]) -> subprocess.CompletedProcess:
    snippet = "import django, logging; django.setup(); logging.getLogger('probe').warning('event=hello')"
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "DEBUG", "LOG_", "REGISTRAR_EMBEDDED", "REGISTRAR_LOG_"))
    }
    return subprocess.run(
        [sys.executable, "-c", snippet],
        env=clean | {"DJANGO_SETTINGS_MODULE": "portal.settings"} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_logs_json_and_embedded_mode_key_value(tmp_path):
    production = _settings_log({"DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar", "DEBUG": "true", **SECRETS})
    assert production.returncode == 0, production.stderr
    line = json.loads(production.stderr.strip().splitlines()[-1])
    assert line["message"] == "event=hello" and "request_id" in line and "task_id" in line
    embedded = _settings_log({"REGISTRAR_DATA_DIR": str(tmp_path), "REGISTRAR_EMBEDDED": "1"})
    assert embedded.returncode == 0, embedded.stderr
    assert embedded.stderr.strip().splitlines()[-1].endswith("level=WARNING logger=probe event=hello")
    chosen = _settings_log(
        {"DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar", "DEBUG": "true", "LOG_FORMAT": "kv", **SECRETS}
    )
    assert "level=WARNING logger=probe event=hello" in chosen.stderr
    bad = _settings_log(
        {"DATABASE_URL": "postgres://u@127.0.0.1:5432/registrar", "DEBUG": "true", "LOG_FORMAT": "xml", **SECRETS}
    )
    assert bad.returncode != 0 and "LOG_FORMAT must be kv or json" in bad.stderr


def test_celery_workers_use_the_same_logging():
    assert app.conf.worker_hijack_root_logger is False


def test_an_event_line_is_censored_quoted_and_carries_both_ids_in_either_format(captured):
    tokens = bind_task("task-77", origin_request_id="req-origin-9")
    try:
        log_event(
            logger,
            "thing_done",
            client_id=7,
            note='two words "quoted"',
            empty="",
            skipped=None,
            registration_access_token="rat-secret-value",
        )
    finally:
        unbind_task(tokens)
    kv, entry = captured["kv"].lines[-1], json.loads(captured["json"].lines[-1])
    expected = 'event=thing_done client_id=7 note="two words \\"quoted\\"" empty="" registration_access_token=********'
    assert kv.endswith(" request_id=req-origin-9 task_id=task-77 " + expected)
    assert entry["message"] == expected
    assert (entry["request_id"], entry["task_id"]) == ("req-origin-9", "task-77")
    assert "rat-secret-value" not in kv + captured["json"].lines[-1]
    # the record points at the caller, not at the helper
    assert entry["logger"] == "registrar.tests.logs"


def test_an_event_below_the_level_costs_no_formatting(captured):
    logger.setLevel(logging.WARNING)

    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("rendered although the level is off")

    log_event(logger, "quiet", value=Exploding())
    assert captured["kv"].lines == []


def test_application_code_logs_through_module_loggers_and_log_event():
    """One way to write a line: a module's ``logging.getLogger(__name__)``, and values through log_event (so they
    are censored and quoted); no print(), no logger named by hand, no %-formatted values in a plain call."""
    import ast

    offences = []
    levels = {"debug", "info", "warning", "error", "exception", "critical", "log"}
    for path in sorted(p for name in ("portal", "inventory", "approvals") for p in (ROOT / name).rglob("*.py")):
        if "migrations" in path.parts or "management" in path.parts or path.name == "logs.py":
            continue  # commands write to their own stdout; portal/logs.py is log_event itself
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            func = node.func
            if isinstance(func, ast.Name) and func.id == "print":
                offences.append(f"{where} print()")
            named_by_module = (
                len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__"
            )
            # Another library's logger may be looked up to configure it (portal.unavailable filters Django's
            # per-request error line during an outage); Registrar's own lines still go through module loggers.
            configures_django = (
                len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "django.request"
            )
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "getLogger"
                and not (named_by_module or configures_django)
            ):
                offences.append(f"{where} getLogger(...) not named by __name__")
            receiver = func.value if isinstance(func, ast.Attribute) else None
            is_logger = (isinstance(receiver, ast.Name) and receiver.id in {"logger", "log"}) or (
                isinstance(receiver, ast.Call) and getattr(receiver.func, "attr", "") == "getLogger"
            )
            if is_logger and func.attr in levels and len(node.args) > (2 if func.attr == "log" else 1):
                offences.append(f"{where} values formatted into a plain log call: use portal.logs.log_event")
    assert offences == []
