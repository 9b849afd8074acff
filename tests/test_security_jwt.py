"""JWT verification against forged tokens, clock edges, issuer/audience, and key rotation by kid.

Every token is presented to a real node over a real WebSocket CONNECT; the server's answer
(CONNECTED, or ERROR then close 1008) is what is checked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spidi_server.auth import TokenCache, TokenVerifier, mint_token
from spidi_server.errors import AuthError, ConfigError
from spidi_server.settings import Settings

from .conftest import TRANSPORTS
from .stomp_client import Client

NOW = int(time.time())


def claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "alice", "roles": ["spidi:user"], "exp": now + 600, "iat": now, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, payload: dict, secret: bytes | None) -> str:
    """A token built by hand: pyjwt refuses to forge these (alg none, a PEM key as HMAC secret)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def pem_public(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_keys():
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture(scope="module")
def ec_keys():
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]


async def outcome(node, token: str | None, transport_query: bool = False) -> tuple[str, str]:
    """("CONNECTED", user) or ("ERROR", message) for a CONNECT with ``token``."""
    url = node.ws_url + (f"?access_token={token}" if transport_query else "")
    client = await Client.open(url)
    frame = await client.connect(None if transport_query else token)
    if frame[0] == "ERROR":
        await asyncio.wait_for(client.closed.wait(), 3)
        assert client.ws.close_code == 1008
        return "ERROR", frame[1]["message"]
    await client.close()
    return frame[0], frame[1]["user-name"]


# -- algorithms are pinned ------------------------------------------------------------------------


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.mark.hardening(
    "security",
    "Forged tokens against an RS256 node: alg none/None, HS256 keyed with the public key, RS384, ES256, another key, swapped payload, no signature, garbage",
    "ERROR (algorithm not accepted / invalid token), close 1008; the genuine token connects",
)
async def test_forged_tokens_against_an_rs256_node(node_factory, tmp_path, rsa_keys, ec_keys):
    public_pem = pem_public(rsa_keys[0])
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem)
    node = await node_factory(jwt_algorithms=["RS256"], jwt_public_key_file=str(path), jwt_secret="")
    good = jwt.encode(claims(), rsa_keys[0], algorithm="RS256")
    forged = {
        "alg none": hand_signed({"alg": "none", "typ": "JWT"}, claims(), None),
        "alg None": hand_signed({"alg": "None", "typ": "JWT"}, claims(), None),
        "HS256 keyed with the RS public key": hand_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(), public_pem
        ),
        "RS384, right key": jwt.encode(claims(), rsa_keys[0], algorithm="RS384"),
        "ES256": jwt.encode(claims(), ec_keys[0], algorithm="ES256"),
        "RS256, other key": jwt.encode(claims(), rsa_keys[1], algorithm="RS256"),
        "RS256, payload swapped": good.rsplit(".", 2)[0]
        + "."
        + b64(json.dumps(claims(roles=["spidi:admin"])).encode())
        + "."
        + good.rsplit(".", 1)[1],
        "no signature": good.rsplit(".", 1)[0] + ".",
        "garbage": "eyJhbGciOiJSUzI1NiJ9.e30.AAAA",
    }
    assert await outcome(node, good) == ("CONNECTED", "alice")
    assert await outcome(node, good, transport_query=True) == ("CONNECTED", "alice")
    for name, token in forged.items():
        kind, message = await outcome(node, token)
        assert kind == "ERROR", name
        if name.startswith(("alg", "HS256", "RS384", "ES256")):
            assert "algorithm not accepted" in message, (name, message)
        else:
            assert message == "invalid token", (name, message)


