"""History event ids: a counter behind a per-process random prefix, UUID-shaped, redrawn on fork."""

from __future__ import annotations

import os
import uuid

from spidi_server.stores import events


def test_event_ids_are_distinct_version_4_uuids():
    ids = [events.new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1]):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert uuid.UUID(events._event("x")["id"]).version == 4


def test_a_forked_child_draws_its_own_prefix():
    parent = events.new_event_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first id and leave without pytest's teardown
        os.write(write, events.new_event_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert uuid.UUID(child).version == 4
    assert child[:24] != parent[:24]  # another prefix: the child does not count on from the parent
