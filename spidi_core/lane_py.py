"""The heartbeat fast lane, pure-Python reference: ``_lane_c.pyx`` must behave identically.

The lane holds every per-session heartbeat figure of a node, whichever path a heartbeat took:

* the **full path** (the STOMP parser, ``protocol.payloads.heartbeat``, presence) records a beat
  with ``beat()`` and charges the connection's token bucket with ``charge()``;
* the **fast lane** is ``offer()``: a WebSocket text message that is exactly one ordinary
  heartbeat SEND is recognised here, recorded, and answered with its RECEIPT bytes, without a
  Python object per heartbeat in the C build. Anything unusual returns None and takes the full
  path, which then answers exactly as it always did (errors included): ``offer`` only *accepts*
  frames the full path would accept, and records them exactly as it would.

Python drains what accumulated in batches: ``take_beats`` (per room, the arguments of the ZADD XX
and HSET that write them, already in RESP: ``pack_beats``), ``take_ttl_due``, ``take_updated``
(watched rooms), ``take_room_sample``, ``take_room_groups`` and ``take_counters``.

Each session may belong to a group in each of ``GROUP_DIMENSIONS`` dimensions (presence uses
them for the client's app version and OS: ``set_groups``); a room keeps a latency histogram per
(dimension, group slot) besides its own, added to on each heartbeat that carries a latency, and
``take_room_groups`` drains them. The slots are small ints chosen by the caller (presence bounds
them); what they stand for is not the lane's business.

What ``offer`` accepts (anything else -> None):

* the connection is known, ``set_ready(conn, True)`` and its token bucket has a token left;
* the message is one STOMP frame ``SEND\\n``, LF line ends, headers only among ``destination``
  (``/app/heartbeat``, required), ``receipt`` (1-64 of ``[A-Za-z0-9._-]``), ``content-type``
  (``application/json`` or ``application/json;charset=utf-8``) and ``content-length`` (digits,
  no leading zero, equal to the body's length), none repeated, then the blank line, the body and
  the NUL as the message's last byte;
* the body is a JSON object with exactly the keys ``sessionId`` (a non-empty string of printable
  ASCII without ``"`` or ``\\``) and ``latencyMs`` (``0|[1-9][0-9]{0,6}`` with an optional
  fraction of 1-17 digits, below ``MAX_LATENCY_MS``), in either order, spaces allowed between
  tokens; the session is known and attached to this connection.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import NamedTuple

__all__ = [
    "GROUP_DIMENSIONS",
    "HeartbeatLanePy",
    "MAX_GROUP_SLOTS",
    "MAX_LANE_MESSAGE",
    "MAX_LATENCY_MS",
    "MAX_RECEIPT",
    "PackedBeats",
    "pack_beats",
]

MAX_LANE_MESSAGE = 1024  # longer messages take the full path
MAX_RECEIPT = 64  # longest receipt id the lane answers
MAX_LATENCY_MS = 3_600_000  # protocol.payloads.MAX_LATENCY_MS (spidi_core cannot import it)
_MAX_FRACTION = 17
GROUP_DIMENSIONS = 2  # set_groups' dimensions (presence: app version, OS)
MAX_GROUP_SLOTS = 256  # group slots per dimension: 0 .. MAX_GROUP_SLOTS - 1

_DESTINATION = b"/app/heartbeat"
_CONTENT_TYPES = (b"application/json", b"application/json;charset=utf-8")
_RECEIPT_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_DIGITS = frozenset(b"0123456789")
_SPACE = 0x20
_QUOTE = 0x22
_BACKSLASH = 0x5C


class PackedBeats(NamedTuple):
    """Heartbeats of one room as Redis receives them: the arguments of ``ZADD <online> XX`` and of
    ``HSET <latency>``, each argument a RESP bulk string (``$<length>\r\n<bytes>\r\n``), so the
    flusher only puts each command's head (``*<n>``, the name and the key) in front of them."""

    count: int  # heartbeats (score/member pairs in ``members``)
    members: bytes  # "<ms> <sessionId>" pairs: the ZADD XX of the online zset
    latencies_count: int  # the heartbeats that carried a latency (field/value pairs in ``latencies``)
    latencies: bytes  # "<sessionId> <latencyMs>" pairs: the HSET of the latency hash


