"""Presence history in PostgreSQL.

Server processes append events to the Redis Stream ``spidi:events`` (see ``stores/events.py``);
the writer (``writer.py``) drains it into PostgreSQL in batches, idempotently. The schema lives in
``migrations/`` (applied by ``migrate.py``), every other SQL statement in ``queries.py``;
``partitions.py`` names and creates the monthly/quarterly/daily partitions, ``retention.py``
archives and drops old ones, ``embedded_pg.py`` runs a private PostgreSQL when no DSN is set.
"""
