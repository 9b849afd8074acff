"""The sans-I/O STOMP connection, without any socket."""

from __future__ import annotations

import orjson
import pytest

from spidi_core import FrameParserPy, serialize_frame
from spidi_server.auth import TokenVerifier
from spidi_server.errors import BadJsonError, BadRequestError, ProtocolError
from spidi_server.protocol import destinations as dest
from spidi_server.protocol import events as ev
from spidi_server.protocol import payloads, stomp
from spidi_server.settings import Settings

from .conftest import TEST_SECRET, token_for

SETTINGS = Settings(jwt_secret=TEST_SECRET).validate()


def make(**kwargs) -> stomp.StompConnection:
    return stomp.StompConnection(TokenVerifier(SETTINGS), "c-1", **kwargs)


def out_frames(conn) -> list:
    parser = FrameParserPy()
    frames = []
    for chunk in conn.data_to_send():
        frames.extend(parser.feed(chunk))
    return frames


def connect(conn, role="spidi:user", **headers) -> list:
    h = {"accept-version": "1.2", "host": "x", "Authorization": "Bearer " + token_for(SETTINGS, "u", role)}
    h.update(headers)
    return conn.receive_data(serialize_frame("CONNECT", h))


def test_connect_yields_connected_event_and_frame():
    conn = make()
    (event,) = connect(conn)
    assert type(event) is ev.Connected and event.claims.user_id == "u"
    (frame,) = out_frames(conn)
    assert frame.command == "CONNECTED" and frame.headers["session"] == "c-1"
    assert conn.state == stomp.STATE_OPEN


@pytest.mark.parametrize(
    "client, server, expected",
    [
        (None, 10000, (0, 0)),
        ("0,0", 10000, (0, 0)),
        ("5000,20000", 10000, (20000, 10000)),
        ("15000,0", 10000, (0, 15000)),
        ("100,100", 0, (0, 0)),
    ],
)
def test_heartbeat_negotiation(client, server, expected):
    assert stomp.negotiate_heartbeat(client, server, server) == expected


@pytest.mark.parametrize("bad", ["x", "1,2,3", "-1,5"])
def test_bad_heartbeat_header(bad):
    with pytest.raises(ProtocolError):
        stomp.negotiate_heartbeat(bad, 1, 1)


def test_heartbeat_event_is_a_typed_record():
    conn = make()
    connect(conn)
    conn.data_to_send()
    body = orjson.dumps({"sessionId": "s1", "latencyMs": 12.5})
    events = conn.receive_data(
        serialize_frame("SEND", {"destination": "/app/heartbeat", "receipt": "r"}, body)
    )
    assert events == [ev.Heartbeat("s1", 12.5, "r")] and type(events[0]) is ev.Heartbeat


def test_several_frames_in_one_message_and_split_frames():
    conn = make()
    connect(conn)
    hb = serialize_frame("SEND", {"destination": "/app/heartbeat"}, b'{"sessionId":"a","latencyMs":1}')
    data = hb + b"\n" + hb
    assert len(conn.receive_data(data[:10])) == 0
    events = conn.receive_data(data[10:])
    assert [type(e) for e in events] == [ev.Heartbeat, ev.Heartbeat]
    assert conn.heartbeats_received == 1


def test_app_error_goes_to_error_queue_and_connection_stays():
    conn = make()
    connect(conn)
    conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "e", "destination": dest.USER_ERRORS}))
    conn.data_to_send()
    events = conn.receive_data(serialize_frame("SEND", {"destination": "/app/leave", "receipt": "r9"}, b"{}"))
    assert events == []
    error, receipt = out_frames(conn)
    assert error.command == "MESSAGE" and error.headers["subscription"] == "e"
    payload = orjson.loads(error.body)
    assert payload["code"] == "BAD_REQUEST" and payload["codeNumber"] == 1001 and payload["ref"] == "r9"
    assert receipt.command == "RECEIPT" and receipt.headers["receipt-id"] == "r9"
    assert conn.state == stomp.STATE_OPEN


def test_subscription_limit_and_duplicate_id():
    conn = make(max_subscriptions=2)
    connect(conn)
    conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "e", "destination": dest.USER_ERRORS}))
    conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "e", "destination": dest.USER_SESSION}))
    conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "s", "destination": dest.USER_SESSION}))
    conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "t", "destination": dest.TOPIC_ROOMS}))
    codes = [orjson.loads(f.body)["code"] for f in out_frames(conn) if f.command == "MESSAGE"]
    assert codes == ["BAD_REQUEST", "TOO_MANY_SUBSCRIPTIONS"]
    assert set(conn.subscriptions) == {"e", "s"}


