"""JWT verification and development token minting.

Algorithms are pinned by ``jwt_algorithms`` (HS256, or RS256/ES256, never both: settings refuse
the mix, so an HS token signed with an RS public key as its secret can never verify). The key of a
token is chosen by its ``kid`` header among ``jwt_keys`` and the ``jwt_jwks_file`` (reloaded when
the file changes), else it is the single configured key (``jwt_secret`` or
``jwt_public_key_file``). No token text ever goes into a message or a log line.

A verified token is remembered (``TokenCache``, keyed by its SHA-256, at most ``jwt_cache_size``)
until its ``exp``: a client that reconnects with the same token skips the signature and the claim
parsing. A remembered token is served only while it is unexpired and the key that verified it is
still the key its ``kid`` selects (a key removed from ``jwt_keys`` or the JWKS file revokes the
tokens it signed, cached or not); a refused token is never remembered.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson

from . import jwt_fast, logs
from .errors import AuthError, ConfigError
from .roles import ALL as ROLES
from .settings import MIN_HS_SECRET_BYTES, Settings

log = logging.getLogger("spidi.auth")

DEV_SECRET_FILE = "dev-jwt-secret"  # under data_dir, written and read only in dev mode
_ROLE_SETS: dict[frozenset[str], frozenset[str]] = {}  # each combination of roles, shared by all Claims
# A roles claim as a token lists it -> its Spidi roles: an issuer's few lists are checked once,
# not at every connect. Only lists of strings with a Spidi role enter; bounded all the same.
_ROLES_READ: dict[tuple[str, ...], frozenset[str]] = {}
_ROLES_READ_MAX = 256
JWKS_CHECK_S = 0.5  # the JWKS file's mtime is looked at most this often (on a CONNECT with a kid)


@dataclass(frozen=True, slots=True)
class Claims:
    """What Spidi uses from a verified token."""

    user_id: str
    roles: frozenset[str]
    tenant: str
    expires_at: float | None

    def has_any(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)


def dev_secret(data_path: Path) -> str:
    """Read (or create once) the development HS256 secret under the data directory (``--dev`` only)."""
    path = data_path / DEV_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


def signing_key(settings: Settings) -> str:
    """The HS256 secret in force: ``jwt_secret``, or in dev mode the generated one.

    Outside dev mode the development secret file is never read, even when one is left in the data
    directory (``make run`` leaves it in the default ``.spidi``): every token minted in dev mode
    would otherwise verify on the production server.
    """
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.dev:
        return dev_secret(settings.data_path)
    raise ConfigError(
        f"jwt_secret (at least {MIN_HS_SECRET_BYTES} bytes), jwt_keys or jwt_jwks_file is required "
        "outside dev mode (jwt_public_key_file with RS256/ES256); the development secret is used "
        "only with --dev"
    )


def _load_public_key(path: str, what: str) -> Any:
    """A PEM public key file as a key object; ConfigError naming ``what`` if unreadable."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: cannot load a PEM public key from {path!r}: {exc}") from exc


