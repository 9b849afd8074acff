"""The hot store's flush pipelines on a plain client: packed once, sent in one write, read in one loop.

redis-py runs every command of a pipeline through its per-command machinery: queued with its
options, then each reply read through three coroutine layers, a timeout armed for it and a response
callback applied (~210 µs of Python per pipeline and ~28 µs per join on the node, measured:
benchmarks/results/20261205T0220-issue15-connect-ab.md). The flusher (stores/hot_store.py) needs none
of it: it sends one batch at a time, reads every reply as Redis sent it, and handles failures
itself. So on a plain client

- ``LeanPipeline`` packs each command as it is queued (``hiredis.pack_command``, or the bytes of a
  ``RawCommand`` as they are; redis-py's own packing for what hiredis refuses, so Redis receives
  the same bytes and a bad argument raises redis-py's DataError). It has the queueing methods of
  redis-py's commands (``xadd``, ``hset``...: redis-py's own, so the arguments are the same);
- ``LeanExecutor`` keeps one connection taken from the client's pool (redis-py's own Connection:
  TLS, AUTH, unix sockets and the URL's options work as they do for every other command), writes
  the batch with one write and reads the N replies with the connection's hiredis reader in one
  loop: the error replies are the exceptions redis-py would give (NoScriptError,
  OutOfMemoryError...: its parser's ``parse_error``), the others raw values as hiredis gives them
  in the connection's protocol (RESP3 by default in redis-py 8: bytes, ints, lists, None, and
  dicts and floats where RESP3 has them), with no response callback (SET answers ``b"OK"``, not
  True). A RESP3 push message among them is handled as redis-py handles it, not taken for a reply.

Failures are redis-py's: each read of the socket is bounded by the client's ``socket_timeout``
(then redis-py's TimeoutError), a closed or reset connection raises its ConnectionError, an
unparsable reply its InvalidResponse; in every such case, and when the execution is cancelled
(the store's close), the connection is dropped: a half-read connection never carries the next
batch (it reconnects, as redis-py's do). Nothing is sent twice here: the flusher decides retries.
A connection Redis closed between two batches (a restart) is reopened before the write, as the
pool does for a connection it hands out.

``pipelines`` chooses, in one place, between this and redis-py's pipeline (``StockPipelines``):
a cluster client, or a client of another encoding, parser or ``decode_responses``, keeps redis-py's.
"""

from __future__ import annotations

