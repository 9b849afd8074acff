"""The SLO breakdown in history: room samples' histograms per app version and OS, merged across
nodes and batches label by label by the real writer, bounded to the top N (the rest as other)
with every count kept, and malformed breakdowns dead-lettered."""

from __future__ import annotations

import dataclasses
import time

import orjson
import psycopg

from spidi_server.history.retention import apply_retention
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.history.stream import DEAD_LETTER_STREAM
from spidi_server.rooms import room_id_for
from spidi_server.stores import events

from .helpers import hist_of, ms, pending, push, room_sample, running_writer, wait_for, written

T0 = ms("2026-05-04T10:00")
LOBBY = room_id_for("acme", "lobby")


def sample(node: str, breakdown: dict, bucket: int = T0) -> dict:
    """A node's room sample whose room histogram is the sum of its breakdown's app versions."""
    apps = breakdown.get("appVersion", {})
    hists = [*apps.get("values", {}).values(), *([apps["other"]] if "other" in apps else [])]
    room_hist = [sum(column) for column in zip(*hists, strict=True)] if hists else hist_of([])
    event = room_sample("acme", "lobby", bucket, node, online=[1])
    event.update(
        latency_count=sum(room_hist),
        latency_hist=events.encode_hist(room_hist),
        latency_breakdown=orjson.dumps(breakdown).decode(),
    )
    return event


def stored(pg, bucket: int = T0) -> tuple[dict, list[int]]:
    row = pg.execute(
        "SELECT latency_breakdown, latency_hist FROM dat_spd_room_stats WHERE room_id = %s"
        " AND ts_bucket = to_timestamp(%s / 1000.0)",
        [LOBBY, bucket],
    ).fetchone()
    return row[0], row[1]


def total(part: dict) -> list[int]:
    hists = [*part.get("values", {}).values(), *([part["other"]] if "other" in part else [])]
    return [sum(column) for column in zip(*hists, strict=True)]


def write(settings, redis_sync, evs: list[dict]) -> None:
    """The events through a writer of their own (a batch, or more, of theirs)."""
    push(redis_sync, evs)
    with running_writer(settings):
        wait_for(lambda: written(redis_sync) == len(evs), what="events written")
        wait_for(lambda: pending(redis_sync) == 0)


def test_nodes_merge_by_label_and_the_top_n_stay(history_settings, redis_sync, pg):
    settings = dataclasses.replace(history_settings, slo_breakdown_top_n=2).validate()
    fast, slow = hist_of([40] * 10), hist_of([400] * 3)
    a = {
        "appVersion": {"values": {"1.0": fast, "2.0": slow}},
        "os": {"values": {"iOS": hist_of([40] * 10 + [400] * 3)}},
    }
    b = {
        "appVersion": {
            "values": {"2.0": hist_of([400] * 5), "3.0": hist_of([40])},
            "other": hist_of([40] * 2),
        },
        "os": {"values": {"Android": hist_of([400] * 5), "": hist_of([40] * 3)}},
    }
    write(settings, redis_sync, [sample("node-a", a), sample("node-b", b)])
    breakdown, room_hist = stored(pg)
    # 2.0 is 3 + 5 slow heartbeats of two nodes: one group; 3.0 (1) is third: folded into other.
    assert breakdown["appVersion"] == {
        "values": {"1.0": fast, "2.0": hist_of([400] * 8)},
        "other": hist_of([40] * 3),
    }
    assert breakdown["os"] == {
        "values": {"iOS": hist_of([40] * 10 + [400] * 3), "Android": hist_of([400] * 5)},
        "other": hist_of([40] * 3),  # the clients without an os: third of three
    }
    assert total(breakdown["appVersion"]) == total(breakdown["os"]) == room_hist  # counts conserved

    # A later batch for the same minute (a third node): 4.0 outgrows 2.0, whose heartbeats join other.
    c = {"appVersion": {"values": {"4.0": hist_of([40] * 20)}}}
    write(settings, redis_sync, [sample("node-c", c)])
    breakdown, room_hist = stored(pg)
    assert breakdown["appVersion"] == {
        "values": {"4.0": hist_of([40] * 20), "1.0": fast},
        "other": hist_of([40] * 3 + [400] * 8),
    }
    assert total(breakdown["appVersion"]) == room_hist
    assert breakdown["os"]["values"].keys() == {"iOS", "Android"}  # c sent no os: unchanged


