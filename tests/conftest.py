"""Keep every in-process scan off the network: this machine's system resolver
(/etc/resolv.conf) points off loopback, and tests may reach only loopback. A test that wants
DNS starts its own server on loopback and names it in ``[dns] nameservers``; without one the
system resolver counts as "not configured", so authentication answers "none" at once.
Subprocesses that receive mail get a ``[dns]`` section in their configuration instead."""
from __future__ import annotations

from typing import Iterator

import dns.resolver
import pytest


@pytest.fixture(autouse=True, scope="session")
def _no_system_resolver() -> Iterator[None]:
    original = dns.resolver.Resolver.__init__

    def loopback_only(self: dns.resolver.Resolver, filename: str = "/etc/resolv.conf", configure: bool = True) -> None:
        original(self, filename, configure=False)

    dns.resolver.Resolver.__init__ = loopback_only  # type: ignore[method-assign]
    yield
    dns.resolver.Resolver.__init__ = original  # type: ignore[method-assign]
