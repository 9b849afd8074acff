"""The WebSocket opening handshake (RFC 6455 section 4.2), sans I/O: request bytes in, response bytes out.

``parse_request`` reads the HTTP/1.1 request head, ``check_upgrade`` checks it is a valid
WebSocket upgrade and chooses the subprotocol, ``accept_response``/``error_response`` build what
is written back. A refusal is a ``Refusal`` carrying its HTTP status, a reason for the client and
any extra headers, so the transport answers every malformed request with a plain 4xx it can read.

The statuses follow RFC 6455 and RFC 9110: 405 (with Allow) for a method other than GET, 505 for
an HTTP version other than 1.1, 426 (with Upgrade) when Connection/Upgrade do not ask for a
WebSocket, 426 (with Sec-WebSocket-Version: 13) for another protocol version, 431 for an over-size
head, 400 for anything else malformed (missing Host, a bad key, a repeated header that must be
single, a body, folded or nameless header lines). This runs once per connection, never per message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import re
from typing import NamedTuple

from spidi_core import parse_upgrade_head

# The request head (request line and headers) is read into memory whole: these cap it.
MAX_HEAD = 16384
MAX_HEADERS = 128

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 9110 tokens (header names, methods); a request target is visible ASCII only.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(rb"[^\x21-\x7e]")
# One header line: a token name, a colon, a value without CR, LF or NUL. A whole header block is
# a run of these, checked in one match (in C, without groups: capturing in a repeat costs ~50 %
# more); the lines are then split with str methods (the value's surrounding blanks stripped).
_HEADER_BLOCK = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*\r\n)*")
# Headers a WebSocket upgrade must carry once: a repeat is ambiguous, so refused (as websockets does).
_SINGLE = ("host", "sec-websocket-key", "sec-websocket-version", "origin")


class Refusal(Exception):
    """The handshake is refused with this HTTP status; ``text`` is the plain-text body."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None):
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def _bad(reason: str) -> Refusal:
    return Refusal(400, f"Failed to open a WebSocket connection: {reason}.\n")


class Request(NamedTuple):
    """A parsed request head: the target as sent, and each header's values by lower-case name."""

    target: str
    headers: dict[str, list[str]]

    def get(self, name: str) -> str | None:
        """The value of a header that must appear at most once (``Refusal`` 400 if repeated)."""
        values = self.headers.get(name)
        if values is None:
            return None
        if len(values) > 1:
            raise _bad(f"more than one {name} header")
        return values[0]

    def joined(self, name: str) -> str:
        """Every line of a list-valued header, in order, joined by commas ("" when absent)."""
        return ",".join(self.headers.get(name, ()))


def head_end(buffer: bytes) -> int:
    """Where the request head ends (the index after its blank line), or -1 while incomplete.

    Raises ``Refusal`` as soon as the bytes cannot become a request: 400 when they do not start
    like an HTTP method (TLS on the plain port, binary garbage), 431 past ``MAX_HEAD``.
    """
    end = buffer.find(b"\r\n\r\n")
    if buffer and not 0x41 <= buffer[0] <= 0x5A:  # methods are upper-case tokens
        raise _bad("did not receive a valid HTTP request")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise Refusal(431, "Failed to open a WebSocket connection: request head too large.\n")
        return -1
    if end + 4 > MAX_HEAD:
        raise Refusal(431, "Failed to open a WebSocket connection: request head too large.\n")
    return end + 4


def parse_request(head: bytes) -> Request:
    """The request line and headers of ``head`` (ending with its blank line); ``Refusal`` if invalid.

    The usual upgrade request is read by the Cython fast path (``spidi_core``), which takes only
    heads it reads exactly as ``read_request`` does; ``read_request`` reads (or refuses) the rest.
    """
    if parse_upgrade_head is not None:
        fast = parse_upgrade_head(head, MAX_HEADERS)
        if fast is not None:
            return Request(*fast)
    return read_request(head)


