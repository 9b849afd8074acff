"""Signed attendance exports: encoding, signing, chain hashing and verification, without I/O
(besides reading the files given to :func:`verify_files`).

An export is one room's sessions over a period, rendered as CSV or JSON, signed with the server's
Ed25519 key and chained per tenant: each export carries ``seq`` (1, 2, ... per tenant) and
``prevHash``, the hash of the tenant's export ``seq - 1`` (null for the first). The format, exactly
(docs/operations.md, "Signed attendance exports"):

* **JSON**: ``{"export": {...}, "signature": {"alg": "Ed25519", "keyId", "value"}, "hash"}``. The
  signed message is the RFC 8785 (JCS) canonical form of ``export``. Spidi writes numbers only as
  integers or decimals with at most three fraction digits, so ``json.dumps(export, sort_keys=True,
  separators=(",", ":"), ensure_ascii=False)`` encoded as UTF-8 gives the same bytes.
* **CSV**: line 1 is ``# spidi-signature: ed25519 <keyId> <base64 signature>``; the signed message
  is every byte after that line's CRLF: line 2 ``# spidi-export v1 <meta as canonical JSON>``, then
  the CSV (RFC 4180, CRLF, a header row). A saved file verifies on its own.

The hash of an export (what the next one's ``prevHash`` holds, and the JSON wrapper's ``hash``)
is the lowercase hex SHA-256 of its signed message, whichever the format, so one tenant's chain
may mix formats. ``keyId`` is the hex of the first 8 bytes of the SHA-256 of the raw 32-byte
public key.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = 1
CSV_SIGNATURE_PREFIX = "# spidi-signature: ed25519 "
CSV_META_PREFIX = f"# spidi-export v{VERSION} "
CRLF = "\r\n"
# The columns of an export, in order: the JSON rows' keys and the CSV header.
COLUMNS = (
    "sessionId",
    "userId",
    "clientId",
    "device",
    "os",
    "appVersion",
    "ip",
    "startedAt",
    "endedAt",
    "endReason",
    "heartbeatCount",
    "latencyAvgMs",
    "latencyMinMs",
    "latencyMaxMs",
)
# A text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"):
# such a cell gets a leading apostrophe, which spreadsheets show as text and do not evaluate.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportError(ValueError):
    """A key or an export that cannot be read (bad key material, not a Spidi export)."""


# -- keys ---------------------------------------------------------------------------------------


def private_key_from_bytes(data: bytes, where: str = "the key") -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) file's bytes or the base64 of its 32-byte seed."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise ExportError(f"{where}: not a readable unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ExportError(f"{where}: the PEM key is not an Ed25519 key")
        return key
    seed = _b64(text, where)
    if len(seed) != 32:
        raise ExportError(f"{where}: an Ed25519 seed is 32 bytes, this one is {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_from_text(data: bytes | str, where: str = "the public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or the base64 of its 32 raw bytes."""
    raw = data.encode() if isinstance(data, str) else data
    raw = raw.strip()
    if raw.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError) as exc:
            raise ExportError(f"{where}: not a readable PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ExportError(f"{where}: the PEM key is not an Ed25519 key")
        return key
    value = _b64(raw, where)
    if len(value) != 32:
        raise ExportError(f"{where}: an Ed25519 public key is 32 bytes, this one is {len(value)}")
    return Ed25519PublicKey.from_public_bytes(value)


def _b64(text: bytes, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ExportError(f"{where}: neither PEM nor base64") from None


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The base64 of the 32 raw bytes (what ``--public-key`` accepts)."""
    return base64.b64encode(raw_public_key(key)).decode()


def public_key_pem(key: Ed25519PublicKey) -> str:
    """The PEM (SubjectPublicKeyInfo) of a public key."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """Hex of the first 8 bytes of SHA-256 of the raw public key: names the key in every export."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def new_seed() -> bytes:
    """A fresh 32-byte Ed25519 seed (the development key)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


# -- canonical values ---------------------------------------------------------------------------


def number(value: float | int | None) -> float | int | None:
    """A figure as an export holds it: integers as such, other numbers rounded to 3 decimals (an
    integral result becomes an int), so Python's JSON text of it is also RFC 8785's."""
    if value is None or isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value holding strings, ints, ``number()`` figures, bools,
    None, lists and ASCII-keyed objects."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(message: bytes) -> str:
    """The hash of an export: lowercase hex SHA-256 of its signed message."""
    return hashlib.sha256(message).hexdigest()


def safe_cell(value: Any) -> str:
    """A CSV cell: '' for None, numbers as in JSON, text with a leading apostrophe when a
    spreadsheet would take it for a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(number(value))
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


# -- building exports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    """What an export says about itself (signed with its rows)."""

    tenant: str
    room_id: str
    period_from: str  # ISO 8601 UTC, as the API renders timestamps
    period_to: str
    generated_at: str
    seq: int
    prev_hash: str | None
    key_id: str
    archive: bool = False  # archived sessions (older than retention_hot_days) were read too

    def as_dict(self, fmt: str, row_count: int) -> dict[str, Any]:
        return {
            "version": VERSION,
            "format": fmt,
            "tenant": self.tenant,
            "roomId": self.room_id,
            "from": self.period_from,
            "to": self.period_to,
            "archive": self.archive,
            "generatedAt": self.generated_at,
            "seq": self.seq,
            "prevHash": self.prev_hash,
            "keyId": self.key_id,
            "rowCount": row_count,
        }


@dataclass(frozen=True)
class Signed:
    """A rendered export: the bytes to send or save, and its hash (the next export's prevHash)."""

    body: bytes
    hash: str
    content_type: str


def _check_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if tuple(row) != COLUMNS:
            raise ValueError(f"an export row has the keys {COLUMNS}, got {tuple(row)}")
        out.append({k: number(v) if isinstance(v, float) else v for k, v in row.items()})
    return out


def sign_json(meta: Meta, rows: Sequence[dict[str, Any]], key: Ed25519PrivateKey) -> Signed:
    """The JSON export: ``{"export": {meta..., "rows"}, "signature": {...}, "hash"}``."""
    body = _check_rows(rows)
    export = {**meta.as_dict("json", len(body)), "rows": body}
    message = canonical(export)
    signature = base64.b64encode(key.sign(message)).decode()
    wrapper = {
        "export": export,
        "signature": {"alg": "Ed25519", "keyId": meta.key_id, "value": signature},
        "hash": digest(message),
    }
    return Signed(json.dumps(wrapper, ensure_ascii=False).encode(), digest(message), "application/json")


def csv_text(rows: Iterable[dict[str, Any]]) -> str:
    """The CSV part of an export: header row and rows, RFC 4180 quoting, CRLF, formula-safe cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=CRLF, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([safe_cell(row[c]) for c in COLUMNS])
    return out.getvalue()


def sign_csv(meta: Meta, rows: Sequence[dict[str, Any]], key: Ed25519PrivateKey) -> Signed:
    """The CSV export: signature line, meta line, then the CSV (see the module docstring)."""
    body = _check_rows(rows)
    meta_line = CSV_META_PREFIX + canonical(meta.as_dict("csv", len(body))).decode() + CRLF
    message = (meta_line + csv_text(body)).encode()
    signature = base64.b64encode(key.sign(message)).decode()
    first = f"{CSV_SIGNATURE_PREFIX}{meta.key_id} {signature}{CRLF}".encode()
    return Signed(first + message, digest(message), "text/csv")


# -- reading and verifying ----------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """An export read back: its meta, the signed message, the claimed key id and signature."""

    meta: dict[str, Any]
    message: bytes
    key_id: str
    signature: bytes

    @property
    def hash(self) -> str:
        return digest(self.message)


def parse(data: bytes) -> Parsed:
    """Split a saved export (CSV or JSON, told apart by its first byte) into what verification
    needs; ExportError says why a file is not a Spidi export."""
    if data.startswith(CSV_SIGNATURE_PREFIX.encode()):
        return _parse_csv(data)
    if data.lstrip()[:1] == b"{":
        return _parse_json(data)
    raise ExportError(
        f"not a Spidi export: neither a CSV starting with {CSV_SIGNATURE_PREFIX.strip()!r} nor a JSON object"
    )


def _parse_csv(data: bytes) -> Parsed:
    first, sep, message = data.partition(b"\r\n")
    if not sep:
        raise ExportError("the signature line does not end with CRLF")
    parts = first[len(CSV_SIGNATURE_PREFIX) :].split(b" ")
    if len(parts) != 2:
        raise ExportError("the signature line is not '# spidi-signature: ed25519 <keyId> <signature>'")
    signature = _b64(parts[1], "the signature")
    meta_line, sep, _ = message.partition(b"\r\n")
    if not sep or not meta_line.startswith(CSV_META_PREFIX.encode()):
        raise ExportError(f"line 2 does not start with {CSV_META_PREFIX.strip()!r}")
    try:
        meta = json.loads(meta_line[len(CSV_META_PREFIX) :])
    except ValueError as exc:
        raise ExportError(f"line 2: the metadata is not JSON: {exc}") from None
    return Parsed(_check_meta(meta), message, parts[0].decode("ascii", "replace"), signature)


def _parse_json(data: bytes) -> Parsed:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ExportError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("export"), dict):
        raise ExportError('not a Spidi export: no "export" object')
    sig = doc.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise ExportError('"signature" is not {"alg": "Ed25519", "keyId", "value"}')
    export = doc["export"]
    meta = _check_meta({k: v for k, v in export.items() if k != "rows"})
    return Parsed(
        meta, canonical(export), str(sig.get("keyId")), _b64(sig["value"].encode(), "the signature")
    )


def _check_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ExportError("the metadata is not an object")
    if meta.get("version") != VERSION:
        raise ExportError(f"unsupported export version {meta.get('version')!r} (this spidi reads {VERSION})")
    if not isinstance(meta.get("seq"), int) or not isinstance(meta.get("tenant"), str):
        raise ExportError("the metadata lacks seq or tenant")
    return meta


@dataclass
class FileResult:
    """One file's verdict: ``problems`` empty means it passed every check."""

    name: str
    parsed: Parsed | None
    problems: list[str]

    def line(self) -> str:
        """The one line ``spidi verify-export`` prints for this file."""
        if self.problems:
            return f"FAIL {self.name}: " + "; ".join(self.problems)
        m = self.parsed.meta  # type: ignore[union-attr]
        return (
            f"OK   {self.name}: tenant {m['tenant']} seq {m['seq']} room {m.get('roomId')} "
            f"{m.get('from')}..{m.get('to')} rows {m.get('rowCount')} hash {self.parsed.hash[:16]}"  # type: ignore[union-attr]
        )


def verify_one(name: str, data: bytes, key: Ed25519PublicKey) -> FileResult:
    """Parse ``data`` and check its signature with ``key``."""
    try:
        parsed = parse(data)
    except ExportError as exc:
        return FileResult(name, None, [str(exc)])
    problems = []
    expected = key_id(key)
    if parsed.key_id != expected:
        problems.append(f"signature: signed with key {parsed.key_id}, not the given key {expected}")
    else:
        try:
            key.verify(parsed.signature, parsed.message)
        except InvalidSignature:
            problems.append("signature: does not verify (the file was altered after signing)")
        else:
            if parsed.meta.get("keyId") != expected:  # signed, yet naming another key: not Spidi's
                problems.append(
                    f"signature: the metadata names key {parsed.meta.get('keyId')}, not {expected}"
                )
    return FileResult(name, parsed, problems)


def check_chain(results: Sequence[FileResult]) -> None:
    """Add chain problems to ``results``: per tenant in seq order, each file's prevHash must be the
    hash of the file of seq - 1; a gap, a duplicate seq or a broken link is named on the later file."""
    by_tenant: dict[str, list[FileResult]] = {}
    for r in results:
        if r.parsed is not None:
            by_tenant.setdefault(r.parsed.meta["tenant"], []).append(r)
    for files in by_tenant.values():
        files.sort(key=lambda r: r.parsed.meta["seq"])  # type: ignore[union-attr]
        for prev, cur in zip(files, files[1:], strict=False):
            p, c = prev.parsed.meta, cur.parsed.meta  # type: ignore[union-attr]
            if c["seq"] == p["seq"]:
                cur.problems.append(f"chain: seq {c['seq']} also claimed by {prev.name}")
            elif c["seq"] != p["seq"] + 1:
                missing = (
                    f"seq {p['seq'] + 1}"
                    if c["seq"] == p["seq"] + 2
                    else f"seq {p['seq'] + 1} to {c['seq'] - 1}"
                )
                cur.problems.append(f"chain: {missing} missing between {prev.name} and this file")
            elif prev.problems and prev.problems[0].startswith("signature"):
                cur.problems.append(
                    f"chain: its predecessor {prev.name} (seq {p['seq']}) failed verification"
                )
            elif c.get("prevHash") != prev.parsed.hash:  # type: ignore[union-attr]
                cur.problems.append(
                    f"chain: prevHash {str(c.get('prevHash'))[:16]}... is not the hash of {prev.name} "
                    f"(seq {p['seq']}, {prev.parsed.hash[:16]}...)"  # type: ignore[union-attr]
                )
        first = files[0]
        if first.parsed.meta["seq"] == 1 and first.parsed.meta.get("prevHash") is not None:  # type: ignore[union-attr]
            first.problems.append("chain: seq 1 must have prevHash null")


def verify_files(paths: Sequence[str | Path], key: Ed25519PublicKey) -> list[FileResult]:
    """Verify each file's signature with ``key`` and, across them, each tenant's chain."""
    results = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            results.append(FileResult(str(path), None, [f"cannot read: {exc.strerror or exc}"]))
            continue
        results.append(verify_one(str(path), data, key))
    check_chain(results)
    return results
