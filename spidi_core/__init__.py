"""Spidi's hot path: WebSocket framing, the STOMP 1.2 frame codec, the heartbeat timing wheel and
the heartbeat lane.

Each piece has a pure-Python reference (``*Py``) and a Cython build (``*C``). The plain names
(``WsStream``, ``encode_text``, ``FrameParser``, ``serialize_frame``, ``HeartbeatWheel``,
``HeartbeatLane``, ...) are the Cython ones unless the extensions are missing or
``SPIDI_NO_EXTENSIONS=1`` is set, which selects the references.
"""

import os

from .errors import FrameError
from .frame import Frame
from .frames_py import FrameParserPy, serialize_frame_py
from .lane_py import HeartbeatLanePy
from .wheel_py import HeartbeatWheelPy
from .ws_py import WsStreamPy, encode_close_py, encode_frames_py, encode_text_py

try:
    from . import _io_phase_c
    from ._frames_c import FrameParserC, serialize_frame_c
    from ._lane_c import HeartbeatLaneC
    from ._wheel_c import HeartbeatWheelC
    from ._ws_c import WsStreamC, encode_close_c, encode_frames_c, encode_text_c, parse_upgrade_head_c

    HAVE_EXTENSIONS = True
except ImportError:  # not built: the references serve
    FrameParserC = serialize_frame_c = HeartbeatWheelC = HeartbeatLaneC = None
    WsStreamC = encode_text_c = encode_frames_c = encode_close_c = parse_upgrade_head_c = None
    _io_phase_c = None
    HAVE_EXTENSIONS = False

USE_EXTENSIONS = HAVE_EXTENSIONS and os.environ.get("SPIDI_NO_EXTENSIONS", "") not in ("1", "true", "yes")

if USE_EXTENSIONS:
    FrameParser = FrameParserC
    serialize_frame = serialize_frame_c
    HeartbeatWheel = HeartbeatWheelC
    HeartbeatLane = HeartbeatLaneC
    WsStream = WsStreamC
    encode_text = encode_text_c
    encode_frames = encode_frames_c
    encode_close = encode_close_c
    # A fast path only (its reference is spidi_server.transport.handshake.parse_request, which
    # reads whatever this leaves): None without the extensions.
    parse_upgrade_head = parse_upgrade_head_c
    # The bound on uvloop's I/O phase (``_io_phase_c``): a loop mechanism, not a codec, so it
    # has no reference; without the extensions the phases run unbounded (None).
    io_phase = _io_phase_c
else:
    FrameParser = FrameParserPy
    serialize_frame = serialize_frame_py
    HeartbeatWheel = HeartbeatWheelPy
    HeartbeatLane = HeartbeatLanePy
    WsStream = WsStreamPy
    encode_text = encode_text_py
    encode_frames = encode_frames_py
    encode_close = encode_close_py
    parse_upgrade_head = None
    io_phase = None

__all__ = [
    "Frame",
    "FrameError",
    "FrameParser",
    "FrameParserC",
    "FrameParserPy",
    "HAVE_EXTENSIONS",
    "HeartbeatLane",
    "HeartbeatLaneC",
    "HeartbeatLanePy",
    "HeartbeatWheel",
    "HeartbeatWheelC",
    "HeartbeatWheelPy",
    "USE_EXTENSIONS",
    "WsStream",
    "WsStreamC",
    "WsStreamPy",
    "encode_close",
    "encode_close_c",
    "encode_close_py",
    "encode_frames",
    "encode_frames_c",
    "encode_frames_py",
    "encode_text",
    "encode_text_c",
    "encode_text_py",
    "io_phase",
    "parse_upgrade_head",
    "parse_upgrade_head_c",
    "serialize_frame",
    "serialize_frame_c",
    "serialize_frame_py",
]