def _bulk(value) -> bytes:
    """``value`` as a RESP bulk string: bytes as they are, str as UTF-8, an int or a float as
    Python writes it (``str``: a float's repr)."""
    data = value if type(value) is bytes else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack_beats(beats) -> PackedBeats:
    """``(session_id, ms, latency or None)`` items in order -> ``PackedBeats`` (a beat without a
    latency writes none: Redis keeps the session's last reported one). Repeated sessions stay
    repeated: ZADD and HSET apply their pairs in order, so the last one wins."""
    members: list[bytes] = []
    latencies: list[bytes] = []
    for session_id, ms, latency in beats:
        sid = _bulk(session_id)
        members.append(_bulk(ms))
        members.append(sid)
        if latency is not None:
            latencies.append(sid)
            latencies.append(_bulk(latency))
    return PackedBeats(len(members) // 2, b"".join(members), len(latencies) // 2, b"".join(latencies))


class _Conn:
    __slots__ = ("ready", "rate", "burst", "tokens", "last_received")

    def __init__(self, rate: float, burst: float, now: float):
        self.ready = False
        self.rate = float(rate)
        self.burst = self.tokens = float(burst)
        self.last_received = float(now)


class _Session:
    __slots__ = (
        "conn_key",
        "room_key",
        "last_ms",
        "last_mono",
        "latency",
        "heartbeats",
        "latency_sum",
        "latency_min",
        "latency_max",
        "latency_count",
        "ttl_refreshed",
        "groups",
        "grade",
    )

    def __init__(self, conn_key: int, room_key: int, now_ms: int, now: float):
        self.conn_key = conn_key  # -1: detached (grace period)
        self.room_key = room_key
        self.last_ms = now_ms
        self.last_mono = float(now)
        self.latency = None
        self.heartbeats = 0
        self.latency_sum = 0.0
        self.latency_min = None
        self.latency_max = None
        self.latency_count = 0  # heartbeats that carried a latency (not all need to)
        self.ttl_refreshed = now_ms
        self.groups = (-1,) * GROUP_DIMENSIONS  # a slot per dimension; -1: in no group
        self.grade = 0  # its liveness grade as ``grade`` last gave it (0 live, 1 late, 2 at risk)


class _Room:
    __slots__ = ("watched", "updated", "latency_sum", "count", "hist", "groups")

    def __init__(self, nbuckets: int):
        self.watched = False
        self.updated: dict[str, None] = {}
        self.latency_sum = 0.0
        self.count = 0
        self.hist = [0] * (nbuckets + 1)
        # (dimension, slot) -> histogram since the last take_room_groups (only groups with counts)
        self.groups: dict[tuple[int, int], list[int]] = {}


def _number(body: bytes, i: int, n: int):
    """Scan ``0|[1-9][0-9]{0,6}`` plus an optional ``.[0-9]{1,17}`` at ``i``: (value, end) or None."""
    start = i
    if i >= n or body[i] not in _DIGITS:
        return None
    if body[i] == 0x30:
        i += 1
    else:
        while i < n and body[i] in _DIGITS and i - start < 7:
            i += 1
    if i < n and body[i] in _DIGITS:
        return None  # a leading zero, or too many digits
    if i < n and body[i] == 0x2E:  # "."
        i += 1
        frac = i
        while i < n and body[i] in _DIGITS:
            i += 1
        if not 1 <= i - frac <= _MAX_FRACTION:
            return None
        value = float(body[start:i])
    else:
        value = int(body[start:i])
    if value >= MAX_LATENCY_MS:
        return None
    return value, i


def _string(body: bytes, i: int, n: int):
    """Scan a JSON string of printable ASCII without escapes at ``i``: (bytes, end) or None."""
    if i >= n or body[i] != _QUOTE:
        return None
    i += 1
    start = i
    while i < n:
        c = body[i]
        if c == _QUOTE:
            return body[start:i], i + 1
        if c < 0x20 or c > 0x7E or c == _BACKSLASH:
            return None
        i += 1
    return None


def _skip(body: bytes, i: int, n: int) -> int:
    while i < n and body[i] == _SPACE:
        i += 1
    return i


def scan_body(body: bytes):
    """The strict heartbeat JSON: (session id bytes, latency) or None."""
    n = len(body)
    i = _skip(body, 0, n)
    if i >= n or body[i] != 0x7B:  # "{"
        return None
    i += 1
    sid = latency = None
    for k in range(2):
        i = _skip(body, i, n)
        got = _string(body, i, n)
        if got is None:
            return None
        key, i = got
        i = _skip(body, i, n)
        if i >= n or body[i] != 0x3A:  # ":"
            return None
        i = _skip(body, i + 1, n)
        if key == b"sessionId" and sid is None:
            got = _string(body, i, n)
            if got is None or not got[0]:
                return None
            sid, i = got
        elif key == b"latencyMs" and latency is None:
            got = _number(body, i, n)
            if got is None:
                return None
            latency, i = got
        else:
            return None
        i = _skip(body, i, n)
        if i >= n or body[i] != (0x2C if k == 0 else 0x7D):  # "," then "}"
            return None
        i += 1
    if _skip(body, i, n) != n:
        return None
    return sid, latency


def scan_frame(message: bytes, limits: tuple[int, int, int] = (65536, 64, 8192)):
    """The strict heartbeat SEND: (receipt bytes or None, session id bytes, latency) or None.

    ``limits`` are the STOMP parser's (max_frame_size, max_headers, max_header_line): a frame
    that would break one is the full path's to refuse."""
    n = len(message)
    max_frame, max_headers, max_line = limits
    if (
        n > MAX_LANE_MESSAGE
        or n > max_frame
        or max_line < 4
        or not message.startswith(b"SEND\n")
        or message[-1] != 0
    ):
        return None
    pos = 5
    seen = set()
    receipt = None
    length = -1
    while True:
        nl = message.find(b"\n", pos)
        if nl < 0:
            return None
        if nl == pos:
            pos += 1
            break
        line = message[pos:nl]
        if len(line) > max_line or len(seen) >= max_headers:
            return None
        colon = line.find(b":")
        if colon < 0:
            return None
        name = line[:colon]
        value = line[colon + 1 :]
        if name in seen:
            return None
        seen.add(name)
        if name == b"destination":
            if value != _DESTINATION:
                return None
        elif name == b"receipt":
            if not 1 <= len(value) <= MAX_RECEIPT or not _RECEIPT_CHARS.issuperset(value):
                return None
            receipt = value
        elif name == b"content-type":
            if value not in _CONTENT_TYPES:
                return None
        elif name == b"content-length":
            if not 1 <= len(value) <= 4 or not _DIGITS.issuperset(value) or value[0] == 0x30:
                return None
            length = int(value)
        else:
            return None
        pos = nl + 1
    if b"destination" not in seen:
        return None
    body = message[pos : n - 1]
    if length >= 0 and length != len(body):
        return None
    got = scan_body(body)
    if got is None:
        return None
    return receipt, got[0], got[1]


class HeartbeatLanePy:
    """Per-session heartbeat figures and the fast lane (pure-Python reference).

    ``buckets`` are the latency histogram's upper bounds (ms, ascending; a latency goes to the
    first bucket >= it, one overflow bucket after them); ``ttl_refresh_ms`` how often at most a
    session's TTL refresh is due. Keys: ``conn_key`` and ``room_key`` are ints chosen by the
    caller; sessions are keyed by their id (str). ``max_frame_size``, ``max_headers`` and
    ``max_header_line`` are the STOMP parser's limits (settings): the lane leaves a frame that
    breaks one to the full path, which refuses it.
    """

    __slots__ = (
        "_buckets",
        "_ttl_refresh_ms",
        "_limits",
        "_conns",
        "_sessions",
        "_rooms",
        "_beats",
        "_npending",
        "_ttl_due",
        "_heartbeats",
        "_latency_sum",
        "_hist",
        "_handled",
    )

    def __init__(
        self,
        buckets: tuple[float, ...],
        ttl_refresh_ms: int,
        *,
        max_frame_size: int = 65536,
        max_headers: int = 64,
        max_header_line: int = 8192,
    ):
        self._buckets = tuple(float(b) for b in buckets)
        self._ttl_refresh_ms = int(ttl_refresh_ms)
        self._limits = (int(max_frame_size), int(max_headers), int(max_header_line))
        self._conns: dict[int, _Conn] = {}
        self._sessions: dict[str, _Session] = {}
        self._rooms: dict[int, _Room] = {}
        self._beats: dict[int, dict[str, tuple]] = {}  # room_key -> sid -> (ms, latency)
        self._npending = 0
        self._ttl_due: dict[str, None] = {}
        self._heartbeats = 0
        self._latency_sum = 0.0
        self._hist = [0] * (len(self._buckets) + 1)
        self._handled = 0

    # -- connections ---------------------------------------------------------------------------

    def open(self, conn_key: int, rate: float, burst: float, now: float) -> None:
        """A connection: its token bucket (``rate`` frames/s, bursts of ``burst``; rate 0 = no
        limit), not ready for the lane until ``set_ready``."""
        self._conns[int(conn_key)] = _Conn(rate, burst, now)

    def charge(self, conn_key: int, now: float, frames: int) -> bool:
        """The full path received a message of ``frames`` frames (at least 1 token is spent);
        False when the bucket is over its limit. ``last_received`` becomes ``now`` either way."""
        conn = self._conns[conn_key]
        ok = True
        if conn.rate:
            tokens = conn.tokens + (now - conn.last_received) * conn.rate
            if tokens > conn.burst:
                tokens = conn.burst
            tokens -= frames if frames > 1 else 1
            conn.tokens = tokens
            ok = tokens >= 0
        conn.last_received = float(now)
        return ok

    def last_received(self, conn_key: int) -> float:
        """Monotonic seconds of the connection's last message (either path)."""
        return self._conns[conn_key].last_received

    def set_ready(self, conn_key: int, ready: bool) -> None:
        """Whether the lane may take this connection's messages (Python decides)."""
        self._conns[conn_key].ready = bool(ready)

    def close(self, conn_key: int) -> None:
        """Forget a connection (its sessions are detached or removed by the caller)."""
        self._conns.pop(conn_key, None)

    # -- sessions ------------------------------------------------------------------------------

    def add_session(self, session_id: str, conn_key: int, room_key: int, now_ms: int, now: float) -> None:
        """A session joined on ``conn_key`` in ``room_key`` at ``now_ms`` (epoch ms) / ``now``
        (a session already known starts afresh)."""
        if session_id in self._sessions:
            self.remove_session(session_id)
        self._sessions[session_id] = _Session(int(conn_key), int(room_key), int(now_ms), now)
        if room_key not in self._rooms:
            self._rooms[room_key] = _Room(len(self._buckets))

    def set_groups(self, session_id: str, *slots: int) -> None:
        """The session's group slot in each of the ``GROUP_DIMENSIONS`` dimensions (-1: none, else
        0 .. MAX_GROUP_SLOTS - 1; ValueError otherwise): its heartbeats' latencies go to those
        groups' histograms from now on (KeyError for an unknown session)."""
        session = self._sessions[session_id]
        if len(slots) != GROUP_DIMENSIONS:
            raise ValueError(f"set_groups takes {GROUP_DIMENSIONS} slots, got {len(slots)}")
        for slot in slots:
            if not -1 <= slot < MAX_GROUP_SLOTS:
                raise ValueError(f"group slot {slot} out of range -1..{MAX_GROUP_SLOTS - 1}")
        session.groups = tuple(int(slot) for slot in slots)

    def detach(self, session_id: str) -> None:
        """The session's connection went away (grace period): no lane beats, figures kept."""
        self._sessions[session_id].conn_key = -1

    def attach(self, session_id: str, conn_key: int) -> None:
        """The session resumed on ``conn_key``."""
        self._sessions[session_id].conn_key = int(conn_key)

    def remove_session(self, session_id: str) -> None:
        """Forget a session, its pending beat, TTL refresh and update included."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        beats = self._beats.get(session.room_key)
        if beats is not None and beats.pop(session_id, None) is not None:
            self._npending -= 1
            if not beats:
                del self._beats[session.room_key]
        self._ttl_due.pop(session_id, None)
        self._rooms[session.room_key].updated.pop(session_id, None)

    def beat(self, session_id: str, latency_ms: float | None, now_ms: int, now: float) -> None:
        """Record a heartbeat the full path checked (the session exists: KeyError otherwise).
        ``latency_ms`` None: a heartbeat without a latency sample (it counts as a heartbeat, and
        leaves every latency figure as it was)."""
        self._record(session_id, self._sessions[session_id], latency_ms, now_ms, float(now))

    def _record(self, session_id: str, s: _Session, latency, now_ms: int, now: float) -> None:
        s.last_ms = now_ms
        s.last_mono = now
        s.heartbeats += 1
        beats = self._beats.get(s.room_key)
        if beats is None:
            beats = self._beats[s.room_key] = {}
        pending = beats.get(session_id)
        if pending is None:
            self._npending += 1
        if latency is None:
            # Redis keeps the session's last reported latency: a pending one still goes.
            beats[session_id] = (now_ms, None if pending is None else pending[1])
        else:
            beats[session_id] = (now_ms, latency)
        if now_ms - s.ttl_refreshed > self._ttl_refresh_ms:
            s.ttl_refreshed = now_ms
            self._ttl_due[session_id] = None
        room = self._rooms[s.room_key]
        if room.watched:
            room.updated[session_id] = None
        self._heartbeats += 1
        if latency is None:
            return
        s.latency = latency
        s.latency_count += 1
        s.latency_sum += latency
        if s.latency_min is None or latency < s.latency_min:
            s.latency_min = latency
        if s.latency_max is None or latency > s.latency_max:
            s.latency_max = latency
        bucket = bisect_left(self._buckets, latency)
        room.latency_sum += latency
        room.count += 1
        room.hist[bucket] += 1
        for dim, slot in enumerate(s.groups):
            if slot >= 0:
                hist = room.groups.get((dim, slot))
                if hist is None:
                    hist = room.groups[(dim, slot)] = [0] * (len(self._buckets) + 1)
                hist[bucket] += 1
        self._latency_sum += latency
        self._hist[bucket] += 1

    def stats(self, session_id: str):
        """(last_heartbeat_ms, latency_ms, heartbeats, latency_sum, latency_min, latency_max,
        latency_count), or None for an unknown session. Latencies keep the type they came in (int
        or float); latency_count counts the heartbeats that carried one."""
        s = self._sessions.get(session_id)
        if s is None:
            return None
        return (
            s.last_ms,
            s.latency,
            s.heartbeats,
            s.latency_sum,
            s.latency_min,
            s.latency_max,
            s.latency_count,
        )

    def last_beat(self, session_id: str) -> float | None:
        """Monotonic seconds of the session's last beat (its join before any), None if unknown."""
        s = self._sessions.get(session_id)
        return None if s is None else s.last_mono

    def session_count(self) -> int:
        """Sessions the lane holds."""
        return len(self._sessions)

    def grade(self, now: float, late_s: float, at_risk_s: float):
        """Grade every session by the age of its last beat at ``now`` (monotonic seconds): 0 (live)
        up to ``late_s``, 1 (late) up to ``at_risk_s``, 2 (at risk) beyond. Returns (live, late,
        at_risk, moved): the counts, and (session_id, grade) of each session whose grade differs
        from the one this call last gave it (a new session starts live; ``take_updated`` sets
        live: those sessions just beat). The walk is the lane's, so the caller's cost is the moved
        sessions only (``presence.liveness.Grader.run_lane``)."""
        counts = [0, 0, 0]
        moved = []
        for session_id, s in self._sessions.items():
            age = now - s.last_mono
            g = 0 if age <= late_s else 1 if age <= at_risk_s else 2
            counts[g] += 1
            if g != s.grade:
                s.grade = g
                moved.append((session_id, g))
        return counts[0], counts[1], counts[2], moved

    def set_watched(self, room_key: int, watched: bool) -> None:
        """Whether the room's beating sessions are collected for ``take_updated``."""
        room = self._rooms.get(room_key)
        if room is None:
            room = self._rooms[room_key] = _Room(len(self._buckets))
        room.watched = bool(watched)
        if not watched:
            room.updated.clear()

    # -- the hot path --------------------------------------------------------------------------

    def offer(self, conn_key: int, message: bytes) -> bytes | None:
        """Take one WebSocket text message if it is an ordinary heartbeat (see the module's
        docstring): its RECEIPT frame (b"" when none was asked), or None for the full path."""
        conn = self._conns.get(conn_key)
        if conn is None or not conn.ready:
            return None
        got = scan_frame(bytes(message), self._limits)
        if got is None:
            return None
        receipt, sid_bytes, latency = got
        session_id = sid_bytes.decode("ascii")
        s = self._sessions.get(session_id)
        if s is None or s.conn_key != conn_key:
            return None
        now = time.monotonic()
        if conn.rate:
            tokens = conn.tokens + (now - conn.last_received) * conn.rate
            if tokens > conn.burst:
                tokens = conn.burst
            if tokens < 1.0:
                return None  # the full path charges it and refuses the message
            conn.tokens = tokens - 1.0
        conn.last_received = now
        self._record(session_id, s, latency, int(time.time() * 1000), now)
        self._handled += 1
        if receipt is None:
            return b""
        return b"RECEIPT\nreceipt-id:" + receipt + b"\n\n\0"

    # -- drained by Python ---------------------------------------------------------------------

    def pending(self) -> int:
        """Beats waiting in ``take_beats`` (one per session at most)."""
        return self._npending

    def pending_watched(self) -> int:
        """Of the pending beats, those of watched rooms (their roster updates wait on them)."""
        rooms = self._rooms
        return sum(len(beats) for room, beats in self._beats.items() if rooms[room].watched)

    def take_beats(self, watched_only: bool = False) -> dict[int, PackedBeats]:
        """room_key -> the room's pending beats as ``pack_beats`` writes them, the newest beat per
        session (in the order the sessions first beat since the last take); empties the pending
        beats (with ``watched_only``, only the watched rooms' are taken, the others' stay pending)."""
        if watched_only:
            rooms = self._rooms
            beats = {room: b for room, b in self._beats.items() if rooms[room].watched}
            self._beats = {room: b for room, b in self._beats.items() if room not in beats}
            self._npending -= sum(len(b) for b in beats.values())
        else:
            beats, self._beats = self._beats, {}
            self._npending = 0
        return {
            room: pack_beats([(sid, b[0], b[1]) for sid, b in room_beats.items()])
            for room, room_beats in beats.items()
        }

    def take_ttl_due(self) -> list[str]:
        """Sessions whose TTL refresh became due (at most once per ttl_refresh_ms each)."""
        due, self._ttl_due = self._ttl_due, {}
        return list(due)

    def take_updated(self, room_key: int) -> list[str]:
        """Sessions of a watched room that beat since the last take (their grade is live again:
        the caller marks them live)."""
        room = self._rooms.get(room_key)
        if room is None or not room.updated:
            return []
        updated, room.updated = room.updated, {}
        sessions = self._sessions
        for session_id in updated:
            sessions[session_id].grade = 0
        return list(updated)

    def take_room_sample(self, room_key: int) -> tuple[float, int, list[int]]:
        """The room's (latency_sum, count, histogram) since the last take."""
        room = self._rooms.get(room_key)
        if room is None:
            return 0.0, 0, [0] * (len(self._buckets) + 1)
        out = (room.latency_sum, room.count, room.hist)
        room.latency_sum = 0.0
        room.count = 0
        room.hist = [0] * (len(self._buckets) + 1)
        return out

    def take_room_groups(self, room_key: int) -> list[tuple[int, int, list[int]]]:
        """The room's group histograms since the last take: (dimension, slot, histogram) for
        every group that counted a latency, by dimension then slot."""
        room = self._rooms.get(room_key)
        if room is None or not room.groups:
            return []
        groups, room.groups = room.groups, {}
        return [(dim, slot, hist) for (dim, slot), hist in sorted(groups.items())]

    def take_counters(self) -> tuple[int, float, list[int], int]:
        """(heartbeats, latency_sum, histogram, handled by the lane) since the last take."""
        out = (self._heartbeats, self._latency_sum, self._hist, self._handled)
        self._heartbeats = 0
        self._latency_sum = 0.0
        self._hist = [0] * (len(self._buckets) + 1)
        self._handled = 0
        return out
