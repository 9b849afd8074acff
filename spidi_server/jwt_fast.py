"""A fast path for the common HS256 token: accepts only what PyJWT would accept, else says "ask PyJWT".

PyJWT 2.15 spends ~80 µs on a small HS256 token, most of it checking the base64 alphabet one
character at a time in Python: at 10,000 connects that is most of a connect's budget. This path
does the same checks with C-level primitives (a regular expression, ``binascii``, ``hmac``,
``orjson``) on a strict subset of tokens: compact, unpadded and canonical base64url, a header of
``alg`` / ``typ`` / ``kid`` only, an HMAC key PyJWT itself accepts, integer ``exp`` / ``iat`` /
``nbf``, no ``aud``, a string ``sub``. Anything else, and every token it does not accept, returns
None: the caller then runs PyJWT, whose answer (and error message) stands. So it can only be
wrong by accepting a token PyJWT refuses, which tests/test_security_jwt.py checks differentially
on generated and mutated tokens.

It is not used when ``jwt_issuer`` or ``jwt_audience`` is configured (PyJWT checks them).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from .errors import AuthError

_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")  # unpadded base64url (PyJWT also takes padding: not here)
_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_DIGEST_SIZES = {
    "HS256": 32,
    "HS384": 48,
    "HS512": 64,
}  # bytes: a hash object per token just to ask is not free
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})  # "crit", "b64", "jku"...: PyJWT's
_PREPARE = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key
_secrets: dict[Any, bytes | None] = {}  # key -> its bytes, when PyJWT accepts it as an HMAC secret
_headers: dict[bytes, tuple[str, str | None] | None] = {}  # header segment -> _header's reading
_UNSEEN = object()


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {char: value for value, char in enumerate(_ALPHABET)}  # a base64url character's 6 bits
# The bits of the last character that encode nothing, by the segment's length modulo 4 (2 or 3
# characters of a last group carry 1 or 2 bytes: 4 or 2 bits left over).
_UNUSED_BITS = {0: 0, 2: 0b1111, 3: 0b11}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64url(segment: bytes) -> bytes | None:
    """A segment's bytes if it is canonical unpadded base64url (as PyJWT re-encodes and compares:
    the same as refusing a last character with any of its unused bits set)."""
    rest = len(segment) % 4
    if rest == 1 or _SEGMENT.fullmatch(segment) is None:
        return None
    if rest and _VALUE[segment[-1]] & _UNUSED_BITS[rest]:
        return None  # unused low bits set in the last character: PyJWT refuses it
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + b"=" * (-rest % 4))


def _secret(key: Any, digest_size: int) -> bytes | None:
    """``key`` as PyJWT's HMAC would use it; None if PyJWT refuses it (PEM, DER, SSH, a JWK,
    empty) or would warn that it is shorter than the hash."""
    try:
        secret = _secrets.get(key, b"")
    except TypeError:  # not a str or bytes: not an HMAC secret this path knows
        return None
    if secret == b"":
        try:
            secret = _PREPARE(key)
        except (InvalidKeyError, TypeError, ValueError):
            secret = None
        if len(_secrets) > 64:  # a few configured keys; a JWKS that keeps changing does not grow it
            _secrets.clear()
        _secrets[key] = secret
    if secret is None or len(secret) < digest_size:
        return None
    return secret


def _header(head: bytes) -> tuple[str, str | None] | None:
    """(alg, kid) of a header segment this path takes (an HS alg, typ JWT, a string kid or
    none, no other field); None for any other."""
    header_bytes = _b64url(head)
    if header_bytes is None:
        return None
    try:
        header = orjson.loads(header_bytes)
    except orjson.JSONDecodeError:
        return None
    if type(header) is not dict or not header.keys() <= _HEADER_KEYS:
        return None
    alg = header.get("alg")
    if type(alg) is not str or alg not in _DIGESTS:
        return None
    typ = header.get("typ", "JWT")
    kid = header.get("kid")
    if typ != "JWT" or (kid is not None and type(kid) is not str):
        return None
    return alg, kid


def verify_hs(
    token: str, algorithms: list[str], key_for: Callable[[Any], Any], leeway: float
) -> tuple[dict, Any, Any] | None:
    """(payload, kid, key) of ``token`` if PyJWT would accept it with ``require=["exp", "sub"]``,
    no issuer and no audience; None for anything else (PyJWT then decides)."""
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        return None
    if raw.count(b".") != 2:
        return None
    head, body, sig = raw.split(b".")
    # An issuer's tokens share their header segment: its reading is kept (a few headers).
    header = _headers.get(head, _UNSEEN)
    if header is _UNSEEN:
        header = _header(head)
        if len(_headers) > 64:
            _headers.clear()
        _headers[head] = header
    if header is None:
        return None
    alg, kid = header
    if alg not in algorithms:
        return None
    try:
        key = key_for(kid)
    except AuthError:
        return None
    secret = _secret(key, _DIGEST_SIZES[alg])
    signature = _b64url(sig)
    if secret is None or signature is None:
        return None
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest() without its object.
    if not hmac.compare_digest(hmac.digest(secret, head + b"." + body, _DIGESTS[alg]), signature):
        return None
    payload_bytes = _b64url(body)
    if payload_bytes is None:
        return None
    try:
        data = orjson.loads(payload_bytes)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    now = time.time()
    exp = data.get("exp")
    if type(exp) is not int or exp <= now - leeway or type(data.get("sub")) is not str:
        return None
    for name in ("iat", "nbf"):  # PyJWT allows the leeway ahead; this path does not (it asks)
        if name in data and (type(data[name]) is not int or data[name] > now):
            return None
    if "aud" in data or ("jti" in data and type(data["jti"]) is not str):
        return None
    return data, kid, key
