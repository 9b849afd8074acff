"""The writer's side of the ``spidi:events`` Redis Stream: one consumer of the writers' group.

Reading (XREADGROUP: first the consumer's own pending entries from id 0, then new ones with
``>``), taking over dead writers' entries (XAUTOCLAIM), acknowledging written entries (XACK) and
trimming what every group is done with, and the dead-letter stream for events PostgreSQL
rejected. No retries here: the writer loop wraps each call in its backoff.

The client is a plain or a cluster client (``redis+cluster://`` URLs): every command touches one
key (the stream, the dead letters), so either works.
"""

from __future__ import annotations

import logging

import redis

from .. import logs
from ..stores import events, keys

log = logging.getLogger("spidi.history.writer")

DEAD_LETTER_STREAM = keys.DEAD_LETTER_STREAM  # events PostgreSQL rejected, with the error (kept ~10k)
DEAD_LETTER_MAXLEN = 10_000

Entry = tuple[str, dict | None]  # (stream id, fields); fields None when trimmed away while pending


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class EventStream:
    """The events stream as seen by consumer ``consumer`` of group ``events.GROUP``."""

    def __init__(self, client: redis.Redis, consumer: str):
        self.redis = client
        self.consumer = consumer

    def ensure_group(self) -> None:
        """Create the writers' group (and the stream) unless it exists."""
        try:
            # From id 0: events the servers appended before any writer ever ran count too.
            self.redis.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
        except redis.exceptions.OutOfMemoryError:
            # A full Redis (maxmemory) refuses XGROUP CREATE before looking: the group usually
            # exists, and reading, acknowledging and trimming (which frees the memory) still work.
            if not any(g["name"] == events.GROUP for g in self.redis.xinfo_groups(events.STREAM)):
                raise
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, start: str, count: int, block: int | None) -> list[Entry]:
        """Up to ``count`` entries after ``start`` (``>``: never delivered; an id: this consumer's
        pending ones), waiting up to ``block`` ms for new ones."""
        try:
            reply = self.redis.xreadgroup(
                events.GROUP, self.consumer, {events.STREAM: start}, count=max(1, count), block=block
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or the group was deleted (FLUSHALL, a Redis restart without persistence).
            logs.event(log, "writer_group_recreated", logging.WARNING)
            self.ensure_group()
            return []
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return list(reply.get(events.STREAM, [[]])[0])
        return list(reply[0][1])

    def claim_idle(self, cursor: str, min_idle_ms: int, count: int) -> tuple[str, list[Entry]]:
        """One XAUTOCLAIM page: entries other consumers left pending for ``min_idle_ms``, now
        this consumer's; (next cursor, entries). A cursor of ``0-0`` means the scan is done."""
        reply = self.redis.xautoclaim(events.STREAM, events.GROUP, self.consumer, min_idle_ms, cursor, count)
        cursor, entries = reply[0], reply[1]
        if entries:
            logs.event(log, "writer_reclaimed", entries=len(entries))
        # Redis 6.2 reports entries deleted while pending as nil.
        return cursor, [(stream_id, fields) for stream_id, fields in entries if stream_id is not None]

    def ack(self, ids: list[str]) -> None:
        """Acknowledge written entries, then trim what every group is done with."""
        pipe = self.redis.pipeline(transaction=False)
        for i in range(0, len(ids), 1000):
            pipe.xack(events.STREAM, events.GROUP, *ids[i : i + 1000])
        pipe.execute()
        self.trim()

    def trim(self) -> None:
        """Drop entries every consumer group is done with, so XLEN is the backlog and Redis memory
        stays small (MAXLEN alone would keep two million written entries)."""
        groups = self.redis.xinfo_groups(events.STREAM)
        if not groups:
            return
        floor = None
        for group in groups:
            candidate = group["last-delivered-id"]
            if group["pending"]:
                oldest = self.redis.xpending(events.STREAM, group["name"])["min"]
                candidate = min(candidate, oldest, key=_id_key)
            floor = candidate if floor is None else min(floor, candidate, key=_id_key)
        if floor and floor != "0-0":
            self.redis.xtrim(events.STREAM, minid=floor, approximate=True)

    def length(self) -> int:
        """Entries in the stream: the backlog (written ones are trimmed)."""
        return self.redis.xlen(events.STREAM)

    def pending(self) -> int:
        """Entries delivered to some writer and not yet acknowledged."""
        summary = self.redis.xpending(events.STREAM, events.GROUP)
        return summary["pending"] if summary else 0

    def dead_letter(self, stream_id: str, fields: dict, error: str) -> str:
        """Keep a rejected event, with the error, in the dead-letter stream; its id there."""
        entry = {**fields, "_stream_id": stream_id, "_error": error[:500]}
        kept = self.redis.xadd(DEAD_LETTER_STREAM, entry, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        logs.event(
            log,
            "writer_event_rejected",
            logging.WARNING,
            stream_id=stream_id,
            event_id=fields.get("id"),
            error=error[:500],
        )
        return kept