def test_many_versions_become_top_n_and_other(history_settings, redis_sync, pg):
    # N + k distinct versions, over nodes: N labels and other, every heartbeat still counted.
    n, k = history_settings.slo_breakdown_top_n, 5
    versions = {f"9.{i}": hist_of([40] * (i + 1)) for i in range(n + k)}
    evs = [
        sample(f"node-{i}", {"appVersion": {"values": dict(list(versions.items())[i::3])}}) for i in range(3)
    ]
    write(history_settings, redis_sync, evs)
    breakdown, room_hist = stored(pg)
    kept = breakdown["appVersion"]["values"]
    assert len(kept) == n and set(kept) == {f"9.{i}" for i in range(k, n + k)}  # the busiest N
    assert breakdown["appVersion"]["other"] == hist_of([40] * sum(i + 1 for i in range(k)))
    assert total(breakdown["appVersion"]) == room_hist == hist_of([40] * sum(range(1, n + k + 1)))


def test_malformed_breakdowns_are_dead_lettered(history_settings, redis_sync, pg):
    good = sample("node-a", {"os": {"values": {"Linux": hist_of([40])}}})
    bad = []
    for text in (
        "{",
        '{"browser": {}}',
        '{"os": {"values": {"Linux": [1, -1]}}}',
        '{"os": {"values": {"Linux": "many"}}}',
        '{"os": {"other": [' + ",".join(["1"] * 40) + "]}}",
        '{"os": {"values": {"' + "x" * 200 + '": [1]}}}',
    ):
        event = sample("node-b", {}, T0 + 60_000)
        event["latency_breakdown"] = text
        bad.append(event)
    push(redis_sync, [good, *bad])
    with running_writer(history_settings):
        wait_for(lambda: redis_sync.xlen(DEAD_LETTER_STREAM) == len(bad), what="dead letters")
        wait_for(lambda: pending(redis_sync) == 0)
    errors = [f["_error"] for _, f in redis_sync.xrange(DEAD_LETTER_STREAM)]
    assert all(e.startswith("latency_breakdown") for e in errors), errors
    assert stored(pg)[0] == {"os": {"values": {"Linux": hist_of([40])}}}


def test_breakdown_shares_the_rows_security_and_archive(history_settings, redis_sync, pg, pg_dsn):
    # The breakdown is a column of the room minute: the tenant's alone under row-level security,
    # and moved to the archive with its partition (retention adds the column there first).
    old, recent = ms("2025-01-10T08:00"), int(time.time() // 60 * 60_000)
    breakdown = {"appVersion": {"values": {"1.0": hist_of([40])}}}
    write(
        history_settings, redis_sync, [sample("node-a", breakdown, old), sample("node-a", breakdown, recent)]
    )
    report = apply_retention(pg, hot_days=90, drop_days=36500)
    assert "dat_spd_room_stats_p2025_q1" in report.archived
    with psycopg.connect(pg_dsn) as conn:
        for tenant, expected in (("acme", [breakdown]), ("globex", [])):
            with tenant_transaction(conn, tenant) as c:
                assert [
                    r[0] for r in c.execute("SELECT latency_breakdown FROM dat_spd_room_stats")
                ] == expected
                archived = c.execute(
                    "SELECT latency_breakdown FROM spd_archive.dat_spd_room_stats"
                ).fetchall()
                assert [r[0] for r in archived] == expected
