"""One SMTP session of the relay: recipient checks, and what happens to a message at the
end of DATA (scan, then forward, hold or refuse) before the client gets its answer.

The client's DATA is answered only when the message is safe somewhere: accepted by the
downstream server (its reply is passed back), stored durably in the quarantine (250), or
refused (5xx). Every other outcome is a 4xx, so the sending server keeps the message and
retries: the relay never holds mail of its own that a crash could lose.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
import ssl
import time
from dataclasses import dataclass, field
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, Callable, Protocol

from aiosmtpd.smtp import MISSING, SMTP, Envelope as SmtpEnvelope, Session

from mailguard.auth.authresults import stamp as stamp_authentication_results
from mailguard.auth.schema import our_authserv_id
from mailguard.banner import add_banner
from mailguard.config import Config
from mailguard.headers import apply_verdict, split_head_body
from mailguard.logsetup import log_message, verdict_log_fields
from mailguard.model import Action, AnalyzerError, Envelope, Verdict
from mailguard.policy import Policy
from mailguard.quarantine import QuarantineError
from mailguard.quarantine.release import RELEASE_TOKEN_HEADER, marker_of, released_entry
from mailguard.relay.addresses import has_control_characters, has_invalid_utf8, has_source_route, routing_refusal
from mailguard.relay.daemon_pool import DaemonPool
from mailguard.relay.data import read_data
from mailguard.relay.forward import Downstream, DownstreamConnections, Reply, forward
from mailguard.relay.outbound import OutboundSettings
from mailguard.relay.pool import PoolBusy, ScanPool, WorkersUnavailable
from mailguard.relay.session_init import Layout, init_session
from mailguard.relay.settings import RelaySettings
from mailguard.relay.verify import RecipientVerifier
from mailguard.scanner import Scanner

log = logging.getLogger("mailguard.relay")

MAX_RECIPIENTS = 1000
# RFC 5321 allows 1000 octets a line, and aiosmtpd refuses longer ones with a permanent 500;
# real mail (generated HTML, unwrapped base64) often has longer lines, and a 500 would bounce
# a real message. Lines up to this length pass through untouched (Postfix keeps them too).
LINE_LENGTH_LIMIT = 1 << 20
# A lone CR or LF: never an end of line in SMTP, but some servers treat them as one, and
# "<LF>.<CR><LF>" style sequences are how SMTP smuggling hides a second message in the first.
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# "<local@domain>" with a dot-atom local part and a plain domain: what nearly all mail
# sends, and what the email parser would return unchanged (tests compare the two).
_SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                          r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")
_DOT_LINE = re.compile(rb"(?:\r\n|\r|\n)\.(?:\r\n|\r|\n)")


@dataclass(frozen=True)
class RelayState:
    """Everything a reload replaces at once: settings, policy, the scanning pool with its
    compiled rules, the TLS certificate."""

    config: Config
    settings: RelaySettings
    policy: Policy
    pool: ScanPool | DaemonPool
    tls_context: ssl.SSLContext | None
    verifier: RecipientVerifier | None = None
    authserv_id: str = ""  # our name in Authentication-Results ([auth] authserv_id)
    outbound: OutboundSettings | None = None  # [outbound] listen set: the second listener
    connections: DownstreamConnections = field(default_factory=DownstreamConnections)  # kept downstream


def build_state(config: Config, scanner: Scanner | None = None) -> RelayState:
    """Blocking (compiles rules, reads certificates): call it off the event loop on reload.
    ``scanner`` (tests, library users) is used as is, in worker threads."""
    settings = RelaySettings.from_config(config)
    outbound = OutboundSettings.from_config(config, settings.hostname)  # checked before workers start
    context = None
    if settings.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    kind = settings.pool
    pool: ScanPool | DaemonPool
    if kind == "daemon" and scanner is None:  # the daemon's prebuilt workers, from the event loop
        from mailguard.daemon.remote import daemon_scanner

        remote = daemon_scanner(config, "[relay] pool = \"daemon\"")  # refuses to start without one
        pool = DaemonPool(remote.path, remote.fingerprint, settings.workers, settings.queue_limit,
                          large_bytes=settings.large_message_bytes, large_workers=settings.large_workers,
                          large_limit=settings.large_queue_limit)
    else:
        pool = ScanPool(config, settings.workers, settings.queue_limit, "threads" if kind == "daemon" else kind,
                        scanner, large_bytes=settings.large_message_bytes, large_workers=settings.large_workers,
                        large_limit=settings.large_queue_limit)
    verifier = RecipientVerifier(settings.downstream) if settings.verify_recipients else None
    return RelayState(config, settings, Policy(config.section("policy")), pool, context, verifier,
                      our_authserv_id(config), outbound)


class Runtime(Protocol):
    """What a session needs from the running server."""

    state: RelayState
    quarantine: Any
    draining: bool


@dataclass
class Outcome:
    """What happened to one message, for its single log line."""

    queue_id: str
    reply: Reply
    result: str
    verdict: Verdict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def has_bare_line_endings(raw: bytes) -> bool:
    """A lone CR or LF anywhere: three counts in C instead of a regex over the message on
    the event loop (the regex then runs only on such messages)."""
    crlf = raw.count(b"\r\n")
    return raw.count(b"\n") != crlf or raw.count(b"\r") != crlf


def smuggling_attempt(raw: bytes) -> bool:
    """A dot line next to a lone CR or LF: a message that some server could split in two."""
    return any(m.group(0) != b"\r\n.\r\n" for m in _DOT_LINE.finditer(raw))


def client_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")


def refusal_text(verdict: Verdict) -> str:
    """A short reason for a 550: the strongest rule id, never the message's content."""
    top = max(verdict.findings, key=lambda f: (f.min_action or 0, f.score), default=None)
    rule = f" ({top.rule})" if top else ""
    return f"5.7.1 Message refused: it looks like phishing or malware{rule}"


