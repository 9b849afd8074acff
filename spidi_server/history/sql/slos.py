"""Latency SLOs' SQL: the operators' API for ``dat_spd_slo``, the evaluator's load, and the SLI
counts read off the room statistics' latency histograms.

The API statements run inside ``tenancy.tenant_transaction`` (row-level security scopes them to
the caller's tenant; the explicit tenant conditions only help the planner); the evaluator reads
every tenant's SLOs as the connecting user.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .common import ConflictError, page, soft_delete

# The SLO's columns the API writes.
SLO_API_COLUMNS = (
    "name",
    "scope",
    "room_id",
    "room_type_id",
    "objective",
    "threshold_ms",
    "percentile",
    "target",
    "window_days",
)

_API_SELECT = """
SELECT s.id::text AS id, s.name, s.scope, s.room_id::text AS room_id, s.room_type_id::text AS room_type_id,
       rt.code AS room_type, s.objective, s.threshold_ms, s.percentile, s.target, s.window_days,
       s.created_at, s.created_by, s.updated_at, s.updated_by
FROM dat_spd_slo AS s
LEFT JOIN tba_spd_room_type AS rt ON rt.id = s.room_type_id AND rt.unidad_negocio_id = s.unidad_negocio_id
WHERE s.unidad_negocio_id = %(tenant)s AND s.deleted_at IS NULL"""


def load_slos(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every live SLO of every tenant (the evaluator's role sees all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id::text AS slo_id, unidad_negocio_id AS tenant, name, scope, room_id::text AS room_id,
                      room_type_id::text AS room_type_id, threshold_ms, target, window_days
               FROM dat_spd_slo WHERE deleted_at IS NULL ORDER BY unidad_negocio_id, id"""
        ).fetchall()


def list_slos(
    conn: psycopg.Connection, tenant: str, *, room_id: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One page of ``tenant``'s live SLOs by name (byte order), and how many match in all.
    ``room_id``: only the SLOs scoped to that one room."""
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    query = _API_SELECT
    if room_id:
        query += " AND s.room_id = %(room_id)s"
        params["room_id"] = room_id
    return page(conn, query, params, 's.name COLLATE "C", s.id')


def get_slo(conn: psycopg.Connection, tenant: str, slo_id: str) -> dict[str, Any] | None:
    """The live SLO ``slo_id`` of ``tenant`` (with audit columns), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_API_SELECT + " AND s.id = %(id)s", {"tenant": tenant, "id": slo_id}).fetchone()


def _check_columns(values: dict[str, Any]) -> None:
    unknown = set(values) - set(SLO_API_COLUMNS)
    if unknown:
        raise ValueError(f"not SLO columns: {sorted(unknown)}")


def create_slo(
    conn: psycopg.Connection, tenant: str, values: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """Store a new SLO of ``tenant`` (``values``: SLO_API_COLUMNS, checked by the caller)."""
    _check_columns(values)
    columns = [c for c in SLO_API_COLUMNS if c in values]
    statement = sql.SQL(
        "INSERT INTO dat_spd_slo (unidad_negocio_id, {}, created_by, updated_by)"
        " VALUES (%(tenant)s, {}, %(actor)s, %(actor)s) RETURNING id::text"
    ).format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
    )
    with conn.transaction():
        slo_id = conn.execute(statement, {**values, "tenant": tenant, "actor": actor}).fetchone()[0]
    slo = get_slo(conn, tenant, slo_id)
    assert slo is not None
    return slo


def update_slo(
    conn: psycopg.Connection, tenant: str, slo_id: str, changes: dict[str, Any], *, actor: str
) -> dict[str, Any] | None:
    """Apply ``changes`` to a live SLO of ``tenant``; the updated SLO, or None if there is none."""
    _check_columns(changes)
    sets = [sql.SQL("updated_at = now()"), sql.SQL("updated_by = %(actor)s")]
    sets += [
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c))
        for c in SLO_API_COLUMNS
        if c in changes
    ]
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "UPDATE dat_spd_slo SET {} WHERE id = %(id)s AND unidad_negocio_id = %(tenant)s"
                " AND deleted_at IS NULL RETURNING id"
            ).format(sql.SQL(", ").join(sets)),
            {**changes, "id": slo_id, "tenant": tenant, "actor": actor},
        ).fetchone()
    return get_slo(conn, tenant, slo_id) if row else None


def delete_slo(conn: psycopg.Connection, tenant: str, slo_id: str, *, actor: str) -> bool:
    """Soft-delete an SLO of ``tenant``; False if there is no such live SLO. ConflictError while a
    live alert rule watches it (its burn alerts would have nothing to read)."""
    with conn.transaction():
        rules = conn.execute(
            """SELECT name FROM dat_spd_alert_rule
               WHERE slo_id = %s AND unidad_negocio_id = %s AND deleted_at IS NULL ORDER BY name""",
            [slo_id, tenant],
        ).fetchall()
        if rules:
            names = ", ".join(repr(r[0]) for r in rules)
            raise ConflictError(
                f"the SLO is watched by alert rule(s) {names}: delete them or point them at another SLO first"
            )
        return (
            soft_delete(conn, "dat_spd_slo", "id = %s AND unidad_negocio_id = %s", [slo_id, tenant], actor)
            > 0
        )


