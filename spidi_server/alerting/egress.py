"""Where webhooks may go: the address policy of outgoing webhook POSTs (an SSRF guard).

A tenant admin chooses the URL of an alert rule's webhook channel, so without a policy the
server would POST wherever it is told: its own loopback, the cloud metadata service
(169.254.169.254), the internal network. Refused, unless the operator allows them:

    loopback, link-local, private (RFC 1918 and the other special-purpose ranges), shared
    address space (100.64.0.0/10, CGNAT), unique-local (fc00::/7), unspecified, multicast,
    reserved, and any address that is not globally reachable -- also when written as an
    IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002::/16) or NAT64 (64:ff9b::/96) IPv6 address, or
    in a legacy IPv4 form (2130706433, 0x7f000001, 0177.0.0.1, 127.1).

``webhook_allowed_networks`` (CIDRs) lets addresses inside them through; ``webhook_allowed_hosts``
(host names, exact, case-insensitive) skips the check for those hosts entirely.

The real check is made at send time on the resolved addresses: ``PolicyResolver`` is the DNS
resolver of the sender's ``aiohttp`` connector, so each name is resolved once, every address is
checked, and the connector connects only to the addresses that passed (a DNS answer cannot
change between the check and the connection). A literal address never reaches a resolver, so the
sender checks it with ``refusal_of_host`` before connecting. ``url_problem`` is the save-time
check of the REST API: it refuses what is literally a refused address (it does not resolve).

No I/O here apart from the resolver's lookup; the settings are read through ``EgressSettings``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Protocol

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the low 32 bits are an IPv4 address
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")  # what inet_aton's legacy forms are made of


class EgressSettings(Protocol):
    """What the policy needs from the settings."""

    webhook_allowed_networks: list[str]
    webhook_allowed_hosts: list[str]


class EgressRefused(OSError):
    """A webhook's host is, or resolves only to, refused addresses (no connection was made)."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


def literal_address(host: str) -> Address | None:
    """The address ``host`` literally is (any form a socket accepts), or None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton reads 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 as 127.0.0.1, and so does
    # getaddrinfo. The character filter keeps names out (and inet_aton's tolerance of a trailing
    # " anything").
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded(address: Address) -> list[Address]:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any, and the address."""
    out: list[Address] = []  # the carried IPv4 address first: its kind says more
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # only a notation of the IPv4 address: judged as that
            return [address.ipv4_mapped]
        if address.sixtofour is not None:
            out.append(address.sixtofour)
        if address in _NAT64:
            out.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [*out, address]


def _kind(address: Address) -> str | None:
    """Why ``address`` is refused by default (its kind), or None for a global unicast one."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _SHARED:
        return "shared (CGNAT)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not global"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses webhooks may reach: global unicast ones, and what the operator allows."""

    allowed_networks: tuple[Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: EgressSettings) -> EgressPolicy:
        """The policy of ``webhook_allowed_networks`` and ``webhook_allowed_hosts`` (validated)."""
        return cls(
            tuple(ipaddress.ip_network(n) for n in settings.webhook_allowed_networks),
            frozenset(_host_key(h) for h in settings.webhook_allowed_hosts),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` is listed in ``webhook_allowed_hosts`` (then nothing is checked)."""
        return _host_key(host) in self.allowed_hosts

    def refusal(self, address: Address) -> str | None:
        """Why a connection to ``address`` is refused (``"loopback address 127.0.0.1"``), or None.

        Allowed when it (or the IPv4 address it carries) is inside ``allowed_networks``.
        """
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        forms = _embedded(address)
        if any(form in network for form in forms for network in self.allowed_networks):
            return None
        for form in forms:
            kind = _kind(form)
            if kind is not None:
                shown = str(form) if form == address else f"{form} (as {address})"
                return f"{kind} address {shown}"
        return None

    def refusal_of_host(self, host: str) -> str | None:
        """Why ``host`` is refused when it is literally an address; None for names (resolved later)."""
        if self.host_allowed(host):
            return None
        address = literal_address(host)
        if address is None and (":" in host or host.replace(".", "").isdigit()):
            # aiohttp hands such a host to the socket as an address, past the resolver: what
            # cannot be read here cannot be checked.
            return f"unreadable address {host}"
        return None if address is None else self.refusal(address)

    def url_problem(self, url: str) -> str | None:
        """Save-time check of a webhook URL: what is wrong with it, or None.

        Refuses a scheme other than http(s), a missing host, a host that literally is a refused
        address, and ``localhost`` names; a name is not resolved here (send time checks it).
        """
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            return "must be an http:// or https:// URL"
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return "must be an http:// or https:// URL with a host"
        host = parsed.host
        if self.host_allowed(host):
            return None
        key = _host_key(host)
        if key == "localhost" or key.endswith(".localhost"):
            return self._refused_text("loopback host name " + host)
        reason = self.refusal_of_host(host)
        return None if reason is None else self._refused_text(reason)

    @staticmethod
    def _refused_text(reason: str) -> str:
        return (
            f"points at a refused {reason}: webhooks may only reach public addresses "
            "(the operator can allow others with webhook_allowed_networks or webhook_allowed_hosts)"
        )


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


class PolicyResolver(AbstractResolver):
    """An ``aiohttp`` resolver that returns only the addresses ``policy`` allows.

    The connector connects to what ``resolve`` returns and nothing else, so the addresses checked
    are the addresses connected to. Raises ``EgressRefused`` when no address is left.
    """

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None):
        """``inner`` does the lookup (default: aiohttp's default resolver)."""
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and drop the refused addresses; ``EgressRefused`` if none is left."""
        results = await self.inner.resolve(host, port, family)
        if self.policy.host_allowed(host):
            return results
        kept, reasons = [], []
        for result in results:
            reason = self.policy.refusal(ipaddress.ip_address(result["host"]))
            if reason is None:
                kept.append(result)
            else:
                reasons.append(reason)
        if not kept:
            raise EgressRefused(host, reasons[0] if reasons else "no address")
        return kept

    async def close(self) -> None:
        """Close the inner resolver."""
        await self.inner.close()


__all__ = [
    "EgressPolicy",
    "EgressRefused",
    "EgressSettings",
    "PolicyResolver",
    "literal_address",
]
