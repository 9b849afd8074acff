"""Credentials out of printed text: the one redaction of Redis URLs and PostgreSQL DSNs.

Banners, configuration errors and log lines show where a service is, never its password. This
module imports nothing of Spidi's, so every layer (the Redis URL parser included) can use it.
"""

from __future__ import annotations

import re

# ``scheme://user:password@`` or ``scheme://:password@``: the password is everything between the
# first ``:`` of the userinfo and the last ``@`` before the host (a password may contain ``@``).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^\s]*@")
# A libpq keyword DSN: ``password=secret`` or ``password='a secret'``.
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a Redis URL, a PostgreSQL DSN or URL, or a message quoting one) with every
    password shown as ``***``; text without a password comes back unchanged."""
    return _DSN_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
