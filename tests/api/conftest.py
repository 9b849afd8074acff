"""REST API fixtures: a real node (real Redis, real PostgreSQL) and an HTTP client on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import aiohttp
import orjson
import pytest

from spidi_server.stores import events
from tests.conftest import token_for
from tests.history.helpers import push, running_writer, wait_for


@dataclass
class Reply:
    """One HTTP answer: status, decoded JSON body (None if empty) and headers."""

    status: int
    body: dict | None
    headers: dict
    content_type: str


class ApiClient:
    """Calls a node's REST API as given tokens; ``as_(role, tenant, sub)`` picks the token."""

    def __init__(self, session: aiohttp.ClientSession, node):
        self.session = session
        self.node = node
        self.base = node.ops.url

    def token(self, role: str = "admin", tenant: str = "default", sub: str | None = None) -> str:
        return token_for(self.node.settings, sub or f"{role}-of-{tenant}", f"spidi:{role}", tenant)

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "admin",
        tenant: str = "default",
        sub: str | None = None,
        json=None,
        data: bytes | str | None = None,
        params: dict | None = None,
        headers: dict | None = None,
    ) -> Reply:
        h = dict(headers or {})
        if role is not None:
            h.setdefault("Authorization", f"Bearer {self.token(role, tenant, sub)}")
        if json is not None:
            data = orjson.dumps(json)
            h.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base + path, data=data, params=params, headers=h
        ) as resp:
            raw = await resp.read()
            body = orjson.loads(raw) if raw else None
            return Reply(resp.status, body, dict(resp.headers), resp.content_type)

    async def get(self, path: str, **kw) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json=None, **kw) -> Reply:
        return await self.call("POST", path, json=json, **kw)

    async def put(self, path: str, json=None, **kw) -> Reply:
        return await self.call("PUT", path, json=json, **kw)

    async def patch(self, path: str, json=None, **kw) -> Reply:
        return await self.call("PATCH", path, json=json, **kw)

    async def delete(self, path: str, **kw) -> Reply:
        return await self.call("DELETE", path, **kw)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api_node(node_factory, pg_dsn):  # noqa: F811
    """A node with PostgreSQL (no writer child: events stay in the stream)."""
    return await node_factory(postgres_dsn=pg_dsn, writer="external")


@pytest.fixture
async def api(http, api_node) -> ApiClient:
    return ApiClient(http, api_node)


async def create_room(api: ApiClient, code: str, tenant: str = "default", **fields) -> dict:
    """POST a room as the tenant's admin; the created room."""
    reply = await api.post("/api/v1/rooms", {"code": code, **fields}, tenant=tenant)
    assert reply.status == 201, reply.body
    return reply.body


def assert_problem(reply: Reply, status: int, slug: str) -> dict:
    """The reply is an RFC 9457 problem of that status and type; its body."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.content_type == "application/problem+json"
    body = reply.body
    assert body["type"] == f"urn:spidi:problem:{slug}" and body["status"] == status
    assert body["title"] and body["detail"] and body["instance"].startswith("/api/")
    return body


def error_fields(reply: Reply) -> dict[str, str]:
    """field -> message of a validation problem."""
    body = assert_problem(reply, 400, "validation-error")
    return {e["field"]: e["message"] for e in body["errors"]}


async def write_history(node, redis_client, evs: list[dict]) -> None:
    """Push history events to the stream and run a writer (in a thread) until they are in PostgreSQL.

    The writer flushes quickly and keeps everything (the tests use fixed past dates), and its
    reconciliation sweep is off: those past sessions would look abandoned to it.
    """
    settings = dataclasses.replace(
        node.settings,
        writer_flush_interval_s=0.1,
        retention_hot_days=36500,
        retention_drop_days=36500,
        writer_sweep_interval_s=0,
    ).validate()
    push(redis_client, evs)

    def drained() -> bool:
        # Everything in the stream (ours, and whatever the node added) delivered and acknowledged.
        last = redis_client.xinfo_stream(events.STREAM)["last-generated-id"]
        groups = redis_client.xinfo_groups(events.STREAM)
        return bool(groups) and groups[0]["last-delivered-id"] == last and groups[0]["pending"] == 0

    with running_writer(settings):
        await asyncio.to_thread(wait_for, drained, 20.0)


def check_shape(schema: dict, value, doc: dict, where: str) -> None:
    """A structural check of ``value`` against a documented schema: keys, types, recursively."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types or []
    kind = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value)
    )
    if kind is None:
        kind = "integer" if isinstance(value, int) else "number"
    assert kind in types or (kind == "integer" and "number" in types), (where, value, types)
    if kind == "object" and "properties" in schema:
        # Nothing undocumented, nothing required missing (the response schemas require every key).
        assert set(schema.get("required", [])) <= set(value) <= set(schema["properties"]), (where, set(value))
        for key, item in value.items():
            check_shape(schema["properties"][key], item, doc, f"{where}.{key}")
    if kind == "array" and value:
        for i, item in enumerate(value):
            check_shape(schema["items"], item, doc, f"{where}[{i}]")
