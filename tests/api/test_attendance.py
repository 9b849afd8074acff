"""Signed attendance exports through the REST API, on sessions the real writer stored: rows and
figures, signatures, the per-tenant chain under row-level security and concurrency, and
``spidi verify-export`` as a real subprocess on the saved files."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest

from spidi_server import exports
from spidi_server.history.retention import apply_retention
from spidi_server.history.sql import exports as export_sql
from spidi_server.history.sql.tenancy import tenant_transaction
from spidi_server.logs import JsonFormatter
from spidi_server.rooms import room_id_for

from ..history.helpers import FakeSession, ms
from .conftest import assert_problem, create_room, write_history

SPIDI = [sys.executable, "-m", "spidi_server.cli"]
T0 = ms("2026-05-04T10:00")
MIN = 60_000
PERIOD = {"from": "2026-05-04T10:00:00Z", "to": "2026-05-04T11:00:00Z"}


@pytest.fixture
async def attendance(api, api_node, redis_sync):
    """Room 'att' of tenant default with sessions in, across and outside 10:00-11:00, and tenant
    acme's room of the same code."""
    await create_room(api, "att")
    await create_room(api, "att", tenant="acme")
    early = FakeSession("default", "att", "carol", T0 - 30 * MIN, client_id="kiosk")
    early.beat(T0 - 29 * MIN, 7.5)
    alice = FakeSession("default", "att", "alice", T0)
    alice.beat(T0 + 10_000, 10)
    alice.beat(T0 + 20_000, 30)
    alice.beat(T0 + 30_000, 12.25)
    bob = FakeSession("default", "att", "=HYPERLINK(\"http://evil\")", T0 + 10 * MIN, device="iPhone",
                      os="iOS 18", ip="192.0.2.9", app_version="+2.0")  # fmt: skip
    bob.beat(T0 + 11 * MIN, 5)
    before = FakeSession("default", "att", "dave", T0 - 60 * MIN)
    after = FakeSession("default", "att", "erin", T0 + 60 * MIN)
    elsewhere = FakeSession("default", "other", "alice", T0 + 5 * MIN)
    foreign = FakeSession("acme", "att", "zed", T0 + 5 * MIN)
    await write_history(
        api_node,
        redis_sync,
        [
            early.started(),
            early.ended(T0 + 1 * MIN, "timeout"),
            alice.started(),
            alice.ended(T0 + 5 * MIN, "leave"),
            bob.started(),
            bob.checkpoint(),  # still open
            before.started(),
            before.ended(T0 - 50 * MIN, "leave"),
            after.started(),
            elsewhere.started(),
            foreign.started(),
        ],
    )
    return {"early": early, "alice": alice, "bob": bob, "foreign": foreign}


async def export(api, room_id: str, fmt: str = "json", *, tenant: str = "default", role: str = "admin",
                 params: dict | None = None):  # fmt: skip
    """GET the export as it comes: (status, raw body, headers)."""
    headers = {"Authorization": f"Bearer {api.token(role, tenant)}"}
    query = {**PERIOD, "format": fmt, **(params or {})}
    async with api.session.get(f"{api.base}/api/v1/rooms/{room_id}/attendance", params=query,
                               headers=headers) as resp:  # fmt: skip
        return resp.status, await resp.read(), resp.headers


async def public_key(api):
    reply = await api.get("/api/v1/exports/public-key", role=None)
    assert reply.status == 200, reply.body
    return exports.public_key_from_text(reply.body["publicKey"]), reply.body


