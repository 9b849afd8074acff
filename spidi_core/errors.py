"""Errors raised by the codec. The server maps them to STOMP ERROR frames in one place."""


class FrameError(Exception):
    """A frame is malformed or exceeds a configured limit.

    ``reason`` is a short machine-readable tag (``frame-too-large``, ``too-many-headers``,
    ``header-line-too-long``, ``bad-header``, ``bad-escape``, ``bad-command``,
    ``bad-content-length``, ``missing-nul``); ``str(exc)`` is the human message.
    After a FrameError the parser is unusable: the connection must be closed.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