class TokenCache:
    """Verified tokens by their SHA-256 digest: (Claims, kid, key), dropped at ``exp``.

    Bounded: at ``size`` entries the expired ones go, then the oldest tenth. The digest, not the
    token, is the key: 32 bytes per entry, and no token text kept in memory.
    """

    __slots__ = ("size", "entries")

    def __init__(self, size: int):
        self.size = size
        self.entries: dict[bytes, tuple[Claims, Any, Any]] = {}

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, digest: bytes, now: float) -> tuple[Claims, Any, Any] | None:
        """The entry of ``digest`` if it is not expired (an expired one is dropped)."""
        entry = self.entries.get(digest)
        if entry is None:
            return None
        expires_at = entry[0].expires_at
        if expires_at is None or now >= expires_at:
            del self.entries[digest]
            return None
        return entry

    def put(self, digest: bytes, claims: Claims, kid: Any, key: Any, now: float) -> None:
        """Remember a verified token (not one without a numeric ``exp``: it could never expire)."""
        if self.size <= 0 or not isinstance(claims.expires_at, (int, float)) or claims.expires_at <= now:
            return
        entries = self.entries
        if len(entries) >= self.size:
            # Full: the expired go, then the oldest (dicts keep insertion order) down to 90%, so
            # the scan comes back only after another tenth of the size: amortised O(1) a token.
            for old in [d for d, e in entries.items() if e[0].expires_at <= now]:
                del entries[old]
            keep = self.size - max(1, self.size // 10)
            if len(entries) > keep:
                for old in list(itertools.islice(entries, len(entries) - keep)):
                    del entries[old]
        entries[digest] = (claims, kid, key)

    def __len__(self) -> int:
        return len(self.entries)


class TokenVerifier:
    """Verifies tokens with pinned algorithms; raises AuthError with a client-safe message."""

    def __init__(self, settings: Settings):
        self.cache = TokenCache(settings.jwt_cache_size)
        self.algorithms = list(settings.jwt_algorithms)
        hs = self.algorithms[0].startswith("HS")
        self.key: Any = None  # the key of tokens without a kid (or when no key set is configured)
        if hs:
            if settings.jwt_secret or settings.dev or not (settings.jwt_keys or settings.jwt_jwks_file):
                self.key = signing_key(settings)
            self.keys: dict[str, Any] = dict(settings.jwt_keys)
        else:
            if settings.jwt_public_key_file:
                self.key = _load_public_key(settings.jwt_public_key_file, "jwt_public_key_file")
            self.keys = {
                kid: _load_public_key(path, f"jwt_keys.{kid}") for kid, path in settings.jwt_keys.items()
            }
        self.jwks_path = settings.jwt_jwks_file
        self.jwks: dict[str, Any] = {}
        self.jwks_stamp: tuple[int, int] | None = None
        self.jwks_checked = 0.0
        if self.jwks_path:
            try:
                self._load_jwks()
            except (OSError, ValueError) as exc:
                raise ConfigError(f"jwt_jwks_file: {exc}") from exc
        self.issuer = settings.jwt_issuer or None
        self.audience = settings.jwt_audience or None
        self.leeway = settings.jwt_leeway_s
        # HS tokens without issuer/audience rules first try jwt_fast (PyJWT decides whatever it declines).
        self.fast = hs and self.issuer is None and self.audience is None

    # -- keys ----------------------------------------------------------------------------------

    def _load_jwks(self) -> None:
        """Read the JWKS file: keys whose algorithm is accepted, by kid (others are skipped)."""
        stat = os.stat(self.jwks_path)
        data = orjson.loads(Path(self.jwks_path).read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError("a JWKS file is a JSON object with a 'keys' list")
        keys = {}
        for entry in data["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            try:
                jwk = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # an unsupported or malformed key: the others still serve
            # The key's own algorithm must be one we accept: an "oct" (HS) key never verifies an
            # RS/ES deployment's tokens, whatever the token's header claims.
            if jwk.algorithm_name in self.algorithms:
                keys[entry["kid"]] = jwk.key
        self.jwks = keys
        self.jwks_stamp = (stat.st_mtime_ns, stat.st_size)

    def _refresh_jwks(self) -> None:
        """Reload the JWKS file if it changed (looked at most every JWKS_CHECK_S); keep the old on error."""
        now = time.monotonic()
        if now - self.jwks_checked < JWKS_CHECK_S:
            return
        self.jwks_checked = now
        try:
            stat = os.stat(self.jwks_path)
            if (stat.st_mtime_ns, stat.st_size) == self.jwks_stamp:
                return
            self._load_jwks()
            logs.event(log, "jwks_reloaded", keys=sorted(self.jwks))
        except (OSError, ValueError) as exc:
            logs.event(log, "jwks_reload_failed", logging.WARNING, path=self.jwks_path, error=str(exc)[:200])

    def _key_for(self, kid: Any) -> Any:
        if kid is None or not (self.keys or self.jwks_path):
            if self.key is None:
                raise AuthError("token has no 'kid' header (keys are selected by kid)")
            return self.key
        if not isinstance(kid, str):
            raise AuthError("token header 'kid' must be a string")
        key = self.keys.get(kid)
        if key is None and self.jwks_path:
            self._refresh_jwks()
            key = self.jwks.get(kid)
        if key is None:
            raise AuthError("token signed with an unknown key (kid)")
        return key

    # -- verification --------------------------------------------------------------------------

    def verify(self, token: str | None) -> Claims:
        """Decode and check a token; return its Claims (from the cache while it holds them)."""
        if not token:
            raise AuthError("missing token: send Authorization: Bearer <jwt>, passcode, or access_token")
        cache = self.cache
        if cache.size <= 0:
            return self._verify(token)[0]
        digest = cache.digest(token)
        now = time.time()
        entry = cache.get(digest, now)
        if entry is not None:
            claims, kid, key = entry
            try:
                current = self._key_for(kid)
            except AuthError:
                current = None
            if current is key:
                return claims
            # The key changed or went away: forget the token and verify it like a new one.
            del cache.entries[digest]
        claims, kid, key = self._verify(token)
        cache.put(digest, claims, kid, key, now)
        return claims

    def _verify(self, token: str) -> tuple[Claims, Any, Any]:
        """The full check: the Claims, and the kid and key that verified them. jwt_fast's strict
        path for the common HS token, else PyJWT."""
        if self.fast:
            accepted = jwt_fast.verify_hs(token, self.algorithms, self._key_for, self.leeway)
            if accepted is not None:
                data, kid, key = accepted
                return self._claims(data), kid, key
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:  # "none", or HS where RS is configured, and the reverse
            raise AuthError(f"token algorithm not accepted (this server takes {', '.join(self.algorithms)})")
        kid = header.get("kid")
        key = self._key_for(kid)
        options = {"require": ["exp", "sub"]}
        try:
            data = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token not yet valid (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token issuer not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token") from exc
        return self._claims(data), kid, key

    @staticmethod
    def _claims(data: dict) -> Claims:
        """Spidi's claims of a verified payload: roles and tenant checked."""
        roles = data.get("roles", [])
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list):
            raise AuthError("token claim 'roles' must be a list of strings")
        listed = tuple(roles)
        try:
            known = _ROLES_READ.get(listed)
        except TypeError:  # an unhashable element (not a string): refused below
            known = None
        if known is None:
            if not all(isinstance(r, str) for r in roles):
                raise AuthError("token claim 'roles' must be a list of strings")
            # One shared frozenset per combination of roles, not one per connection (216 bytes
            # each). (ROLES is small, so the combinations are too.)
            known = frozenset(r for r in roles if r in ROLES)
            known = _ROLE_SETS.setdefault(known, known)
            if not known:
                raise AuthError("token carries no spidi role")
            if len(_ROLES_READ) >= _ROLES_READ_MAX:
                _ROLES_READ.clear()
            _ROLES_READ[listed] = known
        tenant = data.get("tenant", "default")
        if not isinstance(tenant, str) or not tenant:
            raise AuthError("token claim 'tenant' must be a non-empty string")
        # Tenants are few: one shared string each, not one per connection.
        return Claims(str(data["sub"]), known, sys.intern(tenant), data.get("exp"))


def mint_token(
    settings: Settings,
    sub: str,
    roles: list[str],
    tenant: str = "default",
    ttl_s: int = 86400,
) -> str:
    """Sign a token with the configured HS256 secret (development and tests)."""
    if not settings.jwt_algorithms[0].startswith("HS"):
        raise ConfigError("spidi token can only mint HS256 tokens; sign RS/ES tokens with your key service")
    for role in roles:
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    now = int(time.time())
    claims = {"sub": sub, "roles": roles, "tenant": tenant, "iat": now, "exp": now + ttl_s}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if not (settings.jwt_secret or settings.dev) and settings.jwt_keys:
        kid, secret = list(settings.jwt_keys.items())[-1]  # the newest key, by convention listed last
        return jwt.encode(claims, secret, algorithm=settings.jwt_algorithms[0], headers={"kid": kid})
    return jwt.encode(claims, signing_key(settings), algorithm=settings.jwt_algorithms[0])
