"""Secrets at start: no development secret outside ``--dev``, no short HS256 secret, and no
password of a Redis URL or PostgreSQL DSN in what ``spidi`` prints.

Real ``spidi serve`` / ``spidi token`` / ``spidi writer`` processes; a real password-protected
redis-server for the banner.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import pytest
import redis

from spidi_server.auth import TokenVerifier
from spidi_server.errors import AuthError, ConfigError
from spidi_server.redact import redact
from spidi_server.settings import Settings
from spidi_server.stores.embedded_redis import EmbeddedRedis

from .conftest import TEST_SECRET

SPIDI = [sys.executable, "-m", "spidi_server.cli"]
PASSWORD = "Hunter2-redis-password"  # never to be printed
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir():
    # Not under pytest's tmp_path: pgserver (run as root) needs its parents traversable.
    path = Path(tempfile.mkdtemp(prefix="spidi-secrets-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def hermetic_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's SPIDI_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIDI_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def run_to_exit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``spidi args``; a server that is still running after START_TIMEOUT_S (it should have
    refused to start) is stopped and reported as a failure."""
    proc = subprocess.Popen(
        [*SPIDI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        out, err = proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"spidi {' '.join(args)} kept running instead of refusing to start:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def leave_dev_secret(data_dir: Path) -> str:
    """What ``make run`` leaves behind: the dev secret file, and a token minted with it."""
    result = subprocess.run(
        [*SPIDI, "token", "--dev", "--data-dir", str(data_dir), "--role", "admin", "--sub", "dev"],
        capture_output=True,
        text=True,
        env=hermetic_env(),
        timeout=30,
        check=True,
    )
    assert (data_dir / "dev-jwt-secret").exists()
    return result.stdout.strip()


# -- the development secret -----------------------------------------------------------------------


@pytest.mark.hardening(
    "security",
    "spidi token / serve / serve --workers 2 without --dev, no key configured, a dev-jwt-secret "
    "left in the data directory",
    "Exit 2 naming jwt_secret; the dev secret file is not read",
)
@pytest.mark.parametrize(
    "command",
    [
        ["token", "--role", "admin", "--sub", "mallory"],
        ["serve", "--port", "0", "--ops-port", "0"],
        ["serve", "--workers", "2", "--port", "0", "--ops-port", "0"],
    ],
    ids=["token", "serve", "serve-workers"],
)
def test_a_left_over_dev_secret_is_never_used_outside_dev(command, workdir, redis_url):
    data_dir = workdir / "data"
    leave_dev_secret(data_dir)
    env = hermetic_env(SPIDI_REDIS_URL=redis_url, SPIDI_HISTORY="0")
    result = run_to_exit([command[0], "--data-dir", str(data_dir), *command[1:]], env)
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr and "jwt_secret" in result.stderr
    assert result.stdout == ""  # no token minted with the dev secret, no banner


def test_the_verifier_outside_dev_refuses_to_use_the_dev_secret(tmp_path):
    data_dir = tmp_path / "data"
    dev_token = leave_dev_secret(data_dir)
    with pytest.raises(ConfigError, match="jwt_secret"):
        TokenVerifier(Settings(data_dir=str(data_dir)).validate())
    # With a configured key the dev file is ignored: its tokens do not verify.
    verifier = TokenVerifier(Settings(data_dir=str(data_dir), jwt_secret=TEST_SECRET).validate())
    with pytest.raises(AuthError, match="invalid token"):
        verifier.verify(dev_token)
    # In dev mode it still is the key (make run's tokens keep working there).
    dev = TokenVerifier(Settings(data_dir=str(data_dir), dev=True).validate())
    assert dev.verify(dev_token).user_id == "dev"


# -- secret length --------------------------------------------------------------------------------


@pytest.mark.hardening(
    "security",
    "jwt_secret (or an HS256 jwt_keys secret) shorter than 32 bytes, in dev mode too",
    "Start refused (ConfigError naming the setting and the 32-byte minimum)",
)
@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"jwt_secret": "x" * 31}, "jwt_secret"),
        ({"jwt_secret": "é" * 15}, "jwt_secret"),  # 30 bytes, 15 characters
        ({"jwt_secret": "short", "dev": True}, "jwt_secret"),
        ({"jwt_keys": {"2025": "k" * 31}}, "jwt_keys.2025"),
    ],
)
def test_short_hs256_secrets_are_refused(overrides, name):
    with pytest.raises(ConfigError, match=rf"{name} must be at least 32 bytes"):
        Settings(**overrides).validate()


def test_secrets_of_32_bytes_and_rs_key_paths_are_accepted(tmp_path):
    Settings(jwt_secret="x" * 32).validate()
    Settings(jwt_secret="é" * 16).validate()
    Settings(jwt_keys={"2025": "k" * 32}).validate()
    pem = tmp_path / "k.pem"
    pem.write_text("not checked here")
    Settings(jwt_algorithms=["RS256"], jwt_keys={"a": str(pem)}).validate()  # a path, not a secret