def read_request(head: bytes) -> Request:
    """``parse_request``'s reference: the request line and headers of ``head``, or ``Refusal``."""
    line_end = head.index(b"\r\n")
    if head.count(b"\r\n") > MAX_HEADERS + 2:  # the request line, the headers, the blank line
        raise Refusal(431, f"Failed to open a WebSocket connection: more than {MAX_HEADERS} headers.\n")
    parts = head[:line_end].split(b" ")
    if len(parts) != 3 or not parts[1] or (parts[0] != b"GET" and not _TOKEN.fullmatch(parts[0])):
        raise _bad("did not receive a valid HTTP request")
    method, target, version = parts
    if version[:5] != b"HTTP/" or len(version) != 8 or version[6:7] != b".":
        raise _bad("did not receive a valid HTTP request")
    if method != b"GET":
        raise Refusal(
            405,
            f"Failed to open a WebSocket connection: unsupported HTTP method {method.decode()}.\n",
            {"Allow": "GET"},
        )
    if version != b"HTTP/1.1":
        raise Refusal(
            505, f"Failed to open a WebSocket connection: unsupported protocol {version.decode('latin-1')}.\n"
        )
    if _BAD_TARGET.search(target):
        raise _bad("invalid request target")
    block = head[line_end + 2 : -2].decode("latin-1")
    if not _HEADER_BLOCK.fullmatch(block):
        # Also a folded line (obs-fold starts with a space): RFC 9112 lets a server refuse it.
        raise _bad("invalid HTTP header line")
    headers: dict[str, list[str]] = {}
    lines = block.split("\r\n")
    lines.pop()  # the block ends with CRLF: the last piece is empty
    for line in lines:
        # The name is a token (checked above): it holds no colon, so the first one ends it.
        name, _, value = line.partition(":")
        key = name.lower()
        values = headers.get(key)
        if values is None:
            headers[key] = [value.strip(" \t")]
        else:
            values.append(value.strip(" \t"))
    if "transfer-encoding" in headers or ("content-length" in headers and headers["content-length"] != ["0"]):
        raise _bad("unsupported request body")
    return Request(target.decode("ascii"), headers)


def _tokens(request: Request, name: str) -> list[str]:
    """The comma-separated elements of a list-valued header over all its lines, lower-cased."""
    values = request.headers.get(name)
    if values is None:
        return []
    if len(values) == 1:
        value = values[0]
        if "," not in value:  # one element (the usual Upgrade and Connection): no split, no list walk
            value = value.strip()
            return [value.lower()] if value else []
    return [t.strip().lower() for t in ",".join(values).split(",") if t.strip()]


def check_upgrade(request: Request) -> str:
    """The Sec-WebSocket-Accept value of a valid WebSocket upgrade; ``Refusal`` otherwise.

    Also checks that the headers that must be single are (Origin included, read by admission).
    """
    headers = request.headers
    for name in _SINGLE:
        values = headers.get(name)
        if values is not None and len(values) > 1:
            request.get(name)  # raises its Refusal
    if "host" not in headers:
        raise _bad("missing Host header")
    if "upgrade" not in _tokens(request, "connection"):
        raise _upgrade_required("invalid Connection header")
    if _tokens(request, "upgrade") != ["websocket"]:
        raise _upgrade_required("invalid Upgrade header")
    key = request.get("sec-websocket-key")
    if key is None:
        raise _bad("missing Sec-WebSocket-Key header")
    try:
        raw = base64.b64decode(key.encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise _bad(f"invalid Sec-WebSocket-Key header: {key[:40]}")
    version = request.get("sec-websocket-version")
    if version is None:
        raise _bad("missing Sec-WebSocket-Version header")
    if version != "13":
        # RFC 6455 4.2.2: name the version(s) this server speaks.
        raise Refusal(
            426,
            "Failed to open a WebSocket connection: unsupported WebSocket version (this server speaks 13).\n",
            {"Sec-WebSocket-Version": "13"},
        )
    return accept_key(key)


def _upgrade_required(reason: str) -> Refusal:
    return Refusal(
        426,
        f"Failed to open a WebSocket connection: {reason}.\n\n"
        "You cannot access a WebSocket server directly with a browser. You need a WebSocket client.\n",
        {"Upgrade": "websocket"},
    )


def offered_subprotocols(request: Request) -> list[str]:
    """The subprotocols the client offers, in its order (as sent: names are case-sensitive)."""
    return [t.strip() for t in request.joined("sec-websocket-protocol").split(",") if t.strip()]


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + _GUID).digest()).decode()


def accept_response(accept: str, subprotocol: str | None) -> bytes:
    """The 101 response that opens the WebSocket."""
    extra = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    ).encode()


def error_response(status: int, text: str, headers: dict[str, str] | None = None) -> bytes:
    """A plain-text HTTP response that refuses the upgrade and says the connection ends."""
    body = text.encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode() + body
