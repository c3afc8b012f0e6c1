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
from portal.logs import JsonFormatter, KeyValueFormatter, bind_task, logging_config, unbind_task
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
