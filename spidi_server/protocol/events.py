"""What ``StompConnection.receive_data`` hands the layer above: one typed record per event.

Slotted dataclasses, as websockets types its events: one allocation per frame, as the tuple each
replaces, and fields that say what they are. Not NamedTuples: on CPython 3.11 a NamedTuple's
Python-level ``__new__`` costs about twice a slotted ``__init__``, and a heartbeat builds one.
The layer above dispatches on the exact type (``type(event) is Heartbeat``) or with ``match``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..auth import Claims
from .destinations import Destination


@dataclass(slots=True)
class Connected:
    """CONNECT (or STOMP) accepted: the token's claims."""

    claims: Claims


@dataclass(slots=True)
class Hello:
    """SEND to /app/hello: the JSON object as sent (presence checks it, after the role check)."""

    payload: dict
    receipt: str | None


@dataclass(slots=True)
class Heartbeat:
    """SEND to /app/heartbeat, already checked (``payloads.heartbeat``)."""

    session_id: str
    latency_ms: float | None  # None: the heartbeat carried no latency sample
    receipt: str | None


@dataclass(slots=True)
class Leave:
    """SEND to /app/leave, already checked (``payloads.leave``)."""

    session_id: str
    receipt: str | None


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE to a destination Spidi knows; the protocol has registered ``sub_id``."""

    sub_id: str
    destination: Destination
    receipt: str | None


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE; ``destination`` is None when the id was unknown."""

    sub_id: str
    destination: Destination | None
    receipt: str | None


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT: a clean goodbye."""

    receipt: str | None


@dataclass(slots=True)
class ReceiptOnly:
    """A frame with nothing to do but acknowledge (ACK, NACK, BEGIN, COMMIT, ABORT with a receipt)."""

    receipt: str


Event = Connected | Hello | Heartbeat | Leave | Subscribe | Unsubscribe | Disconnect | ReceiptOnly
