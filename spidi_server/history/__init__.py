"""Presence history in PostgreSQL.

Server processes append events to the Redis Stream ``spidi:events`` (see ``stores/events.py``);
the writer drains it into PostgreSQL in batches, idempotently: ``writer.py`` is the process
(``spidi writer``, the child of ``spidi serve``), ``writer_loop.py`` the loop, ``stream.py`` its
Redis side, ``batch.py`` and ``staging.py`` a batch and its typed rows. The schema lives in
``migrations/`` (applied by ``migrate.py``); the other SQL statements in ``sql/``, one module per
concern (ingest, tenancy, rooms, room types, sessions, alerts). ``partitions.py`` names and
creates the monthly/quarterly/daily partitions, ``retention.py`` archives and drops old ones,
``embedded_pg.py`` runs a private PostgreSQL when no DSN is set.
"""
