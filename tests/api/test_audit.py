"""The audit trail of administrative changes: every REST write leaves its actor in the row's audit
columns (created_by/updated_by, with created_at/updated_at) and exactly one ``event: "audit"`` log
line naming actor, tenant, action, resource and changed fields, never the token.

Each write below is made by a different subject, so a wrong column or line names the wrong person.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime

import aiohttp

from spidi_server.logs import JsonFormatter

from ..conftest import TEST_SECRET, token_for
from ..test_cli import SPIDI, free_port
from .conftest import ApiClient, Reply

TENANT = "acme"


class Audited:
    """Calls the API with tokens it keeps (to search the logs for them) and reads new audit lines."""

    def __init__(self, api: ApiClient, caplog):
        self.api = api
        self.caplog = caplog
        self.tokens: list[str] = []
        self.seen = 0

    async def call(self, method: str, path: str, sub: str, role: str = "admin", json_body=None) -> Reply:
        token = token_for(self.api.node.settings, sub, f"spidi:{role}", TENANT)
        self.tokens.append(token)
        return await self.api.call(
            method, path, role=None, json=json_body, headers={"Authorization": f"Bearer {token}"}
        )

    def new_lines(self) -> list[dict]:
        """The audit lines logged since the last call, rendered as the node's JSON log renders them."""
        records = [r for r in self.caplog.records if r.name == "spidi.audit"]
        fresh, self.seen = records[self.seen :], len(records)
        return [json.loads(JsonFormatter().format(r)) for r in fresh]

    def one_line(self, **expected) -> dict:
        lines = self.new_lines()
        assert len(lines) == 1, lines
        (line,) = lines
        assert line["event"] == "audit" and line["level"] == "INFO", line
        for key, value in expected.items():
            assert line[key] == value, (key, line)
        return line


def row(pg, table: str, ident: str) -> dict:
    cur = pg.execute(
        f"SELECT created_by, updated_by, created_at, updated_at, deleted_at FROM {table} WHERE id = %s",
        [ident],
    )
    return dict(
        zip(
            ("created_by", "updated_by", "created_at", "updated_at", "deleted_at"),
            cur.fetchone(),
            strict=True,
        )
    )


def assert_recent(at: datetime, started: datetime) -> None:
    """The timestamp was set by this write (PostgreSQL's now() is the transaction's start)."""
    assert started.timestamp() - 1 <= at.timestamp() <= time.time() + 1, (at, started)


async def test_every_admin_write_has_actor_columns_and_one_audit_line(api, pg, caplog):
    # The spidi loggers at warning, as with log_level = "warning": audit lines are written anyway.
    # (Not caplog.set_level, which would raise its capturing handler's level as well.)
    spidi = logging.getLogger("spidi")
    level = spidi.level
    spidi.setLevel(logging.WARNING)
    try:
        await check_every_write(Audited(api, caplog), pg, caplog)
    finally:
        spidi.setLevel(level)