@pytest.mark.hardening(
    "security", "alg none, HS512 and RS256 tokens against an HS256 node", "ERROR algorithm not accepted"
)
async def test_forged_tokens_against_an_hs256_node(node, rsa_keys):
    secret = node.settings.jwt_secret.encode()
    assert (await outcome(node, hand_signed({"alg": "HS256"}, claims(), secret)))[0] == "CONNECTED"
    for token in (
        hand_signed({"alg": "none"}, claims(), None),
        hand_signed({"alg": "HS512"}, claims(), secret),
        jwt.encode(claims(), rsa_keys[0], algorithm="RS256"),
    ):
        kind, message = await outcome(node, token)
        assert kind == "ERROR" and "algorithm not accepted" in message


@pytest.mark.hardening(
    "security", "jwt_algorithms with none, HS512, or HS mixed with RS", "Start refused (ConfigError)"
)
def test_settings_refuse_none_and_mixed_algorithms():
    for algorithms in (["none"], ["HS256", "RS256"], ["RS256", "HS256"], ["HS512"]):
        with pytest.raises(ConfigError):
            Settings(jwt_algorithms=algorithms, jwt_secret="s" * 32, jwt_public_key_file="x").validate()


# -- time claims, issuer, audience ----------------------------------------------------------------


@pytest.mark.hardening(
    "security",
    "Tokens expired or not yet valid, inside and beyond the 5 s leeway; a token without exp",
    "Inside the leeway accepted; beyond it or without exp: ERROR naming the claim",
)
async def test_exp_and_nbf_with_the_leeway(node_factory):
    node = await node_factory(jwt_leeway_s=5.0)
    secret = node.settings.jwt_secret
    now = int(time.time())

    def token(**c):
        return jwt.encode({**claims(), **c}, secret, algorithm="HS256")

    assert (await outcome(node, token(exp=now - 2)))[0] == "CONNECTED"  # within the leeway
    assert await outcome(node, token(exp=now - 30)) == ("ERROR", "token expired")
    assert (await outcome(node, token(nbf=now + 2)))[0] == "CONNECTED"
    assert await outcome(node, token(nbf=now + 60)) == ("ERROR", "token not yet valid (nbf)")
    no_exp = claims()
    del no_exp["exp"]
    assert await outcome(node, jwt.encode(no_exp, secret, algorithm="HS256")) == (
        "ERROR",
        "token lacks the 'exp' claim",
    )


@pytest.mark.hardening(
    "security",
    "Missing or wrong iss / aud when the node requires them",
    "ERROR naming the claim; correct tokens connect",
)
async def test_issuer_and_audience_when_configured(node_factory):
    node = await node_factory(jwt_issuer="https://id.example", jwt_audience="spidi")
    secret = node.settings.jwt_secret

    def token(**c):
        return jwt.encode({**claims(), **c}, secret, algorithm="HS256")

    assert (await outcome(node, token(iss="https://id.example", aud="spidi")))[0] == "CONNECTED"
    assert (await outcome(node, token(iss="https://id.example", aud=["other", "spidi"])))[0] == "CONNECTED"
    assert await outcome(node, token(aud="spidi")) == ("ERROR", "token lacks the 'iss' claim")
    assert await outcome(node, token(iss="https://evil.example", aud="spidi")) == (
        "ERROR",
        "token issuer not accepted",
    )
    assert await outcome(node, token(iss="https://id.example", aud="other")) == (
        "ERROR",
        "token audience not accepted",
    )
    # mint_token (spidi token) fills both in.
    assert (await outcome(node, mint_token(node.settings, "bob", ["spidi:user"])))[0] == "CONNECTED"


# -- key rotation ---------------------------------------------------------------------------------


