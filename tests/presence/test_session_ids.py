"""Session ids (presence/session_ids.py): version-4 UUIDs as ``uuid.uuid4`` writes them, from the
kernel's random bytes drawn in batches, never repeated, and not shared with a forked child."""

from __future__ import annotations

import os
import uuid

from spidi_server.presence.session_ids import SessionIds, format_uuid4, new_session_id


def test_format_equals_uuid_with_version_4_for_every_digit_value():
    samples = [os.urandom(16).hex() for _ in range(2000)]
    # Every value of the two digits the version and variant rewrite, with the rest random.
    for digit in "0123456789abcdef":
        h = os.urandom(16).hex()
        samples.append(h[:12] + digit + h[13:16] + digit + h[17:])
    samples += ["0" * 32, "f" * 32]
    for h in samples:
        assert format_uuid4(h) == str(uuid.UUID(hex=h, version=4))


def test_ids_are_version_4_uuids_and_distinct_across_draws():
    ids = SessionIds()
    seen = [ids() for _ in range(1000)]  # several batches of 256
    assert len(set(seen)) == len(seen)
    for text in seen:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_hand_out_the_parents_next_ids():
    new_session_id()  # the parent holds an undrawn batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, ",".join(new_session_id() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [new_session_id() for _ in range(4)]
    assert len(child) == 4
    assert not set(child) & set(parent)
