"""Which way a message goes, told from the MTA's macros, and the outbound policy as
milter replies.

Postfix sends the milter the service name ({daemon_name}), the SMTP AUTH login
({auth_authen}) and the client address: mail submitted by an authenticated user, through a
submission service, or from the practice's own networks is leaving the practice. Such mail
is scanned with direction "outbound" (the PHI analyzer runs) and the [outbound] policy
applies per recipient, as on the relay's outbound listener, with two differences: the
milter cannot see the next hop's TLS (so require_tls holds, unless the MTA itself enforces
verified TLS: ``outbound_tls_by_mta``), and it sends no notice to the sender (a refusal
bounces with the reason).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from mailguard.model import Action, Finding, Verdict
from mailguard.relay.outbound import OutboundSettings, decide, outbound_verdict, summary_for
from mailguard.relay.settings import Network, _network, in_networks


@dataclass(frozen=True)
class DirectionRules:
    daemon_names: tuple[str, ...]
    authenticated: bool
    networks: tuple[Network, ...]

    @classmethod
    def from_settings(cls, s: Mapping[str, Any], where: str) -> "DirectionRules":
        return cls(tuple(n.strip() for n in s["outbound_daemon_names"] if n.strip()), s["outbound_authenticated"],
                   tuple(_network(n, f"{where} outbound_networks") for n in s["outbound_networks"]))

    def direction(self, macros: Mapping[str, str], client_address: str) -> str:
        if self.daemon_names and macros.get("daemon_name", "") in self.daemon_names:
            return "outbound"
        if self.authenticated and macros.get("auth_authen", "").strip():
            return "outbound"
        if self.networks and in_networks(client_address, self.networks):
            return "outbound"
        return "inbound"


def apply_outbound(settings: OutboundSettings, verdict: Verdict, rcpt_tos: Sequence[str],
                   tls_by_mta: bool) -> Verdict:
    """The verdict with the outbound policy folded in: hold becomes QUARANTINE, refuse
    becomes REJECT, each with a finding that says why (kinds and counts, never values)."""
    verdict = outbound_verdict(settings, verdict)
    if verdict.action >= Action.QUARANTINE:
        return verdict
    decision = decide(settings, verdict, rcpt_tos)
    action = decision.action
    if action == "require_tls" and not tls_by_mta:
        action = "hold"
    if action not in ("hold", "refuse"):
        return verdict
    forced = Action.REJECT if action == "refuse" else Action.QUARANTINE
    why = decision.reason + ("; the mail server's TLS to the next hop is not known" if decision.action ==
                             "require_tls" else "")
    verb = "Not sent" if action == "refuse" else "Held"
    finding = Finding("outbound", "OUTBOUND_HELD" if action == "hold" else "OUTBOUND_REFUSED", 0.0,
                      f"{verb}: {why}. {summary_for(decision)}".strip(),
                      {"action": decision.action, "confidence": decision.phi.confidence if decision.phi else ""},
                      forced)
    return replace(verdict, action=forced, findings=verdict.findings + (finding,))
