"""Redis hot state: pipelined writes that nobody awaits, and reads ordered after them.

Writers (the presence layer) call the synchronous ``join`` / ``heartbeat`` / ``leave`` methods;
they only append to in-memory buffers and wake the flusher. One flusher task sends everything
buffered so far as one pipeline, waits for it, then takes the next batch: while a pipeline is in
flight the next one fills, so the batch size grows with load and the round trips do not. Heartbeats
are coalesced per session (only the newest matters) and written per room as one ZADD and one HSET.
Reads go through ``flush()`` first, so they see every write made before them.

A join is the one write whose answer matters: the join script refuses a session when the room
already holds its capacity of sessions of every node, so ``join`` returns a ``PendingJoin`` whose
future the flusher resolves with the script's result. Nothing else is awaited per operation.

``connect`` gives a plain client for ``redis://`` / ``rediss://`` / ``unix://`` URLs and a
``RedisCluster`` for ``redis+cluster://host:port[,host:port...]``. A room's keys share one slot
(``{roomId}`` hash tag) and every script touches one room only, so the same pipelines and scripts
run on both: the cluster pipeline (never transactional) sends each node its own commands, in
order, and SCRIPT LOAD goes to every master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ..errors import ConfigError
from . import events, keys

log = logging.getLogger("spidi.redis")

_MAX_RETRY_OPS = 200_000
# What a failed round trip raises: a RedisError, a socket error, or on a cluster (no node
# reachable, say) a RedisClusterException, which is not a RedisError.
REDIS_FAILURES = (RedisError, OSError, RedisClusterException)

REFUSED = -1  # join.lua's answer when the room is full
_LIMIT_ARG = 8  # index of join.lua's `limit` in the join's ARGV


class PendingJoin:
    """A join on its way to Redis.

    ``result`` resolves to the room's online count once the join is in Redis, to ``REFUSED``
    when the room was already full (counting every node's sessions), or to None when the script
    failed or the store closed first. ``force`` makes the join unconditional: the caller admitted
    the session without Redis's answer (Redis down or slow) and Redis must then hold it whatever
    its count says.
    """

    __slots__ = ("room_id", "session_id", "tenant", "code", "user_id", "ttl_s", "args", "result", "forced")

    def __init__(self, room_id, session_id, tenant, code, user_id, ttl_s, args, result):
        self.room_id = room_id
        self.session_id = session_id
        self.tenant = tenant
        self.code = code
        self.user_id = user_id
        self.ttl_s = ttl_s
        self.args = args
        self.result: asyncio.Future = result
        self.forced = False

    def force(self) -> None:
        """Admit whatever Redis counts (degraded mode); a refusal already on its way is redone."""
        self.forced = True
        self.args[_LIMIT_ARG] = 0

    def _resolve(self, value) -> None:
        if not self.result.done():
            self.result.set_result(value)


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


def current_hour(now_s: float | None = None) -> str:
    """The hour bucket `peak` is kept for (UTC, ``YYYYMMDDHH``)."""
    return time.strftime("%Y%m%d%H", time.gmtime(now_s if now_s is not None else time.time()))


class HotStore:
    """The presence hot state of every room, in Redis."""

    def __init__(
        self, client: aioredis.Redis, *, on_flush=None, min_interval_s: float = 0.0, node_id: str = ""
    ):
        self.redis = client
        self.node_id = node_id
        self._node_key = keys.node_sessions(node_id)
        self.min_interval_s = min_interval_s
        # Scripts are loaded once and called by sha: redis-py's Script objects would add a
        # SCRIPT EXISTS round trip to every pipeline.
        self._sources = {
            name: _script(f"{name}.lua") for name in ("join", "leave", "room_metrics", "heartbeats")
        }
        self._shas: dict[str, str] = {}
        self._ops: list[tuple] = []
        self._beats: dict[str, dict[str, tuple[int, float]]] = {}
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        self._closing = False
        self.on_flush = on_flush  # callable(commands, seconds, ok) for metrics
        self.healthy = True
        self.last_error: str | None = None

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every Lua script (at start, and again if Redis lost them)."""
        for name, source in self._sources.items():
            self._shas[name] = await self.redis.script_load(source)

    def _eval(self, pipe, name: str, script_keys: list[str], args: list) -> None:
        pipeline_evalsha(pipe, self._shas[name], script_keys, args)

    async def start(self) -> None:
        """Check the connection, load the scripts and start the flusher."""
        await self.redis.ping()
        await self.load_scripts()
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="spidi-redis-flusher")

    # -- buffered writes (never awaited) ------------------------------------------------------

    def join(
        self,
        room_id: str,
        tenant: str,
        code: str,
        capacity: int,
        session_id: str,
        user_id: str,
        now_ms: int,
        ttl_s: int,
        fields: dict,
    ) -> PendingJoin:
        """Record a session joining a room, with its static metadata, if the room has a place.

        Buffered like every write; the returned ``PendingJoin`` resolves when Redis answered.
        The room is full when it already holds ``capacity`` sessions of any node (0: no limit).
        """
        args = [session_id, now_ms, user_id, current_hour(now_ms / 1000), ttl_s, capacity, code, tenant,
                capacity]  # fmt: skip
        for name, value in fields.items():
            args.append(name)
            args.append("" if value is None else value)
        pending = PendingJoin(room_id, session_id, tenant, code, user_id, ttl_s, args,
                              asyncio.get_running_loop().create_future())  # fmt: skip
        self._ops.append(("join", pending))
        self._wake.set()
        return pending

    def heartbeat(self, room_id: str, session_id: str, now_ms: int, latency_ms: float) -> None:
        """Record a heartbeat; the newest per session wins, written with the next pipeline."""
        beats = self._beats.get(room_id)
        if beats is None:
            beats = self._beats[room_id] = {}
        beats[session_id] = (now_ms, latency_ms)
        self._wake.set()

    def update_session(
        self, room_id: str, session_id: str, tenant: str, user_id: str, ttl_s: int, fields: dict | None = None
    ) -> None:
        """Refresh a session's TTLs, and optionally some of its fields (resume: new ip)."""
        self._ops.append(("touch", room_id, session_id, ttl_s, fields, tenant, user_id))
        self._wake.set()

    def leave(self, room_id: str, session_id: str, tenant: str, user_id: str) -> None:
        """Remove a session from its room."""
        beats = self._beats.get(room_id)
        if beats is not None:
            beats.pop(session_id, None)
        self._ops.append(("leave", room_id, session_id, user_id, tenant))
        self._wake.set()

    def event(self, fields: dict) -> None:
        """Append a history event (see stores/events.py) to the stream, in the next pipeline."""
        self._ops.append(("event", events.encode(fields)))
        self._wake.set()

    def publish(self, channel: str, payload: bytes) -> None:
        """PUBLISH in the next pipeline, after the writes queued before it (readers see them)."""
        self._ops.append(("publish", channel, payload))
        self._wake.set()

    def set_capacity(self, room_id: str, capacity: int) -> None:
        """Record a room's capacity (shown in its metrics)."""
        self._ops.append(("capacity", room_id, capacity))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Operations waiting for the next pipeline."""
        return len(self._ops) + sum(len(b) for b in self._beats.values())

    # -- the flusher ---------------------------------------------------------------------------

    def _build(self, pipe, ops: list[tuple], beats: dict, joins: list) -> int:
        """Queue ``ops`` and ``beats`` on ``pipe``; returns the command count. Every command
        adds one reply, so a join's script reply is at the index ``commands`` had when queued:
        ``joins`` receives (index, PendingJoin)."""
        commands = 0
        publishes = []
        for op in ops:
            kind = op[0]
            if kind == "join":
                j = op[1]
                room_id, session_id = j.room_id, j.session_id
                joins.append((commands, j))
                self._eval(
                    pipe, "join", [*keys.room_keys(room_id), keys.session(room_id, session_id)], j.args
                )
                pipe.hset(keys.tenant_rooms(j.tenant), room_id, j.code)
                # The user's index lives in its own slot: plain commands, not part of the script.
                # (Written with the join, not after its answer, to save a round trip; a refused
                # join takes them back with an "unindex".)
                user_key = keys.user_sessions(j.tenant, j.user_id)
                pipe.hset(user_key, session_id, room_id)
                pipe.expire(user_key, j.ttl_s)
                # The node's index: what to end if this process dies without a word.
                pipe.hset(self._node_key, session_id, room_id)
                commands += 5
            elif kind == "unindex":
                _, session_id, tenant, user_id = op
                pipe.hdel(keys.user_sessions(tenant, user_id), session_id)
                pipe.hdel(self._node_key, session_id)
                commands += 2
            elif kind == "leave":
                _, room_id, session_id, user_id, tenant = op
                self._eval(pipe, "leave", [*keys.room_keys(room_id), keys.session(room_id, session_id)],
                           [session_id, user_id])  # fmt: skip
                pipe.hdel(keys.user_sessions(tenant, user_id), session_id)
                pipe.hdel(self._node_key, session_id)
                commands += 3
            elif kind == "touch":
                _, room_id, session_id, ttl_s, fields, tenant, user_id = op
                key = keys.session(room_id, session_id)
                if fields:
                    pipe.hset(key, mapping={k: ("" if v is None else v) for k, v in fields.items()})
                    commands += 1
                pipe.expire(key, ttl_s)
                pipe.expire(keys.user_sessions(tenant, user_id), ttl_s)
                commands += 2
            elif kind == "event":
                pipe.xadd(events.STREAM, op[1], maxlen=events.STREAM_MAXLEN, approximate=True)
                commands += 1
            elif kind == "publish":
                publishes.append(op)
            elif kind == "capacity":
                _, room_id, capacity = op
                pipe.hset(keys.room_metrics(room_id), "capacity", capacity)
                commands += 1
        for room_id, room_beats in beats.items():
            packed = "\n".join([f"{sid} {b[0]} {b[1]}" for sid, b in room_beats.items()])
            self._eval(pipe, "heartbeats", [keys.room_online(room_id), keys.room_latency(room_id)], [packed])
            commands += 1
        # Announcements last: whoever hears one and reads Redis sees every write it announces.
        for _, channel, payload in publishes:
            pipeline_publish(pipe, channel, payload)
            commands += 1
        return commands

    async def _flusher(self) -> None:
        backoff = 0.05
        last = 0.0
        while True:
            await self._wake.wait()
            # Let a few milliseconds of writes gather: a pipeline costs the same Python work for
            # 2 commands as for 200 heartbeats coalesced into them. A flush() caller does not wait.
            pause = self.min_interval_s - (time.monotonic() - last)
            if pause > 0 and not self._waiters and not self._closing:
                await asyncio.sleep(pause)
            last = time.monotonic()
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            ops, self._ops = self._ops, []
            beats, self._beats = self._beats, {}
            ok = True
            if ops or beats:
                started = time.perf_counter()
                pipe = self.redis.pipeline(transaction=False)
                commands = 0
                joins: list = []
                try:
                    commands = self._build(pipe, ops, beats, joins)
                    results = await pipe.execute(raise_on_error=False)
                    errors = [r for r in results if isinstance(r, Exception)]
                    if any(isinstance(e, NoScriptError) for e in errors):
                        # Redis restarted and lost the scripts: load them, replay the batch
                        # (joins and leaves are idempotent, heartbeats carry absolute values).
                        await self.load_scripts()
                        raise NoScriptError("scripts reloaded; replaying the batch")
                    if errors:
                        log.error(
                            "redis pipeline: %d of %d commands failed: %s", len(errors), commands, errors[0]
                        )
                    self.healthy, self.last_error, backoff = True, None, 0.05
                    if joins:
                        self._answer_joins(joins, results)
                        # What the admitted HELLOs write next (their history events) goes out
                        # without the pause, as it did when it travelled with the join.
                        last = 0.0
                except REDIS_FAILURES as exc:
                    ok = False
                    self.healthy, self.last_error = False, str(exc)
                    log.error("redis pipeline failed (%d commands), will retry: %s", commands, exc)
                    self._requeue(ops, beats)
                except Exception:
                    # A bug, not an outage: retrying the same batch would fail forever. Drop it
                    # loudly and keep the flusher alive for everything after it.
                    log.exception("redis pipeline raised unexpectedly; %d commands dropped", commands)
                    for op in ops:
                        if op[0] == "join":
                            op[1]._resolve(None)
                if self.on_flush is not None:
                    self.on_flush(commands, time.perf_counter() - started, ok)
            if not ok and not self._closing:
                # The waiters of this batch wait for its retry.
                self._waiters[:0] = waiters
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(ok)
            if self._closing and (not ok or (not self._ops and not self._beats)):
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(ok)
                for op in self._ops:
                    if op[0] == "join":
                        op[1]._resolve(None)
                return

    def _answer_joins(self, joins: list, results: list) -> None:
        """Resolve each join with its script's reply; undo the indexes of refused ones."""
        redo = []
        for index, j in joins:
            reply = results[index]
            if isinstance(reply, Exception):
                j._resolve(None)  # logged with the pipeline's errors; the caller decides
            elif int(reply) != REFUSED:
                j._resolve(int(reply))
            elif j.forced:
                # Admitted without Redis's answer (it came too late): Redis must hold the
                # session anyway. Ahead of what was queued since, so a LEAVE stays after it.
                redo.append(("join", j))
            else:
                j._resolve(REFUSED)
                self._ops.append(("unindex", j.session_id, j.tenant, j.user_id))
        if redo:
            self._ops[:0] = redo
        if self._ops:
            self._wake.set()

    def _requeue(self, ops: list[tuple], beats: dict) -> None:
        """Put a failed batch back in front of what arrived since, newest heartbeat winning."""
        self._ops[:0] = ops
        for room_id, room_beats in beats.items():
            merged = dict(room_beats)
            merged.update(self._beats.get(room_id, {}))
            self._beats[room_id] = merged
        if len(self._ops) > _MAX_RETRY_OPS:
            dropped = len(self._ops) - _MAX_RETRY_OPS
            del self._ops[:dropped]
            log.error(
                "redis unreachable: dropped %d buffered operations beyond the %d cap", dropped, _MAX_RETRY_OPS
            )

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything buffered before this call is in Redis. True on success."""
        if self._task is None or self._task.done():
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (bounded by ``timeout``), stop the flusher, close the client."""
        if self._task is not None:
            await self.flush(timeout)
            self._closing = True
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, 1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        await self.redis.aclose()

    # -- reads ---------------------------------------------------------------------------------

    async def room_metrics(self, room_ids: list[str]) -> list[dict]:
        """Metrics of each room as Redis holds them (every node's sessions), in input order."""
        if not room_ids:
            return []
        await self.flush(2.0)
        hour = current_hour()
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for room_id in room_ids:
                self._eval(pipe, "room_metrics", keys.room_keys(room_id), [hour])
            try:
                replies = await pipe.execute()
                break
            except NoScriptError:
                # A restarted Redis, or a cluster replica promoted without our scripts.
                if attempt:
                    raise
                await self.load_scripts()
        out = []
        for room_id, raw in zip(room_ids, replies, strict=True):
            online, users, peak, capacity, lat_sum, lat_n, code, tenant = raw
            lat_sum = float(lat_sum)
            out.append(
                {
                    "roomId": room_id,
                    "roomCode": _text(code),
                    "tenant": _text(tenant),
                    "online": int(online),
                    "users": int(users),
                    "peak": int(peak),
                    "capacity": int(capacity),
                    "avgLatencyMs": round(lat_sum / lat_n, 1) if lat_n else 0.0,
                }
            )
        return out

    async def room_online(self, room_id: str) -> int:
        """Sessions in a room across every node."""
        await self.flush(2.0)
        return int(await self.redis.zcard(keys.room_online(room_id)))

    async def roster(self, room_id: str) -> list[dict]:
        """Every session of a room with its metadata, latency and last heartbeat."""
        await self.flush(2.0)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(keys.room_online(room_id), 0, -1, withscores=True)
        pipe.hgetall(keys.room_latency(room_id))
        members, latencies = await pipe.execute()
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for sid, _ in members:
            pipe.hgetall(keys.session(room_id, _text(sid)))
        infos = await pipe.execute()
        latencies = {_text(k): float(v) for k, v in latencies.items()}
        out = []
        for (sid, score), info in zip(members, infos, strict=True):
            sid = _text(sid)
            entry = {_text(k): _text(v) for k, v in info.items()}
            entry["sessionId"] = sid
            entry["latencyMs"] = latencies.get(sid)
            entry["lastHeartbeatAt"] = int(score)
            if "connectedAt" in entry:
                entry["connectedAt"] = int(entry["connectedAt"])
            out.append(entry)
        return out

    async def user_sessions(self, tenant: str, user_id: str) -> list[dict]:
        """Every live session of a user, across rooms and nodes, with latency and last heartbeat."""
        await self.flush(2.0)
        index = await self.redis.hgetall(keys.user_sessions(tenant, user_id))
        if not index:
            return []
        pairs = [(_text(sid), _text(room_id)) for sid, room_id in index.items()]
        pipe = self.redis.pipeline(transaction=False)
        for sid, room_id in pairs:
            pipe.hgetall(keys.session(room_id, sid))
            pipe.hget(keys.room_latency(room_id), sid)
            pipe.zscore(keys.room_online(room_id), sid)
        raw = await pipe.execute()
        out = []
        for i, (sid, room_id) in enumerate(pairs):
            info, latency, score = raw[3 * i : 3 * i + 3]
            if not info or score is None:
                continue  # ended between the two reads, or a stale index entry
            entry = {_text(k): _text(v) for k, v in info.items()}
            entry.update(sessionId=sid, roomId=room_id, lastHeartbeatAt=int(score),
                         latencyMs=float(latency) if latency is not None else None)  # fmt: skip
            if "connectedAt" in entry:
                entry["connectedAt"] = int(entry["connectedAt"])
            out.append(entry)
        return out

    async def tenant_rooms(self, tenant: str) -> dict[str, str]:
        """roomId -> roomCode for every room of a tenant that ever had a session."""
        await self.flush(2.0)
        raw = await self.redis.hgetall(keys.tenant_rooms(tenant))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def ping(self) -> bool:
        """Whether Redis answers within a second (on a cluster: every node)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (*REDIS_FAILURES, TimeoutError):
            return False


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.startswith(CLUSTER_SCHEMES)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict]:
    """``redis+cluster://[user:password@]host:port[,host:port...]`` -> seed nodes and the
    connection options every node shares (credentials, TLS). A cluster has only database 0."""
    if not is_cluster_url(url):
        raise ConfigError(f"redis_url: not a redis+cluster:// URL: {url!r}")
    scheme, rest = url.split("://", 1)
    rest = rest.split("?", 1)[0].split("/", 1)[0]
    options: dict = {"ssl": scheme == "rediss+cluster"}
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    nodes = []
    for part in rest.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"redis_url: {part!r} is not host:port in {url!r}")
        nodes.append((host, int(port)))
    return nodes, options


def connect(url: str) -> aioredis.Redis | RedisCluster:
    """A redis-py asyncio client (hiredis parser when installed) for ``url``.

    ``redis+cluster://`` URLs give a ``RedisCluster`` seeded with every listed node; it learns
    the slot map from them and follows MOVED/ASK redirections by itself.
    """
    if is_cluster_url(url):
        nodes, options = parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            socket_connect_timeout=2.0,
            **options,
        )
    return aioredis.Redis.from_url(url, socket_connect_timeout=2.0, health_check_interval=0)


def connect_sync(url: str, **kwargs) -> redis.Redis | redis.cluster.RedisCluster:
    """The synchronous twin of ``connect`` (the history writer), with extra client options."""
    if is_cluster_url(url):
        from redis.cluster import ClusterNode as SyncClusterNode
        from redis.cluster import RedisCluster as SyncRedisCluster

        nodes, options = parse_cluster_url(url)
        return SyncRedisCluster(
            startup_nodes=[SyncClusterNode(host, port) for host, port in nodes], **options, **kwargs
        )
    return redis.Redis.from_url(url, **kwargs)


# redis-py refuses the ``evalsha`` and ``publish`` methods on a cluster pipeline (its list of
# commands it cannot route), yet routes the raw commands correctly: EVALSHA by its keys, PUBLISH by
# its channel as if it were a key. Both helpers queue the raw command, on plain pipelines too.


def pipeline_evalsha(pipe, sha: str, script_keys: list[str], args: list) -> None:
    """Queue EVALSHA on ``pipe``, a plain or a cluster pipeline (the keys pick the node)."""
    pipe.execute_command("EVALSHA", sha, len(script_keys), *script_keys, *args)


def pipeline_publish(pipe, channel: str, payload) -> None:
    """Queue a PUBLISH on ``pipe``, a plain or a cluster pipeline.

    On a cluster ``spidi:roster:{roomId}`` goes to the room's own master, after the room's writes
    of the same pipeline, and a classic PUBLISH reaches the subscribers of every node.
    """
    pipe.execute_command("PUBLISH", channel, payload)


def is_cluster(client) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


_NODE_OPTIONS = ("username", "password", "ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile",
                 "ssl_keyfile", "socket_connect_timeout", "socket_keepalive")  # fmt: skip


async def pubsub_client(client, attempt: int = 0) -> aioredis.Redis:
    """The client to SUBSCRIBE with: ``client`` itself, or on a cluster a plain client of one
    node (the ``attempt``-th, so a caller whose node went away moves on to the next).

    Classic PUBLISH reaches the subscribers of every node of a cluster, so one connection to any
    node hears every channel; a plain client keeps redis-py's ordinary PubSub, with its
    reconnect and resubscribe, instead of the cluster's per-slot routing of channels.
    """
    if not is_cluster(client):
        return client
    await client.initialize()
    nodes = sorted(client.get_nodes(), key=lambda n: n.name)
    node = nodes[attempt % len(nodes)]
    options = {k: v for k, v in node.connection_kwargs.items() if k in _NODE_OPTIONS}
    if issubclass(node.connection_class, SSLConnection):  # how the cluster client records TLS
        options["ssl"] = True
    return aioredis.Redis(host=node.host, port=node.port, **options)
