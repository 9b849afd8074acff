"""Signed attendance exports without a server: encoding, signatures, the chain, formula-safe CSV
cells, keys, and ``spidi verify-export`` as a real subprocess (tests/api/test_attendance.py runs
it on exports the API produced)."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from spidi_server import exports
from spidi_server.export_keys import DEV_KEY_FILE, NoSigningKey, signing_key
from spidi_server.settings import Settings

SPIDI = [sys.executable, "-m", "spidi_server.cli"]
ROOM = "7d1c7e8e-3f3a-5d0e-9a55-2b7f4c1e0a11"
SEED = bytes(range(32))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


def row(**values) -> dict:
    out = dict.fromkeys(exports.COLUMNS)
    out.update(
        sessionId="0f6c2d1e-8a1b-4c3d-9e8f-001122334455",
        userId="alice",
        startedAt="2026-05-04T10:00:00.000Z",
        heartbeatCount=2,
    )
    out.update(values)
    return out


def chain(key, tenant: str, count: int, fmt: str = "csv", start: int = 1, prev: str | None = None):
    """``count`` consecutive exports of ``tenant`` (formats alternating when fmt is 'mixed')."""
    out = []
    for i in range(count):
        seq = start + i
        meta = exports.Meta(tenant, ROOM, "2026-05-04T10:00:00.000Z", "2026-05-04T11:00:00.000Z",
                            "2026-05-04T12:00:00.000Z", seq, prev, exports.key_id(key.public_key()))  # fmt: skip
        kind = fmt if fmt != "mixed" else ("csv", "json")[i % 2]
        signed = (exports.sign_csv if kind == "csv" else exports.sign_json)(
            meta, [row(userId=f"u{seq}")], key
        )
        out.append((f"{tenant}-{seq}.{kind}", signed))
        prev = signed.hash
    return out


def save(tmp_path, signed_files) -> list[str]:
    paths = []
    for name, signed in signed_files:
        path = tmp_path / name
        path.write_bytes(signed.body)
        paths.append(str(path))
    return paths


def test_csv_export_layout_quoting_and_formula_safe_cells(key):
    meta = exports.Meta("acme", ROOM, "a", "b", "c", 1, None, exports.key_id(key.public_key()))
    rows = [
        row(userId="=HYPERLINK(\"http://x\")", clientId="+1", device="-2", os="@SUM(A1)", appVersion="1.0"),
        row(userId='say "hi", then\r\nleave', clientId="\tcmd", ip="10.0.0.7", latencyAvgMs=12.0,
            latencyMinMs=1.23456, latencyMaxMs=30.5),
    ]  # fmt: skip
    signed = exports.sign_csv(meta, rows, key)
    text = signed.body.decode()
    lines = text.split("\r\n")
    assert lines[0].startswith("# spidi-signature: ed25519 " + exports.key_id(key.public_key()) + " ")
    assert lines[1].startswith("# spidi-export v1 {")
    meta_json = json.loads(lines[1][len("# spidi-export v1 ") :])
    assert meta_json == {**meta.as_dict("csv", 2)}
    # The signed message is everything after line 1, and the hash is its SHA-256.
    message = signed.body.split(b"\r\n", 1)[1]
    assert signed.hash == exports.digest(message)
    key.public_key().verify(base64.b64decode(lines[0].rsplit(" ", 1)[1]), message)
    # The CSV part reads back with any RFC 4180 reader; cells a spreadsheet would evaluate start
    # with an apostrophe, the rest is as stored.
    table = list(csv.reader(io.StringIO(text.split("\r\n", 2)[2], newline="")))
    assert table[0] == list(exports.COLUMNS)
    first, second = (dict(zip(exports.COLUMNS, r, strict=True)) for r in table[1:])
    assert (first["userId"], first["clientId"], first["device"], first["os"], first["appVersion"]) == (
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "1.0",
    )
    assert second["userId"] == 'say "hi", then\r\nleave' and second["clientId"] == "'\tcmd"
    assert (second["latencyAvgMs"], second["latencyMinMs"], second["latencyMaxMs"]) == ("12", "1.235", "30.5")
    assert (first["endedAt"], first["ip"], first["heartbeatCount"]) == ("", "", "2")
    # Quoting: a field with a quote, comma or line break is quoted, its quotes doubled.
    assert '"say ""hi"", then\r\nleave"' in text


def test_json_export_signs_the_canonical_form(key):
    meta = exports.Meta("acme", ROOM, "a", "b", "c", 3, "ab" * 32, exports.key_id(key.public_key()))
    signed = exports.sign_json(meta, [row(userId="zoë", latencyAvgMs=2.5, latencyMinMs=2.0)], key)
    doc = json.loads(signed.body)
    export = doc["export"]
    assert (export["seq"], export["prevHash"], export["format"], export["rowCount"]) == (
        3,
        "ab" * 32,
        "json",
        1,
    )
    assert export["rows"][0]["latencyMinMs"] == 2 and isinstance(export["rows"][0]["latencyMinMs"], int)
    # What a third party does with any Ed25519 library: JCS of "export", verify, hash.
    message = json.dumps(export, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    key.public_key().verify(base64.b64decode(doc["signature"]["value"]), message)
    assert doc["hash"] == signed.hash == exports.digest(message)
    assert doc["signature"]["keyId"] == exports.key_id(key.public_key())


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_one_altered_byte_fails_the_signature(key, fmt):
    (_, signed), = chain(key, "acme", 1, fmt)  # fmt: skip
    assert exports.verify_one("f", signed.body, key.public_key()).problems == []
    altered = signed.body.replace(b"u1", b"u7")
    assert altered != signed.body
    result = exports.verify_one("f", altered, key.public_key())
    assert result.problems == ["signature: does not verify (the file was altered after signing)"]
    assert result.line().startswith("FAIL f: signature")
    other = Ed25519PrivateKey.generate().public_key()
    wrong = exports.verify_one("f", signed.body, other)
    assert wrong.problems == [
        f"signature: signed with key {exports.key_id(key.public_key())}, not the given key {exports.key_id(other)}"
    ]
    assert exports.verify_one("f", b"hello", key.public_key()).problems[0].startswith("not a Spidi export")


def test_chain_checks_gaps_links_duplicates_per_tenant(key, tmp_path):
    pub = key.public_key()
    files = chain(key, "acme", 4, "mixed") + chain(key, "beta", 2)
    paths = save(tmp_path, files)
    results = exports.verify_files(paths, pub)
    assert [r.problems for r in results] == [[]] * 6, [r.line() for r in results]

    # seq 2 of acme missing: named on the file after the gap; beta untouched.
    gap = exports.verify_files([paths[0], paths[2], paths[3], paths[4], paths[5]], pub)
    assert [r.problems for r in gap] == [
        [],
        [f"chain: seq 2 missing between {paths[0]} and this file"],
        [],
        [],
        [],
    ]
    wide = exports.verify_files([paths[0], paths[3]], pub)
    assert wide[1].problems == [f"chain: seq 2 to 3 missing between {paths[0]} and this file"]

    # A forged middle file (re-signed by another key) fails its signature, and its successor is
    # told its predecessor did not verify.
    forger = Ed25519PrivateKey.generate()
    (_, fake), = chain(forger, "acme", 1, "csv", start=2, prev=files[0][1].hash)  # fmt: skip
    (tmp_path / "fake.csv").write_bytes(fake.body)
    forged = exports.verify_files([paths[0], str(tmp_path / "fake.csv"), paths[2]], pub)
    assert forged[1].problems[0].startswith("signature: signed with key")
    assert forged[2].problems == [
        f"chain: its predecessor {tmp_path / 'fake.csv'} (seq 2) failed verification"
    ]

    # Two exports claiming the same seq (a fork), and a link to something else.
    (_, fork), = chain(key, "acme", 1, "json", start=2, prev=files[0][1].hash)  # fmt: skip
    (tmp_path / "fork.json").write_bytes(fork.body)
    forked = exports.verify_files([paths[0], paths[1], str(tmp_path / "fork.json")], pub)
    assert [bool(r.problems) for r in forked] == [False, False, True]
    assert forked[2].problems[0].startswith("chain: seq 2 also claimed by")
    (_, stray), = chain(key, "acme", 1, "csv", start=2, prev="00" * 32)  # fmt: skip
    (tmp_path / "stray.csv").write_bytes(stray.body)
    broken = exports.verify_files([paths[0], str(tmp_path / "stray.csv")], pub)
    assert (
        broken[1].problems[0].startswith(f"chain: prevHash 0000000000000000... is not the hash of {paths[0]}")
    )


def test_keys_from_pem_or_base64_and_the_dev_key(key, tmp_path):
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key()
    for data in (pem, base64.b64encode(SEED) + b"\n"):
        assert exports.key_id(exports.private_key_from_bytes(data).public_key()) == exports.key_id(pub)
    for text in (exports.public_key_pem(pub), exports.public_key_b64(pub)):
        assert exports.public_key_b64(exports.public_key_from_text(text)) == exports.public_key_b64(pub)
    with pytest.raises(exports.ExportError, match="32 bytes"):
        exports.private_key_from_bytes(base64.b64encode(b"short"))
    with pytest.raises(exports.ExportError, match="neither PEM nor base64"):
        exports.public_key_from_text("not a key!")

    # Configured file; none outside dev mode (a clear message); dev mode makes one and keeps it.
    key_file = tmp_path / "export.pem"
    key_file.write_bytes(pem)
    configured = Settings(data_dir=str(tmp_path / "a"), export_signing_key_file=str(key_file))
    assert exports.key_id(signing_key(configured).public_key()) == exports.key_id(pub)
    with pytest.raises(NoSigningKey, match="set export_signing_key_file"):
        signing_key(Settings(data_dir=str(tmp_path / "b")))
    with pytest.raises(NoSigningKey, match="No such file"):
        signing_key(Settings(data_dir=str(tmp_path / "c"), export_signing_key_file=str(tmp_path / "none")))
    dev = Settings(data_dir=str(tmp_path / "d"), dev=True)
    first = exports.key_id(signing_key(dev).public_key())
    stored = tmp_path / "d" / DEV_KEY_FILE
    assert stored.stat().st_mode & 0o777 == 0o600
    assert exports.key_id(exports.private_key_from_bytes(stored.read_bytes()).public_key()) == first


def test_verify_export_command(key, tmp_path):
    paths = save(tmp_path, chain(key, "acme", 3, "mixed"))
    pub_b64 = exports.public_key_b64(key.public_key())
    pem_file = tmp_path / "public.pem"
    pem_file.write_text(exports.public_key_pem(key.public_key()))

    def run(*args):
        return subprocess.run([*SPIDI, "verify-export", *args], capture_output=True, text=True, timeout=60)

    for given in (pub_b64, str(pem_file)):
        ok = run("--public-key", given, *paths)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        lines = ok.stdout.splitlines()
        assert len(lines) == 3 and all(line.startswith("OK   ") for line in lines)
        assert "tenant acme seq 2" in lines[1] and paths[1] in lines[1]

    # A missing middle file and an altered one: exit 1, one line per file, naming file and check.
    gap = run("--public-key", pub_b64, paths[0], paths[2])
    assert gap.returncode == 1
    assert (
        gap.stdout.splitlines()[1]
        == f"FAIL {paths[2]}: chain: seq 2 missing between {paths[0]} and this file"
    )
    data = bytearray((tmp_path / "acme-2.json").read_bytes())
    data[data.index(b'"u2"') + 2] = ord("9")
    (tmp_path / "acme-2.json").write_bytes(bytes(data))
    altered = run("--public-key", pub_b64, *paths)
    assert altered.returncode == 1
    out = altered.stdout.splitlines()
    assert out[0].startswith("OK   ")
    assert out[1] == f"FAIL {paths[1]}: signature: does not verify (the file was altered after signing)"
    assert out[2] == f"FAIL {paths[2]}: chain: its predecessor {paths[1]} (seq 2) failed verification"

    # Without --public-key the configuration's key: outside dev mode there is none (exit 2).
    nokey = run("--data-dir", str(tmp_path / "data"), paths[0])
    assert nokey.returncode == 2 and "export_signing_key_file" in nokey.stderr
    bad = run("--public-key", "nonsense!", paths[0])
    assert bad.returncode == 2 and "neither PEM nor base64" in bad.stderr
    printed = run("--dev", "--data-dir", str(tmp_path / "dev"), "--print-key")
    assert printed.returncode == 0 and printed.stdout.startswith("Ed25519 keyId ")
    dev_pub = printed.stdout.splitlines()[1]
    assert exports.public_key_b64(exports.public_key_from_text(dev_pub)) == dev_pub
    assert "-----BEGIN PUBLIC KEY-----" in printed.stdout
