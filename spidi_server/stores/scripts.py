"""The Lua scripts (files in stores/lua/): their sources, loading by sha, and join.lua's arguments.

Each script touches the keys of one room only (one ``{roomId}`` slot), so it runs unchanged on a
Redis Cluster; SCRIPT LOAD there goes to every master. The hot store loads its scripts once and
queues them by sha (``Scripts``): redis-py's Script objects would add a SCRIPT EXISTS round trip to
every pipeline, and cannot queue themselves on a cluster pipeline.
"""

from __future__ import annotations

import time
from importlib import resources

from .client import pipeline_evalsha

HOT_STORE_SCRIPTS = (
    "join",
    "leave",
    "room_metrics",
    "room_settle",
)  # what the hot store queues
JOIN_LIMIT_ARG = 8  # index of join.lua's `limit` in its ARGV (0: admit whatever the count)


def script_source(name: str) -> str:
    """The Lua source of the script ``name`` (``"leave"`` reads stores/lua/leave.lua)."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


# The last hour formatted, and the seconds it spans: every join asks, and strftime is not free.
_hour_cache: tuple[float, float, str] = (0.0, 0.0, "")


def current_hour(now_s: float | None = None) -> str:
    """The hour bucket `peak` is kept for (UTC, ``YYYYMMDDHH``): an argument of join.lua and room_metrics.lua."""
    global _hour_cache
    if now_s is None:
        now_s = time.time()
    start, end, text = _hour_cache
    if start <= now_s < end:
        return text
    text = time.strftime("%Y%m%d%H", time.gmtime(now_s))
    start = now_s - now_s % 3600  # UTC hours start on multiples of 3600 s (no leap seconds in POSIX time)
    _hour_cache = (start, start + 3600, text)
    return text


def join_args(
    session_id: str,
    time_ms: int,
    user_id: str,
    hour: str,
    ttl_s: int,
    capacity: int,
    code: str,
    tenant: str,
    limit: int,
    fields: dict,
) -> list:
    """join.lua's ARGV: the session, its time (online score), the room, the ``limit`` it is admitted
    under (``JOIN_LIMIT_ARG``), then the session hash's fields as name/value pairs (None as "")."""
    args = [session_id, time_ms, user_id, hour, ttl_s, capacity, code, tenant, limit]
    for name, value in fields.items():
        args.append(name)
        args.append("" if value is None else value)
    return args


class Scripts:
    """The hot store's scripts on one client: loaded once, then queued on pipelines by sha."""

    def __init__(self, client) -> None:
        self.redis = client
        self.sources = {name: script_source(name) for name in HOT_STORE_SCRIPTS}
        self.shas: dict[str, str] = {}

    async def load(self) -> None:
        """SCRIPT LOAD every script (at start, and again if Redis lost them)."""
        for name, source in self.sources.items():
            self.shas[name] = await self.redis.script_load(source)

    def queue(self, pipe, name: str, script_keys: list[str], args: list) -> None:
        """Queue the script ``name`` on ``pipe`` (plain or cluster) by its sha."""
        pipeline_evalsha(pipe, self.shas[name], script_keys, args)