import asyncio

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import DefaultParser
from redis.commands.core import (
    BasicKeyCommands,
    HashCommands,
    SetCommands,
    SortedSetCommands,
    StreamCommands,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .client import PackedPipelineMixin, RawCommand, is_cluster

_READ_SIZE = 65536  # bytes asked of the socket per read (redis-py's socket_read_size)


class LeanPipeline(BasicKeyCommands, HashCommands, SetCommands, SortedSetCommands, StreamCommands):
    """Commands packed as they are queued, for ``LeanExecutor.execute``. Only the queueing methods
    of redis-py's key, hash, set, sorted-set and stream commands, and ``execute_command``."""

    takes_raw = True  # a RawCommand goes as it is (client.takes_raw)

    def __init__(self, pack_stock) -> None:
        self._pack_stock = pack_stock  # redis-py's packing of one command: what hiredis refuses
        self.packed: list[bytes] = []

    def __len__(self) -> int:
        return len(self.packed)

    def execute_command(self, *args, **options):
        """Queue one command (``options``, redis-py's routing hints, are not needed)."""
        last = args[-1]
        if type(last) is RawCommand:
            self.packed.append(last)
            return self
        first = args[0]
        try:
            if type(first) is str and " " in first:
                raise TypeError("a command name with a space: redis-py splits it")
            self.packed.append(hiredis.pack_command(args))
        except TypeError:
            self.packed.append(b"".join(self._pack_stock(*args)))
        return self


class LeanExecutor:
    """Sends ``LeanPipeline``s on one connection of ``client``'s pool, one at a time."""

    def __init__(self, client) -> None:
        self.pool = client.connection_pool
        self._conn = None
        self._packer = self.pool.make_connection()  # never connected: packs what hiredis refuses

    def pipeline(self) -> LeanPipeline:
        """An empty pipeline to queue a batch on."""
        return LeanPipeline(self._packer.pack_command)

    async def execute(self, pipe: LeanPipeline) -> list:
        """Send ``pipe`` and return its replies in order, an error reply as its exception.

        Raises what redis-py raises for a connection that fails (ConnectionError, TimeoutError
        past ``socket_timeout`` without a byte, InvalidResponse...), after dropping it.
        """
        count = len(pipe.packed)
        if not count:
            return []
        conn = await self._connection()
        writer = conn._writer
        try:
            if writer.transport.is_closing():
                raise RedisConnectionError("Connection closed by the server before write")
            writer.write(b"".join(pipe.packed))
            if writer.transport.get_write_buffer_size():  # the socket took part of it: wait
                async with asyncio.timeout(conn.socket_timeout):
                    await writer.drain()
            return await self._read(conn, count)
        except BaseException as exc:
            # Whatever happened (an error, a timeout, a cancelled close), the rest of the replies
            # may still come: this connection never carries another batch.
            await conn.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error while talking to {conn._host_error()}: {exc}") from exc
            raise

    async def _read(self, conn, count: int) -> list:
        parser = conn._parser
        reader = parser._reader
        push = parser._hiredis_PushNotificationType  # RESP3: what Redis sends unasked
        stream = conn._reader
        timeout = conn.socket_timeout
        replies: list = []
        append = replies.append
        while True:
            reply = reader.gets()
            while reply is not NOT_ENOUGH_DATA:
                if push is not None and isinstance(reply, push):
                    await parser.handle_push_response(reply)  # not a reply: as redis-py handles it
                else:
                    append(reply)
                    if len(replies) == count:
                        return _checked(replies)
                reply = reader.gets()
            if timeout:
                async with asyncio.timeout(timeout):
                    data = await stream.read(_READ_SIZE)
            else:
                data = await stream.read(_READ_SIZE)
            if not data:
                raise RedisConnectionError("Connection closed by server.")
            reader.feed(data)

    async def _connection(self):
        """The executor's connection, connected, holding no stale bytes."""
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.pool.get_connection()  # connected and checked by the pool
            return conn
        if not conn.is_connected:
            await conn.connect()
            return conn
        stream = conn._reader
        if (
            stream.at_eof()
            or stream.exception() is not None
            or stream._buffer
            or conn._parser._reader.has_data()
        ):
            # Closed by Redis since the last batch (a restart), or something unasked for: start over.
            await conn.disconnect(nowait=True)
            await conn.connect()
        return conn

    async def close(self) -> None:
        """Give the connection back to the pool (the store's close, before the client's)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.release(conn)


def _checked(replies: list) -> list:
    """``replies``, unless one is a connection-level error (Redis loading its data, out of client
    slots, an AUTH lost...): that one is raised, as redis-py raises it for its command."""
    for reply in replies:
        if isinstance(reply, RedisConnectionError):
            raise reply
        if type(reply) is list and reply and isinstance(reply[0], RedisConnectionError):
            raise reply[0]
    return replies


class StockPipelines:
    """redis-py's own pipelines (a cluster client, or a client the lean path does not fit)."""

    def __init__(self, client) -> None:
        self.client = client

    def pipeline(self):
        """An empty (non-transactional) pipeline."""
        return self.client.pipeline(transaction=False)

    async def execute(self, pipe) -> list:
        """Send ``pipe``; error replies come back as exceptions in the list."""
        return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        """Nothing held."""


def fits(client) -> bool:
    """Whether ``client`` takes ``LeanExecutor``: a plain client packing with hiredis
    (``client.use_packed_pipelines``: UTF-8), its parser hiredis', bytes replies (RESP2 or 3)."""
    if is_cluster(client):
        return False
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    parser = kwargs.get("parser_class", DefaultParser)
    return (
        issubclass(pool.connection_class, PackedPipelineMixin)
        and isinstance(parser, type)
        and issubclass(parser, _AsyncHiredisParser)
        and not kwargs.get("decode_responses", False)
    )


def pipelines(client) -> LeanExecutor | StockPipelines:
    """How the hot store sends its pipelines on ``client``: lean where it fits, else redis-py's."""
    return LeanExecutor(client) if fits(client) else StockPipelines(client)
