"""kombu's transports with the guards kombu 5.7 lacks: Redis (production) and the filesystem (``make run``).

**Redis** (:class:`Transport`): one guard, so a Redis outage never ends a Celery worker (issue 23).

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

Both are selected by ``CELERY_BROKER_TRANSPORT`` (portal/settings.py): :class:`Transport` for ``redis://`` and
``rediss://`` brokers, :class:`FilesystemTransport` for ``filesystem://``.

**Filesystem** (:class:`FilesystemTransport`, the embedded broker of ``make run``, no Redis needed): kombu 5.7's
filesystem ``Channel._put`` creates ``<time>_<uuid>.<queue>.msg`` and then writes the payload into it; ``_get``
lists the folder and moves and reads any ``.msg`` file it finds. The lock ``_put`` takes is advisory and ``_get``
never asks for it, so a worker polling between the create and the write reads an empty file, fails to decode it and
stops with "Unrecoverable error: JSONDecodeError('Expecting value: line 1 column 1 (char 0)')" (the demo's worker
died that way under load; the same decode failure on an empty message is celery/kombu#1551).

Here a message is written under a name ``_get`` never picks (a leading dot, no ``.<queue>.msg`` ending) and
renamed into place once complete: ``os.replace`` within one folder is atomic, so a reader sees the whole message
or nothing. Everything else is kombu's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from time import monotonic

import redis
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel was already closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


class FilesystemChannel(filesystem.Channel):
    # kombu names the argument `payload` here and `message` in the abstract channel; callers pass it by position
    def _put(self, queue, payload, **kwargs):  # type: ignore[override]
        """Put ``payload`` onto ``queue``: written whole under a hidden name, then renamed into the queue."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        try:
            fd, partial = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(str_to_bytes(dumps(payload)))
                os.replace(partial, os.path.join(folder, name))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc


class FilesystemTransport(filesystem.Transport):
    Channel = FilesystemChannel
