"""Where a webhook may point: http(s) URLs whose every address is public, unless an allow-list
(``GENQ_WEBHOOK_ALLOW_HOSTS``: hosts or CIDRs) says otherwise.

Checked at submit (the API answers 422) and again right before each delivery, since DNS can
change; the delivery then connects to the address checked here, not to a fresh lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0


class UnsafeUrl(ValueError):
    """The URL is not one genq sends webhooks to; the message says why."""


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> AllowList:
        """``"127.0.0.1, hooks.internal, 10.1.0.0/16"`` -> hosts and networks."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``ips``, every one of them allowed)."""

    url: str
    scheme: str
    host: str  # as in the URL, without brackets
    port: int
    ips: list[IPAddress] = field(default_factory=list)


def parse(url: str) -> SplitResult:
    """Syntax only: an absolute http(s) URL with a host. Raises :class:`UnsafeUrl`."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"the scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    return parts


def blocked_reason(ip: IPAddress) -> str | None:
    """Why an address is not public (None when it is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return blocked_reason(ip.ipv4_mapped)
    for what, hit in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    ):
        if hit:
            return what
    return None


def check_ips(host: str, ips: list[IPAddress], allow: AllowList) -> None:
    """Raises :class:`UnsafeUrl` unless every address is public or allowed."""
    if not ips:
        raise UnsafeUrl(f"{host!r} resolves to no address")
    if allow.allows_host(host):
        return
    for ip in ips:
        reason = blocked_reason(ip)
        if reason is not None and not allow.allows_ip(ip):
            shown = host if host == str(ip) else f"{host!r} resolves to {ip}, which"
            raise UnsafeUrl(
                f"webhooks may not point at {reason} addresses: {shown} is {reason} "
                "(GENQ_WEBHOOK_ALLOW_HOSTS lists exceptions)"
            )


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _addresses(infos: list[tuple]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def _target(parts: SplitResult, ips: list[IPAddress], allow: AllowList) -> Target:
    host = parts.hostname or ""
    check_ips(host, ips, allow)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Target(parts.geturl(), parts.scheme, host, port, ips)


def resolve(url: str, allow: AllowList) -> Target:
    """Parse, resolve (blocking) and check. Raises :class:`UnsafeUrl`, or OSError when the host
    does not resolve."""
    parts = parse(url)
    host = parts.hostname or ""
    literal = _literal_ip(host)
    if literal is not None:
        return _target(parts, [literal], allow)
    infos = socket.getaddrinfo(host, parts.port or 0, type=socket.SOCK_STREAM)
    return _target(parts, _addresses(infos), allow)


async def resolve_async(url: str, allow: AllowList) -> Target:
    """:func:`resolve` on the running loop (the API). Raises :class:`UnsafeUrl` for anything
    refused, unresolvable or slower than ``RESOLVE_TIMEOUT_S`` included."""
    parts = parse(url)
    host = parts.hostname or ""
    literal = _literal_ip(host)
    if literal is not None:
        return _target(parts, [literal], allow)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, parts.port or 0, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, ValueError) as exc:
        raise UnsafeUrl(f"the webhook host {host!r} does not resolve: {exc}") from None
    except asyncio.TimeoutError:
        raise UnsafeUrl(f"the webhook host {host!r} did not resolve in time") from None
    return _target(parts, _addresses(infos), allow)
