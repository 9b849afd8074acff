"""The key that signs attendance exports, from the settings: ``export_signing_key_file``, or in
dev mode a key generated once and kept in the data directory (as ``auth.dev_secret`` keeps the
development JWT secret). Outside dev mode with no key configured there is none: exports answer 503.
"""

from __future__ import annotations

import base64
import functools
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import ConfigError
from .exports import ExportError, new_seed, private_key_from_bytes
from .settings import Settings

DEV_KEY_FILE = "dev-export-key"  # under data_dir: base64 of a 32-byte seed, written and read only in dev mode


class NoSigningKey(ConfigError):
    """No export signing key is configured (outside dev mode), or the configured one is unusable."""


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The export signing key in force; NoSigningKey says why there is none."""
    return _load(settings.export_signing_key_file, settings.dev, settings.data_path)


@functools.lru_cache(maxsize=8)  # read once per process; a replaced key file needs a restart
def _load(path: str, dev: bool, data_path: Path) -> Ed25519PrivateKey:
    if path:
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise NoSigningKey(f"export_signing_key_file {path!r}: {exc.strerror or exc}") from None
        try:
            return private_key_from_bytes(data, f"export_signing_key_file {path!r}")
        except ExportError as exc:
            raise NoSigningKey(str(exc)) from None
    if not dev:
        raise NoSigningKey(
            "attendance exports are signed and no signing key is configured: set "
            "export_signing_key_file (a PEM Ed25519 private key or the base64 of a 32-byte seed)"
        )
    return private_key_from_bytes(_dev_seed(data_path), f"{data_path / DEV_KEY_FILE}")


def _dev_seed(data_path: Path) -> bytes:
    """Read (or create once, mode 0600) the development key's base64 seed. Written to a temporary
    file then linked into place, so a worker starting at the same time never reads half a key."""
    path = data_path / DEV_KEY_FILE
    if path.exists():
        return path.read_bytes()
    data_path.mkdir(parents=True, exist_ok=True)
    tmp = data_path / f".{DEV_KEY_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(new_seed()))
    try:
        os.link(tmp, path)  # fails if another process made it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()
