"""Event handlers of the client: plain functions or coroutines (run as tasks of their own, so
a slow handler never holds up the reader or the heartbeats)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable

__all__ = ["EVENTS", "Emitter", "Handler"]

log = logging.getLogger("spidi_client")

# welcome(Welcome), resumed(Welcome), reconnecting(attempt, delay_s), connecting(attempt),
# session_ended(reason), error(code, message), ended(reason).
EVENTS = frozenset({"welcome", "resumed", "reconnecting", "connecting", "session_ended", "error", "ended"})

Handler = Callable[..., object | Awaitable[object]]


class Emitter:
    """``on``/``off`` for the events above, and the tasks the client runs beside its runner."""

    def __init__(self):
        self._handlers: dict[str, list[Handler]] = {name: [] for name in EVENTS}
        self._tasks: set[asyncio.Task] = set()

    def on(self, name: str, handler: Handler | None = None):
        """Call ``handler`` (sync or async) on event ``name``; usable as a decorator."""
        if name not in EVENTS:
            raise ValueError(f"unknown event {name!r}; events: {', '.join(sorted(EVENTS))}")
        if handler is None:
            return lambda fn: self.on(name, fn)
        self._handlers[name].append(handler)
        return handler

    def off(self, name: str, handler: Handler) -> None:
        """Stop calling ``handler`` on ``name``."""
        with contextlib.suppress(ValueError):
            self._handlers[name].remove(handler)

    def _emit(self, name: str, *args) -> None:
        for handler in list(self._handlers[name]):
            self._call(handler, *args)

    def _call(self, handler: Handler, *args) -> None:
        try:
            result = handler(*args)
        except Exception:
            log.exception("spidi client handler %r failed", handler)
            return
        if inspect.isawaitable(result):
            self._spawn(result)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("spidi client task failed", exc_info=task.exception())
