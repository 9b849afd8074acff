"""Redis connections: the one parser of Redis URLs, the clients, and pipeline helpers for both kinds.

``connect`` gives a plain client for ``redis://`` / ``rediss://`` / ``unix://`` URLs and a
``RedisCluster`` for ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS).
A room's keys share one slot (``{roomId}`` hash tag, stores/keys.py) and every script touches one
room only, so the same pipelines and scripts run on both: the cluster pipeline (never
transactional) sends each node its own commands, in order.

Pipelines of a plain client are packed in C (``use_packed_pipelines``): redis-py 8 already hands
each command to hiredis' ``pack_command``, but first encodes every argument through a Python
generator (~10x the packing itself); the hook gives hiredis the command as queued and falls back
to redis-py for anything hiredis refuses, so Redis receives the same bytes. A command queued as a
``RawCommand`` (its RESP written by the caller: the heartbeats, stores/beat_buffer.py) is sent as it
is (``takes_raw`` says whether a pipeline can). The replies of a
pipeline that arrived together are then read without a timeout armed for each (the first is timed).
The hot store's flusher goes further on a plain client: its pipelines skip redis-py's pipeline
altogether (stores/lean_pipeline.py: packed once, one write, every reply read in one loop) on a
connection of this client's pool, so the options above (TLS, AUTH, timeouts) are the same.

``parse_cluster_url`` is the only place that reads a cluster URL: ``connect``, ``connect_sync``
and the settings validation (settings.py) all call it. This module imports nothing of Spidi's but
its errors and the redaction of its messages, so the settings can import it.
"""

from __future__ import annotations

from urllib.parse import unquote

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.base import UNRECOVERABLE_PARSE_ERRORS
from redis._parsers.hiredis import NOT_ENOUGH_DATA as HIREDIS_NOT_ENOUGH_DATA
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisClusterException, RedisError, ResponseError

from ..errors import ConfigError
from ..redact import redact

# What a failed round trip raises: a RedisError, a socket error, or on a cluster (no node
# reachable, say) a RedisClusterException, which is not a RedisError.
REDIS_FAILURES = (RedisError, OSError, RedisClusterException)


class RedisFull(RedisError):
    """Redis refused a pipeline's writes: used memory is above its ``maxmemory`` (policy
    ``noeviction``). The hot store handles it as an outage: the batch is kept and retried."""


def out_of_memory(reply: object) -> bool:
    """Whether a pipeline reply is Redis's OOM refusal (a command's ``-OOM``, or a script's write
    refused with it, which reaches us as a script error quoting it)."""
    return isinstance(reply, OutOfMemoryError) or (
        isinstance(reply, ResponseError) and "used memory > 'maxmemory'" in str(reply)
    )


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

# When Redis counts as hung unless the caller says otherwise (settings: redis_timeout_ms), and how
# many times longer a reply is awaited before its connection is dropped (redis-py's socket_timeout:
# redis-py 5 waits forever by default, 8 waits 5 s; say it here, once, for both).
DEFAULT_TIMEOUT_S = 3.0
DROP_AFTER = 10


def text(value) -> str:
    """A Redis reply (bytes, or already a str or a number) as a str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return url.startswith(CLUSTER_SCHEMES)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict]:
    """``redis+cluster://[user:password@]host:port[,host:port...]`` -> seed nodes and the
    connection options every node shares (credentials, TLS). A cluster has only database 0.

    A seed without a port gets 6379. Raises ``ConfigError`` (naming ``redis_url``) for a URL of
    another scheme or a seed that is not ``host:port``.
    """
    if not is_cluster_url(url):
        raise ConfigError(f"redis_url: not a redis+cluster:// URL: {redact(url)!r}")
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
            raise ConfigError(f"redis_url: {part!r} is not host:port in {redact(url)!r}")
        nodes.append((host, int(port)))
    return nodes, options


def check_url(url: str) -> None:
    """Raise ``ConfigError`` (naming ``redis_url``, without its password) unless redis-py can read
    ``url``, a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"redis_url: {redact(url)!r}: {redact(str(exc))}") from exc


class RawCommand(bytes):
    """A whole command already in RESP (``*<n>\\r\\n`` and its bulk strings), queued as the only
    argument after its name: ``pipe.execute_command("ZADD", RawCommand(...))``. Only for a
    pipeline that ``takes_raw``: the name is what its reply is read as."""

    __slots__ = ()


