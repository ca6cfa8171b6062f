"""DMARC (RFC 7489): the policy record, identifier alignment, and the policy that applies.

No library in the field evaluates DMARC on results computed elsewhere without also parsing
the From header itself (the known crashes and bypasses on malformed From lines live there),
so the From domain comes from mailguard's own parser and only the record lookup and the
alignment rules are here. The organisational domain comes from the bundled public suffix
list (``DomainSplitter``), never fetched.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mailguard.analyzers.lookalike.suffixes import DomainSplitter
from mailguard.auth.resolver import Resolver
from mailguard.model import DkimSignatureResult

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str  # sp= (p= when absent)
    pct: int
    adkim: str  # "r" | "s"
    aspf: str


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    policy: str = ""  # the policy that applies to this message ("" when no record)
    published_policy: str = ""  # before pct sampling
    record_domain: str = ""


def parse_record(text: str) -> DmarcRecord | None:
    """A "v=DMARC1" record, or None when it is not one. Unknown or bad values take the
    RFC's defaults; an invalid p= makes the record count as p=none (RFC 7489 6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v", "").upper() != "DMARC1" or not text.strip().lower().startswith("v"):
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        policy = "none"
    sub = tags.get("sp", "").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() else 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sub if sub in POLICIES else policy,
        pct=max(0, min(100, pct)),
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
    )


class Dmarc:
    def __init__(self, resolver: Resolver, splitter: DomainSplitter) -> None:
        self.resolver = resolver
        self.splitter = splitter

    def org_domain(self, domain: str) -> str:
        parts = self.splitter.parts(domain)
        return parts.registrable if parts else domain.lower()

    def aligned(self, a: str, b: str, mode: str) -> bool:
        a, b = a.lower().rstrip("."), b.lower().rstrip(".")
        if not a or not b:
            return False
        return a == b if mode == "s" else self.org_domain(a) == self.org_domain(b)

    def _record(self, domain: str) -> tuple[str, DmarcRecord | None, str]:
        """(status, record, where): status ok, none or temperror."""
        candidates = [domain]
        org = self.org_domain(domain)
        if org != domain:
            candidates.append(org)
        for name in candidates:
            answer = self.resolver.txt(f"_dmarc.{name}")
            if answer.temporary:
                return "temperror", None, name
            records = [r for r in (parse_record(t) for t in answer.records) if r is not None]
            if len(records) == 1:
                return "ok", records[0], name
            # none, or several (RFC 7489 6.6.3: several records count as none)
        return "none", None, ""

    def evaluate(self, from_domain: str, spf_result: str, spf_domain: str,
                 dkim: tuple[DkimSignatureResult, ...], message_key: str) -> DmarcResult:
        status, record, where = self._record(from_domain)
        if status == "temperror":
            return DmarcResult("temperror")
        if record is None:
            return DmarcResult("none")
        published = record.policy if where == from_domain else record.subdomain_policy
        spf_ok = spf_result == "pass" and self.aligned(spf_domain, from_domain, record.aspf)
        dkim_ok = any(s.result == "pass" and self.aligned(s.domain, from_domain, record.adkim) for s in dkim)
        if spf_ok or dkim_ok:
            return DmarcResult("pass", published, published, where)
        # A pass may have been missed only where an aligned identifier could not be checked;
        # a temperror of some other domain (a sender can make its own DNS time out) is not one.
        spf_unknown = spf_result == "temperror" and self.aligned(spf_domain, from_domain, record.aspf)
        dkim_unknown = any(s.result == "temperror" and self.aligned(s.domain, from_domain, record.adkim)
                           for s in dkim)
        if spf_unknown or dkim_unknown:
            return DmarcResult("temperror", "", published, where)
        return DmarcResult("fail", _sampled(published, record.pct, message_key), published, where)


def _sampled(policy: str, pct: int, key: str) -> str:
    """pct=: the policy applies to that share of failing mail, the next weaker one to the
    rest (RFC 7489 6.6.4). Chosen by a hash of the message, not at random, so a message
    retried after a 4xx gets the same answer."""
    if pct >= 100 or policy == "none":
        return policy
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8", "replace")).digest()[:2], "big") % 100
    if bucket < pct:
        return policy
    return "quarantine" if policy == "reject" else "none"
