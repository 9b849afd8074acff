"""``GET /api/v1/rooms/{id}/reconcile``: the room's Redis roster, the sessions the nodes hold and
the sessions open in PostgreSQL compared, each difference listed with what was done about it
(``spidi_server/reconcile.py``). Admins only: besides reading, it repairs (``repair=false``:
report only)."""

from __future__ import annotations

from aiohttp import web

from .. import roles
from ..history.sql import sessions
from ..reconcile import HISTORY_LIMIT, reconcile_room
from .problems import not_found
from .rooms import ROOM_ID, ROOMS_PATH
from .routing import Call, Route, json_response
from .service import Api
from .sessions import room_known
from .validation import Choice

RECONCILE_QUERY = (
    Choice(
        "repair",
        "repair",
        "Repair what differs (true) or only report it (false)",
        values=("true", "false"),
        default="true",
    ),
)


async def reconcile(api: Api, call: Call) -> web.Response:
    """GET /api/v1/rooms/{id}/reconcile: the room's reconciliation report."""
    room_id, tenant = call.path["room_id"], call.claims.tenant
    if not await room_known(api, tenant, room_id):
        raise not_found("room", room_id)
    host, s = api.host, api.host.settings
    history = None
    if host.dsn is not None:

        async def history(session_ids):
            return await api.db(tenant, lambda c: sessions.in_room(c, room_id, session_ids, HISTORY_LIMIT))

    report = await api.live(
        reconcile_room(
            host.store.redis,
            room_id,
            tenant,
            node_id=host.node_id,
            held_here=host.holds_session,
            history=history,
            # The writer's lag: a session younger than this may not be in PostgreSQL yet.
            history_settle_ms=int((2 * s.writer_flush_interval_s + 2) * 1000),
            # A live session's last heartbeat in history is at most one checkpoint old.
            judge_after_ms=int(s.checkpoint_interval_s * 1000 + s.heartbeat_timeout_ms + s.grace_period_ms),
            repair=call.query["repair"] == "true",
        )
    )
    return json_response(report)


RECONCILE_ROUTES: tuple[Route, ...] = (
    Route("GET", ROOMS_PATH + "/{id}/reconcile", reconcile, "reconcileRoom",
          "Compare the room's Redis roster, the nodes' sessions and history; repair differences",
          "rooms", roles.ADMINISTER, path_params=(ROOM_ID,), query=RECONCILE_QUERY,
          response="ReconcileReport", problems=(404,),
          description="Differences: ghost (in Redis, held by no node: ended node_lost), missing_in_redis "
          "(held by a node, not in the roster: the node writes its sessions again), open_in_history_only "
          "(ended in history at its last heartbeat once that is old enough), missing_in_history (its "
          "session_started written again). Each names the action taken; none with repair=false."),
)  # fmt: skip
