"""One DNS resolver for everything mailguard looks up (SPF, DKIM keys, DMARC, ARC,
blocklists): dnspython with a per-query time limit, an answer cache, and a circuit breaker.

Why a breaker: a gateway whose resolver is down must not make every message wait for a
timeout. After a query times out, the resolver is asked something it always answers at once
(the root's NS, from its cache); only when that times out too is it marked down for
``down_seconds``, and during that time every lookup answers "temperror" at once
(microseconds), while one lookup at a time probes whether DNS is back. The check matters:
a sender can make one name time out (a domain whose servers never answer), and that must
cost only its own lookup, never switch off DNS checks for the mail that follows. A
temperror means "not checked", never "fail".

The cache keeps answers for their TTL (bounded by ``max_ttl``), NXDOMAIN and empty answers
for ``negative_ttl``, and SERVFAIL for ``error_ttl`` so a broken zone is not asked again for
each message. Answers longer than ``CACHE_MAX_ANSWER_CHARS`` are used but not kept: a sender's
zone can answer 64 KB for every name, and ``cache_size`` of those would be gigabytes.

Why a per-message budget (``budget``): the sender writes the names we look up (its SPF
record's mechanisms, each DKIM signature's selector, each ARC sealer) and its DNS can answer
each one just before ``timeout``: the protocol limits (10 SPF lookups of 10 MX hosts each, for
MAIL FROM and HELO, 5 signatures, 50 ARC sets by RFC 8617) still allowed 200 such lookups: 206 queries
and 82 s for one message at ``timeout`` 0.5 s (measured), some 290 s at 1.5 s (estimated),
longer than the relay and the milter wait for a scan. Thread-safe: shared by every worker thread of one Scanner.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

if TYPE_CHECKING:
    import dns.resolver

# dnspython (70 ms to import) is imported at the first lookup that needs a server, not here:
# ``mailguard check`` on saved files looks nothing up by default ([auth] verify_saved_mail).

OK, NXDOMAIN, NODATA, TEMPERROR = "ok", "nxdomain", "nodata", "temperror"

#: Each allowance of a message's DNS budget is this many times ``timeout`` (7.5 s at the
#: default 1500 ms): room for a legitimate message's dozen lookups on a slow resolver, and a bound on
#: what a sender whose DNS answers slowly can make one message cost.
BUDGET_TIMEOUTS = 5
#: Answers with more text than this are not cached (a 4096-bit DKIM key is about 750
#: characters, SPF records a few hundred): cache memory stays below cache_size x 4 KB.
CACHE_MAX_ANSWER_CHARS = 4096


@dataclass(frozen=True)
class DnsAnswer:
    """A lookup's outcome: ``status`` is ok, nxdomain, nodata or temperror; ``records``
    are text (TXT strings joined, addresses, host names), in answer order."""

    status: str
    records: tuple[str, ...] = ()
    detail: str = ""

    @property
    def found(self) -> bool:
        return self.status == OK

    @property
    def temporary(self) -> bool:
        return self.status == TEMPERROR


@dataclass(frozen=True)
class ResolverSettings:
    """The [dns] section, in seconds."""

    nameservers: tuple[tuple[str, int], ...] = ()
    timeout: float = 2.0
    cache_size: int = 10_000
    negative_ttl: float = 300.0
    error_ttl: float = 30.0
    max_ttl: float = 3600.0
    down_seconds: float = 30.0


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"HOST"`` (port 53), ``"[v6]:PORT"`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. \"127.0.0.1:53\" or \"[::1]:53\")")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: the server must be an IP address (a name would need DNS to find DNS)") from None
    return host, int(port or 53)


def _valid_name(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return False
    return all(0 < len(label) < 64 for label in name.split("."))


def _record_text(rdata: object) -> str:
    if hasattr(rdata, "strings"):  # TXT: one record may be split in strings of 255 bytes
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if hasattr(rdata, "address"):
        return str(rdata.address)  # type: ignore[attr-defined]
    if hasattr(rdata, "exchange"):  # MX: "preference host"
        return f"{rdata.preference} {rdata.exchange.to_text(True)}"  # type: ignore[attr-defined]
    if hasattr(rdata, "target"):  # PTR, CNAME
        return rdata.target.to_text(True)  # type: ignore[attr-defined]
    return rdata.to_text()  # type: ignore[attr-defined]


@dataclass
class LookupBudget:
    """One message's allowance of DNS time, in separate allowances so that names a sender
    chooses cannot starve the lookups a verdict depends on. A name under one of ``groups``'
    suffixes (the From domains' organisational domains; the blocklist zones) draws on that
    group's allowance, every other name on a shared one. Each allowance is ``seconds`` of
    waiting for answers (the time spent in lookups, not the CPU spent verifying between them,
    which a sender could otherwise use to spend the From domain's allowance): a lookup once it
    is spent answers "temperror" at once (not checked, never a failure), one started before
    is cut to what is left. Cached answers are free."""

    seconds: float
    groups: tuple[tuple[str, ...], ...] = ()
    spent: dict[int, float] = field(default_factory=dict)
    refused: int = 0  # lookups answered "temperror" because an allowance was spent

    def group_of(self, name: str) -> int:
        for index, suffixes in enumerate(self.groups):
            if any(name == s or name.endswith("." + s) for s in suffixes):
                return index + 1
        return 0

    def remaining(self, name: str) -> float:
        return self.seconds - self.spent.get(self.group_of(name), 0.0)

    def charge(self, name: str, seconds: float) -> None:
        group = self.group_of(name)
        self.spent[group] = self.spent.get(group, 0.0) + max(0.0, seconds)


class Resolver:
    """``lookup(name, "TXT")`` and friends; never raises for DNS trouble."""

    def __init__(self, settings: ResolverSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()
        self._down_until = 0.0
        self._probing = False
        self.queries = 0  # sent to a server (not answered from the cache); for benches and tests
        self._local = threading.local()  # .budget: the LookupBudget of the message this thread checks
        self._backend: tuple["dns.resolver.Resolver | None"] | None = None  # built at the first lookup

    def _dnspython(self) -> "dns.resolver.Resolver | None":
        """dnspython's resolver for the configured servers (or /etc/resolv.conf's), None when
        there are none; built once, when first needed."""
        with self._lock:
            if self._backend is None:
                import dns.nameserver
                import dns.resolver

                try:
                    resolver = dns.resolver.Resolver(configure=not self.settings.nameservers)
                except dns.resolver.NoResolverConfiguration:
                    resolver = dns.resolver.Resolver(configure=False)
                if self.settings.nameservers:
                    resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in self.settings.nameservers]
                resolver.timeout = self.settings.timeout
                resolver.lifetime = self.settings.timeout
                resolver.cache = None  # ours: it also remembers failures
                self._backend = (resolver if resolver.nameservers else None,)
            return self._backend[0]

    # ------------------------------------------------------------------ breaker state

    @property
    def down(self) -> bool:
        return self._clock() < self._down_until

    def _may_query(self) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._down_until:
                return False
            if self._down_until and self._probing:
                return False  # DNS was down; one probe at a time finds out whether it is back
            if self._down_until:
                self._probing = True
            return True

    def _query_done(self, timed_out: bool) -> None:
        with self._lock:
            if timed_out:
                self._down_until = self._clock() + self.settings.down_seconds
            elif self._probing:
                self._down_until = 0.0
            self._probing = False

    # ------------------------------------------------------------------ per-message budget

    @contextmanager
    def budget(self, groups: Sequence[Sequence[str]] = ()) -> Iterator[LookupBudget]:
        """Lookups made by this thread inside the block share one message's ``LookupBudget``
        (``BUDGET_TIMEOUTS`` x ``timeout`` per allowance; ``groups``: see there)."""
        clean = tuple(tuple(s.lower().rstrip(".") for s in group if s) for group in groups)
        budget = LookupBudget(BUDGET_TIMEOUTS * self.settings.timeout, clean)
        outer = getattr(self._local, "budget", None)
        self._local.budget = budget
        try:
            yield budget
        finally:
            self._local.budget = outer

    # ------------------------------------------------------------------ lookups

    def lookup(self, name: str, rdtype: str = "TXT") -> DnsAnswer:
        key = (name.lower().rstrip("."), rdtype.upper())
        if not _valid_name(key[0]):
            # A name no server could hold (empty or over-long label, over 253 bytes): it does
            # not exist. Never "temperror", or a sender could turn a failure into "not checked".
            return DnsAnswer(NXDOMAIN, detail="invalid name")
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > self._clock():
                self._cache.move_to_end(key)
                return hit[1]
        resolver = self._dnspython()
        if resolver is None:
            return DnsAnswer(TEMPERROR, detail="no nameserver configured")
        lifetime = self.settings.timeout
        budget: LookupBudget | None = getattr(self._local, "budget", None)
        if budget is not None:
            lifetime = min(lifetime, budget.remaining(key[0]))
            if lifetime <= 0:
                budget.refused += 1
                return DnsAnswer(TEMPERROR, detail="this message's DNS budget is spent")
        if not self._may_query():
            return DnsAnswer(TEMPERROR, detail="DNS unreachable (recent timeout)")
        started = self._clock()
        try:
            return self._ask(resolver, key, lifetime)
        finally:
            if budget is not None:
                budget.charge(key[0], self._clock() - started)

    def _ask(self, resolver: "dns.resolver.Resolver", key: tuple[str, str], lifetime: float) -> DnsAnswer:
        """Send one query (the cache missed, the breaker and the budget allow it); cache the
        answer and update the breaker."""
        answer, ttl, timed_out = self._query(resolver, key[0], key[1], lifetime)
        if timed_out and lifetime < self.settings.timeout:
            # cut short by the message's budget: says nothing about the name or the server
            with self._lock:
                self._probing = False
            return answer
        if timed_out:
            ttl = self.settings.error_ttl  # this name is slow: do not ask it again for each message
            timed_out = not self._server_answers(resolver)
        self._query_done(timed_out)
        if ttl > 0 and sum(len(r) for r in answer.records) <= CACHE_MAX_ANSWER_CHARS:
            with self._lock:
                self._cache[key] = (self._clock() + ttl, answer)
                self._cache.move_to_end(key)
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        return answer

    def _query(self, resolver: "dns.resolver.Resolver", name: str, rdtype: str,
               lifetime: float) -> tuple[DnsAnswer, float, bool]:
        """(answer, seconds to cache it, whether the server timed out within ``lifetime``)."""
        import dns.exception
        import dns.resolver

        s = self.settings
        self.queries += 1
        try:
            result = resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(NXDOMAIN), s.negative_ttl, False
        except dns.exception.Timeout:
            return DnsAnswer(TEMPERROR, detail="timeout"), 0.0, True
        except dns.resolver.NoNameservers as exc:  # SERVFAIL, REFUSED, unreachable
            return DnsAnswer(TEMPERROR, detail=str(exc)[:200]), s.error_ttl, False
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return DnsAnswer(TEMPERROR, detail=f"{type(exc).__name__}: {exc}"[:200]), s.error_ttl, False
        if result.rrset is None:
            return DnsAnswer(NODATA), s.negative_ttl, False
        records = tuple(_record_text(r) for r in result.rrset)
        ttl = min(float(result.rrset.ttl), s.max_ttl)
        return DnsAnswer(OK, records), ttl, False

    def _server_answers(self, resolver: "dns.resolver.Resolver") -> bool:
        """Whether the resolver itself answers (anything, even REFUSED) a query it can
        answer from its cache: the root's name servers."""
        import dns.exception

        try:
            resolver.resolve(".", "NS", search=False, raise_on_no_answer=False,
                                   lifetime=min(self.settings.timeout, 0.5))
        except dns.exception.Timeout:
            return False
        except (dns.exception.DNSException, OSError, ValueError):
            return True  # an answer of some kind: the server is there
        return True

    def txt(self, name: str) -> DnsAnswer:
        return self.lookup(name, "TXT")
