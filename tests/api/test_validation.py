"""Every kind of invalid input gets a problem+json answer whose message says what is wrong."""

from __future__ import annotations

import pytest

from .conftest import assert_problem, create_room, error_fields

ROOMS = "/api/v1/rooms"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"code": "ok", "colour": "red"},
            "colour",
            "unknown field; allowed: code, name, type, capacity, ttlSeconds, status, attributes",
        ),
        ({"code": "ok", "capacity": 0}, "capacity", "must be a positive integer (at most 10000000)"),
        ({"code": "ok", "capacity": -3}, "capacity", "must be a positive integer (at most 10000000)"),
        ({"code": "ok", "capacity": 2.5}, "capacity", "must be a positive integer (at most 10000000)"),
        ({"code": "ok", "capacity": "10"}, "capacity", "must be a positive integer (at most 10000000)"),
        ({"code": "ok", "capacity": True}, "capacity", "must be a positive integer (at most 10000000)"),
        ({"code": "ok", "ttlSeconds": 0}, "ttlSeconds", "must be a positive integer"),
        ({"name": "no code"}, "code", "is required"),
        ({"code": ""}, "code", "must be 1 to 64 characters long"),
        ({"code": "has space"}, "code", "must be 1 to 64 of letters, digits and _ . : -"),
        ({"code": "x" * 65}, "code", "must be 1 to 64 characters long"),
        ({"code": 7}, "code", "must be a string"),
        ({"code": None}, "code", "must not be null"),
        ({"code": "ok", "status": "paused"}, "status", "must be one of active, disabled"),
        (
            {"code": "ok", "attributes": ["a"]},
            "attributes",
            "must be a JSON object of string keys to string or null values",
        ),
        ({"code": "ok", "attributes": {"n": 1}}, "attributes", "value of 'n' must be a string or null"),
        (
            {"code": "ok", "attributes": {"": "v"}},
            "attributes",
            "keys must be 1 to 64 characters long; got ''",
        ),
    ],
)
async def test_room_body_rules(api, body, field, message):
    reply = await api.post(ROOMS, body)
    assert error_fields(reply) == {field: message}
    assert reply.body["detail"] == f"{field}: {message}"
    assert reply.body["instance"] == ROOMS


async def test_every_mistake_is_listed_at_once(api):
    reply = await api.post(ROOMS, {"capacity": 0, "status": "x", "extra": 1})
    assert set(error_fields(reply)) == {"code", "capacity", "status", "extra"}
    assert reply.body["detail"] == "4 invalid fields"
    assert all(e["in"] == "body" for e in reply.body["errors"])


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"{", "the body is not valid JSON"),
        (b'{"code": "a",}', "the body is not valid JSON"),
        (b"\xff\xfe", "the body is not valid JSON"),
    ],
)
async def test_malformed_json(api, data, detail):
    reply = await api.call("POST", ROOMS, data=data, headers={"Content-Type": "application/json"})
    body = assert_problem(reply, 400, "malformed-json")
    assert body["detail"].startswith(detail) and "errors" not in body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "a JSON object is required"),
        (b"[1]", "must be a JSON object"),
        (b'"lobby"', "must be a JSON object"),
    ],
)
async def test_body_must_be_an_object(api, data, message):
    assert error_fields(await api.call("POST", ROOMS, data=data)) == {"(body)": message}


