"""The values that cross module boundaries: actions, findings, verdicts, envelopes.

Everything here is immutable so a verdict can be handed between threads, logged and
serialised without anyone changing it underneath. DESIGN.md fixes these shapes; the CLI's
JSON output, the relay, the milter and the quarantine all rely on them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class Action(enum.IntEnum):
    """What happens to a message. Ordered: a larger value is a stronger action."""

    ACCEPT = 0
    TAG = 1
    QUARANTINE = 2
    REJECT = 3

    @classmethod
    def parse(cls, text: str) -> "Action":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(a.name.lower() for a in cls)
            raise ValueError(f"unknown action {text!r}; expected one of {names}") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    """One thing an analyzer noticed, explained for the person who reads the report.

    ``rule`` is a stable id such as ``LOOKALIKE_SENDER_DOMAIN`` that operators use to
    override scores. ``min_action`` lets a finding force at least that action whatever the
    total score (a malware signature quarantines even when nothing else fired).
    """

    analyzer: str
    rule: str
    score: float
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    min_action: Action | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "analyzer": self.analyzer,
            "rule": self.rule,
            "score": round(float(self.score), 3),
            "summary": self.summary,
            "details": dict(self.details),
        }
        if self.min_action is not None:
            out["min_action"] = str(self.min_action)
        return out


@dataclass(frozen=True)
class AnalyzerError:
    """An analyzer that raised or overran its time budget. The policy's on_error decides."""

    analyzer: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"analyzer": self.analyzer, "error": self.error}


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope, when the message came over SMTP (relay, milter)."""

    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    client_address: str = ""
    helo: str = ""
    # "outbound" for mail leaving the practice (the outbound listener, or the milter from
    # Postfix's macros), "inbound" or "" (unknown: treated as inbound). The PHI analyzer
    # and the outbound policy read it.
    direction: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "client_address": self.client_address,
            "helo": self.helo,
        }
        if self.direction:
            out["direction"] = self.direction
        return out


@dataclass(frozen=True)
class DkimSignatureResult:
    """One DKIM signature's outcome (RFC 6376): the signing domain (d=), selector (s=)."""

    domain: str
    selector: str
    result: str  # pass | fail | neutral | temperror | permerror | policy


@dataclass(frozen=True)
class AuthResults:
    """What the authentication stage proved about the sender, for the analyzers to read
    (``ParsedMessage.auth``). Results are RFC 8601 words; "none" means not checked or not
    published, never a failure. ``proven_domain`` is set only for a DMARC-aligned pass (or
    a trusted ARC chain that carried one): the From domain is the sender's own. It proves
    the domain, not its innocence (a lookalike domain can pass its own DMARC)."""

    source: str = "not-checked"  # computed | trusted-upstream | not-checked
    authserv_id: str = ""
    from_domain: str = ""
    spf: str = "none"  # pass fail softfail neutral none temperror permerror
    spf_domain: str = ""  # the domain SPF was checked for (MAIL FROM, else HELO)
    dkim: tuple[DkimSignatureResult, ...] = ()
    dmarc: str = "none"  # pass fail none temperror permerror
    dmarc_policy: str = ""  # the policy that applies: none | quarantine | reject ("" unknown)
    arc: str = "none"  # pass fail none
    arc_sealers: tuple[str, ...] = ()  # d= of the ARC-Seal headers, newest first
    proven_domain: str = ""
    blocklists: tuple[tuple[str, str, str], ...] = ()  # (zone, listed name or IP, meaning)
    spf_helo: str = "none"  # SPF of the HELO name (RFC 7208 2.3), beside MAIL FROM's in ``spf``

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "authserv_id": self.authserv_id,
            "from_domain": self.from_domain,
            "spf": self.spf,
            "spf_domain": self.spf_domain,
            "dkim": [{"domain": d.domain, "selector": d.selector, "result": d.result} for d in self.dkim],
            "dmarc": self.dmarc,
            "dmarc_policy": self.dmarc_policy,
            "arc": self.arc,
            "arc_sealers": list(self.arc_sealers),
            "proven_domain": self.proven_domain,
            "blocklists": [list(b) for b in self.blocklists],
            "spf_helo": self.spf_helo,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AuthResults":
        """The inverse of ``to_dict`` (results carried over the daemon's socket)."""
        return cls(
            source=str(data.get("source", "not-checked")), authserv_id=str(data.get("authserv_id", "")),
            from_domain=str(data.get("from_domain", "")), spf=str(data.get("spf", "none")),
            spf_domain=str(data.get("spf_domain", "")),
            dkim=tuple(DkimSignatureResult(str(d.get("domain", "")), str(d.get("selector", "")),
                                           str(d.get("result", "none"))) for d in data.get("dkim", ())),
            dmarc=str(data.get("dmarc", "none")), dmarc_policy=str(data.get("dmarc_policy", "")),
            arc=str(data.get("arc", "none")), arc_sealers=tuple(str(x) for x in data.get("arc_sealers", ())),
            proven_domain=str(data.get("proven_domain", "")),
            blocklists=tuple((str(b[0]), str(b[1]), str(b[2])) for b in data.get("blocklists", ()) if len(b) == 3),
            spf_helo=str(data.get("spf_helo", "none")),
        )


@dataclass(frozen=True)
class Verdict:
    """The outcome of one scan: total score, the action, and why.

    ``tempfail`` is set when an analyzer failed and the policy's ``on_error`` is
    ``tempfail``: servers then answer 4xx so the sender retries, and nothing is lost.
    """

    score: float
    action: Action
    findings: tuple[Finding, ...] = ()
    errors: tuple[AnalyzerError, ...] = ()
    message_id: str = ""
    elapsed_ms: float = 0.0
    tempfail: bool = False
    auth: AuthResults | None = None  # what the authentication stage found (None: it did not run)
    # One sentence for a person: what the message claims to be, what it asks, and where
    # that leads (the coherence stage's); "" when it did not run.
    summary: str = ""

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(f.rule for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "message_id": self.message_id,
            "action": str(self.action),
            "score": round(float(self.score), 3),
            "findings": [f.to_dict() for f in self.findings],
            "errors": [e.to_dict() for e in self.errors],
            "elapsed_ms": round(self.elapsed_ms, 3),
            "tempfail": self.tempfail,
            "summary": self.summary,
        }
        if self.auth is not None:
            out["auth"] = self.auth.to_dict()
        return out