def test_unsubscribe_forgets_destination():
    conn = make()
    connect(conn)
    conn.receive_data(serialize_frame("SUBSCRIBE", {"id": "s", "destination": dest.USER_SESSION}))
    events = conn.receive_data(serialize_frame("UNSUBSCRIBE", {"id": "s"}))
    assert type(events[0]) is ev.Unsubscribe and events[0].destination.kind == dest.KIND_USER_SESSION
    assert not conn.send_json(dest.USER_SESSION, {"a": 1})


@pytest.mark.parametrize(
    "raw, kind, code",
    [
        ("/topic/rooms", dest.KIND_ROOMS, None),
        ("/topic/rooms/r-1/metrics", dest.KIND_ROOM_METRICS, "r-1"),
        ("/topic/rooms/r-1/roster", dest.KIND_ROOM_ROSTER, "r-1"),
        ("/user/queue/session", dest.KIND_USER_SESSION, None),
    ],
)
def test_destinations(raw, kind, code):
    parsed = dest.parse_subscription(raw)
    assert (parsed.kind, parsed.room_code) == (kind, code)


@pytest.mark.parametrize(
    "raw", ["/topic/rooms/a/b/metrics", "/topic/rooms//metrics", "/queue/x", "/topic/rooms/a/x"]
)
def test_unknown_destinations(raw):
    from spidi_server.errors import UnknownDestinationError

    with pytest.raises(UnknownDestinationError):
        dest.parse_subscription(raw)


@pytest.mark.parametrize(
    "data, reason, code",
    [
        (b"SEND\ndestination:/app/hello\n\n{}\x00", "before CONNECT", "PROTOCOL_ERROR"),
        (b"CONNECT\naccept-version:2.0\n\n\x00", "no common STOMP version", "PROTOCOL_ERROR"),
        (b"CONNECT\naccept-version:1.2\nAuthorization:Basic abc\n\n\x00", "Bearer", "UNAUTHORIZED"),
        (
            b"CONNECT\naccept-version:1.2\nAuthorization:Bearer not.a.jwt\n\n\x00",
            "invalid token",
            "UNAUTHORIZED",
        ),
        (b"BOGUS\n\n\x00", "before CONNECT", "PROTOCOL_ERROR"),
        (b"CONNECT\naccept-version:1.2\n\n\xff\x00", "not valid UTF-8", "INVALID_UTF8"),
    ],
)
def test_fatal_errors_queue_error_frame_and_close(data, reason, code):
    conn = make()
    assert conn.receive_data(data) == []
    (frame,) = out_frames(conn)
    assert frame.command == "ERROR" and reason in frame.headers["message"]
    assert frame.headers["code"] == code  # what a client decides on, beside the shared close codes
    assert conn.state == stomp.STATE_CLOSED and conn.close_reason is not None
    assert conn.receive_data(b"anything") == []


def test_unknown_command_after_connect_is_fatal():
    conn = make()
    connect(conn)
    conn.data_to_send()
    conn.receive_data(b"BOGUS\n\n\x00")
    (frame,) = out_frames(conn)
    assert frame.command == "ERROR" and "unknown command" in frame.headers["message"]


def test_frame_error_maps_to_error_and_1009_for_size():
    conn = make(max_frame_size=256)
    connect(conn)
    conn.data_to_send()
    conn.receive_data(b"SEND\ndestination:/app/hello\n\n" + b"x" * 300 + b"\x00")
    (frame,) = out_frames(conn)
    assert frame.command == "ERROR" and "frame-too-large" in frame.headers["message"]
    assert conn.close_reason[0] == 1009 and frame.headers["code"] == "FRAME_TOO_LARGE"


# -- /app/* bodies (protocol.payloads) ---------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"sessionId":"s1","latencyMs":12.5}', ev.Heartbeat("s1", 12.5, "r")),
        (b'{"sessionId":"s1"}', ev.Heartbeat("s1", None, "r")),  # no latency sample, not a 0 ms one
        (b'{"sessionId":"s1","latencyMs":null}', ev.Heartbeat("s1", None, "r")),
        (b'{"sessionId":"s1","latencyMs":0,"extra":{"a":[1]}}', ev.Heartbeat("s1", 0, "r")),
    ],
)
def test_good_heartbeat_bodies(body, expected):
    assert payloads.heartbeat(body, "r") == expected


