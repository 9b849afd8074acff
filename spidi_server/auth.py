"""JWT verification and development token minting."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from .errors import AuthError, ConfigError
from .settings import ROLES, Settings


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
    """Read (or create once) the development HS256 secret under the data directory."""
    path = data_path / "dev-jwt-secret"
    if path.exists():
        return path.read_text().strip()
    data_path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


def signing_key(settings: Settings) -> str:
    """The HS256 secret in force: configured, or in dev mode the generated one."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.dev or (settings.data_path / "dev-jwt-secret").exists():
        return dev_secret(settings.data_path)
    raise ConfigError("jwt_secret (or jwt_public_key_file with RS256/ES256) is required outside dev mode")


class TokenVerifier:
    """Verifies tokens with pinned algorithms; raises AuthError with a client-safe message."""

    def __init__(self, settings: Settings):
        self.algorithms = list(settings.jwt_algorithms)
        if self.algorithms[0].startswith("HS"):
            self.key = signing_key(settings)
        else:
            try:
                self.key = Path(settings.jwt_public_key_file).read_text()
            except OSError as exc:
                raise ConfigError(f"jwt_public_key_file: {exc}") from exc
        self.issuer = settings.jwt_issuer or None
        self.audience = settings.jwt_audience or None
        self.leeway = settings.jwt_leeway_s

    def verify(self, token: str | None) -> Claims:
        """Decode and check a token; return its Claims."""
        if not token:
            raise AuthError("missing token: send Authorization: Bearer <jwt>, passcode, or access_token")
        options = {"require": ["exp", "sub"]}
        try:
            data = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token issuer not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token") from exc
        roles = data.get("roles", [])
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError("token claim 'roles' must be a list of strings")
        known = frozenset(r for r in roles if r in ROLES)
        if not known:
            raise AuthError("token carries no spidi role")
        tenant = data.get("tenant", "default")
        if not isinstance(tenant, str) or not tenant:
            raise AuthError("token claim 'tenant' must be a non-empty string")
        return Claims(str(data["sub"]), known, tenant, data.get("exp"))


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
    return jwt.encode(claims, signing_key(settings), algorithm=settings.jwt_algorithms[0])
