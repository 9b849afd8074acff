"""The decoded STOMP frame, shared by both codec implementations."""


class Frame:
    """One STOMP frame: command, headers (first occurrence wins) and raw body bytes."""

    __slots__ = ("command", "headers", "body")

    def __init__(self, command: str, headers: dict, body: bytes = b""):
        self.command = command
        self.headers = headers
        self.body = body

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        return self.command == other.command and self.headers == other.headers and self.body == other.body

    def __repr__(self):
        return f"Frame({self.command!r}, {self.headers!r}, {self.body!r})"