class RelayHandler:
    """aiosmtpd handler hooks. Reads ``runtime.state`` afresh for every command, so a reload
    applies to the next command of every open session."""

    direction = "inbound"  # put on the Envelope: the scanner and the PHI analyzer read it

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.smtp_layouts: dict[type, Layout] = {}  # per session class (mailguard.relay.session_init)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          mail_options: list[str]) -> str:
        if self.runtime.draining:
            _close_soon(server)
            return "421 4.3.2 Service shutting down, please try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        if self.runtime.draining:  # the transaction is over: no reason to keep the session
            _close_soon(server)
            return "421 4.3.2 Service shutting down, please try again later"
        return "250 2.0.0 OK"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """Offer XFORWARD to trusted_networks only (Postfix sends it only when offered)."""
        session.host_name = hostname
        if isinstance(server, RelaySMTP) and self.runtime.state.settings.is_trusted(server.client):
            responses.insert(len(responses) - 1, "250-XFORWARD NAME ADDR PROTO HELO")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        state = self.runtime.state
        settings = state.settings
        local = settings.accepts_domain(address)
        trusted = settings.is_trusted(client_ip(session))
        routing = None if trusted else routing_refusal(address)
        if routing is not None:
            log.info("relay refused", extra={"fields": {"client": client_ip(session), "reason": "routing",
                                                        "detail": routing}})
            return ("550 5.7.1 Relaying denied: sender-specified routing (%, !, @ in the local part) "
                    "is not accepted")
        if not (local or trusted):
            log.info("relay refused", extra={"fields": {"client": client_ip(session), "reason": "relay_denied"}})
            return "550 5.7.1 Relaying denied: this server does not accept mail for that domain"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if local and state.verifier is not None:
            check = await state.verifier.check(address)
            if check.code != 250:
                return f"{check.code} {check.text}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        state = self.runtime.state
        settings = state.settings
        if isinstance(server, RelaySMTP):
            # The whole answer (queue, scan, then each downstream step) must fit before the
            # session timer fires: a session closed while the downstream accepts is a duplicate.
            down = settings.downstream
            server.extend_timeout(settings.scan_queue_timeout + settings.scan_timeout + down.data_timeout
                                  + down.timeout * (5 + len(envelope.rcpt_tos)) + 30)
        started = time.perf_counter()
        raw = bytes(envelope.original_content or b"")
        meta = Envelope(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            client_address=getattr(session, "xforward", {}).get("ADDR") or client_ip(session),
            helo=getattr(session, "xforward", {}).get("HELO") or session.host_name or "",
            direction=self.direction,
        )
        outcome = await self.process(state, raw, meta, list(envelope.mail_options))
        outcome.timings["elapsed_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        self._log(state, raw, meta, outcome)
        return outcome.reply.line()

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is a 500, which makes a sender give up: never for our bugs.
        log.exception("relay session error: %s", type(error).__name__)
        return "451 4.3.0 Internal error, please try again later"

    # ------------------------------------------------------------------ one message

    async def process(self, state: RelayState, raw: bytes, meta: Envelope, mail_options: list[str]) -> Outcome:
        settings = state.settings
        outcome = Outcome(secrets.token_hex(6).upper(), Reply(451, "4.3.0 Not processed"), "tempfail")
        if has_bare_line_endings(raw):
            outcome.notes["bare_line_endings"] = True
            outcome.notes["smuggling_attempt"] = smuggling_attempt(raw)
            if settings.bare_line_endings == "reject":
                outcome.reply, outcome.result = Reply(550, "5.5.2 Message refused: bare CR or LF line endings "
                                                      "are not allowed in SMTP"), "rejected"
                return outcome
            raw = _BARE_EOL.sub(b"\r\n", raw)
        released = self._released(raw)
        if released is not None:  # from our own quarantine: passes once, unscanned, marker removed
            entry_id, raw = released
            outcome.notes["quarantine_id"] = entry_id
            target = self.release_target(state)
            if target is None:
                outcome.reply = Reply(451, "4.3.0 Not processed, please try again later")
                return outcome
            reply = await forward(target, meta.mail_from, meta.rcpt_tos, raw, mail_options, state.connections)
            outcome.reply, outcome.result = reply, "released" if reply.delivered else "tempfail"
            return outcome
        verdict = await self._scan(state, raw, meta, outcome)
        if verdict is None:
            return outcome
        outcome.verdict = verdict
        if verdict.tempfail:
            outcome.reply = Reply(451, "4.3.0 Temporary problem checking the message, please try again later")
            return outcome
        await self.dispose(state, raw, meta, verdict, mail_options, outcome)
        return outcome

    def release_target(self, state: RelayState) -> Downstream | None:
        """Where a message released from our quarantine goes on from this listener: where
        its accepted mail goes (the inbound downstream here; the outbound listener's next hop)."""
        return state.settings.downstream

    async def dispose(self, state: RelayState, raw: bytes, meta: Envelope, verdict: Verdict,
                      mail_options: list[str], outcome: Outcome) -> None:
        """What the scan verdict means on this listener: refuse, hold, or deliver downstream.
        The outbound listener adds its own policy here (mailguard.relay.outbound_handler)."""
        if verdict.action >= Action.REJECT:
            outcome.reply, outcome.result = Reply(550, refusal_text(verdict)), "rejected"
            return
        # Our Authentication-Results on top; incoming ones bearing our authserv-id removed.
        raw = await _off_loop_if_large(state, raw, stamp_authentication_results, raw, verdict.auth,
                                       state.authserv_id, meta.mail_from, meta.helo)
        if verdict.action >= Action.QUARANTINE:
            await self._hold(raw, meta, verdict, outcome)
            return
        await self.deliver(state, raw, meta, verdict, mail_options, outcome, state.settings.downstream)

    async def deliver(self, state: RelayState, raw: bytes, meta: Envelope, verdict: Verdict,
                      mail_options: list[str], outcome: Outcome, target: Downstream) -> Reply:
        """Forward to ``target`` with the verdict's headers; the reply becomes the client's."""
        t0 = time.perf_counter()
        policy = state.policy
        data = await _off_loop_if_large(state, raw, _prepare, raw, verdict, policy.subject_tag, policy.banner)
        reply = await forward(target, meta.mail_from, meta.rcpt_tos, data, mail_options, state.connections)
        outcome.timings["forward_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        outcome.reply = reply
        outcome.result = "delivered" if reply.delivered else ("tempfail" if reply.code < 500 else "refused_downstream")
        if reply.detail and not reply.delivered:
            outcome.notes["downstream"] = reply.detail
        return reply

    def _released(self, raw: bytes) -> tuple[str, bytes] | None:
        """(entry id, message without its marker) for a valid release marker of our own
        quarantine (mailguard.quarantine.release); None otherwise (a forged one is then
        removed with the other X-MailGuard headers, and the message scanned)."""
        keys = getattr(self.runtime.quarantine, "keys", None)
        if keys is None:
            return None
        head = split_head_body(raw[:65536])[0]  # a header field: the body need not be lowered and searched
        if RELEASE_TOKEN_HEADER.lower().encode() not in head.lower():
            return None
        token, without = marker_of(raw)
        entry_id = released_entry(keys, token, raw) if token else None
        return (entry_id, without) if entry_id else None

    async def _scan(self, state: RelayState, raw: bytes, meta: Envelope, outcome: Outcome) -> Verdict | None:
        settings = state.settings
        t0 = time.perf_counter()
        try:
            verdict = await state.pool.scan(raw, meta, settings.scan_timeout, settings.scan_queue_timeout)
        except PoolBusy:
            outcome.reply = Reply(451, "4.3.2 Too busy to check the message now, please try again later")
            outcome.notes["busy"] = True
            return None
        except WorkersUnavailable as exc:  # never on_error = accept: nothing at all is being scanned
            outcome.reply = Reply(451, "4.3.0 Message checking is unavailable now, please try again later")
            outcome.notes["scan_error"] = f"workers unavailable: {exc}"[:300]
            return None
        except Exception as exc:  # the scan as a whole failed: crashed or overran scan_timeout
            error = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]
            outcome.notes["scan_error"] = error
            if settings.on_error == "tempfail":
                outcome.reply = Reply(451, "4.3.0 Temporary problem checking the message, please try again later")
                return None
            verdict = Verdict(0.0, Action.ACCEPT, errors=(AnalyzerError("scanner", error),))
        outcome.timings["queue_scan_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        return verdict

    async def _hold(self, raw: bytes, meta: Envelope, verdict: Verdict, outcome: Outcome) -> None:
        quarantine = self.runtime.quarantine
        if quarantine is None:
            outcome.reply = Reply(451, "4.3.0 Message cannot be held now, please try again later")
            outcome.notes["quarantine"] = "not configured"
            return
        loop = asyncio.get_running_loop()
        # Held as it would have been delivered (forged verdict headers gone, ours added, no
        # subject tag): a released message must not carry a sender's "X-MailGuard-Action: accept".
        held = await loop.run_in_executor(None, apply_verdict, raw, verdict, "")
        try:
            entry_id = await loop.run_in_executor(
                None, functools.partial(quarantine.store, held, meta, verdict, queue_id=outcome.queue_id))
        except QuarantineError as exc:
            outcome.reply = Reply(451, "4.3.0 Message cannot be held now, please try again later")
            outcome.notes["quarantine"] = str(exc)[:300]
            return
        outcome.notes["quarantine_id"] = entry_id
        outcome.reply, outcome.result = Reply(250, f"2.0.0 OK: queued as {outcome.queue_id}"), "quarantined"

    def _log(self, state: RelayState, raw: bytes, meta: Envelope, outcome: Outcome) -> None:
        logging_settings = state.config.section("logging")
        fields: dict[str, Any] = {"queue_id": outcome.queue_id, "client": meta.client_address, "size": len(raw)}
        if outcome.verdict is not None:
            subject = _subject(raw) if logging_settings.get("log_subjects") else ""
            fields.update(verdict_log_fields(outcome.verdict, logging_settings, subject=subject,
                                             mail_from=meta.mail_from, rcpt_tos=meta.rcpt_tos))
        elif logging_settings.get("log_addresses"):
            fields.update({"mail_from": meta.mail_from, "rcpt_tos": list(meta.rcpt_tos)})
        fields.update({"result": outcome.result, "reply": outcome.reply.code, **outcome.timings, **outcome.notes})
        if not logging_settings.get("log_addresses") and "downstream" in fields:
            from mailguard.quarantine.smtp import redact_addresses

            fields["downstream"] = redact_addresses(str(fields["downstream"]))
        log_message(log, "relay", fields)


async def _off_loop_if_large(state: RelayState, raw: bytes, work: Callable[..., bytes], *args: Any) -> bytes:
    """Header work on a message: on the event loop for a small one (tens of microseconds,
    less than handing it to a thread and back, which also makes the loop wait for the GIL),
    in a thread for one of the large lane's size, whose copies take longer."""
    if len(raw) < state.settings.large_message_bytes:
        return work(*args)
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


def _prepare(raw: bytes, verdict: Verdict, subject_tag: str, banner: bool) -> bytes:
    """Verdict headers, subject tag and (when configured) the warning banner."""
    tagged = verdict.action >= Action.TAG
    data = apply_verdict(raw, verdict, subject_tag if tagged else "")
    if banner and tagged:
        data = add_banner(data, verdict)
    return data


def _subject(raw: bytes) -> str:
    head, _, _ = split_head_body(raw)
    try:
        return str(BytesHeaderParser(policy=default_policy).parsebytes(head).get("Subject", ""))[:200]
    except Exception:  # a broken header must not stop the log line
        return ""


def _close_soon(server: SMTP) -> None:
    """Close after the reply now being returned has been written."""
    transport = server.transport
    if transport is not None:
        asyncio.get_running_loop().call_soon(transport.close)


class SessionSet:
    """The open sessions, with an event that fires whenever one ends (for draining)."""

    def __init__(self) -> None:
        self._sessions: set[RelaySMTP] = set()
        self._per_client: dict[str, int] = {}
        self.changed = asyncio.Event()

    def add(self, session: "RelaySMTP", client: str = "") -> None:
        if session not in self._sessions:
            self._per_client[client] = self._per_client.get(client, 0) + 1
        self._sessions.add(session)
        session.client = client

    def discard(self, session: "RelaySMTP") -> None:
        if session in self._sessions:
            left = self._per_client.get(session.client, 1) - 1
            if left > 0:
                self._per_client[session.client] = left
            else:
                self._per_client.pop(session.client, None)
        self._sessions.discard(session)
        self.changed.set()

    def from_client(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def __len__(self) -> int:
        return len(self._sessions)

    def snapshot(self) -> list["RelaySMTP"]:
        return list(self._sessions)


XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")


def _xtext_decode(text: str) -> str:
    """RFC 3461 xtext: "+XX" is the byte XX."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with the relay's session rules: a separate time limit for the whole
    DATA transfer (a trickling client cannot hold a connection forever by sending a byte at
    a time), session tracking for connection limits and draining, and a goodbye on SIGTERM."""

    line_length_limit = LINE_LENGTH_LIMIT

    def __init__(self, handler: RelayHandler, *, sessions: SessionSet, data_timeout: float,
                 **kwargs: Any) -> None:
        self._deadline: float | None = None
        self._previous_deadline: float | None = None
        self._timer_at: float | None = None  # when the armed session timer fires
        self._corked: list[bytes] | None = None  # replies held to be written as one
        init_session(self, handler, handler.smtp_layouts, **kwargs)  # aiosmtpd's __init__, without its introspection
        self._sessions = sessions
        self._data_timeout = data_timeout
        self._runtime = handler.runtime
        self.in_data = False
        self.client = ""
        self.junk_commands = 0
        self._refused = False
        self._undo_possible = False  # the last timer reset was a command's, and can be undone
        self._command_counted = False  # the command being answered already counted as junk
        self._answering_data = False  # past the 354: replies now are DATA's final answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        settings = self._runtime.state.settings
        if (self._sessions.from_client(client) >= settings.max_connections_per_client
                and not settings.is_trusted(client)):
            # Refused before the greeting; the session never starts (connection_lost skips it).
            log.warning("connection refused", extra={"fields": {
                "reason": "max_connections_per_client", "limit": settings.max_connections_per_client}})
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections from your address, please try again later\r\n")
            transport.close()
            return
        self._sessions.add(self, client)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._sessions.discard(self)
        super().connection_lost(error)

    # -- time limits: junk commands never buy time
    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd cancels its timer and makes a new one for every command; here a command
        only moves the deadline, and the one timer, when it fires early, waits out the
        rest. The session still closes when the latest deadline passes."""
        self._previous_deadline = self._deadline
        self._set_deadline(self.loop.time() + (duration or self._timeout_duration))
        self._undo_possible = True
        self._command_counted = False

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer_at is None or self._timer_at > deadline:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._deadline_reached)
            self._timer_at = deadline

    def _deadline_reached(self) -> None:
        self._timer_at = None
        deadline = self._deadline
        if deadline is not None and self.loop.time() < deadline:  # moved since: wait for the rest
            self._timeout_handle = self.loop.call_at(deadline, self._deadline_reached)
            self._timer_at = deadline
            return
        self._timeout_cb()

    def _keep_deadline(self) -> None:
        """Undo the timer reset aiosmtpd did for this command: NOOP every few seconds must
        not keep a session open past command_timeout. Only once per reset: a reply that
        came without one (an unknown command, a line too long) must not pull the deadline
        back before the last real command."""
        previous = self._previous_deadline
        if previous is None or not self._undo_possible:
            return
        self._undo_possible = False
        self._set_deadline(previous)

    async def _junk(self) -> bool:
        """Count a junk command; True when the session was closed for too many."""
        self._keep_deadline()
        self._command_counted = True
        self.junk_commands += 1
        if self.junk_commands <= self._runtime.state.settings.junk_command_limit:
            return False
        log.warning("session closed", extra={"fields": {"reason": "junk_command_limit", "client": self.client}})
        await self.push("421 4.7.0 Too many NOOP, RSET, VRFY, HELP or refused commands, closing connection")
        if self.transport is not None:
            self.transport.close()
        return True

    async def _refused_command(self) -> None:
        """A command was just answered with a 5xx: it achieved nothing, so it is junk (it
        counts against junk_command_limit and does not extend command_timeout). Otherwise a
        client could hold a session, and one of max_connections, for ever with a refused
        RCPT, a nested MAIL or a failed AUTH every few minutes, and flood the log with
        "relay refused" lines as fast as it can send them."""
        if not self._command_counted and self.transport is not None and not self.transport.is_closing():
            await self._junk()

    async def smtp_NOOP(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_VRFY(arg)

    async def smtp_HELP(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_HELP(arg)

    # -- replies
    async def push(self, status: str | bytes) -> None:
        corked = self._corked
        if corked is None:
            await super().push(status)
            if status[:1] in ("5", b"5") and not self._answering_data:
                await self._refused_command()
            return
        corked.append((status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str)
                       else status) + b"\r\n")

    async def smtp_HELO(self, hostname: str) -> None:
        """aiosmtpd's HELO, refusing what cannot be a host name; it never buys time."""
        self._keep_deadline()
        if not await self._bad_argument(hostname, "HELO"):
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        """aiosmtpd's EHLO, its reply lines written together instead of one send each.
        HELO and EHLO never extend command_timeout: a client saying EHLO every few minutes
        (10,000 times) must not hold a session for ever; a control character or invalid
        UTF-8 in the name is refused, as in MAIL FROM and RCPT TO (the name goes to the
        authentication stage, the quarantine's metadata and the log)."""
        self._keep_deadline()
        if await self._bad_argument(hostname, "EHLO"):
            return
        self._corked = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._corked = self._corked, None
        if lines and self.transport is not None and not self.transport.is_closing():
            self._writer.write(b"".join(lines))
            await self._writer.drain()

    # -- what a stranger may put in commands
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:  # STARTTLS inside TLS (RFC 3207: 503 after the first)
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    async def _bad_argument(self, arg: str | None, command: str) -> bool:
        """A NUL or other control character in an envelope or HELO argument: 501, and True.
        Bytes that are not UTF-8: 500 5.5.2 (Postfix's reply), and True: such an address
        could be accepted but never forwarded (it cannot be encoded), so the sender would
        be answered 451 at the end of DATA and retry for days instead of learning at once."""
        if not arg:
            return False
        if has_control_characters(arg):
            await self.push(f"501 5.5.4 Control characters (NUL, CR, LF ...) are not allowed in {command}")
            return True
        if has_invalid_utf8(arg):
            await self.push(f"500 5.5.2 Error: bad UTF-8 syntax in {command}")
            return True
        return False

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD (XFORWARD_README), from trusted_networks only: the original
        client's address, name, HELO and protocol, so logs and checks see the real sender
        instead of the Postfix in front. Outside a transaction, as Postfix requires."""
        if not self._runtime.state.settings.is_trusted(self.client):
            await self.push("550 5.7.0 Error: insufficient authorization")
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: XFORWARD not allowed in a mail transaction")
            return
        values: dict[str, str] = {}
        for item in (arg or "").split():
            name, sep, value = item.partition("=")
            name = name.upper()
            if not sep or name not in XFORWARD_ATTRIBUTES or any(ord(c) < 33 or ord(c) > 126 for c in value):
                await self.push(f"501 5.5.4 Bad XFORWARD attribute: {name[:20]}")
                return
            value = _xtext_decode(value)
            if has_control_characters(value) or has_invalid_utf8(value):  # "+0D+0A" decodes to a line break
                await self.push(f"501 5.5.4 Bad XFORWARD attribute: {name[:20]}")
                return
            if value.upper() not in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
                values[name] = value[5:] if name == "ADDR" and value.upper().startswith("IPV6:") else value
        xforward = getattr(self.session, "xforward", {})
        xforward.update(values)
        self.session.xforward = xforward  # type: ignore[attr-defined]
        await self.push("250 2.0.0 Ok")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parsing, without the class it defines on every call (a
        typing.Protocol, built twice per message), and with a plain ``<local@domain>``
        taken by one regex; anything else goes through the email parser as before."""
        if not arg:
            return "", ""
        simple = _SIMPLE_PATH.match(arg)
        rest = arg[simple.end():].lstrip(" \t") if simple is not None else ""
        if simple is not None and not rest.startswith("("):  # a comment: the parser's business
            addr = simple.group(1)
            if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
                return None, None
            return addr, rest
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        addr = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._bad_argument(arg, "MAIL FROM"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self._bad_argument(arg, "RCPT TO"):
            return
        if arg and self.envelope is not None and self.envelope.mail_from is not None:
            rest = self._strip_command_keyword("TO:", arg)
            if rest is not None and has_source_route(rest) and not self._runtime.state.settings.is_trusted(self.client):
                log.info("relay refused", extra={"fields": {"client": self.client, "reason": "routing",
                                                            "detail": "source route"}})
                await self.push("550 5.7.1 Relaying denied: source routes are not accepted")
                return
        await super().smtp_RCPT(arg)

    @property
    def busy(self) -> bool:
        """In a mail transaction: let it finish when draining."""
        return self.in_data or (self.envelope is not None and self.envelope.mail_from is not None)

    def extend_timeout(self, seconds: float) -> None:
        self._reset_timeout(seconds)

    def goodbye(self) -> None:
        """Tell an idle client we are going away, and close."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.3.2 Service shutting down, please try again later\r\n")
            transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        self.in_data = True
        try:
            await self._data(arg)
        finally:
            self.in_data = False
            self._answering_data = False
        self.junk_commands = 0  # per transaction: a client reusing its connection starts afresh
        self._reset_timeout()
        if self._runtime.draining:
            await self.push("421 4.3.2 Service shutting down, please try again later")
            if self.transport is not None:
                self.transport.close()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA with the message read in bulk (mailguard.relay.data) instead of
        a line at a time; the checks before the 354 and the hook after are aiosmtpd's."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        # data_timeout from here (a refused DATA above is a refused command: no time bought)
        self._reset_timeout(self._data_timeout)
        self._answering_data = True  # what is said from now on answers the transfer
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.CancelledError:  # the connection was lost during DATA
            self._writer.close()
            raise
        if data is None:
            return
        if data.refusal:
            await self.push(data.refusal)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = data.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