@pytest.mark.hardening(
    "security",
    "HS256 keys selected by kid: right key, another kid's key, unknown kid, no kid",
    "Only the right kid and key connect; the others are refused with the reason",
)
async def test_hs256_keys_selected_by_kid(node_factory):
    keys = {"2024": "old-secret-" + "x" * 32, "2025": "new-secret-" + "y" * 32}
    node = await node_factory(jwt_keys=keys, jwt_secret="", dev=False)

    def token(kid: str | None, secret: str):
        return jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": kid} if kid else None)

    assert (await outcome(node, token("2024", keys["2024"])))[0] == "CONNECTED"
    assert (await outcome(node, token("2025", keys["2025"])))[0] == "CONNECTED"
    assert await outcome(node, token("2024", keys["2025"])) == ("ERROR", "invalid token")
    assert await outcome(node, token("1999", keys["2024"])) == (
        "ERROR",
        "token signed with an unknown key (kid)",
    )
    assert await outcome(node, token(None, keys["2024"])) == (
        "ERROR",
        "token has no 'kid' header (keys are selected by kid)",
    )
    # `spidi token` signs with the newest key (listed last) and names it.
    minted = mint_token(node.settings, "carol", ["spidi:user"])
    assert jwt.get_unverified_header(minted)["kid"] == "2025"
    assert await outcome(node, minted) == ("CONNECTED", "carol")


@pytest.mark.hardening(
    "security", "RS256 keys selected by kid: a token signed with the other kid's key", "ERROR invalid token"
)
async def test_rs256_keys_selected_by_kid(node_factory, tmp_path, rsa_keys):
    paths = {}
    for kid, key in zip(("a", "b"), rsa_keys, strict=True):
        paths[kid] = tmp_path / f"{kid}.pem"
        paths[kid].write_bytes(pem_public(key))
    node = await node_factory(
        jwt_algorithms=["RS256"], jwt_secret="", jwt_keys={k: str(p) for k, p in paths.items()}
    )
    for kid, key in zip(("a", "b"), rsa_keys, strict=True):
        assert (await outcome(node, jwt.encode(claims(), key, "RS256", headers={"kid": kid})))[
            0
        ] == "CONNECTED"
    wrong = jwt.encode(claims(), rsa_keys[1], "RS256", headers={"kid": "a"})
    assert await outcome(node, wrong) == ("ERROR", "invalid token")


@pytest.mark.hardening(
    "security",
    "An unreadable PEM, a missing key file, a broken JWKS in the configuration",
    "Start refused, naming the setting",
)
def test_bad_key_files_stop_the_start(tmp_path):
    from spidi_server.auth import TokenVerifier

    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="jwt_keys.k"):
        TokenVerifier(Settings(jwt_algorithms=["RS256"], jwt_keys={"k": str(bad)}).validate())
    with pytest.raises(ConfigError, match="no such file"):
        Settings(jwt_algorithms=["RS256"], jwt_keys={"k": str(tmp_path / "missing.pem")}).validate()
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="jwt_jwks_file"):
        TokenVerifier(Settings(jwt_algorithms=["ES256"], jwt_jwks_file=str(bad)).validate())


def jwks(keys: dict[str, ec.EllipticCurvePrivateKey], extra: list | None = None) -> str:
    entries = []
    for kid, key in keys.items():
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        entries.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
    return json.dumps({"keys": entries + (extra or [])})