@pytest.mark.parametrize(
    "body, error, message",
    [
        (b"{nope", BadJsonError, "body is not valid JSON: "),
        (b"[1]", BadJsonError, "body must be a JSON object"),
        (b"{}", BadRequestError, "heartbeat needs sessionId (string)"),
        (b'{"sessionId":""}', BadRequestError, "heartbeat needs sessionId (string)"),
        (b'{"sessionId":7}', BadRequestError, "heartbeat needs sessionId (string)"),
        (
            b'{"sessionId":"s","latencyMs":"5"}',
            BadRequestError,
            "heartbeat latencyMs must be a number from 0 to 3600000",
        ),
        (
            b'{"sessionId":"s","latencyMs":true}',
            BadRequestError,
            "heartbeat latencyMs must be a number from 0 to 3600000",
        ),
        (
            b'{"sessionId":"s","latencyMs":-1}',
            BadRequestError,
            "heartbeat latencyMs must be a number from 0 to 3600000",
        ),
        (
            b'{"sessionId":"s","latencyMs":3600000}',
            BadRequestError,
            "heartbeat latencyMs must be a number from 0 to 3600000",
        ),
    ],
)
def test_bad_heartbeat_bodies(body, error, message):
    with pytest.raises(error) as raised:
        payloads.heartbeat(body, None)
    assert type(raised.value) is error and str(raised.value).startswith(message)


def test_leave_bodies():
    assert payloads.leave(b'{"sessionId":"s1"}', None) == ev.Leave("s1", None)
    with pytest.raises(BadRequestError, match=r"^leave needs sessionId \(string\)$"):
        payloads.leave(b'{"sessionId":null}', None)
    deep = b'{"sessionId":"s","x":' + b"[" * 20 + b"]" * 20 + b"}"
    with pytest.raises(BadJsonError, match="^JSON nested too deeply$"):
        payloads.leave(deep, None)


def test_json_depth_at_and_past_the_limit():
    limit = payloads.JSON_MAX_DEPTH
    for shape, depth in (
        ({}, 1),
        ({"a": 1, "b": "x"}, 1),
        ({"a": [1, {"b": []}], "c": 2}, 4),
        ([[], [[]]], 3),
    ):
        assert payloads._depth(shape) == depth
    at_limit = b'{"x":' + b"[" * (limit - 1) + b"]" * (limit - 1) + b', "y": 1}'
    assert payloads.json_object(at_limit)["y"] == 1
    past = b'{"y": 1, "x":' + b"[" * limit + b"]" * limit + b"}"  # the deep member after a scalar one
    with pytest.raises(BadJsonError, match="^JSON nested too deeply$"):
        payloads.json_object(past)


def test_a_good_hello():
    hello = payloads.hello(
        {"roomCode": "lobby-1", "clientId": "tablet", "appVersion": "2.0", "device": "iPad", "extra": 1}
    )
    assert hello == payloads.HelloPayload("lobby-1", "tablet", "2.0", "iPad", None, None)
    resumed = payloads.hello(
        {"roomCode": "a.b:c_d", "clientId": "t", "appVersion": "1", "resumeSessionId": "s"}
    )
    assert resumed.resume_session_id == "s" and resumed.room_code == "a.b:c_d"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({}, "roomCode must be 1-64 characters of letters, digits, _ . : -"),
        ({"roomCode": "a b"}, "roomCode must be 1-64 characters of letters, digits, _ . : -"),
        ({"roomCode": "x" * 65}, "roomCode must be 1-64 characters of letters, digits, _ . : -"),
        (
            {"roomCode": "r", "appVersion": "1"},
            "clientId must be a non-empty string of at most 128 characters",
        ),
        (
            {"roomCode": "r", "clientId": "c" * 129, "appVersion": "1"},
            "clientId must be a non-empty string of at most 128 characters",
        ),
        (
            {"roomCode": "r", "clientId": "c"},
            "appVersion must be a non-empty string of at most 64 characters",
        ),
        (
            {"roomCode": "r", "clientId": "c", "appVersion": 2},
            "appVersion must be a non-empty string of at most 64 characters",
        ),
        (
            {"roomCode": "r", "clientId": "c", "appVersion": "1", "device": ""},
            "device must be a non-empty string of at most 128 characters",
        ),
        (
            {"roomCode": "r", "clientId": "c", "appVersion": "1", "os": ["x"]},
            "os must be a non-empty string of at most 128 characters",
        ),
        (
            {"roomCode": "r", "clientId": "c", "appVersion": "1", "resumeSessionId": 1},
            "resumeSessionId must be a string",
        ),
    ],
)
def test_bad_hellos(payload, message):
    with pytest.raises(BadRequestError) as raised:
        payloads.hello(payload)
    assert str(raised.value) == message


def test_hello_body_is_parsed_and_checked_later():
    conn = make()
    connect(conn)
    (event,) = conn.receive_data(serialize_frame("SEND", {"destination": "/app/hello"}, b'{"roomCode":1}'))
    assert event == ev.Hello({"roomCode": 1}, None)  # presence checks it, after the role check
