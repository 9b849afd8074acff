"""The OpenAPI document matches the handlers: same routes, same inputs, same response shapes."""

from __future__ import annotations

from spidi_server.api import ROUTES

from .conftest import check_shape, create_room


def _registered(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api/"):
            out.add((route.method, path))
    return out


def _documented(doc) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


async def test_every_route_is_documented_and_every_documented_route_exists(api):
    doc = (await api.get("/api/openapi.json", role=None)).body
    registered = _registered(api.node.ops.app)
    assert registered == _documented(doc)
    assert len(registered) == len(ROUTES) >= 17
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    # Every $ref resolves.
    text = str(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text or name == "Problem" or name.endswith("Document")
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for response in op["responses"].values():
                ref = response.get("$ref")
                if ref:
                    assert ref.rsplit("/", 1)[1] in doc["components"]["responses"], (path, ref)
                for content in response.get("content", {}).values():
                    schema_ref = content["schema"]["$ref"].rsplit("/", 1)[1]
                    assert schema_ref in doc["components"]["schemas"], (path, schema_ref)


async def test_documented_inputs_are_the_enforced_ones(api):
    doc = (await api.get("/api/openapi.json", role=None)).body
    listing = doc["paths"]["/api/v1/rooms"]["get"]
    names = [p["name"] for p in listing["parameters"]]
    assert names == ["codePrefix", "codeContains", "status", "type", "limit", "offset"]
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 500, 50)
    create = doc["components"]["schemas"]["RoomCreate"]
    assert create["additionalProperties"] is False and create["required"] == ["code"]
    assert create["properties"]["capacity"]["minimum"] == 1
    # An unknown parameter, per the document, is refused by the handler with the same list.
    reply = await api.get("/api/v1/rooms", params={"nope": "1"})
    assert reply.body["errors"][0]["message"] == f"unknown parameter; allowed: {', '.join(names)}"
    assert doc["paths"]["/api/v1/rooms"]["post"]["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/api/openapi.json"]["get"]["security"] == []


async def test_responses_have_the_documented_shapes(api):
    doc = (await api.get("/api/openapi.json", role=None)).body
    rt = (await api.post("/api/v1/room-types", {"code": "class", "name": "C", "defaultCapacity": 9})).body
    room = await create_room(api, "shape", type="class", attributes={"k": "v"})
    samples = {
        ("/api/v1/rooms", "get"): await api.get("/api/v1/rooms"),
        ("/api/v1/rooms/{id}", "get"): await api.get(f"/api/v1/rooms/{room['id']}"),
        ("/api/v1/room-types", "get"): await api.get("/api/v1/room-types"),
        ("/api/v1/room-types/{id}", "get"): await api.get(f"/api/v1/room-types/{rt['id']}"),
        ("/api/v1/rooms/{id}/stats", "get"): await api.get(f"/api/v1/rooms/{room['id']}/stats"),
        ("/api/v1/rooms/{id}/sessions", "get"): await api.get(f"/api/v1/rooms/{room['id']}/sessions"),
        ("/api/v1/rooms/{id}/roster", "get"): await api.get(
            f"/api/v1/rooms/{room['id']}/roster", params={"at": "2026-11-01T00:00:00Z"}
        ),
        ("/api/v1/rooms/{id}/timeline", "get"): await api.get(f"/api/v1/rooms/{room['id']}/timeline"),
        ("/api/v1/sessions", "get"): await api.get("/api/v1/sessions"),
        ("/api/v1/users/{userId}/sessions", "get"): await api.get("/api/v1/users/u/sessions"),
        ("/api/v1/rooms/{id}/attendance", "get"): await api.get(
            f"/api/v1/rooms/{room['id']}/attendance",
            params={"from": "2026-05-04T10:00:00Z", "to": "2026-05-04T11:00:00Z"},
        ),
        ("/api/v1/exports/public-key", "get"): await api.get("/api/v1/exports/public-key", role=None),
    }
    for (path, method), reply in samples.items():
        assert reply.status == 200, (path, reply.body)
        schema = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        check_shape(schema, reply.body, doc, path)
    problem = await api.get("/api/v1/rooms", params={"limit": "0"})
    check_shape(doc["components"]["schemas"]["Problem"], problem.body, doc, "problem")
