"""kombu's filesystem transport with atomic message files: the broker of ``make run`` (no Redis needed).

kombu 5.7's filesystem ``Channel._put`` creates ``<time>_<uuid>.<queue>.msg`` and then writes the payload into it;
``_get`` lists the folder and moves and reads any ``.msg`` file it finds. The lock ``_put`` takes is advisory and
``_get`` never asks for it, so a worker polling between the create and the write reads an empty file, fails to
decode it and stops with "Unrecoverable error: JSONDecodeError('Expecting value: line 1 column 1 (char 0)')"
(the demo's worker died that way under load; the same decode failure on an empty message is celery/kombu#1551).

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

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
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


class Transport(filesystem.Transport):
    Channel = Channel
