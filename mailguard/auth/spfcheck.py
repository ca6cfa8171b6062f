"""SPF (RFC 7208) with pyspf, asking DNS through our resolver (timeouts, cache, breaker).

pyspf does the protocol (mechanisms, macros, the 10-lookup and void-lookup limits); only its
DNS access is replaced, by overriding ``query.dns``: pyspf's own would use a fresh
dnspython resolver per lookup with a 20 s timeout and no cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailguard.auth.resolver import Resolver

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@dataclass(frozen=True)
class SpfResult:
    result: str  # RFC 8601 words (RESULTS)
    domain: str  # the identity checked: MAIL FROM's domain, or the HELO name
    identity: str  # "mailfrom" | "helo"
    explanation: str = ""


@lru_cache(maxsize=1)
def _query_class() -> Any:
    """pyspf's query with DNS from ``mailguard.auth.resolver``. Defined at the first check:
    importing pyspf costs 10-25 ms, and a scan without an SMTP client (a saved file) never
    checks SPF."""
    import spf

    class _Query(spf.query):  # type: ignore[misc, name-defined]
        def __init__(self, resolver: Resolver, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._mg_resolver = resolver

        def dns(self, name, qtype, cnames=None, ignore_void=False):  # type: ignore[no-untyped-def]
            name = str(name or "").rstrip(".").lower()
            if not name or not all(0 < len(label) < 64 for label in name.split(".")):
                return []
            answer = self._mg_resolver.lookup(name, qtype)
            if answer.temporary:
                raise spf.TempError(f"DNS {answer.detail or 'error'} for {name}")
            if qtype in ("TXT", "SPF"):
                result: list = [(record.encode("utf-8", "replace"),) for record in answer.records]
            elif qtype == "MX":
                result = []
                for record in answer.records:
                    preference, _, host = record.partition(" ")
                    result.append((int(preference) if preference.isdigit() else 0, host))
            else:
                result = list(answer.records)
            if not result and not ignore_void:
                self.void_lookups += 1
                if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                    raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
            return result

    return _Query


def check_spf(resolver: Resolver, ip: str, mail_from: str, helo: str) -> SpfResult:
    """MAIL FROM's SPF; for the null sender (bounces) the HELO name's, as RFC 7208 2.4 says.
    No IP (not known): "none", nothing was checked."""
    mail_from = (mail_from or "").strip().strip("<>")
    helo = (helo or "").strip().strip("[]")
    identity = "mailfrom" if "@" in mail_from else "helo"
    domain = mail_from.rpartition("@")[2].lower() if identity == "mailfrom" else helo.lower()
    if not ip or not domain or (identity == "helo" and "." not in domain):
        return SpfResult("none", domain, identity)
    query_class = _query_class()
    import spf

    try:
        query = query_class(resolver, i=ip, s=mail_from if identity == "mailfrom" else "", h=helo or domain,
                       timeout=resolver.settings.timeout, querytime=0)
        result, _code, explanation = query.check()
    except (spf.TempError,) as exc:
        return SpfResult("temperror", domain, identity, str(exc)[:200])
    except Exception as exc:  # malformed IP or address: nothing a sender can make us "fail" with
        return SpfResult("permerror", domain, identity, f"{type(exc).__name__}: {exc}"[:200])
    result = result if result in RESULTS else "permerror"
    return SpfResult(result, domain, identity, str(explanation)[:200])
