"""The operators' dashboard, served at / on the ops port.

Static files only (no build step, no CDN): ``static/index.html`` and ``style.css``, and the
page's script as plain ES modules loaded from ``main.js`` (``static/*.js`` and
``static/views/*.js``). Its live feed is the project's JavaScript SDK (``spidi-client``, on
``@stomp/stompjs``), both vendored as ES modules under ``static/vendor/`` with their licences
(``static/vendor/README.md``) and named by the import map of ``index.html``; the
Content-Security-Policy allows that one inline script by its SHA-256 (``csp_for``). The page
talks STOMP over the node's WebSocket (another port) and reads history from the REST API on this
port. ``/dashboard/config`` tells it where the WebSocket is and, in development mode only, hands
it an admin token, to its own page only (``same_origin_page``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import orjson
from aiohttp import web

from .. import roles
from ..auth import mint_token
from ..errors import ConfigError
from ..settings import is_loopback

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("spidi.dashboard")

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_TEXT_TYPES = {"text/html", "text/javascript", "text/css", "image/svg+xml", "application/json"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

# The page loads only its own files; it connects to its own origin (REST) and to any ws/wss URL
# (the WebSocket listens on another port, so it is another origin). ``{scripts}``: the hashes of
# the inline scripts allowed besides (the import map), see csp_for.
_CSP_TEMPLATE = (
    "default-src 'self'; script-src 'self'{scripts}; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
_IMPORT_MAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.DOTALL)
_COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Listener(Protocol):
    """The WebSocket server the page is told to connect to."""

    @property
    def port(self) -> int: ...


@runtime_checkable
class DashboardHost(Protocol):
    """What the dashboard needs from the process that serves it (the node)."""

    settings: Settings  # the WebSocket host name, dev mode, the token signing key
    transport: Listener  # where the WebSocket listens
    policy: roles.Policy  # which roles may watch and acknowledge, under this node's settings


DEV_SUBJECT = "dev-admin"
DEV_TENANT = "default"


def _file_response(path: Path, extra_headers: dict | None = None, body: bytes | None = None) -> web.Response:
    ctype = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    headers = dict(_COMMON_HEADERS)
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        body=path.read_bytes() if body is None else body,
        content_type=ctype,
        charset="utf-8" if ctype in _TEXT_TYPES else None,
        headers=headers,
    )


def csp_for(page: bytes) -> str:
    """The Content-Security-Policy of ``page``: ``CSP`` plus, for each inline import map, its
    ``'sha256-…'`` (an import map is an inline script, which ``script-src 'self'`` alone refuses;
    a hash allows exactly that text and nothing injected beside it)."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()}'"
        for m in _IMPORT_MAP.finditer(page)
    )
    return _CSP_TEMPLATE.format(scripts=hashes)


def static_path(name: str) -> Path | None:
    """The file under ``STATIC_DIR`` that ``/static/<name>`` serves (``views/room.js`` too), or None.

    Each part of the name must be a plain file or folder name (no ``..``, no hidden file, no
    empty part), of a type in ``CONTENT_TYPES``, and the file must exist inside ``STATIC_DIR``.
    """
    parts = name.split("/")
    if not all(_SAFE_NAME.fullmatch(part) for part in parts):
        return None
    path = STATIC_DIR.joinpath(*parts)
    if path.suffix.lower() not in CONTENT_TYPES or not path.is_file():
        return None
    if not path.resolve().is_relative_to(STATIC_DIR.resolve()):
        return None
    return path


def _browser_hostname(request: web.Request, fallback: str) -> str:
    """The hostname the browser used to reach this page (Host header), bracketed if IPv6."""
    host = request.host or ""
    if host.startswith("["):  # [::1]:9100
        name = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:  # name:port
        name = host.rsplit(":", 1)[0]
    else:  # name, or a bare IPv6 address
        name = host
    if not name or not re.fullmatch(r"[A-Za-z0-9._:%-]+", name):
        name = fallback
    if name in ("0.0.0.0", "::", ""):
        name = "127.0.0.1"
    try:
        if ipaddress.ip_address(name.split("%", 1)[0]).version == 6:
            return f"[{name}]"
    except ValueError:
        pass
    return name


def own_origin(request: web.Request) -> str:
    """The origin the browser reached this server at (scheme and Host header)."""
    return f"{request.scheme}://{request.host}"


def same_origin_page(request: web.Request) -> bool:
    """Whether ``request`` comes from the dashboard's own page (or a typed URL, or curl on this
    machine), not from a page of another site the developer happens to have open.

    Browsers say so in Sec-Fetch-Site (``same-origin`` or ``none``) and Origin (absent on a
    same-origin GET, else this server's own). The Host header must name this machine as well:
    after DNS rebinding (evil.example resolving to 127.0.0.1) the attacker's page is same-origin
    with a Host of evil.example; development mode binds loopback only, so no real use is refused.
    """
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is not None and origin != own_origin(request):
        return False
    return is_loopback(request.url.host or "")


def ws_url_for(request: web.Request, host: DashboardHost) -> str:
    """The node's WebSocket URL as this browser can reach it: its Host header's name, the WS port."""
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    scheme = "wss" if secure else "ws"
    name = _browser_hostname(request, host.settings.host)
    return f"{scheme}://{name}:{host.transport.port}/ws"


def register_dashboard(app: web.Application, host: DashboardHost) -> None:
    """Add the dashboard's routes (page, static files, config) to the ops aiohttp application."""

    async def index(request: web.Request) -> web.Response:
        path = STATIC_DIR / "index.html"
        page = path.read_bytes()
        return _file_response(path, {"Content-Security-Policy": csp_for(page)}, page)

    async def static(request: web.Request) -> web.Response:
        path = static_path(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="not found")
        return _file_response(path)

    async def config(request: web.Request) -> web.Response:
        settings = host.settings
        body: dict = {
            "wsUrl": ws_url_for(request, host),
            "dev": bool(settings.dev),
            # The page checks a pasted token against these before trying it, and offers the
            # Acknowledge button only to the roles that may use it (roles.py decides).
            "watchRoles": list(host.policy.allowed(roles.OBSERVE)),
            "acknowledgeRoles": list(host.policy.allowed(roles.ACKNOWLEDGE)),
        }
        if settings.dev and same_origin_page(request):
            try:
                body["devToken"] = mint_token(settings, DEV_SUBJECT, list(roles.DEV_DASHBOARD), DEV_TENANT)
            except ConfigError as exc:  # e.g. RS256 configured: nothing to sign with
                log.warning("dashboard: no development token: %s", exc)
        return web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_get("/static/{name:.+}", static)
    app.router.add_get("/dashboard/config", config)
