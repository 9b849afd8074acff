"""The SQL of the history side, one module per concern (the schema itself: ``../migrations/``).

* ``ingest``     the writer's batches: staging table, COPY, event ledger, set-based upserts
* ``tenancy``    ``tenant_transaction``: what every tenant-facing read and write runs inside
* ``rooms``      the room catalogue (REST API, the node's room cache, tests): one set of functions
* ``room_types`` the room-type catalogue and the one lookup of a type by its code
* ``sessions``   history reads: sessions, room statistics, histogram helpers
* ``pitr``       a room in the past: its roster at an instant, its online count over time
* ``alerts``     the evaluator's reads, the writer's alert events, the operators' alert API
* ``slos``       latency SLOs: the operators' API, the evaluator's load, SLI counts off the histograms
* ``exports``    attendance exports: a room's sessions over a period, the per-tenant export chain
* ``anomalies``  anomaly rules: hour-of-week baselines, recent activity, the flags raised (0014)
* ``defaults``   what a tenant gets on first use: default room types and rules, seeded once
* ``common``     what the statement modules share: paging, soft delete, ``ConflictError``

Partition, retention and migration statements live beside the code that runs them
(``partitions.py``, ``retention.py``, ``migrate.py``).

Connections are psycopg 3 ``Connection`` objects. Functions that write open their own
``conn.transaction()`` (a savepoint when the caller already has a transaction), so they commit on
their own in autocommit-off connections used outside a transaction.

Readers isolate tenants with ``tenancy.tenant_transaction``; the writer and the server's own lookups
run as the connecting user, which sees every tenant (see migrations/0003_security.sql).
"""
