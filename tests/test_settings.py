"""Configuration: defaults, TOML file, SPIDI_* environment, flags, validation."""

from __future__ import annotations

import pytest

from spidi_server.errors import ConfigError
from spidi_server.settings import Settings, load_settings, settings_table


def test_defaults():
    s = load_settings(env={})
    assert (s.port, s.ops_port, s.heartbeat_interval_ms, s.heartbeat_timeout_ms) == (8765, 9100, 15000, 45000)
    assert s.grace_period_ms == 15000 and s.default_room_capacity == 1000 and s.max_frame_size == 65536
    assert s.rooms_auto_created is False
    assert load_settings(env={"SPIDI_DEV": "1"}).rooms_auto_created is True


def test_precedence_file_env_flags(tmp_path):
    path = tmp_path / "spidi.toml"
    path.write_text('port = 1000\nops_port = 1001\nlog_level = "debug"\nrooms = { lobby = 50 }\n')
    s = load_settings(
        str(path),
        env={"SPIDI_OPS_PORT": "2001", "SPIDI_JWT_ALGORITHMS": "HS256"},
        overrides={"log_level": "warning"},
    )
    assert s.port == 1000 and s.ops_port == 2001 and s.log_level == "warning" and s.rooms == {"lobby": 50}


def test_env_parses_types():
    s = load_settings(
        env={"SPIDI_AUTO_CREATE_ROOMS": "false", "SPIDI_ROOMS": "a=5,b=7", "SPIDI_JWT_LEEWAY_S": "1.5"}
    )
    assert s.auto_create_rooms is False and s.rooms == {"a": 5, "b": 7} and s.jwt_leeway_s == 1.5


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SPIDI_PORT": "eighty"}, "SPIDI_PORT"),
        ({"SPIDI_PORT": "70000"}, "port must be"),
        ({"SPIDI_HEARTBEAT_TIMEOUT_MS": "10", "SPIDI_HEARTBEAT_INTERVAL_MS": "20"}, "heartbeat_timeout_ms"),
        ({"SPIDI_LOG_LEVEL": "chatty"}, "log_level"),
        ({"SPIDI_DEFAULT_ROOM_CAPACITY": "0"}, "default_room_capacity"),
        ({"SPIDI_JWT_ALGORITHMS": "none"}, "unsupported algorithm"),
        ({"SPIDI_JWT_ALGORITHMS": "HS256,RS256"}, "do not mix"),
        ({"SPIDI_ROOMS": "a=-1"}, "rooms.a"),
        ({"SPIDI_DEV": "maybe"}, "SPIDI_DEV"),
        ({"SPIDI_TRANSPORT": "aiohttp"}, "transport must be"),
        ({"SPIDI_WEBSOCKET_COMPRESSION": "true"}, "needs transport = 'websockets' \\(native"),
        ({"SPIDI_TRANSPORT": "picows", "SPIDI_WEBSOCKET_COMPRESSION": "true"}, "picows has no deflate"),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_native_is_the_default_transport_and_compression_selects_the_reference():
    assert load_settings(env={}).transport == "native"
    s = load_settings(env={"SPIDI_TRANSPORT": "websockets", "SPIDI_WEBSOCKET_COMPRESSION": "true"})
    assert s.transport == "websockets" and s.websocket_compression


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(str(tmp_path / "missing.toml"), env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(str(bad), env={})
    bad.write_text("port = [\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_settings(str(bad), env={})


def test_table_covers_every_setting():
    rows = settings_table()
    assert len(rows) == len(Settings.__dataclass_fields__)
    assert all(doc for *_, doc in rows)


def test_readme_configuration_table_is_current():
    from pathlib import Path

    from spidi_server.settings import markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "\n<!-- settings:end -->"
    table = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert table == markdown_table(), "README table is stale: run python -m spidi_server.settings"
