"""The outbound policy: what happens to mail leaving the practice, per recipient.

The scanner finds (malware, phishing sent from a compromised account, patient data with a
confidence level); this module decides, in one place, per recipient:

- internal recipients (``internal_domains``) pass;
- a patient who consented to unencrypted mail (``consent_file``, kept hashed) is audited;
- a business associate gets patient data only over verified TLS (otherwise held);
- everyone else gets the action ``phi_<confidence>`` names: audit, warn, require_tls, hold,
  refuse;
- a recipient domain that imitates a domain the practice usually writes to is held (or as
  ``misdirected`` says), with the explanation.

The strongest action over all recipients applies to the message (one SMTP reply answers
them all; splitting a message would need a queue of our own, and a before-queue proxy has
none). Pure logic, no sockets: the listener in ``outbound_handler`` carries it out.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

from mailguard.config import Config, ConfigError
from mailguard.model import Action, Verdict
from mailguard.relay.forward import Downstream
from mailguard.relay.settings import Network, _host_port, _network, in_networks

# Ordered weakest to strongest: the strongest over all recipients applies.
ACTION_ORDER = ("pass", "audit", "warn", "require_tls", "hold", "refuse")
PHI_RULE_PREFIX = "PHI_"


def consent_hash(address: str) -> str:
    """The line for ``consent_file``: addresses are never stored in clear."""
    return "sha256:" + hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def _in_domains(domain: str, domains: Sequence[str]) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in domains)


@dataclass(frozen=True)
class OutboundSettings:
    listen_host: str
    listen_port: int
    next_hop: Downstream
    internal_domains: tuple[str, ...]
    trusted_networks: tuple[Network, ...]
    actions: Mapping[str, str]  # confidence level -> action
    business_associates: tuple[str, ...]
    consent: frozenset[str]
    notify_sender: bool
    notice_from: str
    history_file: str
    known_domains: tuple[str, ...]
    history_min_messages: int
    misdirected: str
    quarantine_at: float = 15.0

    @classmethod
    def from_config(cls, config: Config, hostname: str, *, listener: bool = True) -> "OutboundSettings | None":
        """None when [outbound] listen is empty (no outbound listener). With ``listener``
        false (the milter: only the policy is used) listen and next_hop may be empty."""
        s = config.section("outbound")
        if listener and not s["listen"].strip():
            return None
        where = f"{config.source or 'configuration'}: [outbound]"
        if listener and not s["next_hop"].strip():
            raise ConfigError(f"{where} next_hop: required when listen is set (the provider's smarthost, \"host:port\")")
        listen_host, listen_port = _host_port(s["listen"], f"{where} listen", any_port=True) \
            if s["listen"].strip() else ("", 0)
        hop_host, hop_port = _host_port(s["next_hop"], f"{where} next_hop") if s["next_hop"].strip() else ("", 0)
        ca_file = str(config.resolve_path(s["next_hop_ca_file"])) if s["next_hop_ca_file"] else ""
        return cls(
            listen_host=listen_host,
            listen_port=listen_port,
            next_hop=Downstream(hop_host, hop_port, tls=s["next_hop_tls"], tls_verify=True, ca_file=ca_file,
                                timeout=s["next_hop_timeout"], local_hostname=hostname),
            internal_domains=_domains(s["internal_domains"]),
            trusted_networks=tuple(_network(n, f"{where} trusted_networks") for n in s["trusted_networks"]),
            actions={"low": s["phi_low"], "medium": s["phi_medium"], "high": s["phi_high"]},
            business_associates=tuple(a.strip().lower().lstrip("@") for a in s["business_associates"] if a.strip()),
            consent=_read_consent(config, s["consent_file"], f"{where} consent_file"),
            notify_sender=s["notify_sender"],
            notice_from=s["notice_from"] or f"postmaster@{hostname}",
            history_file=str(config.resolve_path(s["history_file"])) if s["history_file"] else "",
            known_domains=_domains(s["known_domains"]),
            history_min_messages=s["history_min_messages"],
            misdirected=s["misdirected"],
            quarantine_at=s["quarantine_at"],
        )

    @property
    def verified_hop(self) -> Downstream:
        """The next hop with TLS required and its certificate checked."""
        return replace(self.next_hop, tls="required", tls_verify=True)

    def is_internal(self, address: str) -> bool:
        return _in_domains(_domain(address), self.internal_domains)

    def is_business_associate(self, address: str) -> bool:
        address = address.strip().lower()
        domain = _domain(address)
        return any(address == a if "@" in a else _in_domains(domain, (a,)) for a in self.business_associates)

    def has_consented(self, address: str) -> bool:
        return consent_hash(address) in self.consent

    def is_trusted(self, client_ip: str) -> bool:
        return in_networks(client_ip, self.trusted_networks)


def _domains(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(d.strip().lower().lstrip("@").rstrip(".") for d in values if d.strip())


def _read_consent(config: Config, value: str, where: str) -> frozenset[str]:
    if not value:
        return frozenset()
    path = Path(config.resolve_path(value))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    out = set()
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if not (line.startswith("sha256:") and len(line) == 71 and all(c in "0123456789abcdef" for c in line[7:])):
            raise ConfigError(f"{path} line {number}: expected \"sha256:<64 hex digits>\" (the hash of an address, "
                              "from `mailguard outbound consent-hash ADDRESS`), not an address in clear")
        out.add(line)
    return frozenset(out)


@dataclass(frozen=True)
class PhiSeen:
    """The PHI finding of a verdict, read back: confidence, kinds and counts."""

    confidence: str
    kinds: Mapping[str, int]
    summary: str

    @classmethod
    def of(cls, verdict: Verdict) -> "PhiSeen | None":
        order = {"low": 0, "medium": 1, "high": 2}
        best = None
        for f in verdict.findings:
            if f.analyzer == "phi" and f.details.get("confidence") in order:
                if best is None or order[f.details["confidence"]] > order[best.confidence]:
                    best = cls(str(f.details["confidence"]), dict(f.details.get("kinds", {})), f.summary)
        return best


@dataclass(frozen=True)
class RecipientDecision:
    address: str
    action: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """The message's outcome: the strongest action, the recipients' decisions, and the
    sentence that explains it (kinds and counts, never values)."""

    action: str
    recipients: tuple[RecipientDecision, ...] = ()
    phi: PhiSeen | None = None
    misdirected: tuple[str, ...] = ()  # explanations

    @property
    def reason(self) -> str:
        for r in self.recipients:
            if r.action == self.action:
                return r.reason
        return ""


def outbound_verdict(settings: OutboundSettings, verdict: Verdict) -> Verdict:
    """The scan verdict as it applies to mail going out: a hold by score needs
    ``quarantine_at`` (a compromised account's phishing); below it the message is only
    tagged. Forced actions (malware) and failures (on_error) are kept as they are."""
    if verdict.action < Action.QUARANTINE or verdict.errors or verdict.score >= settings.quarantine_at:
        return verdict
    forced = max((f.min_action for f in verdict.findings if f.min_action is not None), default=Action.ACCEPT)
    if forced >= Action.QUARANTINE:
        return verdict
    return replace(verdict, action=max(forced, Action.TAG))


def decide(settings: OutboundSettings, verdict: Verdict, rcpt_tos: Sequence[str],
           misdirected: Mapping[str, str] | None = None) -> Decision:
    """The outbound action for a message whose scan verdict is ``verdict``.
    ``misdirected`` maps recipient addresses to the explanation of the lookalike."""
    phi = PhiSeen.of(verdict)
    misdirected = misdirected or {}
    decisions = []
    for rcpt in rcpt_tos:
        decisions.append(_for_recipient(settings, rcpt, phi, misdirected.get(rcpt)))
    action = max((d.action for d in decisions), key=ACTION_ORDER.index, default="pass")
    return Decision(action, tuple(decisions), phi, tuple(dict.fromkeys(misdirected.values())))


def _for_recipient(settings: OutboundSettings, rcpt: str, phi: PhiSeen | None, lookalike: str | None) -> RecipientDecision:
    if settings.is_internal(rcpt):
        return RecipientDecision(rcpt, "pass", "internal recipient")
    if lookalike and settings.misdirected != "audit":
        return RecipientDecision(rcpt, settings.misdirected, f"misdirected? {lookalike}")
    if phi is None:
        return RecipientDecision(rcpt, "audit" if lookalike else "pass", lookalike or "no patient data")
    what = f"patient data ({phi.confidence} confidence)"
    if settings.has_consented(rcpt):
        return RecipientDecision(rcpt, "audit", f"{what} to a patient who consented to unencrypted email")
    if settings.is_business_associate(rcpt):
        return RecipientDecision(rcpt, "require_tls", f"{what} to a business associate: verified TLS required")
    return RecipientDecision(rcpt, settings.actions[phi.confidence], f"{what} to an outside recipient")


def summary_for(decision: Decision) -> str:
    """One plain-English sentence for findings and notices."""
    parts = []
    if decision.phi is not None:
        parts.append(decision.phi.summary)
    parts.extend(f"The recipient domain {m}" for m in decision.misdirected)
    return "; ".join(parts)

