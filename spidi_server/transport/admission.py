"""Who may open a WebSocket: the checks both transports run on the HTTP upgrade, before any STOMP.

``Admission.check`` refuses with a ``HandshakeRefusedError`` (403 origin, 429 per-IP rate or
count, 503 node full), which the transport answers as an HTTP response; ``opened``/``closed``
keep the counts. Everything here is synchronous and runs once per connection, never per message.
``client_ip`` believes X-Forwarded-For only from ``trusted_proxies``; ``server_ssl_context`` builds
the TLS context the WebSocket and ops ports share.
"""

from __future__ import annotations

import ipaddress
import ssl
import sys
import time

from ..errors import (
    HandshakeRefusedError,
    IpConnectionLimitError,
    IpRateLimitError,
    OriginNotAllowedError,
    ServerFullError,
)
from ..settings import Settings

# Per-IP rate buckets are forgotten once full again; the table is swept when it grows past this.
_SWEEP_AT = 4096


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server-side TLS context of ``tls_cert_file``/``tls_key_file``, or None without TLS."""
    if not settings.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


class TrustedProxies:
    """Decides the client address of a connection from its peer and X-Forwarded-For.

    The walk goes right to left from the peer, one hop per trusted proxy: each proxy appended the
    address it received from, so the first untrusted hop is the client. Hops left of it were sent by
    the client and are never believed. A hop that is not an IP address (a name, ``unknown``, a port,
    garbage) ends the walk: whoever wrote it cannot be trusted, so the client address is the last
    address we can vouch for: the trusted proxy that passed the header on.
    """

    __slots__ = ("networks",)

    def __init__(self, entries: list[str]):
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def _trusted(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version == 6 and ip.ipv4_mapped:  # a dual-stack socket's ::ffff:10.0.0.1
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def client_ip(self, peer_ip: str, forwarded: str | None) -> str:
        """The peer, unless it is a trusted proxy: then the nearest untrusted X-Forwarded-For hop.

        ``forwarded`` is every X-Forwarded-For line of the request joined by commas, in order.
        Interned: a connection and its sessions keep it, and many connections share an address
        (one string per address, not one per connection).
        """
        if not forwarded or not self.networks:
            return sys.intern(peer_ip)
        try:
            vouched = ipaddress.ip_address(peer_ip)
        except ValueError:
            return sys.intern(peer_ip)
        for hop in reversed(forwarded.split(",")):  # right to left: the last hop is our own proxy's
            if not self._trusted(vouched):
                break
            hop = hop.strip()
            if not hop:
                continue  # "a, , b": an empty element is no hop
            try:
                vouched = ipaddress.ip_address(hop)
            except ValueError:
                break  # not an address: stop at the proxy that passed it on
        return sys.intern(str(vouched))


class Admission:
    """Origin, node-wide cap, per-IP concurrent count and per-IP rate of new connections."""

    def __init__(self, settings: Settings, refusals=None):
        self.origins = frozenset(settings.allowed_origins)
        self.any_origin = not self.origins or "*" in self.origins
        self.max_connections = settings.max_connections
        self.max_per_ip = settings.max_connections_per_ip
        self.rate = settings.connection_rate_per_ip
        self.burst = float(settings.connection_burst_per_ip)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.refusals = refusals  # spidi_refusals_total, by reason (None in unit use)
        self.open = 0
        self.per_ip: dict[str, int] = {}
        self.buckets: dict[str, list[float]] = {}  # ip -> [tokens, at]
        self.sweep_at = _SWEEP_AT

    def origin_allowed(self, origin: str | None) -> bool:
        """No Origin header (not a browser) or an allowed one; every origin when the list is empty."""
        return origin is None or self.any_origin or origin in self.origins

    def check(self, ip: str, origin: str | None) -> HandshakeRefusedError | None:
        """Why this handshake must be refused, or None; a refusal is counted in the metrics."""
        return self._counted(self._upgrade(origin) or self._ip(ip))

    def check_upgrade(self, origin: str | None) -> HandshakeRefusedError | None:
        """The checks that need no peer address: origin and the node-wide cap."""
        return self._counted(self._upgrade(origin))

    def check_ip(self, ip: str) -> HandshakeRefusedError | None:
        """The per-IP checks: open connections and the rate of new ones."""
        return self._counted(self._ip(ip))

    def _counted(self, exc: HandshakeRefusedError | None) -> HandshakeRefusedError | None:
        if exc is not None and self.refusals is not None:
            self.refusals.labels(reason=exc.reason).inc()
        return exc

    def _upgrade(self, origin: str | None) -> HandshakeRefusedError | None:
        if not self.origin_allowed(origin):
            return OriginNotAllowedError(f"origin {origin[:100]!r} is not allowed\n")
        if self.max_connections and self.open >= self.max_connections:
            return ServerFullError("server full: try again later or another node\n")
        return None

    def _ip(self, ip: str) -> HandshakeRefusedError | None:
        if self.max_per_ip and self.per_ip.get(ip, 0) >= self.max_per_ip:
            return IpConnectionLimitError(f"too many connections from your address (max {self.max_per_ip})\n")
        if self.rate:
            now = time.monotonic()
            bucket = self.buckets.get(ip)
            if bucket is None:
                if len(self.buckets) >= self.sweep_at:
                    self._sweep(now)
                bucket = self.buckets[ip] = [self.burst, now]
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                return IpRateLimitError(f"too many new connections from your address (max {self.rate:g}/s)\n")
            bucket[0] = tokens - 1.0
        return None

    def _sweep(self, now: float) -> None:
        """Forget the buckets that have refilled: they hold nothing a fresh one would not."""
        full = [
            ip for ip, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.burst
        ]
        for ip in full:
            del self.buckets[ip]
        # Many addresses still draining: sweep again only once the table has doubled (amortised O(1)).
        self.sweep_at = max(_SWEEP_AT, 2 * len(self.buckets))

    def opened(self, ip: str) -> None:
        """A WebSocket was accepted (call right after a successful ``check``, before any await)."""
        self.open += 1
        if self.max_per_ip:
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def closed(self, ip: str) -> None:
        """A WebSocket accepted with ``opened`` is gone."""
        self.open -= 1
        if self.max_per_ip:
            left = self.per_ip.get(ip, 0) - 1
            if left > 0:
                self.per_ip[ip] = left
            else:
                self.per_ip.pop(ip, None)


def refusal_headers(exc: HandshakeRefusedError) -> dict[str, str]:
    """Extra response headers of a refused handshake."""
    return {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
