"""Where webhooks may point (genq.contract.ssrf): private, loopback, link-local, multicast, reserved and
non-http(s) targets are refused before any connection, unless allow-listed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from genq.contract.ssrf import AllowList, UnsafeUrl, blocked_reason, resolve, resolve_async

NONE = AllowList.parse("")

REFUSED = [
    ("http://10.0.0.5/hook", "private"),
    ("http://172.16.3.4/hook", "private"),
    ("http://192.168.1.10:8080/hook", "private"),
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://127.8.9.10/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]:8080/hook", "loopback"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fd00::1]/hook", "private"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://100.64.0.1/hook", "not globally routable"),
    ("http://localhost:8080/hook", "loopback"),  # a name that resolves to a private address
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com/", "scheme"),
    ("ftp://example.com/", "scheme"),
    ("http:///nohost", "no host"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_refused(url: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    connects: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: connects.append(a))
    with pytest.raises(UnsafeUrl, match=why):
        resolve(url, NONE)
    with pytest.raises(UnsafeUrl, match=why):
        asyncio.run(resolve_async(url, NONE))
    assert connects == []  # refused before any traffic


def test_public_addresses_pass() -> None:
    for ip in ("93.184.216.34", "8.8.8.8", "2606:4700::1111"):
        assert blocked_reason(ipaddress.ip_address(ip)) is None
    target = resolve("https://93.184.216.34/x", NONE)
    assert (target.host, target.port, target.scheme) == ("93.184.216.34", 443, "https")


def test_the_allow_list_takes_hosts_and_cidrs() -> None:
    allow = AllowList.parse(" 127.0.0.1 , hooks.internal., 10.1.0.0/16, [::1]")
    assert resolve("http://127.0.0.1:8080/x", allow).ips == [ipaddress.ip_address("127.0.0.1")]
    assert resolve("http://10.1.2.3/x", allow).port == 80
    assert resolve("http://[::1]:81/x", allow).host == "::1"
    with pytest.raises(UnsafeUrl, match="private"):
        resolve("http://10.2.0.1/x", allow)
    with pytest.raises(UnsafeUrl, match="loopback"):
        resolve("http://127.0.0.2/x", allow)
    assert allow.allows_host("HOOKS.internal")


def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(UnsafeUrl, match="resolves to 10.0.0.7"):
        resolve("https://rebinding.example/hook", NONE)


def test_an_unresolvable_name_is_a_clear_refusal_at_submit() -> None:
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        asyncio.run(resolve_async("http://no-such-host.invalid/hook", NONE))