def rewrite(path: Path, text: str) -> None:
    """Replace the file atomically (as a key service would) with a visibly newer mtime."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    stamp = time.time() + 1
    os.utime(tmp, (stamp, stamp))
    tmp.replace(path)


@pytest.mark.hardening(
    "security",
    "The JWKS file rotated (a key retired, two added), then broken; an HS (oct) key in an ES256 JWKS",
    "New keys accepted and the retired one refused within a second; a broken file keeps the previous keys; the oct key never verifies",
)
async def test_jwks_file_reloaded_when_it_changes(node_factory, tmp_path, ec_keys):
    path = tmp_path / "jwks.json"
    # An "oct" (HS) key in an ES256 deployment's JWKS is ignored: it could never verify anything.
    oct_key = {"kty": "oct", "kid": "sneaky", "k": b64(b"x" * 32), "alg": "HS256"}
    path.write_text(jwks({"k1": ec_keys[0]}, extra=[oct_key]))
    node = await node_factory(jwt_algorithms=["ES256"], jwt_secret="", jwt_jwks_file=str(path))

    def token(kid: str, key) -> str:
        return jwt.encode(claims(), key, algorithm="ES256", headers={"kid": kid})

    assert (await outcome(node, token("k1", ec_keys[0])))[0] == "CONNECTED"
    assert await outcome(node, token("k2", ec_keys[1])) == ("ERROR", "token signed with an unknown key (kid)")
    sneaky = jwt.encode(claims(), b"x" * 32, algorithm="HS256", headers={"kid": "sneaky"})
    assert (await outcome(node, sneaky))[0] == "ERROR"

    rewrite(path, jwks({"k2": ec_keys[1], "k3": ec_keys[2]}))  # k1 retired, k2 and k3 added
    await asyncio.sleep(0.6)  # past the look-at-most-every interval
    assert (await outcome(node, token("k2", ec_keys[1])))[0] == "CONNECTED"
    assert (await outcome(node, token("k3", ec_keys[2])))[0] == "CONNECTED"
    assert await outcome(node, token("k1", ec_keys[0])) == ("ERROR", "token signed with an unknown key (kid)")

    rewrite(path, "{broken")  # a bad rewrite keeps the keys in force
    await asyncio.sleep(0.6)
    assert (await outcome(node, token("k2", ec_keys[1])))[0] == "CONNECTED"


# -- the cache of verified tokens -----------------------------------------------------------------


def hs_settings(**overrides) -> Settings:
    return Settings(jwt_secret="c" * 32, dev=False, **overrides).validate()


def test_a_cached_token_is_served_until_its_exp_and_never_after():
    settings = hs_settings(jwt_leeway_s=0.0)
    verifier = TokenVerifier(settings)
    exp = int(time.time()) + 2
    token = jwt.encode(claims(exp=exp), settings.jwt_secret, algorithm="HS256")
    first = verifier.verify(token)
    assert len(verifier.cache) == 1
    assert verifier.verify(token) is first  # the remembered Claims, not a second decode
    while time.time() < exp:  # until the token's own exp passes (a condition, polled)
        time.sleep(0.05)
    with pytest.raises(AuthError, match="token expired"):
        verifier.verify(token)
    assert len(verifier.cache) == 0


def test_refused_tokens_are_not_cached_and_checks_stay_per_token():
    settings = hs_settings()
    verifier = TokenVerifier(settings)
    good = jwt.encode(claims(tenant="acme"), settings.jwt_secret, algorithm="HS256")
    assert verifier.verify(good).tenant == "acme"
    no_role = jwt.encode(claims(roles=["other"]), settings.jwt_secret, algorithm="HS256")
    forged = good[: good.rindex(".") + 1] + b64(b"\0" * 32)
    for _ in range(2):  # twice: a refusal is never remembered as anything
        with pytest.raises(AuthError, match="no spidi role"):
            verifier.verify(no_role)
        with pytest.raises(AuthError, match="invalid token"):
            verifier.verify(forged)
    assert len(verifier.cache) == 1


def test_a_roles_list_read_once_is_judged_the_same_every_time():
    """The roles claim's reading is remembered by the list as sent (an issuer's few lists are
    not checked at every connect): the same list gives the same shared roles, and a list that
    is refused (no Spidi role, not strings, an unhashable element) is refused every time."""
    settings = hs_settings(jwt_cache_size=0)  # no token cache: every verify reads the claims
    verifier = TokenVerifier(settings)

    def token(roles) -> str:
        return jwt.encode(claims(roles=roles), settings.jwt_secret, algorithm="HS256")

    first = verifier.verify(token(["spidi:user", "other"]))
    again = verifier.verify(token(["spidi:user", "other"]))
    assert first.roles == frozenset({"spidi:user"}) and again.roles is first.roles
    assert verifier.verify(token(["spidi:monitor", "spidi:user"])).roles == {"spidi:monitor", "spidi:user"}
    for _ in range(2):
        with pytest.raises(AuthError, match="no spidi role"):
            verifier.verify(token(["other"]))
        for bad in ([1], ["spidi:user", 1], [{"a": 1}], [["spidi:user"]], [True]):
            with pytest.raises(AuthError, match="'roles' must be a list of strings"):
                verifier.verify(token(bad))


def test_the_cache_is_bounded_and_can_be_turned_off():
    settings = hs_settings(jwt_cache_size=3)
    verifier = TokenVerifier(settings)
    tokens = [jwt.encode(claims(sub=f"u{i}"), settings.jwt_secret, algorithm="HS256") for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier.cache) == 3
    assert verifier.cache.get(TokenCache.digest(tokens[-1]), time.time()) is not None  # the newest kept
    assert verifier.cache.get(TokenCache.digest(tokens[0]), time.time()) is None  # the oldest gone
    big = TokenVerifier(hs_settings(jwt_cache_size=20))
    many = [jwt.encode(claims(sub=f"m{i}"), settings.jwt_secret, algorithm="HS256") for i in range(50)]
    for token in many:
        big.verify(token)
        assert len(big.cache) <= 20  # never past the bound; a full cache drops its oldest tenth
    assert big.cache.get(TokenCache.digest(many[-1]), time.time()) is not None
    assert big.cache.get(TokenCache.digest(many[0]), time.time()) is None
    off = TokenVerifier(hs_settings(jwt_cache_size=0))
    assert off.verify(tokens[0]).user_id == "u0"
    assert len(off.cache) == 0


@pytest.mark.hardening(
    "security",
    "A token verified (and cached) before its key was retired from the JWKS file, presented again",
    "Refused like an uncached token: the cache never outlives the key that verified it",
)
async def test_a_retired_key_revokes_its_cached_tokens(node_factory, tmp_path, ec_keys):
    path = tmp_path / "jwks.json"
    path.write_text(jwks({"k1": ec_keys[0], "k2": ec_keys[1]}))
    node = await node_factory(jwt_algorithms=["ES256"], jwt_secret="", jwt_jwks_file=str(path))
    old = jwt.encode(claims(), ec_keys[0], algorithm="ES256", headers={"kid": "k1"})
    kept = jwt.encode(claims(sub="bob"), ec_keys[1], algorithm="ES256", headers={"kid": "k2"})
    assert await outcome(node, old) == ("CONNECTED", "alice")
    assert await outcome(node, old) == ("CONNECTED", "alice")  # the second time from the cache
    assert await outcome(node, kept) == ("CONNECTED", "bob")
    assert len(node.verifier.cache) == 2
    rewrite(path, jwks({"k2": ec_keys[1]}))  # k1 retired
    node.verifier.jwks_checked = 0.0  # look at the file on the next CONNECT, not within 0.5 s
    assert await outcome(node, old) == ("ERROR", "token signed with an unknown key (kid)")
    assert await outcome(node, kept) == ("CONNECTED", "bob")  # reloaded keys: verified afresh, served


# -- the HS fast path (spidi_server/jwt_fast.py) against PyJWT -------------------------------------

FAST_SECRET = "f" * 48
FAST_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def signed(header: dict, payload, secret: str = FAST_SECRET, alg: str = "HS256", raw: bool = False) -> str:
    """A token with exactly this header and payload (``raw``: the payload is already JSON text)."""
    body = payload.encode() if raw else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), FAST_DIGESTS.get(alg, hashlib.sha256))
    return signing_input + "." + b64(mac.digest())


def fast_path_tokens() -> list[str]:
    """Tokens of every shape the fast path must either judge as PyJWT does or hand to PyJWT."""
    now = int(time.time())
    good = {"sub": "alice", "roles": ["spidi:user"], "exp": now + 600, "iat": now}
    header = {"alg": "HS256", "typ": "JWT"}
    payloads = [
        good,
        {**good, "tenant": "acme", "jti": "j1", "iss": "anyone", "extra": {"x": [1, 2]}},
        {**good, "exp": now - 2},  # expired, within the 5 s leeway
        {**good, "exp": now - 30},
        {**good, "exp": float(now + 600)},
        {**good, "exp": str(now + 600)},
        {**good, "exp": True},
        {**good, "exp": 10**30},
        {**good, "exp": None},
        {k: v for k, v in good.items() if k != "exp"},
        {**good, "iat": now + 2},
        {**good, "iat": now + 60},
        {**good, "iat": "yesterday"},
        {**good, "nbf": now - 10},
        {**good, "nbf": now + 2},
        {**good, "nbf": now + 60},
        {**good, "nbf": 1.5},
        {**good, "aud": "spidi"},
        {**good, "aud": ""},
        {**good, "aud": []},
        {**good, "sub": 5},
        {**good, "sub": ""},
        {**good, "sub": None},
        {k: v for k, v in good.items() if k != "sub"},
        {**good, "jti": 5},
        {**good, "roles": "spidi:monitor"},
        {**good, "roles": []},
        {**good, "roles": ["other"]},
        {**good, "roles": [1]},
        {**good, "tenant": ""},
        {**good, "tenant": 5},
        ["not", "an", "object"],
    ]
    tokens = [signed(header, p) for p in payloads]
    headers = [
        {"alg": "HS256"},
        {"typ": "JWT", "alg": "HS256"},
        {"alg": "HS256", "typ": "JOSE"},
        {"alg": "HS256", "kid": "k1"},
        {"alg": "HS256", "kid": 7},
        {"alg": "HS256", "crit": ["b64"], "b64": False},
        {"alg": "HS256", "crit": ["exp"]},
        {"alg": "HS256", "jku": "https://evil.example/keys"},
        {"alg": "HS384"},
        {"alg": "HS512"},
        {"alg": "none"},
        {"alg": "RS256"},
        {},
    ]
    tokens += [signed(h, good, alg=h.get("alg", "HS256")) for h in headers]
    later = now + 60
    tokens += [
        signed(header, good, secret="another secret, long enough for HS256!"),
        signed(header, f'{{"sub":"a","exp":{later},"sub":"b","roles":["spidi:user"]}}', raw=True),
        signed(header, f'{{"sub":"a","exp":{later},"roles":["spidi:user"],"x":NaN}}', raw=True),
        signed(header, f'{{"sub":"\\ud800","exp":{later},"roles":["spidi:user"]}}', raw=True),
        signed(header, f'{{"sub":"a","exp":{later},"roles":["spidi:user"]}} ', raw=True),
    ]
    valid = tokens[0]
    head, body, sig = valid.split(".")
    tokens += [
        f"{head}.{body}.{sig}=",  # padding PyJWT takes
        f"{head}.{body}",
        f"{head}.{body}.{sig}.{sig}",
        f"{head}..{sig}",
        valid + " ",
        valid.replace(".", ". ", 1),
        "é" + valid,
        f"{head}.{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
    ]
    # Non-canonical base64: the last character's unused bits set (same bytes once decoded).
    for segment in (0, 1, 2):
        parts = valid.split(".")
        last = parts[segment][-1]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        if len(parts[segment]) % 4:
            parts[segment] = parts[segment][:-1] + alphabet[alphabet.index(last) | 1]
            tokens.append(".".join(parts))
    return tokens


def mutations(token: str, count: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ "
    out = []
    for _ in range(count):
        chars = list(token)
        for _ in range(rng.choice((1, 1, 2, 3))):
            i = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.5:
                chars[i] = rng.choice(alphabet)
            elif op < 0.75:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        out.append("".join(chars))
    return out


def verdict(verifier: TokenVerifier, token: str):
    try:
        return verifier.verify(token)
    except AuthError as exc:
        return ("refused", str(exc))


def test_the_hs_fast_path_never_accepts_what_pyjwt_refuses():
    from spidi_server import jwt_fast

    settings = Settings(jwt_secret=FAST_SECRET, dev=False, jwt_cache_size=0).validate()
    fast = TokenVerifier(settings)
    slow = TokenVerifier(settings)
    slow.fast = False  # PyJWT only
    assert fast.fast
    tokens = fast_path_tokens()
    tokens += mutations(tokens[0], 1500, seed=15) + mutations(tokens[1], 500, seed=16)
    taken = 0
    for token in tokens:
        expected = verdict(slow, token)
        assert verdict(fast, token) == expected, token
        accepted = jwt_fast.verify_hs(token, fast.algorithms, fast._key_for, fast.leeway)
        if accepted is not None:
            taken += 1  # PyJWT accepts it too, with the same payload (Spidi's roles may still refuse)
            assert accepted[0] == jwt.decode(
                token, FAST_SECRET, algorithms=["HS256"], leeway=5.0, options={"require": ["exp", "sub"]}
            )
    assert taken >= 5  # the ordinary tokens do take it
    ordinary = mint_token(settings, "bob", ["spidi:user"])
    assert jwt_fast.verify_hs(ordinary, fast.algorithms, fast._key_for, fast.leeway) is not None


def test_the_hs_fast_path_digest_sizes_are_its_hashes():
    # The size a secret must reach (PyJWT warns below it): kept as numbers, checked against hashlib.
    from spidi_server import jwt_fast

    assert set(jwt_fast._DIGEST_SIZES) == set(jwt_fast._DIGESTS) == set(FAST_DIGESTS)
    for alg, size in jwt_fast._DIGEST_SIZES.items():
        assert size == FAST_DIGESTS[alg]().digest_size == jwt_fast._DIGESTS[alg]().digest_size


def test_the_hs_fast_path_base64url_check_is_a_round_trip():
    """A segment is taken iff it decodes and re-encodes to itself (what PyJWT compares): checked
    on every segment of up to 3 characters and on long random ones."""
    import base64
    import itertools
    import random

    from spidi_server import jwt_fast

    def reference(segment: bytes) -> bytes | None:
        if len(segment) % 4 == 1 or jwt_fast._SEGMENT.fullmatch(segment) is None:
            return None
        decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
        return decoded if base64.urlsafe_b64encode(decoded).rstrip(b"=") == segment else None

    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=."
    segments = [bytes(t) for n in range(4) for t in itertools.product(alphabet, repeat=n)]
    rng = random.Random(15)
    segments += [bytes(rng.choices(alphabet[:64], k=rng.randrange(4, 60))) for _ in range(20000)]
    assert sum(jwt_fast._b64url(s) is not None for s in segments) > 20000
    for segment in segments:
        assert jwt_fast._b64url(segment) == reference(segment), segment


def test_the_hs_fast_path_with_keys_by_kid_and_issuer_rules():
    from spidi_server import jwt_fast

    keys = {"2024": "old-secret-" + "x" * 32, "2025": "new-secret-" + "y" * 32}
    settings = Settings(jwt_keys=keys, jwt_secret="", dev=False, jwt_cache_size=0).validate()
    fast = TokenVerifier(settings)
    slow = TokenVerifier(settings)
    slow.fast = False
    good = claims()
    tokens = [
        signed({"alg": "HS256", "kid": "2024"}, good, secret=keys["2024"]),
        signed({"alg": "HS256", "kid": "2025"}, good, secret=keys["2024"]),  # another kid's key
        signed({"alg": "HS256", "kid": "1999"}, good, secret=keys["2024"]),
        signed({"alg": "HS256"}, good, secret=keys["2024"]),  # no kid
    ]
    for token in tokens:
        assert verdict(fast, token) == verdict(slow, token)
    assert jwt_fast.verify_hs(tokens[0], fast.algorithms, fast._key_for, fast.leeway) is not None
    # With an issuer or an audience to check, PyJWT does all of it.
    assert not TokenVerifier(hs_settings(jwt_issuer="https://id.example")).fast
    assert not TokenVerifier(hs_settings(jwt_audience="spidi")).fast
