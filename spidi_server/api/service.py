"""What every API handler shares: authentication, tenant-scoped PostgreSQL access, live-state reads.

PostgreSQL: ``history.sql`` functions are synchronous (psycopg ``Connection``), so the API
runs each request's queries in a worker thread on a connection from a ``psycopg_pool``
``ConnectionPool``, always inside ``tenant_transaction`` (role spidi_reader and the
caller's tenant for that one transaction: row-level security, not only a WHERE clause). The pool
is created on first use from the host's ``dsn`` and closed with the ops application.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import psycopg
from aiohttp import web
from psycopg_pool import ConnectionPool, PoolTimeout
from redis.exceptions import RedisError

from .. import logs, roles
from ..auth import Claims
from ..errors import AuthError
from ..history.sql.tenancy import tenant_transaction
from ..stores import keys
from . import tenant_defaults
from .problems import Problem
from .routing import current_request

if TYPE_CHECKING:
    from ..auth import TokenVerifier
    from ..rooms import RoomCatalog
    from ..settings import Settings
    from ..stores.hot_store import HotStore

log = logging.getLogger("spidi.api")

POOL_MAX_SIZE = 4
POOL_TIMEOUT_S = 5.0

T = TypeVar("T")


def _www_authenticate(error: str | None = None, description: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="spidi"'
    if error:
        value += f', error="{error}"'
    if description:
        # RFC 6750: error_description is a quoted string without '"' or '\'.
        value += ', error_description="{}"'.format(description.replace('"', "'").replace("\\", "/"))
    return {"WWW-Authenticate": value}


@runtime_checkable
class ApiHost(Protocol):
    """What the REST API needs from the process that serves it (the node)."""

    settings: Settings
    policy: roles.Policy  # which roles may do what, under the settings (``roles.policy``)
    verifier: TokenVerifier  # checks the bearer tokens
    catalog: RoomCatalog  # the rooms this node knows, and their effective capacity
    store: HotStore | None  # live state in Redis (set once the node has started)
    node_id: str  # this node's id

    def holds_session(self, session_id: str) -> bool: ...  # this process holds that session

    @property
    def dsn(self) -> str | None: ...  # PostgreSQL, or None: the history routes then answer 503

    # A room definition changed: refresh it here and tell every other process.
    async def rooms_changed(self, tenant: str, code: str) -> None: ...


class Api:
    """The REST API of one node: its pool, its checks, its view of live state."""

    def __init__(self, host: ApiHost):
        self.host = host
        self._pool: ConnectionPool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.openapi = b"{}"  # the OpenAPI document, rendered once at registration
        # Tenants whose defaults are in place (seeded now or before): checked once per process.
        self._seeded: set[str] = set()

    # -- authentication and roles -----------------------------------------------------------

    def authenticate(self, request: web.Request, access: str) -> Claims:
        """The caller's claims, checked for the roles ``access`` (a ``roles`` action) needs; Problem 401/403 otherwise."""
        header = request.headers.get("Authorization", "").strip()
        if not header:
            raise Problem(
                "unauthorized",
                "missing token: send Authorization: Bearer <jwt>",
                headers=_www_authenticate(),
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(
                "unauthorized",
                "the Authorization header must be 'Bearer <jwt>'",
                headers=_www_authenticate("invalid_request", "use the Bearer scheme"),
            )
        try:
            claims = self.host.verifier.verify(token)
        except AuthError as exc:
            raise Problem(
                "unauthorized", str(exc), headers=_www_authenticate("invalid_token", str(exc))
            ) from None
        policy = self.host.policy
        if not policy.allows(claims.roles, access):
            raise Problem("forbidden", f"this needs role {policy.describe(access)}")
        return claims

    def may(self, claims: Claims, action: str) -> bool:
        """Whether the caller may also perform ``action`` (e.g. ``roles.VIEW_IP``), under the node's policy."""
        return self.host.policy.allows(claims.roles, action)

    # -- PostgreSQL -------------------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool:
        if self.host.dsn is None:
            raise Problem("unavailable", "history store not configured: this node has no PostgreSQL")
        if self._pool is None:
            # Created on the event loop's thread (one at a time); open(wait=False) connects in the
            # pool's own threads, so a PostgreSQL that is down costs a request POOL_TIMEOUT_S,
            # never the loop. check_connection drops connections a PostgreSQL restart has broken.
            self._pool = ConnectionPool(
                self.host.dsn,
                min_size=1,
                max_size=POOL_MAX_SIZE,
                timeout=POOL_TIMEOUT_S,
                kwargs={"autocommit": True, "connect_timeout": 3},
                check=ConnectionPool.check_connection,
                name="spidi-api",
                open=False,
            )
            self._pool.open(wait=False)
            # Its own threads, one per connection: a burst of API calls waits here instead of
            # taking the default executor the node needs for room refreshes and health checks.
            self._executor = ThreadPoolExecutor(max_workers=POOL_MAX_SIZE, thread_name_prefix="spidi-api")
        return self._pool

    async def db(self, tenant: str, work: Callable[[psycopg.Connection], T]) -> T:
        """Run ``work(conn)`` in a thread, inside one ``tenant_transaction`` of ``tenant`` carrying
        the request's trace id (the rows it writes record it).

        The tenant's first call on this process first gives it its defaults (``tenant_defaults``),
        in a transaction of their own: they are there whether ``work`` succeeds or not.
        """
        pool = self._get_pool()
        trace = logs.trace_id.get()  # read here: the executor's thread does not see this context

        def run() -> T:
            with pool.connection() as conn:
                if tenant not in self._seeded and self.host.settings.tenant_defaults:
                    self._seed(conn, tenant)
                with tenant_transaction(conn, tenant, trace):
                    return work(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except (psycopg.OperationalError, PoolTimeout, OSError) as exc:
            logs.event(log, "api_postgres_unavailable", logging.WARNING, error=str(exc))
            raise Problem(
                "unavailable", "the history store (PostgreSQL) cannot be reached; retry later"
            ) from exc

    async def seed_tenants(self, tenants: set[str]) -> None:
        """Seed the defaults of ``tenants`` not seeded yet (the node's periodic step for tenants
        whose first use is a WebSocket client). Never raises: PostgreSQL away is logged, and the
        next step or API call tries again."""
        waiting = sorted(t for t in tenants if t and t not in self._seeded)
        if not waiting or not self.host.settings.tenant_defaults or self.host.dsn is None:
            return
        pool = self._get_pool()

        def run() -> None:
            with pool.connection() as conn:
                for tenant in waiting:
                    self._seed(conn, tenant)

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            logs.event(log, "tenant_defaults_failed", logging.WARNING, tenants=waiting, error=str(exc))

    def _seed(self, conn: psycopg.Connection, tenant: str) -> None:
        """Seed ``tenant``'s defaults once (in the pool's thread). A failure other than PostgreSQL
        being away is logged and leaves the request alone: seeding is tried again next call."""
        try:
            with tenant_transaction(conn, tenant):
                added = tenant_defaults.seed(conn, tenant, self.host.settings.alert_hysteresis)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            logs.event(log, "tenant_defaults_failed", logging.ERROR, tenant=tenant, error=str(exc))
            return
        self._seeded.add(tenant)
        if added:
            logs.event(log, "tenant_defaults_created", tenant=tenant, actor=tenant_defaults.ACTOR)

    async def close(self, _app: web.Application | None = None) -> None:
        """Close the pool and its threads (aiohttp ``on_cleanup``)."""
        pool, self._pool = self._pool, None
        executor, self._executor = self._executor, None
        if pool is not None:
            await asyncio.to_thread(pool.close, 5.0)
        if executor is not None:
            executor.shutdown(wait=False)

    # -- live state (Redis) -----------------------------------------------------------------

    async def live(self, reading):
        """Await a Redis read; Problem 503 when Redis cannot answer."""
        try:
            return await reading
        except (RedisError, OSError) as exc:
            raise Problem("unavailable", "the live store (Redis) cannot be reached; retry later") from exc

    async def room_known_live(self, tenant: str, room_id: str) -> bool:
        """Whether ``room_id`` is a room of ``tenant`` as this node knows rooms, without PostgreSQL.

        Room ids are uuid5(tenant, code), so an id found among the tenant's rooms (stored ones in
        the node's catalog, configured ones, or the tenant's rooms hash in Redis, which every join
        fills) cannot belong to another tenant.
        """
        if room_id in self.host.catalog.known(tenant):
            return True
        store = self.host.store
        await store.flush(2.0)  # a join made just before is in the hash too
        return bool(await self.live(store.redis.hexists(keys.tenant_rooms(tenant), room_id)))

    async def rooms_changed(self, tenant: str, code: str) -> None:
        """Make a room change effective everywhere: refresh here and announce it to every node."""
        try:
            await self.host.rooms_changed(tenant, code)
        except (RedisError, OSError) as exc:
            # The change is stored; other nodes pick it up with their periodic refresh (5 s).
            logs.event(
                log,
                "room_change_not_announced",
                logging.WARNING,
                tenant=tenant,
                room_code=code,
                error=str(exc),
            )


# The audit trail has a logger of its own, at INFO whatever ``log_level`` says: an operator who
# turns the logs down to warnings must not lose the record of who changed what. Routing it
# elsewhere (a file, a SIEM) is a matter of a handler on "spidi.audit".
audit_log = logging.getLogger("spidi.audit")
audit_log.setLevel(logging.INFO)

# Each change a handler reports -> (resource type, action, the field holding the resource's id).
AUDITED: dict[str, tuple[str, str, str]] = {
    "room_type_created": ("room_type", "create", "room_type_id"),
    "room_type_updated": ("room_type", "update", "room_type_id"),
    "room_type_deleted": ("room_type", "delete", "room_type_id"),
    "room_created": ("room", "create", "room_id"),
    "room_updated": ("room", "update", "room_id"),
    "room_deleted": ("room", "delete", "room_id"),
    "alert_rule_created": ("alert_rule", "create", "rule_id"),
    "alert_rule_updated": ("alert_rule", "update", "rule_id"),
    "alert_rule_deleted": ("alert_rule", "delete", "rule_id"),
    "alert_acknowledged": ("alert", "acknowledge", "alert_id"),
    "slo_created": ("slo", "create", "slo_id"),
    "slo_updated": ("slo", "update", "slo_id"),
    "slo_deleted": ("slo", "delete", "slo_id"),
    "attendance_exported": ("attendance_export", "create", "seq"),
}
# What an acknowledgement changes: it has no body to name the fields.
_ACK_FIELDS = ["acknowledgedBy", "acknowledgedAt"]


def audit(event: str, claims: Claims, **fields: Any) -> None:
    """Record an administrative change: who (the token's subject), which tenant, what, when.

    Called by a handler once its change is committed (a refused or failed write logs nothing).
    Two lines: ``event`` with the handler's details on ``spidi.api`` (as before), and one line
    ``event: "audit"`` on ``spidi.audit`` in a fixed shape: ``actor``, ``tenant``, ``action``
    (create, update, delete, acknowledge), ``resource_type``, ``resource_id``, ``changed`` (the
    fields whose value changed: the handler's ``changed`` list or the keys of its ``changes``
    diff; for a create, the body fields given; none for a delete), ``changes`` (old and new
    values, when the handler gives them) and ``request`` (method and path). The time is the
    line's ``ts``; the rows' audit columns hold the same actor. Tokens are never passed here.
    """
    logs.event(log, event, actor=claims.user_id, tenant=claims.tenant, **fields)
    resource_type, action, id_field = AUDITED.get(event, (None, event, ""))
    request = current_request.get()
    if "changed" in fields:
        changed = list(fields["changed"])
    elif isinstance(fields.get("changes"), dict):
        changed = sorted(fields["changes"])
    elif action == "delete":
        changed = []
    elif action == "acknowledge":
        changed = list(_ACK_FIELDS)
    else:
        changed = sorted(request.body_fields) if request else []
    line: dict[str, Any] = {
        "actor": claims.user_id,
        "tenant": claims.tenant,
        "action": action,
        "resource_type": resource_type,
        "resource_id": fields.get(id_field),
        "changed": changed,
    }
    if isinstance(fields.get("changes"), dict):
        line["changes"] = fields["changes"]
    if request is not None:
        line["request"] = f"{request.method} {request.path}"
    logs.event(audit_log, "audit", **line)


# Columns every write moves: not "changed fields" of an audit line.
AUDIT_COLUMNS = ("createdAt", "createdBy", "updatedAt", "updatedBy")


def audit_diff(old: dict, new: dict) -> dict[str, list]:
    """An update's ``changes`` for :func:`audit`: ``{key: [old, new]}`` of the resource as the API
    shows it, for each key whose value changed, the audit columns left out."""
    return {k: [old[k], new[k]] for k in new if old[k] != new[k] and k not in AUDIT_COLUMNS}