def verify(paths, key_b64: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SPIDI, "verify-export", "--public-key", key_b64, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_json_and_csv_exports_rows_figures_signature_and_chain(api, attendance, tmp_path):
    room = room_id_for("default", "att")
    key, published = await public_key(api)
    assert published["keyId"] == exports.key_id(key) and published["algorithm"] == "Ed25519"
    assert published["pem"].startswith("-----BEGIN PUBLIC KEY-----")

    status, body, headers = await export(api, room)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Spidi-Export-Seq"] == "1"
    doc = json.loads(body)
    ex = doc["export"]
    assert {k: v for k, v in ex.items() if k not in ("rows", "generatedAt")} == {
        "version": 1,
        "format": "json",
        "tenant": "default",
        "roomId": room,
        "from": "2026-05-04T10:00:00.000Z",
        "to": "2026-05-04T11:00:00.000Z",
        "archive": False,
        "seq": 1,
        "prevHash": None,
        "keyId": exports.key_id(key),
        "rowCount": 3,
    }
    early, alice, bob = attendance["early"], attendance["alice"], attendance["bob"]
    # Sessions overlapping the period, oldest first: carol (from before, ended inside), alice
    # (inside), bob (still open); not dave (ended before), erin (after), other rooms or tenants.
    assert [r["sessionId"] for r in ex["rows"]] == [early.session_id, alice.session_id, bob.session_id]
    assert ex["rows"][1] == {
        "sessionId": alice.session_id,
        "userId": "alice",
        "clientId": "web",
        "device": "Pixel",
        "os": "Android",
        "appVersion": "1.2.3",
        "ip": "10.0.0.7",
        "startedAt": "2026-05-04T10:00:00.000Z",
        "endedAt": "2026-05-04T10:05:00.000Z",
        "endReason": "leave",
        "heartbeatCount": 3,
        "latencyAvgMs": 17.417,  # (10 + 30 + 12.25) / 3, to 3 decimals
        "latencyMinMs": 10,
        "latencyMaxMs": 30,
    }
    assert (ex["rows"][0]["endReason"], ex["rows"][0]["clientId"], ex["rows"][0]["latencyAvgMs"]) == (
        "timeout",
        "kiosk",
        7.5,
    )
    open_row = ex["rows"][2]
    assert (open_row["endedAt"], open_row["endReason"], open_row["heartbeatCount"], open_row["ip"]) == (
        None,
        None,
        1,
        "192.0.2.9",
    )
    # The signature verifies over the JCS form of "export"; the hash is its SHA-256.
    message = json.dumps(ex, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    key.verify(base64.b64decode(doc["signature"]["value"]), message)
    assert doc["hash"] == exports.digest(message) == headers["X-Spidi-Export-Hash"]

    status, csv_body, headers = await export(api, room, "csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert 'filename="attendance-' in headers["Content-Disposition"]
    lines = csv_body.decode().split("\r\n")
    meta = json.loads(lines[1].removeprefix("# spidi-export v1 "))
    assert (meta["seq"], meta["prevHash"], meta["format"], meta["rowCount"]) == (2, doc["hash"], "csv", 3)
    table = list(csv.reader(io.StringIO("\r\n".join(lines[2:]), newline="")))
    assert table[0] == list(exports.COLUMNS) and len(table) == 4
    bob_row = dict(zip(exports.COLUMNS, table[3], strict=True))
    # Spreadsheet formulas are defused; the JSON export keeps the stored text.
    assert bob_row["userId"] == '\'=HYPERLINK("http://evil")' and bob_row["appVersion"] == "'+2.0"
    assert open_row["userId"] == '=HYPERLINK("http://evil")'
    assert (bob_row["endedAt"], bob_row["ip"], bob_row["latencyAvgMs"]) == ("", "192.0.2.9", "5")

    # Saved files verify alone with the published key, chain included (exit 0, a line each).
    status, third, _ = await export(api, room, params={"from": "2026-05-04T10:30:00Z"})
    assert status == 200 and json.loads(third)["export"]["rowCount"] == 1  # only bob, still open
    files = [tmp_path / "1.json", tmp_path / "2.csv", tmp_path / "3.json"]
    for path, data in zip(files, (body, csv_body, third), strict=True):
        path.write_bytes(data)
    ok = verify(files, published["publicKey"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [line.split()[0] for line in ok.stdout.splitlines()] == ["OK"] * 3

    # The middle one missing: the third is reported, naming the gap.
    gap = verify([files[0], files[2]], published["publicKey"])
    assert gap.returncode == 1
    assert (
        gap.stdout.splitlines()[1]
        == f"FAIL {files[2]}: chain: seq 2 missing between {files[0]} and this file"
    )

    # One byte of the CSV changed (an IP address): its signature fails, and the next file's link.
    data = bytearray(csv_body)
    at = data.index(b"192.0.2.9")
    data[at + 8] = ord("8")
    files[1].write_bytes(bytes(data))
    bad = verify(files, published["publicKey"])
    assert bad.returncode == 1
    out = bad.stdout.splitlines()
    assert out[0].startswith("OK")
    assert out[1] == f"FAIL {files[1]}: signature: does not verify (the file was altered after signing)"
    assert out[2].startswith(f"FAIL {files[2]}: chain:")


async def test_concurrent_exports_take_consecutive_seqs_in_one_chain(api, attendance, pg_dsn, tmp_path):
    room = room_id_for("default", "att")
    _, published = await public_key(api)
    results = await asyncio.gather(*(export(api, room, ("csv", "json")[i % 2]) for i in range(10)))
    assert all(status == 200 for status, _, _ in results), [r[1][:200] for r in results]
    seqs = sorted(int(headers["X-Spidi-Export-Seq"]) for _, _, headers in results)
    assert seqs == list(range(1, 11))
    paths = []
    for _, body, headers in results:
        path = tmp_path / f"{headers['X-Spidi-Export-Seq']}.export"
        path.write_bytes(body)
        paths.append(path)
    ok = verify(paths, published["publicKey"])
    assert ok.returncode == 0, ok.stdout
    # The record in PostgreSQL is the same chain: each prev_hash the hash before it.
    with psycopg.connect(pg_dsn, autocommit=True) as conn, tenant_transaction(conn, "default"):
        stored = export_sql.exports(conn)
        head = conn.execute("SELECT seq, head_hash FROM spd_export_chain").fetchall()
    assert [r["seq"] for r in stored] == list(range(1, 11))
    assert [r["prev_hash"] for r in stored] == [None] + [r["hash"] for r in stored[:-1]]
    assert head == [(10, stored[-1]["hash"])]
    by_seq = {int(h["X-Spidi-Export-Seq"]): h["X-Spidi-Export-Hash"] for _, _, h in results}
    assert [r["hash"] for r in stored] == [by_seq[s] for s in range(1, 11)]
    assert {r["created_by"] for r in stored} == {"admin-of-default"}


async def test_tenants_have_separate_chains_and_cannot_export_each_other(api, attendance, pg_dsn, caplog):
    mine, theirs = room_id_for("default", "att"), room_id_for("acme", "att")
    assert (await export(api, mine))[0] == 200
    # Each export leaves an audit line: who exported which room, and the seq and hash it took.
    (line,) = [r for r in caplog.records if r.name == "spidi.audit"]
    fields = json.loads(JsonFormatter().format(line))
    assert (fields["actor"], fields["tenant"], fields["action"], fields["resource_type"]) == (
        "admin-of-default",
        "default",
        "create",
        "attendance_export",
    )
    assert fields["resource_id"] == 1 and fields["request"].endswith(f"/rooms/{mine}/attendance")
    assert (await export(api, mine))[0] == 200
    status, body, _ = await export(api, theirs, tenant="acme")
    assert status == 200
    ex = json.loads(body)["export"]
    # acme's chain starts at 1 whatever default's holds; its rows are its own.
    assert (ex["seq"], ex["prevHash"], ex["tenant"]) == (1, None, "acme")
    assert [r["sessionId"] for r in ex["rows"]] == [attendance["foreign"].session_id]
    # acme's admin asking for default's room, and the other way round: no such room for them.
    for room, tenant in ((mine, "acme"), (theirs, "default")):
        status, body, _ = await export(api, room, tenant=tenant)
        assert status == 404 and json.loads(body)["type"] == "urn:spidi:problem:not-found"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for tenant, seqs in (("default", [1, 2]), ("acme", [1])):
            with tenant_transaction(conn, tenant):
                assert [(r["unidad_negocio_id"], r["seq"]) for r in export_sql.exports(conn)] == [
                    (tenant, s) for s in seqs
                ]
                assert conn.execute("SELECT unidad_negocio_id FROM spd_export_chain").fetchall() == [
                    (tenant,)
                ]
    assert json.loads((await export(api, mine))[1])["export"]["seq"] == 3


async def test_archived_sessions_with_archive_true(api, api_node, redis_sync, pg):
    """Sessions retention moved to the archive are exported with archive=true (and said so in the
    signed metadata); without it the export holds only hot history."""
    await create_room(api, "att")
    old = FakeSession("default", "att", "olga", ms("2025-03-10T10:00"))
    old.beat(ms("2025-03-10T10:00") + 10_000, 25)
    await write_history(api_node, redis_sync, [old.started(), old.ended(ms("2025-03-10T10:30"), "leave")])
    report = apply_retention(pg, hot_days=90, drop_days=730, now=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    assert "dat_spd_session_p2025_03" in report.archived
    room = room_id_for("default", "att")
    period = {"from": "2025-03-10T00:00:00Z", "to": "2025-03-11T00:00:00Z"}
    _, first, first_headers = await export(api, room, params=period)
    hot = json.loads(first)["export"]
    assert (hot["rowCount"], hot["archive"]) == (0, False)
    status, body, _ = await export(api, room, "csv", params={**period, "archive": "true"})
    assert status == 200
    meta = json.loads(body.decode().split("\r\n")[1].removeprefix("# spidi-export v1 "))
    assert (meta["rowCount"], meta["archive"], meta["seq"], meta["prevHash"]) == (
        1,
        True,
        2,
        first_headers["X-Spidi-Export-Hash"],
    )
    assert old.session_id in body.decode() and ",25,25,25" in body.decode()


async def test_who_may_export_and_bad_requests(api, attendance):
    room = room_id_for("default", "att")
    for role in ("monitor", "user"):
        status, body, _ = await export(api, room, role=role)
        assert status == 403 and json.loads(body)["type"] == "urn:spidi:problem:forbidden"
    assert_problem(
        await api.get(f"/api/v1/rooms/{room}/attendance", role=None, params=PERIOD), 401, "unauthorized"
    )
    reply = await api.get(f"/api/v1/rooms/{room}/attendance", params={"format": "xlsx"})
    fields = {e["field"]: e["message"] for e in assert_problem(reply, 400, "validation-error")["errors"]}
    assert set(fields) == {"from", "to", "format"} and "csv, json" in fields["format"]
    reply = await api.get(
        f"/api/v1/rooms/{room}/attendance", params={"from": PERIOD["to"], "to": PERIOD["from"]}
    )
    assert "must be before to" in assert_problem(reply, 400, "validation-error")["detail"]
    never = room_id_for("default", "never")
    assert_problem(await api.get(f"/api/v1/rooms/{never}/attendance", params=PERIOD), 404, "not-found")
    # None of those took a seq.
    assert json.loads((await export(api, room))[1])["export"]["seq"] == 1


async def test_row_cap_and_no_key_outside_dev(node_factory, pg_dsn, http, attendance):
    from .conftest import ApiClient

    room = room_id_for("default", "att")
    capped = ApiClient(http, await node_factory(postgres_dsn=pg_dsn, writer="external", export_max_rows=2))
    status, body, _ = await export(capped, room)
    problem = json.loads(body)
    assert status == 400 and problem["errors"][0]["field"] == "from"
    assert "more than 2 sessions (export_max_rows): export a shorter period" in problem["detail"]
    status, body, _ = await export(capped, room, params={"from": "2026-05-04T10:30:00Z"})
    assert status == 200 and json.loads(body)["export"]["seq"] == 1  # the refusal took no seq

    keyless = ApiClient(http, await node_factory(postgres_dsn=pg_dsn, writer="external", dev=False))
    status, body, _ = await export(keyless, room)
    assert status == 503 and "set export_signing_key_file" in json.loads(body)["detail"]
    assert_problem(await keyless.get("/api/v1/exports/public-key", role=None), 503, "unavailable")