def exists(conn: psycopg.Connection, tenant: str, slo_id: str) -> bool:
    """Whether ``tenant`` has the live SLO ``slo_id``."""
    return (
        conn.execute(
            "SELECT 1 FROM dat_spd_slo WHERE id = %s AND unidad_negocio_id = %s AND deleted_at IS NULL",
            [slo_id, tenant],
        ).fetchone()
        is not None
    )


def room_in_scope(conn: psycopg.Connection, slo: dict[str, Any], room_id: str) -> bool:
    """Whether ``room_id``'s heartbeats count toward ``slo`` (an API row: scope, room_id, room_type_id)."""
    if slo["scope"] == "room":
        return room_id == slo["room_id"]
    if slo["scope"] == "room_type":
        return (
            conn.execute(
                "SELECT 1 FROM dat_spd_room WHERE id = %s AND room_type_id = %s",
                [room_id, slo["room_type_id"]],
            ).fetchone()
            is not None
        )
    return True


def sli_counts(
    conn: psycopg.Connection,
    *,
    tenant: str,
    scope: str,
    room_id: str | None,
    room_type_id: str | None,
    buckets: int,
    now: datetime,
    windows: Sequence[tuple[str, int]],
    only_room: str | None = None,
    per_room: bool = False,
    breakdown: str | None = None,
) -> dict[str | None, dict[str, tuple[int, int]]]:
    """(good, total) heartbeats of an SLO's scope in each window [now - seconds, now), by label.

    ``buckets``: how many histogram buckets count as good (``slo.bucket_count``). Every minute of
    ``dat_spd_room_stats`` of the scope's rooms is read once, back to the longest window; each
    window is a FILTER of the same scan. ``per_room``: by room id (rooms without heartbeats absent),
    else one entry under None. ``only_room``: that room's heartbeats only. ``breakdown``: a
    dimension of the SLO breakdown (``events.BREAKDOWN_DIMENSIONS``): by that dimension's value,
    None for its "other" group, off the minutes' ``latency_breakdown`` (groups without heartbeats
    absent).
    """
    longest = max(seconds for _, seconds in windows)
    params: dict[str, Any] = {
        "tenant": tenant,
        "k": buckets,
        "now": now,
        "since": now - timedelta(seconds=longest),
        "room_id": room_id,
        "room_type_id": room_type_id,
        "only_room": only_room,
    }
    where = [
        "st.unidad_negocio_id = %(tenant)s",
        "st.deleted_at IS NULL",
        "st.ts_bucket >= %(since)s",
        "st.ts_bucket < %(now)s",
    ]
    if scope == "room":
        where.append("st.room_id = %(room_id)s")
    elif scope == "room_type":
        where.append(
            "st.room_id IN (SELECT r.id FROM dat_spd_room AS r"
            " WHERE r.room_type_id = %(room_type_id)s AND r.unidad_negocio_id = %(tenant)s)"
        )
    if only_room is not None:
        where.append("st.room_id = %(only_room)s")
    sums = []
    for i, (_, seconds) in enumerate(windows):
        params[f"w{i}"] = now - timedelta(seconds=seconds)
        sums.append(
            f"coalesce(sum(good) FILTER (WHERE ts_bucket >= %(w{i})s), 0)::bigint,"
            f" coalesce(sum(total) FILTER (WHERE ts_bucket >= %(w{i})s), 0)::bigint"
        )
    if breakdown is not None:
        # Each minute's groups of the dimension: the same good/total, per group's histogram.
        params["dim"] = breakdown
        source = "dat_spd_room_stats AS st, spd_breakdown_groups(st.latency_breakdown, %(dim)s) AS g"
        hist, key, group = "g.hist", "label", "GROUP BY label"
    else:
        source = "dat_spd_room_stats AS st"
        hist, key = "st.latency_hist", "room_id::text" if per_room else "NULL::text"
        group = "GROUP BY room_id" if per_room else ""
    query = f"""
        WITH m AS (
            SELECT st.room_id, st.ts_bucket, {"g.label" if breakdown is not None else "NULL::text"} AS label,
                   (SELECT coalesce(sum(x), 0) FROM unnest({hist}[1:%(k)s]) AS x) AS good,
                   (SELECT coalesce(sum(x), 0) FROM unnest({hist}) AS x) AS total
            FROM {source}
            WHERE {" AND ".join(where)}
        )
        SELECT {key}, {", ".join(sums)} FROM m {group}"""
    out: dict[str | None, dict[str, tuple[int, int]]] = {}
    for row in conn.execute(query, params).fetchall():
        out[row[0]] = {
            label: (int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, (label, _) in enumerate(windows)
        }
    if not per_room and breakdown is None and None not in out:
        out[None] = {label: (0, 0) for label, _ in windows}
    return out
