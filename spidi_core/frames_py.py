"""STOMP 1.2 frame codec, pure-Python reference.

This module is the specification: ``_frames_c.pyx`` must behave identically, byte for byte and
error reason for error reason. Keep it clear first and reasonably fast second.

Parsing is a small state machine (between frames -> command/header lines -> body) whose
progress survives between ``feed`` calls, so a frame trickling in one byte at a time is parsed
in linear time.

Limits are checked as soon as the bytes seen prove a violation, never later, and the outcome
(frames, heart-beats, or which error) depends only on the byte stream, not on how it was split
into chunks:

* ``frame-too-large``: a frame is the bytes from the first byte of its command line through its
  NUL. It is refused once more than ``max_frame_size`` bytes of an unfinished frame are held, or
  at the blank line when ``content-length`` announces more than fits.
* ``header-line-too-long``: a line's length excludes its ``\\n`` or ``\\r\\n``. It is refused
  once more than ``max_header_line`` bytes are certain to belong to it.
* When both limits are crossed at the same byte, ``frame-too-large`` is reported.

A complete line is checked in this order: length, then (command line) ``[A-Z]+`` or
``bad-command``; (header line) header count, a ``:`` and valid UTF-8 (else ``bad-header``), then
escapes. ``content-length`` must be ASCII digits only. Between frames, a CR not followed by LF
starts a command line, which then fails as ``bad-command``.
"""

import re

from .errors import FrameError
from .frame import Frame

__all__ = ["FrameParserPy", "serialize_frame_py"]

_LF = 0x0A
_CR = 0x0D

# CONNECT and CONNECTED headers are taken literally: 1.0 clients cannot escape them.
_RAW_COMMANDS = frozenset(("CONNECT", "CONNECTED"))
_COMMAND_RE = re.compile(rb"[A-Z]+")

_UNESCAPES = {"n": "\n", "c": ":", "\\": "\\", "r": "\r"}

# Parser states.
_IDLE = 0  # between frames: heart-beat EOLs or the first byte of a command
_HEAD = 1  # command line and header lines
_BODY = 2  # body and the terminating NUL


