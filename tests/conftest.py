"""Tests reach only loopback: this guard refuses, and fails the test for, any connection or
datagram the test process itself sends to an address off this machine (such as the system
resolver, which is off loopback on the test machines: a configuration without a loopback
``[dns]`` section would ask it). It changes nothing else: traffic to loopback and Unix
sockets goes through untouched, so in-process results are those of the subprocesses, which
read the same configuration. Subprocesses are not covered here; their configurations name
the loopback resolver of ``dns_server.loopback_dns``."""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Callable, Iterator

import pytest

_PATCHED = ("connect", "connect_ex", "sendto", "sendmsg")


def _off_loopback(sock: socket.socket, address: Any) -> str | None:
    """The destination, when it is an internet address other than loopback (or this host's
    wildcard, which the kernel delivers locally)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or not address:
        return None
    host = str(address[0])
    if host == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host  # a name: resolving it may already have asked DNS
    if ip.is_loopback or ip.is_unspecified or getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback:
        return None
    return f"{host}:{address[1]}" if len(address) > 1 else host


def _address_argument(name: str, args: tuple[Any, ...]) -> Any:
    if name in ("connect", "connect_ex"):
        return args[0] if args else None
    if name == "sendto":
        return args[-1] if len(args) >= 2 else None
    return args[3] if len(args) >= 4 else None  # sendmsg(buffers, ancdata, flags, address)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[list[str]]:
    seen: list[str] = []
    originals = {name: getattr(socket.socket, name) for name in _PATCHED}

    def guarded(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: socket.socket, *args: Any) -> Any:
            where = _off_loopback(self, _address_argument(name, args))
            if where is not None:
                seen.append(f"{name} to {where}")
                raise OSError(errno.ENETUNREACH, f"tests may reach only loopback, not {where}")
            return original(self, *args)
        return method

    for name, original in originals.items():
        setattr(socket.socket, name, guarded(name, original))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(socket.socket, name, original)


@pytest.fixture(autouse=True)
def _nothing_sent_off_loopback(_loopback_only: list[str]) -> Iterator[None]:
    before = len(_loopback_only)
    yield
    sent = _loopback_only[before:]
    assert not sent, f"the test tried to reach beyond loopback: {sorted(set(sent))}"
