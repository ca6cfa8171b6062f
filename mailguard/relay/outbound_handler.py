"""The outbound listener's SMTP session: the relay's handler with the outbound policy.

Everything the inbound relay does still happens (bounded sessions, the scan pool, the
before-queue answer, malware and phishing held or refused, 451 whenever in doubt); what
changes is who may connect (``[outbound] trusted_networks``: the practice's own server and
workstations), where mail goes (``next_hop``), and what happens after the scan:
``mailguard.relay.outbound.decide`` turns patient-data findings and misdirected recipient
domains into pass, audit, warn, require_tls, hold or refuse. Replies, notices and log lines
name kinds and counts of patient data, never values.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope as SmtpEnvelope, Session

from mailguard.model import Action, Envelope, Finding, Verdict
from mailguard.relay.forward import Downstream, Reply, forward, one_line
from mailguard.relay.handler import MAX_RECIPIENTS, Outcome, RelayHandler, RelayState, Runtime, client_ip
from mailguard.relay.history import RecipientHistory
from mailguard.relay.outbound import Decision, OutboundSettings, decide, outbound_verdict, summary_for

log = logging.getLogger("mailguard.relay")

ADVICE = ("Send it through the practice's secure (encrypted) messaging instead, remove the patient data, "
          "or ask IT to release it if the recipient may receive it.")


_UNCONFIGURED = "451 4.3.0 The outbound listener is being reconfigured, please try again later"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


class OutboundHandler(RelayHandler):
    """aiosmtpd hooks for the outbound listener."""

    direction = "outbound"

    def __init__(self, runtime: Runtime, history: RecipientHistory) -> None:
        super().__init__(runtime)
        self.history = history

    def _outbound(self) -> OutboundSettings | None:
        """The current [outbound] settings (a reload may have removed them: then 451)."""
        settings = self.runtime.state.outbound
        if settings is not None:
            self.history.known = frozenset(settings.known_domains)
            self.history.internal = frozenset(settings.internal_domains)
        return settings

    def release_target(self, state: RelayState) -> Downstream | None:
        """A held outbound message that IT released (``[quarantine] release_host`` is the
        practice's server, which hands it back here with the release marker) goes out to
        the next hop. Sent to the inbound downstream (the practice's own server) it came
        straight back without its marker, was scanned again and held again: a release that
        never left. None (451) while a reload has removed [outbound]."""
        out = self._outbound()
        return out.next_hop if out is not None else None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        out = self._outbound()
        if out is None:
            return _UNCONFIGURED
        if not out.is_trusted(client_ip(session)):
            log.info("relay refused", extra={"fields": {"client": client_ip(session), "reason": "outbound_untrusted",
                                                        "listener": "outbound"}})
            return "550 5.7.1 Relaying denied: this listener takes mail only from the practice's own network"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def dispose(self, state: RelayState, raw: bytes, meta: Envelope, verdict: Verdict,
                      mail_options: list[str], outcome: Outcome) -> None:
        outcome.notes["listener"] = "outbound"
        out = self._outbound()
        if out is None:
            outcome.reply = Reply(451, _UNCONFIGURED[4:])
            return
        verdict = outbound_verdict(out, verdict)
        outcome.verdict = verdict
        if verdict.action >= Action.QUARANTINE:  # malware, or phishing from a compromised account
            await super().dispose(state, raw, meta, verdict, mail_options, outcome)
            return
        misdirected: dict[str, str] = {}
        for rcpt in meta.rcpt_tos:
            if not out.is_internal(rcpt):
                explanation = self.history.lookalike(_domain(rcpt))
                if explanation:
                    misdirected[rcpt] = explanation
        decision = decide(out, verdict, meta.rcpt_tos, misdirected)
        outcome.notes["outbound_action"] = decision.action
        if decision.phi is not None:
            outcome.notes["phi"] = decision.phi.confidence
            outcome.notes["phi_kinds"] = dict(decision.phi.kinds)
        if misdirected:
            outcome.notes["misdirected"] = len(misdirected)
        if decision.action == "refuse":
            outcome.reply = Reply(550, one_line(f"5.7.1 Not sent: {decision.reason}: {_what(decision)}. {ADVICE}", 480))
            outcome.result = "rejected"
            return
        if decision.action == "hold":
            await self._hold_outbound(state, raw, meta, verdict, outcome, decision, "OUTBOUND_HELD")
            return
        target = out.verified_hop if decision.action == "require_tls" else out.next_hop
        reply = await self.deliver(state, raw, meta, verdict, mail_options, outcome, target)
        if reply.tls_unavailable and decision.action == "require_tls":
            outcome.notes["next_hop"] = reply.detail
            await self._hold_outbound(state, raw, meta, verdict, outcome, decision, "OUTBOUND_TLS_UNAVAILABLE")
            return
        if reply.delivered:
            outcome.notes["tls"] = reply.tls
            outside = [_domain(r) for r in meta.rcpt_tos if not out.is_internal(r)]
            if outside:
                await asyncio.get_running_loop().run_in_executor(None, self.history.record, outside)
            if decision.action == "warn":
                await self._notify(out, meta, outcome, decision, held=False)

    async def _hold_outbound(self, state: RelayState, raw: bytes, meta: Envelope, verdict: Verdict,
                             outcome: Outcome, decision: Decision, rule: str) -> None:
        why = "the next server offers no verified TLS" if rule == "OUTBOUND_TLS_UNAVAILABLE" else decision.reason
        finding = Finding("outbound", rule, 0.0, f"Held: {why}. {summary_for(decision)}".strip(),
                          {"action": decision.action, "confidence": decision.phi.confidence if decision.phi else "",
                           "misdirected": len(decision.misdirected)}, Action.QUARANTINE)
        held = replace(verdict, action=Action.QUARANTINE, findings=verdict.findings + (finding,))
        outcome.verdict = held
        await self._hold(raw, meta, held, outcome)
        if outcome.result == "quarantined":
            outcome.reply = Reply(250, f"2.0.0 Held for review ({why}): queued as {outcome.queue_id}")
            out = self._outbound()
            if out is not None:
                await self._notify(out, meta, outcome, decision, held=True, why=why)

    async def _notify(self, out: OutboundSettings, meta: Envelope, outcome: Outcome, decision: Decision, *,
                      held: bool, why: str = "") -> None:
        """A notice to the sender (best effort: the message itself is already safe)."""
        if not (out.notify_sender and meta.mail_from):
            return
        notice = build_notice(out.notice_from, meta.mail_from, decision, outcome.queue_id, held, why)
        reply = await forward(out.next_hop, "", [meta.mail_from], notice)
        outcome.notes["notice"] = "sent" if reply.delivered else f"failed {reply.code}"


def _what(decision: Decision) -> str:
    if decision.phi is not None and decision.phi.kinds:
        return decision.phi.summary
    return "; ".join(decision.misdirected)


def build_notice(sender: str, to: str, decision: Decision, queue_id: str, held: bool, why: str = "") -> bytes:
    """The notice: what kinds were found and what to do, never the values, never the
    recipients' addresses (the sender knows them; the notice may be forwarded)."""
    outside = sum(1 for r in decision.recipients if r.reason != "internal recipient")
    msg = EmailMessage()
    msg["From"] = f"Mail guard <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Your message was held for review" if held else "Patient data in a message you sent"
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    lines = []
    if held:
        lines.append(f"A message you sent to {outside} outside recipient(s) was not delivered: {why}. "
                     "It is kept safely in the quarantine.")
    else:
        lines.append(f"A message you sent to {outside} outside recipient(s) was delivered, but it seems to "
                     "contain patient data.")
    if decision.phi is not None:
        lines.append(f"\nWhat was found: {decision.phi.summary}.")
    for explanation in decision.misdirected:
        lines.append(f"\nCheck the address: the recipient domain {explanation}.")
    lines.append("\nWhat to do: " + (ADVICE if held else "next time, send patient data through the practice's "
                                     "secure (encrypted) messaging, or remove it."))
    lines.append(f"\nReference for IT: {queue_id}")
    msg.set_content("\n".join(lines) + "\n")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def handler_for(runtime: Any, state: RelayState) -> OutboundHandler | None:
    """The outbound handler when [outbound] listen is set, with its recipient history."""
    out = state.outbound
    if out is None:
        return None
    history = RecipientHistory(out.history_file, out.known_domains, out.internal_domains, out.history_min_messages)
    return OutboundHandler(runtime, history)
