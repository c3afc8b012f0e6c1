"""portal/broker.py: a channel whose broker connection was torn down reports a connection error, which Celery
ignores and recovers from, not the AttributeError that ended the worker (issue 23; celery/kombu#582). The
Redis outage itself is tests/faults/test_broker.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from kombu import Connection

from portal.broker import Channel, Transport


def test_a_detached_channel_raises_a_connection_error_that_the_transport_declares():
    channel = Channel.__new__(Channel)  # no Redis: only _connparams is under test
    channel.connection = SimpleNamespace(client=None)  # what Connection._do_close_transport leaves behind
    with pytest.raises(redis.exceptions.ConnectionError, match="already closed") as caught:
        channel._connparams()
    assert isinstance(caught.value, Transport.connection_errors)
    assert not isinstance(caught.value, AttributeError)


def test_an_attached_channel_gets_the_connection_parameters():
    connection = Connection("redis://127.0.0.1:6390/3", transport="portal.broker:Transport")
    channel = Channel.__new__(Channel)
    channel.connection = SimpleNamespace(client=connection)
    params = channel._connparams()
    assert (params["host"], params["port"], params["db"]) == ("127.0.0.1", 6390, 3)


def test_kombu_selects_the_guarded_transport_for_a_redis_url():
    connection = Connection("redis://127.0.0.1:6390/0", transport="portal.broker:Transport")
    assert connection.transport_cls == "portal.broker:Transport"
    assert type(connection.transport) is Transport
    assert connection.transport.Channel is Channel


@pytest.mark.parametrize(
    ("redis_url", "expected"),
    [("redis://127.0.0.1:6390/0", "portal.broker:Transport"), ("", "portal.broker:FilesystemTransport")],
)
def test_the_celery_app_uses_the_guarded_transport_for_either_broker(redis_url, expected, tmp_path):
    from tests.portal.test_settings import _import_settings

    snippet = (
        "import django; django.setup(); from portal.celery import app; print(app.connection_for_read().transport_cls)"
    )
    env = {"DEBUG": "true", "REGISTRAR_EMBEDDED": "1", "REGISTRAR_DATA_DIR": str(tmp_path), "REDIS_URL": redis_url}
    result = _import_settings(env, snippet)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
