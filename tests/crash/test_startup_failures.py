"""``spidi serve`` that cannot start says why in one line, exits 2 within seconds, and leaves
nothing running (issue 14: a second node on a port in use hung with its services up)."""

from __future__ import annotations

import time

from .procs_boot import Serve, free_port, listening_socket, wait_nothing_left

FAIL_WITHIN_S = 15.0  # the embedded services are never started: a failure costs seconds


def _fails(node: Serve, message: str) -> None:
    started = time.monotonic()
    try:
        assert node.wait(FAIL_WITHIN_S) == 2, node.stderr
        assert time.monotonic() - started < FAIL_WITHIN_S
        lines = [line for line in node.stderr.splitlines() if line.startswith("spidi:")]
        assert len(lines) == 1 and lines[0].startswith(f"spidi: cannot start: {message}"), node.stderr
        assert "Traceback" not in node.stderr
        wait_nothing_left(node)
    finally:
        node.kill_all()


def test_websocket_port_in_use(tmp_path):
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        node = Serve(tmp_path, "--port", str(port), "--ops-port", str(free_port()))
        _fails(node, f"port {port} on 127.0.0.1 is in use")
    # Nothing costly was started for it.
    assert not (node.data / "postgres").exists() and not (node.data / "redis").exists()


def test_ops_port_in_use(tmp_path):
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        node = Serve(tmp_path, "--port", str(free_port()), "--ops-port", str(port))
        _fails(node, f"port {port} on 127.0.0.1 is in use")


def test_websocket_port_in_use_with_workers(tmp_path):
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        node = Serve(tmp_path, "--workers", "2", "--port", str(port), "--ops-port", str(free_port()))
        _fails(node, f"port {port} on 127.0.0.1 is in use")


def test_unwritable_data_directory(tmp_path):
    # As root every mode bit is ignored: a data directory under a regular file cannot be created.
    (tmp_path / "a-file").write_text("")
    data = tmp_path / "a-file" / "data"
    node = Serve(tmp_path, "--port", "0", "--ops-port", "0", data=data)
    _fails(node, f"data directory {data} is not writable")


def test_external_redis_not_answering(tmp_path):
    port = free_port()
    url = f"redis://spidi:hunter2secret@127.0.0.1:{port}/0"
    node = Serve(tmp_path, "--port", "0", "--ops-port", "0", "--redis-url", url)
    _fails(node, f"Redis at redis://spidi:***@127.0.0.1:{port}/0 does not answer")
    assert "hunter2secret" not in node.stderr + node.stdout


def test_external_postgres_not_answering(tmp_path):
    port = free_port()
    dsn = f"postgresql://spidi:hunter2secret@127.0.0.1:{port}/spidi"
    node = Serve(
        tmp_path,
        "--port",
        "0",
        "--ops-port",
        "0",
        env={"SPIDI_POSTGRES_DSN": dsn},
    )
    _fails(node, f"PostgreSQL at postgresql://spidi:***@127.0.0.1:{port}/spidi does not answer")
    assert "hunter2secret" not in node.stderr + node.stdout
