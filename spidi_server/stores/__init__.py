"""Stores: Redis hot state (and, later, PostgreSQL history). Nothing here imports the server.

Lowest first (each module imports only the ones above it):

    keys.py            every Redis key name and channel
    client.py          connections, the one Redis URL parser, pipeline helpers for plain and cluster
    scripts.py         the Lua scripts in lua/: sources, loading by sha, join.lua's arguments
    events.py          history events written to the stream
    spill.py           the spill file (writes kept on disk while Redis is away)
    commands.py        the buffered operations and the commands each one queues on a pipeline
    reads.py           room metrics, rosters, a user's sessions, a tenant's rooms
    joins.py           PendingJoin (a join's answer), LiveSession (a session written again)
    beat_buffer.py     the heartbeats waiting for the flusher, and when they wake it
    recovery.py        outages, the spill file's replay, rebuilding what Redis lost
    hot_store.py       HotStore: buffered writes, the flusher, and the read methods callers use
    embedded_redis.py  a redis-server child for development and tests
"""