def _escape(text: str) -> str:
    """Encode STOMP 1.2 header escapes (backslash first, so it is not escaped twice)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")


def _unescape(text: str) -> str:
    """Decode STOMP 1.2 header escapes; any escape other than \\n \\c \\\\ \\r is an error."""
    if "\\" not in text:
        return text
    out = []
    i = 0
    while True:
        j = text.find("\\", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        plain = _UNESCAPES.get(text[j + 1 : j + 2])
        if plain is None:
            raise FrameError("bad-escape", f"invalid escape sequence {text[j : j + 2]!r} in header")
        out.append(plain)
        i = j + 2


class FrameParserPy:
    """Incremental STOMP 1.2 frame parser (pure-Python reference).

    Feed it the bytes of a connection in chunks of any size; each ``feed`` returns the frames
    completed so far. ``heartbeats`` counts the bare EOLs seen between frames and ``buffered``
    the bytes held for a frame still incomplete. After a ``FrameError`` every further ``feed``
    raises the same error: close the connection.
    """

    __slots__ = (
        "max_frame_size",
        "max_headers",
        "max_header_line",
        "_heartbeats",
        "_buf",
        "_state",
        "_pos",
        "_scan",
        "_command",
        "_raw",
        "_headers",
        "_nheaders",
        "_length",
        "_error",
    )

    def __init__(self, max_frame_size: int = 65536, max_headers: int = 64, max_header_line: int = 8192):
        if max_frame_size < 1 or max_headers < 0 or max_header_line < 0:
            raise ValueError("max_frame_size must be >= 1, max_headers and max_header_line >= 0")
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_line = max_header_line
        self._heartbeats = 0
        self._buf = bytearray()
        self._state = _IDLE
        # Offsets below are relative to the start of the pending frame, which is always
        # offset 0 of ``_buf`` between calls.
        self._pos = 0  # HEAD: start of the next line; BODY: start of the body
        self._scan = 0  # BODY without content-length: where the NUL search resumes
        self._command = ""
        self._raw = False
        self._headers: dict[str, str] | None = None  # a fresh dict per frame, made when it starts
        self._nheaders = 0
        self._length = -1  # content-length, -1 when absent
        self._error: FrameError | None = None

    @property
    def heartbeats(self) -> int:
        """Cumulative number of bare EOLs (``\\n`` or ``\\r\\n``) seen between frames."""
        return self._heartbeats

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview | str) -> list[Frame]:
        """Consume a chunk (a str is UTF-8 encoded) and return the frames it completes, in order.

        Raises FrameError on a malformed frame or an exceeded limit (frames completed earlier in
        the same chunk are dropped with it); the parser then stays broken.
        """
        if self._error is not None:
            raise FrameError(self._error.reason, str(self._error))
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._buf += data
        frames: list[Frame] = []
        try:
            consumed = self._run(frames)
        except FrameError as exc:
            self._error = exc
            raise
        del self._buf[:consumed]
        return frames

    def _run(self, frames: list[Frame]) -> int:
        """Advance the state machine over the buffer; return how many leading bytes are done."""
        buf = self._buf
        n = len(buf)
        max_frame = self.max_frame_size
        start = 0  # absolute offset of the current frame (or of the next byte when idle)
        while True:
            if self._state == _IDLE:
                while start < n:
                    byte = buf[start]
                    if byte == _LF:
                        self._heartbeats += 1
                        start += 1
                    elif byte == _CR:
                        if start + 1 == n:
                            return start  # a CR alone: wait to see whether LF follows
                        if buf[start + 1] != _LF:
                            break  # not an EOL: a (bad) command line starting with CR
                        self._heartbeats += 1
                        start += 2
                    else:
                        break
                if start == n:
                    return n
                self._state = _HEAD
                self._pos = 0
                self._command = ""
                self._headers = {}
                self._nheaders = 0
                self._length = -1

            if self._state == _HEAD:
                while True:
                    pos = start + self._pos
                    # An LF is only acceptable where neither limit has been crossed yet.
                    window_end = min(n, start + max_frame, pos + self.max_header_line + 2)
                    nl = buf.find(b"\n", pos, window_end) if window_end > pos else -1
                    if nl < 0:
                        self._check_incomplete_line(buf, start, pos, n)
                        return start
                    end = nl - 1 if nl > pos and buf[nl - 1] == _CR else nl
                    if end - pos > self.max_header_line:
                        raise FrameError(
                            "header-line-too-long",
                            f"header line longer than {self.max_header_line} bytes",
                        )
                    self._pos = nl + 1 - start
                    if not self._command:
                        self._take_command(bytes(buf[pos:end]))
                    elif end == pos:
                        self._end_headers()
                        break
                    else:
                        self._take_header(bytes(buf[pos:end]))

            # _BODY
            body_start = start + self._pos
            if self._length >= 0:
                end = body_start + self._length
                if end >= n:
                    return start
                if buf[end] != 0:
                    raise FrameError("missing-nul", "frame body is not followed by a NUL byte")
            else:
                end = buf.find(b"\0", start + self._scan, min(n, start + max_frame))
                if end < 0:
                    if n > start + max_frame:
                        raise FrameError("frame-too-large", f"frame larger than {max_frame} bytes")
                    self._scan = n - start
                    return start
            frames.append(Frame(self._command, self._headers, bytes(buf[body_start:end])))
            # The frame owns its headers now: an idle parser holds no dict (memory per connection).
            self._command = ""
            self._headers = None
            start = end + 1
            self._state = _IDLE

    def _check_incomplete_line(self, buf: bytearray, start: int, pos: int, n: int):
        """No LF yet for the line at ``pos``: raise if the bytes held already break a limit."""
        limit = self.max_header_line
        # Index of the byte proving the line too long: byte pos+limit, unless it is a CR that
        # may still start the CRLF; then byte pos+limit+1 (the search found no LF there).
        line_bad = -1
        if pos + limit < n and buf[pos + limit] != _CR:
            line_bad = pos + limit
        elif pos + limit + 1 < n:
            line_bad = pos + limit + 1
        frame_bad = start + self.max_frame_size if start + self.max_frame_size < n else -1
        if frame_bad >= 0 and (line_bad < 0 or frame_bad <= line_bad):
            raise FrameError("frame-too-large", f"frame larger than {self.max_frame_size} bytes")
        if line_bad >= 0:
            raise FrameError("header-line-too-long", f"header line longer than {limit} bytes")

    def _take_command(self, line: bytes):
        if not _COMMAND_RE.fullmatch(line):
            raise FrameError("bad-command", f"invalid command {line[:40]!r}")
        self._command = line.decode("ascii")
        self._raw = self._command in _RAW_COMMANDS

    def _take_header(self, line: bytes):
        self._nheaders += 1
        if self._nheaders > self.max_headers:
            raise FrameError("too-many-headers", f"more than {self.max_headers} headers")
        colon = line.find(b":")
        if colon < 0:
            raise FrameError("bad-header", f"header line without ':' {line[:40]!r}")
        try:
            name = line[:colon].decode("utf-8")
            value = line[colon + 1 :].decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("bad-header", "header is not valid UTF-8") from None
        if not self._raw:
            name = _unescape(name)
            value = _unescape(value)
        self._headers.setdefault(name, value)  # a repeated header: the first one wins

    def _end_headers(self):
        """The blank line: size the body from content-length, if any."""
        self._state = _BODY
        self._scan = self._pos
        text = self._headers.get("content-length")
        if text is None:
            self._length = -1
            return
        if not (text.isascii() and text.isdigit()):
            raise FrameError("bad-content-length", f"invalid content-length {text[:40]!r}")
        self._length = int(text)
        if self._pos + self._length + 1 > self.max_frame_size:
            raise FrameError("frame-too-large", f"frame larger than {self.max_frame_size} bytes")


def serialize_frame_py(
    command: str,
    headers: dict | list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    """Encode one STOMP 1.2 frame.

    ``headers`` is a dict or a sequence of ``(name, value)`` pairs, written in order (values
    other than str go through ``str()``). Names and values are escaped, except in CONNECT and
    CONNECTED frames. ``content-length`` is added when the body is non-empty and no such header
    was given. ``body`` is bytes-like (a str is UTF-8 encoded).
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    raw = command in _RAW_COMMANDS
    parts = [command, "\n"]
    has_length = False
    if headers:
        items = headers.items() if hasattr(headers, "items") else headers
        for name, value in items:
            name = str(name)
            value = str(value)
            if name == "content-length":
                has_length = True
            if not raw:
                name = _escape(name)
                value = _escape(value)
            parts += (name, ":", value, "\n")
    if body and not has_length:
        parts.append(f"content-length:{len(body)}\n")
    parts.append("\n")
    return b"".join(("".join(parts).encode("utf-8"), body, b"\0"))
