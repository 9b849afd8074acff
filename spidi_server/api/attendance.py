"""Signed attendance exports in the REST API (``ATTENDANCE_ROUTES``):

    /api/v1/rooms/{id}/attendance     every session of the room overlapping [from, to), as CSV or
                                      JSON, signed (Ed25519) and chained per tenant
    /api/v1/exports/public-key        the key that verifies them

The encoding, signature and chain are ``spidi_server/exports.py``'s; the key comes from
``export_keys``; the chain head lives in PostgreSQL (``history/sql/exports.py``). An export holds
clients' IP addresses: it needs ``roles.VIEW_SESSIONS`` and ``roles.VIEW_IP`` (admins). At most
``export_max_rows`` sessions per export: a longer period is refused (400) rather than cut short,
so a signed file never silently lacks sessions.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .. import exports, logs, roles
from ..export_keys import NoSigningKey, signing_key
from ..history.sql import exports as export_sql
from ..history.sql import rooms
from .params import ARCHIVE, FROM, TO, iso
from .problems import Problem, field_error, invalid, not_found
from .rooms import ROOM_ID, ROOMS_PATH
from .routing import Call, Route, json_response
from .service import Api, audit
from .sessions import stored_session_fields
from .validation import Choice

log = logging.getLogger("spidi.api")

ATTENDANCE_QUERY = (
    FROM.but(required=True, description=FROM.description + "; sessions still open then are included"),
    TO.but(required=True, description="End of the period (exclusive), ISO 8601; without an offset: UTC"),
    Choice("format", "format", "csv (signature and metadata in the file's first two lines) or json",
           values=("csv", "json"), default="json"),
    ARCHIVE,
)  # fmt: skip


def _key(api: Api):
    try:
        return signing_key(api.host.settings)
    except NoSigningKey as exc:
        logs.event(log, "export_key_unavailable", logging.WARNING, error=str(exc))
        raise Problem("unavailable", str(exc)) from None


def attendance_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored session as an export row (``exports.COLUMNS``)."""
    return {
        "sessionId": row["session_id"],
        **stored_session_fields(row),
        "heartbeatCount": row["heartbeat_count"],
        "latencyAvgMs": exports.number(row["latency_avg"]),
        "latencyMinMs": exports.number(row["latency_min"]),
        "latencyMaxMs": exports.number(row["latency_max"]),
    }


async def room_attendance(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/attendance: the room's sessions over the period, signed and chained."""
    if not api.may(call.claims, roles.VIEW_IP):
        raise Problem(
            "forbidden",
            f"an export holds IP addresses: this needs role {api.host.policy.describe(roles.VIEW_IP)}",
        )
    room_id, tenant, q = call.path["room_id"], call.claims.tenant, call.query
    start, end, fmt = q["from"], q["to"], q["format"]
    if start >= end:
        raise invalid(
            [field_error("query", "from", f"must be before to ({iso(start)} is not before {iso(end)})")]
        )
    key = _key(api)
    public = key.public_key()
    cap = api.host.settings.export_max_rows
    known_live = await api.room_known_live(tenant, room_id)

    def work(conn) -> tuple[exports.Meta, exports.Signed, int]:
        # A Problem raised here rolls the transaction back: a refused export takes no seq.
        found = export_sql.attendance(conn, room_id, start, end, cap + 1, archive=q["archive"])
        if not found and not known_live and not rooms.exists(conn, tenant, room_id):
            raise not_found("room", room_id)
        if len(found) > cap:
            raise invalid(
                [
                    field_error(
                        "query",
                        "from",
                        f"the period holds more than {cap} sessions (export_max_rows): export a shorter period",
                    )
                ]
            )
        rows = [attendance_row(r) for r in found]
        head = export_sql.lock_head(conn, tenant)  # held until commit: the next export waits here
        generated = datetime.now(UTC)
        meta = exports.Meta(
            tenant=tenant,
            room_id=room_id,
            period_from=iso(start),
            period_to=iso(end),
            generated_at=iso(generated),
            seq=head.seq + 1,
            prev_hash=head.hash,
            key_id=exports.key_id(public),
            archive=q["archive"],
        )
        signed = (exports.sign_csv if fmt == "csv" else exports.sign_json)(meta, rows, key)
        export_sql.append(
            conn,
            tenant,
            seq=meta.seq,
            hash=signed.hash,
            prev_hash=head.hash,
            room_id=room_id,
            period_from=start,
            period_to=end,
            fmt=fmt,
            row_count=len(rows),
            key_id=meta.key_id,
            generated_at=generated,
            actor=call.claims.user_id,
        )
        return meta, signed, len(rows)

    meta, signed, count = await api.db(tenant, work)
    audit("attendance_exported", call.claims, room_id=room_id, seq=meta.seq, hash=signed.hash,
          format=fmt, rows=count, changed=[])  # fmt: skip
    headers = {
        "Content-Disposition": f'attachment; filename="attendance-{room_id}-{meta.seq}.{fmt}"',
        "X-Spidi-Export-Seq": str(meta.seq),
        "X-Spidi-Export-Hash": signed.hash,
    }
    content_type = "text/csv" if fmt == "csv" else "application/json"
    return web.Response(body=signed.body, content_type=content_type, charset="utf-8" if fmt == "csv" else None,
                        headers=headers)  # fmt: skip


async def export_public_key(api: Api, call: Call) -> web.Response:
    """GET /api/v1/exports/public-key: the Ed25519 key that verifies this server's exports."""
    public = _key(api).public_key()
    return json_response(
        {
            "algorithm": "Ed25519",
            "keyId": exports.key_id(public),
            "publicKey": exports.public_key_b64(public),
            "pem": exports.public_key_pem(public),
        }
    )


ATTENDANCE_ROUTES: tuple[Route, ...] = (
    Route("GET", ROOMS_PATH + "/{id}/attendance", room_attendance, "exportRoomAttendance",
          "A room's sessions over a period, signed and chained (CSV or JSON)", "sessions",
          roles.VIEW_SESSIONS, path_params=(ROOM_ID,), query=ATTENDANCE_QUERY, response="AttendanceExport",
          also=(("text/csv", "AttendanceCsv"),), problems=(404,),
          description="Every session of the room overlapping [from, to) (started before to, not ended "
          "by from). Signed with the server's Ed25519 key (GET /api/v1/exports/public-key) and chained "
          "per tenant: seq counts the tenant's exports, prevHash is the hash of the previous one. The "
          "caller also needs the IP-address role. More than export_max_rows sessions: 400, export a "
          "shorter period. No signing key configured: 503. Format and verification: docs/operations.md "
          "(`spidi verify-export`)."),
    Route("GET", "/api/v1/exports/public-key", export_public_key, "getExportPublicKey",
          "The public key that verifies attendance exports", "sessions", None,
          response="ExportPublicKey", problems=(503,)),
)  # fmt: skip