class PackedPipelineMixin:
    """``pack_commands`` (what a pipeline sends) packed by hiredis in C, command by command.

    hiredis packs str (UTF-8), bytes, int and float (``repr``) exactly as redis-py's encoder
    does; it raises TypeError for what redis-py encodes differently or refuses (bytearray,
    None, bool...), and a first argument with a space (``"SCRIPT LOAD"``) is split by redis-py:
    such a command takes redis-py's own path, and its answer or its DataError. A ``RawCommand``
    goes as it is. It also reads a reply hiredis already holds without arming a timeout for it
    (``read_response``).
    """

    def pack_commands(self, commands):
        pack = hiredis.pack_command
        packed = []
        for args in commands:
            last = args[-1]
            if type(last) is RawCommand:
                packed.append(last)
                continue
            first = args[0]
            try:
                if type(first) is str and " " in first:
                    raise TypeError("a command name with a space: redis-py splits it")
                packed.append(pack(args if type(args) is tuple else tuple(args)))
            except TypeError:
                packed.extend(super().pack_commands([args]))
        return [b"".join(packed)]

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ):
        """A reply hiredis already holds whole is returned without redis-py's per-read timeout.

        redis-py arms ``socket_timeout`` around every reply it reads (a Timeout object and a timer
        each, ~5% of a connect's CPU): a pipeline's first reply needs it, the rest usually came in
        the same read. So a reply already parsed is taken at once, handled as redis-py's hiredis
        parser and ``read_response`` handle it (push messages first, errors raised, the connection
        dropped on a connection error or garbage); when nothing whole is there yet (and for an
        explicit timeout, raw replies, push requests, health checks) redis-py reads it, timed.
        """
        parser = self._parser
        reader = getattr(parser, "_reader", None)
        if (
            reader is None
            or timeout is not None
            or disable_decoding
            or push_request
            or self.health_check_interval
            or not getattr(parser, "_connected", False)
        ):
            return await super().read_response(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
            )
        try:
            while True:
                response = reader.gets()
                push = parser._hiredis_PushNotificationType
                if response is HIREDIS_NOT_ENOUGH_DATA or push is None or not isinstance(response, push):
                    break
                await parser.handle_push_response(response)  # RESP3: then the reply it came before
        except UNRECOVERABLE_PARSE_ERRORS:
            await self.disconnect(nowait=True)  # the unparsable bytes stay: never reusable
            raise
        except BaseException:
            if disconnect_on_error:
                await self.disconnect(nowait=True)
            raise
        if response is HIREDIS_NOT_ENOUGH_DATA:  # nothing (more) consumed: the normal, timed read
            return await super().read_response(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error
            )
        if isinstance(response, RedisConnectionError) or (
            type(response) is list and response and isinstance(response[0], RedisConnectionError)
        ):
            if disconnect_on_error:
                await self.disconnect(nowait=True)
            raise response if isinstance(response, RedisConnectionError) else response[0]
        if isinstance(response, ResponseError):
            raise response
        return response


def takes_raw(pipe) -> bool:
    """Whether ``pipe`` sends a ``RawCommand`` as it is: a pipeline of a plain client whose
    connections pack with ``PackedPipelineMixin`` (not a cluster pipeline: it routes a command by
    its arguments), or a ``LeanPipeline`` (stores/lean_pipeline.py)."""
    if getattr(type(pipe), "takes_raw", False) is True:
        return True
    pool = getattr(pipe, "connection_pool", None)
    return pool is not None and issubclass(pool.connection_class, PackedPipelineMixin)


_PACKED_CLASSES: dict[type, type] = {}


def use_packed_pipelines(client: aioredis.Redis) -> aioredis.Redis:
    """Have the connections ``client`` opens from now on pack pipelines with ``PackedPipelineMixin``.

    Only for the default encoder (UTF-8, strict): another encoding would need redis-py's path.
    Returns ``client``.
    """
    pool = client.connection_pool
    encoding = pool.connection_kwargs.get("encoding", "utf-8")
    errors = pool.connection_kwargs.get("encoding_errors", "strict")
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8") or errors != "strict":
        return client
    base = pool.connection_class
    if not issubclass(base, PackedPipelineMixin):
        packed = _PACKED_CLASSES.get(base)
        if packed is None:
            packed = _PACKED_CLASSES[base] = type(f"Packed{base.__name__}", (PackedPipelineMixin, base), {})
        pool.connection_class = packed
    return client


def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> aioredis.Redis | RedisCluster:
    """A redis-py asyncio client (hiredis parser when installed) for ``url``.

    ``timeout_s`` is when Redis counts as hung; every read of a reply is bounded by ``DROP_AFTER``
    times that (redis-py's ``socket_timeout``): a Redis that accepts connections and never answers
    (stopped, behind a blackholed proxy) then raises ``redis.exceptions.TimeoutError`` instead of
    hanging its caller for good, and redis-py drops that connection (a late reply is never read as
    the answer to the next command). Pub/sub's blocking reads are not bounded by it.
    ``redis+cluster://`` URLs give a ``RedisCluster`` seeded with every listed node; it learns the
    slot map from them and follows MOVED/ASK redirections by itself. A plain client packs its
    pipelines in C (``use_packed_pipelines``); a cluster client keeps redis-py's packing (its
    nodes' connection class is its own).
    """
    read_timeout_s = timeout_s * DROP_AFTER
    if is_cluster_url(url):
        nodes, options = parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            socket_connect_timeout=2.0,
            socket_timeout=read_timeout_s,
            **options,
        )
    return use_packed_pipelines(
        aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=read_timeout_s, health_check_interval=0
        )
    )


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


def is_cluster(client) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


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


_NODE_OPTIONS = (
    "username",
    "password",
    "ssl",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "socket_connect_timeout",
    "socket_keepalive",
)


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
