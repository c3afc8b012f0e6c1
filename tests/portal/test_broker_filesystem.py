"""The embedded broker (``make run``): a message file is never visible to a worker before it is whole."""

from __future__ import annotations

import os
import threading
from queue import Empty

import pytest
from kombu import Connection

from portal import broker


@pytest.fixture
def channel(tmp_path):
    for sub in ("out", "processed", "control"):
        (tmp_path / sub).mkdir()
    options = {
        "data_folder_in": str(tmp_path / "out"),
        "data_folder_out": str(tmp_path / "out"),
        "data_folder_processed": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
    }
    with Connection(transport=broker.FilesystemTransport, transport_options=options) as connection:
        yield connection.channel()


def test_a_message_being_written_is_invisible_to_the_reader_until_it_is_renamed_whole(channel, monkeypatch):
    payload = {"body": "x" * 50_000, "headers": {"task": "portal.tasks.heartbeat"}}
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        # the moment kombu's own _put was exposed: the file exists, the reader polls
        with pytest.raises(Empty):
            channel._get("celery")
        assert os.path.basename(src).startswith(".partial-")
        assert os.path.getsize(src) > 50_000  # complete before it gets its queue name
        seen.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(broker.os, "replace", replace)
    channel._put("celery", payload)

    assert len(seen) == 1 and seen[0].endswith(".celery.msg")
    assert channel._get("celery") == payload
    assert os.listdir(channel.data_folder_out) == []  # no partial file left behind


def test_a_failed_write_leaves_no_partial_file_and_says_which_message(channel, monkeypatch):
    def replace(src, dst):
        raise PermissionError(13, "read-only folder")

    monkeypatch.setattr(broker.os, "replace", replace)
    with pytest.raises(Exception, match=r"Cannot add file .*\.celery\.msg"):
        channel._put("celery", {"body": "y"})
    assert os.listdir(channel.data_folder_out) == []


def test_a_reader_polling_while_messages_are_written_gets_every_message_whole(channel):
    count, received, errors = 300, [], []
    done = threading.Event()

    def consume():
        try:
            while len(received) < count:
                try:
                    received.append(channel._get("celery")["n"])
                except Empty:
                    if done.is_set() and len(received) < count and not os.listdir(channel.data_folder_out):
                        return
        except Exception as exc:  # a torn read: what the worker died of
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    for n in range(count):
        channel._put("celery", {"n": n, "body": "z" * 2_000})
    done.set()
    reader.join(timeout=60)

    assert errors == []
    assert sorted(received) == list(range(count))