def test_serve_refuses_a_short_secret_even_in_dev_mode(workdir, redis_url):
    env = hermetic_env(SPIDI_REDIS_URL=redis_url, SPIDI_HISTORY="0", SPIDI_JWT_SECRET="changeme")
    result = run_to_exit(
        ["serve", "--dev", "--data-dir", str(workdir / "data"), "--port", "0", "--ops-port", "0"], env
    )
    assert result.returncode == 2
    assert "jwt_secret must be at least 32 bytes, got 8" in result.stderr
    assert "changeme" not in result.stderr + result.stdout


# -- passwords in output --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shown",
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://spidi:pw@h:6379/0", "redis://spidi:***@h:6379/0"),
        ("rediss+cluster://spidi:p@ss@a:1,b:2", "rediss+cluster://spidi:***@a:1,b:2"),
        ("postgresql://spidi:pw@pg/spidi", "postgresql://spidi:***@pg/spidi"),
        ("host=pg password=pw dbname=spidi", "host=pg password=*** dbname=spidi"),
        ("host=pg password='p w' dbname=spidi", "host=pg password=*** dbname=spidi"),
        ("bad URL 'redis://:pw@h:x' here", "bad URL 'redis://:***@h:x' here"),
    ],
)
def test_redact_hides_passwords(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    ["redis://h:6379/0", "redis://spidi@h:6379/0", "unix:///run/redis.sock?db=0", "postgresql://pg/spidi"],
)
def test_redact_leaves_urls_without_password_alone(text):
    assert redact(text) == text


@pytest.fixture
def redis_with_password(workdir):
    """A real redis-server on a TCP port that wants PASSWORD (set once it answers PING)."""
    server = EmbeddedRedis(workdir / "redis-auth", port=free_port()).start()
    try:
        admin = redis.Redis(unix_socket_path=str(server.socket_path))
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        yield f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.mark.hardening(
    "security",
    "spidi serve (one process, or --workers 2) on an external Redis URL with a password",
    "Banner shows redis://default:***@host; the password is in no output",
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_banner_hides_the_redis_password(workers, redis_with_password, workdir):
    env = hermetic_env(SPIDI_REDIS_URL=redis_with_password, SPIDI_HISTORY="0", SPIDI_JWT_SECRET=TEST_SECRET)
    args = [
        "serve",
        "--workers",
        workers,
        "--data-dir",
        str(workdir / "data"),
        "--port",
        "0",
        "--ops-port",
        "0",
    ]
    proc = subprocess.Popen(
        [*SPIDI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("Redis:"):
                break
        banner = "".join(lines)
        assert "Redis:" in banner, banner + (proc.stderr.read() if proc.poll() is not None else "")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    port = redis_with_password.rsplit(":", 1)[1]
    assert f"Redis:             redis://default:***@127.0.0.1:{port}" in banner
    assert proc.returncode == 0, err
    for text in (banner, out, err):
        assert PASSWORD not in text
    # The node did use the password: it registered itself in that Redis.
    client = redis.Redis.from_url(redis_with_password)
    try:
        assert client.dbsize() > 0
    finally:
        client.close()


@pytest.mark.hardening(
    "security",
    "A malformed redis_url carrying a password (cluster seed, port, scheme) to serve, serve "
    "--workers 2 and writer",
    "Exit 2, a configuration error naming redis_url with the password shown as ***",
)
@pytest.mark.parametrize(
    "url",
    [
        f"redis+cluster://spidi:{PASSWORD}@127.0.0.1:notaport",
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        f"http://spidi:{PASSWORD}@127.0.0.1:6379/0",
    ],
    ids=["cluster-seed", "port", "scheme"],
)
@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "0", "--ops-port", "0"], ["serve", "--workers", "2"], ["writer"]],
    ids=["serve", "serve-workers", "writer"],
)
def test_configuration_errors_hide_the_redis_password(url, command, workdir):
    env = hermetic_env(SPIDI_REDIS_URL=url, SPIDI_HISTORY="0", SPIDI_JWT_SECRET=TEST_SECRET)
    result = run_to_exit([command[0], "--data-dir", str(workdir / "data"), *command[1:]], env)
    assert result.returncode == 2, result.stderr
    assert "redis_url" in result.stderr and ":***@127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.hardening(
    "security",
    "spidi serve on an external Redis URL with a password where nothing listens",
    "Exit 2, one line naming the Redis URL with the password shown as ***, no traceback",
)
def test_an_unreachable_redis_is_a_clear_error_without_its_password(workdir):
    url = f"redis://spidi:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = hermetic_env(SPIDI_REDIS_URL=url, SPIDI_HISTORY="0", SPIDI_JWT_SECRET=TEST_SECRET)
    result = run_to_exit(
        ["serve", "--data-dir", str(workdir / "data"), "--port", "0", "--ops-port", "0"], env
    )
    assert result.returncode == 2  # a start-up failure (preflight.py)
    shown = url.replace(PASSWORD, "***")
    assert f"spidi: cannot start: Redis at {shown} does not answer: Error 111 connecting to" in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_mint_outside_dev_signs_with_the_configured_secret(tmp_path):
    data_dir = tmp_path / "data"
    leave_dev_secret(data_dir)
    env = hermetic_env(SPIDI_JWT_SECRET=TEST_SECRET)
    result = run_to_exit(["token", "--data-dir", str(data_dir), "--role", "user", "--sub", "u"], env)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])["sub"] == "u"