async def check_every_write(a: Audited, pg, caplog) -> None:
    # Room type: create, change, (delete at the end: rooms use it until then).
    started = datetime.now(UTC)
    reply = await a.call(
        "POST", "/api/v1/room-types", "ana", json_body={"code": "lab", "name": "Lab", "defaultCapacity": 30}
    )
    assert reply.status == 201, reply.body
    type_id = reply.body["id"]
    stored = row(pg, "tba_spd_room_type", type_id)
    assert (stored["created_by"], stored["updated_by"]) == ("ana", "ana")
    assert_recent(stored["created_at"], started)
    a.one_line(
        actor="ana",
        tenant=TENANT,
        action="create",
        resource_type="room_type",
        resource_id=type_id,
        changed=["code", "defaultCapacity", "name"],
        request="POST /api/v1/room-types",
    )

    started = datetime.now(UTC)
    reply = await a.call("PATCH", f"/api/v1/room-types/{type_id}", "ben", json_body={"defaultCapacity": 40})
    assert reply.status == 200, reply.body
    changed = row(pg, "tba_spd_room_type", type_id)
    assert (changed["created_by"], changed["updated_by"]) == ("ana", "ben")
    assert changed["created_at"] == stored["created_at"] and changed["updated_at"] > stored["updated_at"]
    assert_recent(changed["updated_at"], started)
    a.one_line(
        actor="ben",
        action="update",
        resource_type="room_type",
        resource_id=type_id,
        changed=["defaultCapacity"],
        changes={"defaultCapacity": [30, 40]},
    )

    # Room: create (with an attribute), replace, patch.
    reply = await a.call(
        "POST",
        "/api/v1/rooms",
        "cy",
        json_body={"code": "lab-1", "type": "lab", "capacity": 10, "attributes": {"floor": "2"}},
    )
    assert reply.status == 201, reply.body
    room_id = reply.body["id"]
    assert (row(pg, "dat_spd_room", room_id)["created_by"], reply.body["createdBy"]) == ("cy", "cy")
    attr = pg.execute("SELECT created_by, updated_by FROM dat_spd_room_attr WHERE room_id = %s", [room_id])
    assert attr.fetchall() == [("cy", "cy")]
    a.one_line(
        actor="cy",
        action="create",
        resource_type="room",
        resource_id=room_id,
        changed=["attributes", "capacity", "code", "type"],
    )

    reply = await a.call(
        "PUT",
        f"/api/v1/rooms/{room_id}",
        "dee",
        json_body={"code": "lab-1", "name": "Lab one", "capacity": 10, "type": "lab"},
    )
    assert reply.status == 200, reply.body
    assert (
        row(pg, "dat_spd_room", room_id)["created_by"],
        row(pg, "dat_spd_room", room_id)["updated_by"],
    ) == ("cy", "dee")
    # PUT leaves out the attributes (so they go) and keeps capacity and type: only those that moved count.
    line = a.one_line(actor="dee", action="update", resource_type="room", changed=["attributes", "name"])
    assert line["changes"] == {"name": [None, "Lab one"], "attributes": [{"floor": "2"}, {}]}
    attr = pg.execute(
        "SELECT updated_by, deleted_at IS NOT NULL FROM dat_spd_room_attr WHERE room_id = %s", [room_id]
    )
    assert attr.fetchall() == [("dee", True)]

    before = row(pg, "dat_spd_room", room_id)
    reply = await a.call("PATCH", f"/api/v1/rooms/{room_id}", "eve", json_body={"capacity": 12})
    assert reply.status == 200 and reply.body["updatedBy"] == "eve"
    after = row(pg, "dat_spd_room", room_id)
    assert after["updated_by"] == "eve" and after["updated_at"] > before["updated_at"]
    a.one_line(
        actor="eve",
        action="update",
        resource_id=room_id,
        changed=["capacity"],
        changes={"capacity": [10, 12]},
        request=f"PATCH /api/v1/rooms/{room_id}",
    )

    # Alert rule: create, change.
    reply = await a.call(
        "POST",
        "/api/v1/alert-rules",
        "fay",
        json_body={
            "name": "Lab full",
            "scope": "room",
            "roomId": room_id,
            "kind": "capacity",
            "threshold": 0.9,
        },
    )
    assert reply.status == 201, reply.body
    rule_id = reply.body["id"]
    assert (row(pg, "dat_spd_alert_rule", rule_id)["created_by"], reply.body["createdBy"]) == ("fay", "fay")
    a.one_line(
        actor="fay",
        action="create",
        resource_type="alert_rule",
        resource_id=rule_id,
        changed=["kind", "name", "roomId", "scope", "threshold"],
    )

    reply = await a.call("PATCH", f"/api/v1/alert-rules/{rule_id}", "gus", json_body={"severity": "critical"})
    assert reply.status == 200, reply.body
    assert row(pg, "dat_spd_alert_rule", rule_id)["updated_by"] == "gus"
    a.one_line(
        actor="gus", action="update", resource_type="alert_rule", resource_id=rule_id, changed=["severity"]
    )

    # Acknowledgement (an admin's): who and when on the event row, one line; a repeat changes
    # nothing and logs nothing.
    alert_id = str(uuid.uuid4())
    pg.execute(
        """INSERT INTO dat_spd_alert_event (id, rule_id, unidad_negocio_id, room_id, room_code, state, kind,
                                            severity, value, created_by, updated_by)
           VALUES (%s, %s, %s, %s, 'lab-1', 'firing', 'capacity', 'critical', 0.95, 'spidi-writer', 'spidi-writer')""",
        [alert_id, rule_id, TENANT, room_id],
    )
    started = datetime.now(UTC)
    reply = await a.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", "hal", role="admin")
    assert reply.status == 200, reply.body
    ack = pg.execute(
        "SELECT acknowledged_by, acknowledged_at, created_by, updated_by FROM dat_spd_alert_event"
        " WHERE id = %s",
        [alert_id],
    ).fetchone()
    assert (ack[0], ack[2], ack[3]) == ("hal", "spidi-writer", "hal")
    assert_recent(ack[1], started)
    a.one_line(
        actor="hal",
        action="acknowledge",
        resource_type="alert",
        resource_id=alert_id,
        changed=["acknowledgedBy", "acknowledgedAt"],
    )
    reply = await a.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", "ivy", role="admin")
    assert reply.status == 200 and reply.body["acknowledgedBy"] == "hal"
    assert a.new_lines() == []

    # Writes that change nothing log nothing: unknown id, duplicate, wrong role.
    assert (
        await a.call("PATCH", f"/api/v1/rooms/{uuid.uuid4()}", "zed", json_body={"capacity": 1})
    ).status == 404
    assert (await a.call("POST", "/api/v1/rooms", "zed", json_body={"code": "lab-1"})).status == 409
    assert (await a.call("DELETE", f"/api/v1/rooms/{room_id}", "zed", role="monitor")).status == 403
    assert a.new_lines() == []

    # Deletes (soft): the deleter in updated_by, nothing in changed.
    for path, table, ident, sub, resource in (
        (f"/api/v1/alert-rules/{rule_id}", "dat_spd_alert_rule", rule_id, "jo", "alert_rule"),
        (f"/api/v1/rooms/{room_id}", "dat_spd_room", room_id, "kim", "room"),
        (f"/api/v1/room-types/{type_id}", "tba_spd_room_type", type_id, "lu", "room_type"),
    ):
        assert (await a.call("DELETE", path, sub)).status == 204
        gone = row(pg, table, ident)
        assert gone["updated_by"] == sub and gone["deleted_at"] is not None, (table, gone)
        a.one_line(
            actor=sub,
            action="delete",
            resource_type=resource,
            resource_id=ident,
            changed=[],
            request=f"DELETE {path}",
        )

    # No token, nor any piece of one, in anything logged (audit lines or the handlers' own).
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for token in a.tokens:
        for piece in (token, *token.split(".")[1:]):
            assert piece not in logged


