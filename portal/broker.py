"""kombu's Redis transport with one guard, so a Redis outage never ends a Celery worker (issue 23).

The crash it removes (kombu 5.7.0, celery 5.7.0, redis-py 8.1.0; no released kombu fixes it): when Redis dies
under a consuming worker, Celery's ``Consumer.on_connection_error_after_connected`` first calls
``connection.collect()``, which closes the channels and then detaches the transport
(``Connection._do_close_transport`` sets ``transport.client = None``), then ``connection.close()``, which
closes the default channel again. If the first close was cut short by the dead socket (``_brpop_read`` raised
``ConnectionError`` before ``virtual.Channel.close`` ran), the second close restores the unacknowledged
messages, which needs a Redis client, which needs ``Channel._connparams``, which reads
``self.connection.client.hostname`` on the detached transport: ``AttributeError: 'NoneType' object has no
attribute 'hostname'``. Celery ignores only connection and channel errors there, so the AttributeError is an
"Unrecoverable error" and the worker exits. The same ``_connparams`` line on a closed channel is
celery/kombu#582 ("Error on restarting Gossip", closed without a fix in ``_connparams``); the restore-on-close
path is the one of celery/kombu#970.

The guard: a channel whose transport was detached raises ``redis.exceptions.ConnectionError`` (the truth: it
has no connection any more), which is one of the transport's ``connection_errors``, so Celery ignores it,
reconnects and consumes again. The unacknowledged messages it could not restore stay in Redis's ``unacked``
hash and come back after ``visibility_timeout`` (or were lost with a Redis that was killed; Registrar's outbox
sweep, ``requeue_outbox``, re-sends what the database says is undelivered).

Selected by ``CELERY_BROKER_TRANSPORT`` (portal/settings.py) for ``redis://`` and ``rediss://`` brokers.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel was already closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
