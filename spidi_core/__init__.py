"""Spidi's hot path: the STOMP 1.2 frame codec, the heartbeat timing wheel and the heartbeat lane.

Each piece has a pure-Python reference (``*Py``) and a Cython build (``*C``). The plain names
(``FrameParser``, ``serialize_frame``, ``HeartbeatWheel``, ``HeartbeatLane``) are the Cython ones unless the
extensions are missing or ``SPIDI_NO_EXTENSIONS=1`` is set, which selects the references.
"""

import os

from .errors import FrameError
from .frame import Frame
from .frames_py import FrameParserPy, serialize_frame_py
from .lane_py import HeartbeatLanePy
from .wheel_py import HeartbeatWheelPy

try:
    from ._frames_c import FrameParserC, serialize_frame_c
    from ._lane_c import HeartbeatLaneC
    from ._wheel_c import HeartbeatWheelC

    HAVE_EXTENSIONS = True
except ImportError:  # not built: the references serve
    FrameParserC = serialize_frame_c = HeartbeatWheelC = HeartbeatLaneC = None
    HAVE_EXTENSIONS = False

USE_EXTENSIONS = HAVE_EXTENSIONS and os.environ.get("SPIDI_NO_EXTENSIONS", "") not in ("1", "true", "yes")

if USE_EXTENSIONS:
    FrameParser = FrameParserC
    serialize_frame = serialize_frame_c
    HeartbeatWheel = HeartbeatWheelC
    HeartbeatLane = HeartbeatLaneC
else:
    FrameParser = FrameParserPy
    serialize_frame = serialize_frame_py
    HeartbeatWheel = HeartbeatWheelPy
    HeartbeatLane = HeartbeatLanePy

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
    "serialize_frame",
    "serialize_frame_c",
    "serialize_frame_py",
]
