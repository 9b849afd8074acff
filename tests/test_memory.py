"""What an idle connection keeps: no per-connection copy of what can be shared, no leftover of
the last frame (issue #15: at most 4 KB of RSS per idle connection). The figure itself is
measured by ``benchmarks/conn_memory.py`` and ``benchmarks/heartbeat_load.py``; these tests
check the structure that keeps it low, with the behaviour that goes with it."""

from __future__ import annotations

import gc

import orjson
import pytest

from spidi_core import serialize_frame
from spidi_core.frames_py import FrameParserPy
from spidi_server.auth import TokenVerifier, mint_token
from spidi_server.protocol import destinations as dest
from spidi_server.protocol import stomp
from spidi_server.settings import Settings

from .conftest import TEST_SECRET
from .test_codec import IMPLS

SETTINGS = Settings(jwt_secret=TEST_SECRET).validate()
HELLO = serialize_frame(
    "SEND", {"destination": "/app/hello", "content-type": "application/json"}, b'{"roomCode":"r"}'
)


def held_dicts(parser) -> list[dict]:
    """The dicts the parser object references (a cdef class reports its object fields too)."""
    return [r for r in gc.get_referents(parser) if type(r) is dict]


@pytest.mark.parametrize("impl", IMPLS)
def test_idle_parser_keeps_no_headers(impl):
    parser = impl.Parser()
    assert held_dicts(parser) == []
    # Mid-frame the headers dict is held; once the frame is out, the frame alone owns it.
    assert parser.feed(HELLO[:20]) == []
    assert len(held_dicts(parser)) == 1 and parser.buffered == 20
    (frame,) = parser.feed(HELLO[20:])
    assert frame.headers["destination"] == "/app/hello"
    assert held_dicts(parser) == [] and parser.buffered == 0
    parser.feed(HELLO[:30])
    assert len(held_dicts(parser)) == 1 and parser.buffered == 30
    (again,) = parser.feed(HELLO[30:] + b"\n")
    assert again == frame and held_dicts(parser) == [] and parser.buffered == 0


def make() -> stomp.StompConnection:
    conn = stomp.StompConnection(TokenVerifier(SETTINGS), "c-1")
    token = mint_token(SETTINGS, "u", ["spidi:user"])
    conn.receive_data(
        serialize_frame("CONNECT", {"accept-version": "1.2", "Authorization": "Bearer " + token})
    )
    conn.data_to_send()
    return conn


def test_idle_outbox_is_the_shared_empty_tuple():
    conn = make()
    assert conn.outbox == () and conn.data_to_send() == ()
    conn.send_heartbeat()
    conn.send_heartbeat()
    assert conn.data_to_send() == [b"\n", b"\n"]
    assert conn.outbox is stomp.StompConnection(TokenVerifier(SETTINGS), "c-2").outbox


def test_private_queues_share_one_destination_and_messages_follow_subscription_order():
    a, b = make(), make()
    for conn in (a, b):
        conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "e2", "destination": dest.USER_ERRORS}))
        conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "s", "destination": dest.USER_SESSION}))
        conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "e1", "destination": dest.USER_ERRORS}))
    assert a.subscriptions["s"] is b.subscriptions["s"]
    assert a.subscriptions["e1"] is b.subscriptions["e2"]
    # No index by destination: a message to one goes to its ids, in the order they subscribed.
    assert a.send_json(dest.USER_ERRORS, {"x": 1})
    parser = FrameParserPy()
    frames = [f for chunk in a.data_to_send() for f in parser.feed(chunk)]
    assert [f.headers["subscription"] for f in frames] == ["e2", "e1"]
    assert all(orjson.loads(f.body) == {"x": 1} for f in frames)
    a.remove_subscription("e2")
    assert a.send_json(dest.USER_ERRORS, {"x": 2})
    assert [f.headers["subscription"] for c in a.data_to_send() for f in parser.feed(c)] == ["e1"]
    a.remove_subscription("e1")
    assert not a.send_json(dest.USER_ERRORS, {"x": 3}) and a.outbox == ()


def test_claims_share_their_roles_and_tenant():
    verifier = TokenVerifier(SETTINGS)
    one = verifier.verify(mint_token(SETTINGS, "u1", ["spidi:user"], "acme"))
    two = verifier.verify(mint_token(SETTINGS, "u2", ["spidi:user"], "acme"))
    other = verifier.verify(mint_token(SETTINGS, "u3", ["spidi:user", "spidi:monitor"], "acme"))
    assert one.user_id == "u1" and two.user_id == "u2"
    assert one.roles is two.roles and one.roles == {"spidi:user"}
    assert other.roles == {"spidi:user", "spidi:monitor"} and other.roles is not one.roles
    assert one.tenant is two.tenant is other.tenant