async def test_patch_needs_a_field_and_put_checks_the_same_rules(api):
    room = await create_room(api, "rules")
    assert error_fields(await api.patch(f"{ROOMS}/{room['id']}", {})) == {
        "(body)": "give at least one field to change"
    }
    assert error_fields(await api.put(f"{ROOMS}/{room['id']}", {"capacity": 0})) == {
        "capacity": "must be a positive integer (at most 10000000)"
    }
    assert error_fields(await api.patch(f"{ROOMS}/{room['id']}", {"status": None})) == {
        "status": "must not be null"
    }
    # Nullable fields take null: back to inheriting the capacity.
    reset = await api.patch(f"{ROOMS}/{room['id']}", {"capacity": None})
    assert reset.status == 200 and reset.body["capacity"] == api.node.settings.default_room_capacity


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "6c0f0000-0000-0000-0000-00000000000g"])
@pytest.mark.parametrize("suffix", ["", "/sessions", "/stats"])
async def test_bad_uuid_in_path(api, bad, suffix):
    fields = error_fields(await api.get(f"{ROOMS}/{bad}{suffix}"))
    assert fields["id"].startswith("must be a UUID such as ") and bad in fields["id"]
    assert error_fields(await api.get("/api/v1/sessions", params={"roomId": bad}))["roomId"].startswith(
        "must be a UUID"
    )


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"limit": "0"}, "limit", "must be an integer from 1 to 500"),
        ({"limit": "501"}, "limit", "must be an integer from 1 to 500"),
        ({"limit": "ten"}, "limit", "must be an integer from 1 to 500"),
        ({"offset": "-1"}, "offset", "must be an integer from 0 to 1000000000"),
        ({"offset": "1.5"}, "offset", "must be an integer from 0 to 1000000000"),
        ({"status": "gone"}, "status", "must be one of active, disabled"),
        (
            {"colour": "red"},
            "colour",
            "unknown parameter; allowed: codePrefix, codeContains, status, type, limit, offset",
        ),
    ],
)
async def test_list_query_rules(api, params, field, message):
    assert error_fields(await api.get(ROOMS, params=params, role="monitor")) == {field: message}


async def test_a_parameter_given_twice(api):
    reply = await api.get(f"{ROOMS}?limit=1&limit=2")
    assert error_fields(reply) == {"limit": "must be given at most once"}


async def test_time_range_and_bucket_rules(api):
    room = await create_room(api, "ranges")
    stats = f"{ROOMS}/{room['id']}/stats"
    reply = await api.get(stats, params={"from": "2026-05-04T10:00:00Z", "to": "2026-05-04T09:00:00Z"})
    assert error_fields(reply) == {
        "from": "must be before to (2026-05-04T10:00:00.000Z is not before 2026-05-04T09:00:00.000Z)"
    }
    reply = await api.get(
        "/api/v1/sessions", params={"from": "2026-05-04T10:00:00Z", "to": "2026-05-04T10:00:00Z"}
    )
    assert error_fields(reply)["from"].startswith("must be before to")
    assert error_fields(await api.get(stats, params={"bucket": "5m"})) == {
        "bucket": "must be one of 1m, 1h, 1d"
    }
    assert error_fields(await api.get(stats, params={"from": "yesterday"})) == {
        "from": "must be an ISO 8601 date-time such as 2026-05-04T10:00:00Z; got 'yesterday'"
    }
    too_long = await api.get(stats, params={"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"})
    assert error_fields(too_long) == {
        "bucket": "the range holds 44640 buckets of 1m; at most 10080: shorten the "
        "range or use a larger bucket"
    }
    ok = await api.get(
        stats, params={"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "bucket": "1h"}
    )
    assert ok.status == 200 and ok.body["points"] == []
    # A "+" typed into a URL arrives as a space; the offset is still understood.
    typed = await api.get(f"{stats}?from=2026-05-04T10:00:00+02:00&to=2026-05-04T11:00:00%2B02:00")
    assert typed.status == 200, typed.body
    assert (typed.body["from"], typed.body["to"]) == ("2026-05-04T08:00:00.000Z", "2026-05-04T09:00:00.000Z")


async def test_unknown_paths_and_methods_are_problems_too(api):
    body = assert_problem(await api.get("/api/v1/nothing-here"), 404, "not-found")
    assert body["detail"] == "no API resource at /api/v1/nothing-here"
    reply = await api.call("POST", f"{ROOMS}/6c0f0000-0000-0000-0000-000000000000/stats")
    assert_problem(reply, 405, "method-not-allowed")
    assert reply.headers["Allow"] == "GET"
    # Outside /api/ nothing changes: /metrics stays Prometheus text.
    async with api.session.get(api.base + "/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"


async def test_body_too_large(api):
    reply = await api.call("POST", ROOMS, data=b'{"code": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert_problem(reply, 413, "payload-too-large")