async def test_audit_line_in_a_real_node_logging_at_warning(tmp_path, redis_url, redis_sync, pg_dsn):
    """`spidi serve` with log_level warning: the audit line still reaches its JSON stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(
        SPIDI_REDIS_URL=redis_url,
        SPIDI_POSTGRES_DSN=pg_dsn,
        SPIDI_JWT_SECRET=TEST_SECRET,
        SPIDI_LOG_LEVEL="warning",
        SPIDI_WRITER="external",
        SPIDI_ALERTING="0",
        SPIDI_DATA_DIR=str(tmp_path / "data"),
        SPIDI_PORT=str(free_port()),
        SPIDI_OPS_PORT=str(free_port()),
    )
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([*SPIDI, "serve"], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        ops = None
        deadline = time.monotonic() + 30
        while ops is None and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            if match := re.search(r"Ops:\s+(\S+)/metrics", line):
                ops = match.group(1)
        assert ops, stderr_path.read_text()[-2000:]
        from spidi_server.auth import mint_token
        from spidi_server.settings import Settings

        token = mint_token(
            Settings(jwt_secret=TEST_SECRET).validate(), "olga", ["spidi:admin"], "globex", 600
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{ops}/api/v1/rooms",
                json={"code": "war-room", "capacity": 3},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
            room_id = (await resp.json())["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
    text = stderr_path.read_text()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    audits = [x for x in lines if x.get("event") == "audit"]
    assert len(audits) == 1, lines
    assert {
        k: audits[0][k] for k in ("actor", "tenant", "action", "resource_type", "resource_id", "changed")
    } == {
        "actor": "olga",
        "tenant": "globex",
        "action": "create",
        "resource_type": "room",
        "resource_id": room_id,
        "changed": ["capacity", "code"],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", audits[0]["timestamp"])
    # The handler's own line is at info: below this node's log level, so it is not there.
    assert not [x for x in lines if x.get("event") == "room_created"]
    for piece in (token, *token.split(".")[1:]):
        assert piece not in text
