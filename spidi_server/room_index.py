"""The upkeep of the tenants' rooms index in Redis, and ``spidi_rooms_total``.

``spidi:tenant:<tenant>:rooms`` lists the tenant's rooms that have live state: every join adds its
room (stores/commands.py). An empty room's keys expire ``empty_ttl_s`` after its last session left
(leave.lua; a join keeps them again), and ``rooms.room_list`` no longer lists an indexed room whose
state expired. The sweep here takes such rooms out of the index, so it does not keep every room
that ever had a session: once per ``room_sweep_interval_s``, one process of the cluster (whoever
takes the lease ``spidi:rooms:sweep`` first) visits the index of every tenant in ``spidi:tenants``,
gives the keys of empty rooms that have no expiry one (rooms emptied by a path that set none: the
reaper, a spill file of an older version), unindexes the expired ones and writes each tenant's
room count (what ``room_list`` would list) to ``spidi:rooms:count``. Every process reads the
counts back into ``spidi_rooms_total{tenant}``, so every node shows the same cluster-wide figure.

Nothing here runs per heartbeat, join or leave. Each key is one command or one room's script
(``room_settle.lua``, one ``{roomId}`` slot), so it runs unchanged on a Redis Cluster.

A room deleted through the REST API leaves the index at once (``unindex``), and its keys go if it
is empty; sessions still in it stay until they end (the room is refused to new HELLOs), and its
keys then expire like any empty room's.
"""

from __future__ import annotations

import logging

from redis.exceptions import NoScriptError

from . import logs
from .metrics import NodeMetrics
from .rooms import RoomCatalog
from .stores import keys
from .stores.client import text
from .stores.hot_store import HotStore

log = logging.getLogger("spidi.rooms")

# Rooms per pipeline of a sweep: one pipeline per tenant held the event loop in proportion to its
# rooms (redis-py encodes and parses a pipeline in one go); the round trips between give it back.
SWEEP_CHUNK = 500


async def unindex(store: HotStore, tenant: str, room_id: str) -> None:
    """Take a deleted room out of its tenant's index now, and drop its keys if nobody is in it."""
    await store.flush(2.0)  # a join queued before the deletion must not index it again after
    await store.redis.hdel(keys.tenant_rooms(tenant), room_id)
    pipe = store.redis.pipeline(transaction=False)
    store.scripts.queue(pipe, "room_settle", keys.room_keys(room_id), [0, "drop"])
    await pipe.execute()


class RoomIndex:
    """The periodic sweep of the rooms index and the ``spidi_rooms_total`` gauge of one process."""

    def __init__(
        self, store: HotStore, catalog: RoomCatalog, metrics: NodeMetrics, node_id: str, interval_s: float
    ):
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.node_id = node_id
        self.interval_s = interval_s
        self._shown: set[str] = set()  # tenants the gauge has a sample for

    async def tick(self) -> None:
        """Sweep if this process takes the lease, then show the cluster's counts (run_every)."""
        redis = self.store.redis
        lease_ms = max(1, int(self.interval_s * 1000 * 0.9))
        if await redis.set(keys.ROOMS_SWEEP, self.node_id, nx=True, px=lease_ms):
            try:
                await self.sweep()
            except NoScriptError:  # a restarted Redis: load the scripts, sweep at the next tick
                await self.store.scripts.load()
        await self.show(await redis.hgetall(keys.ROOM_COUNTS))

    async def sweep(self) -> dict[str, int]:
        """Visit every tenant's index: expire what lingers, unindex what expired; write and return
        each tenant's room count."""
        redis = self.store.redis
        tenants = {text(t) for t in await redis.smembers(keys.TENANTS)}
        tenants.update(r.tenant for r in self.catalog.stored.values())
        tenants.update(name.rpartition("/")[0] for name in self.catalog.defined if "/" in name)
        counts: dict[str, int] = {}
        for tenant in sorted(tenants):
            count = await self._sweep_tenant(tenant)
            if count:
                counts[tenant] = count
        stale = [t for t in map(text, await redis.hkeys(keys.ROOM_COUNTS)) if t not in counts]
        if counts:
            await redis.hset(keys.ROOM_COUNTS, mapping=counts)
        if stale:
            await redis.hdel(keys.ROOM_COUNTS, *stale)
        return counts

    async def _sweep_tenant(self, tenant: str) -> int:
        """One tenant's index swept; how many rooms the tenant has (as ``room_list`` lists them)."""
        redis, catalog = self.store.redis, self.catalog
        index_key = keys.tenant_rooms(tenant)
        indexed = {text(k): text(v) for k, v in (await redis.hgetall(index_key)).items()}
        known = catalog.known(tenant)
        gone: list[str] = []
        ids = list(indexed)
        for start in range(0, len(ids), SWEEP_CHUNK):
            part = ids[start : start + SWEEP_CHUNK]
            pipe = redis.pipeline(transaction=False)
            for room_id in part:
                definition = known.get(room_id)
                ttl = definition.empty_ttl_s if definition is not None else catalog.default_empty_ttl_s
                self.store.scripts.queue(pipe, "room_settle", keys.room_keys(room_id), [ttl, "expire"])
            replies = await pipe.execute()
            gone += [
                room_id for room_id, (online, live) in zip(part, replies, strict=True) if not (online or live)
            ]
        if gone:
            await redis.hdel(index_key, *gone)
            # A join between the read and the HDEL indexed its room again before the HDEL took it
            # out: a room back to life is indexed again.
            pipe = redis.pipeline(transaction=False)
            for room_id in gone:
                pipe.exists(keys.room_metrics(room_id))
            back = {
                room_id: indexed[room_id] for room_id, n in zip(gone, await pipe.execute(), strict=True) if n
            }
            if back:
                await redis.hset(index_key, mapping=back)
            gone = [room_id for room_id in gone if room_id not in back]
            logs.event(log, "rooms_unindexed", logging.DEBUG, tenant=tenant, rooms=len(gone))
        if len(gone) == len(indexed) and indexed:
            # Empty now: the tenant leaves the set (its next join adds it again).
            await redis.srem(keys.TENANTS, tenant)
        return len(set(known) | (set(indexed) - set(gone)))

    async def show(self, counts: dict) -> None:
        """Set ``spidi_rooms_total{tenant}`` from ``spidi:rooms:count``; drop tenants no longer there."""
        gauge = self.metrics.rooms_total
        shown = set()
        for tenant, count in counts.items():
            tenant = text(tenant)
            gauge.labels(tenant=tenant).set(int(count))
            shown.add(tenant)
        for tenant in self._shown - shown:
            gauge.remove(tenant)
        self._shown = shown
