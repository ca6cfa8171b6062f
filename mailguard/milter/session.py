"""One MTA connection of the milter: option negotiation, the SMTP session's facts, the
message as it arrives, and the answer at end of message (see ``actions`` for how a
verdict becomes replies)."""
from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from typing import Any, Awaitable

from mailguard.auth.authresults import stamp as stamp_authentication_results
from mailguard.milter import protocol as mp
from mailguard.logsetup import log_message, verdict_log_fields
from mailguard.headers import apply_verdict
from mailguard.quarantine.release import RELEASE_TOKEN_HEADER, released_entry
from mailguard.milter.actions import (
    TEMPFAIL_REPLY,
    ReceivedMessage,
    allowed_replies,
    banner_body,
    header_edits,
    hold_reason,
    release_token_removal,
    reject_reply,
)
from mailguard.milter.engine import Engine, oversize_reply
from mailguard.milter.direction import apply_outbound
from mailguard.model import Action, Envelope, Verdict

log = logging.getLogger("mailguard.milter")

# What we ask the MTA to let us do. SETSYMLIST is not needed: Postfix sends the queue id
# ("i") at end of message by default (milter_end_of_data_macros).
# The milter's outcomes in the relay's words, so one log query and one metric cover both.
MILTER_RESULTS = {"accept": "delivered", "tag": "delivered", "hold": "held_by_mta", "quarantine": "quarantined",
                  "reject": "rejected", "tempfail": "tempfail"}
WANTED_ACTIONS = mp.SMFIF_ADDHDRS | mp.SMFIF_CHGHDRS | mp.SMFIF_CHGBODY | mp.SMFIF_QUARANTINE
# Steps we do not need: skipping them saves packets. Steps we only ever answer "continue"
# to are asked to need no reply: Postfix then sends the next one at once instead of waiting
# a round trip per header (a 15 KB message has 20-40), which is most of the milter's time
# per message. Body chunks too: Postfix's cleanup replays the message to milters only once
# it has all of it, so refusing an oversize one at a chunk instead of at end of message
# saves the sender nothing, and a reply per chunk cost a round trip (two wake-ups of each
# side) per message. A step that may one day refuse (connect, mail, rcpt) must drop its flag.
SKIPPED_STEPS = (
    mp.SMFIP_NOUNKNOWN | mp.SMFIP_NODATA
    | mp.SMFIP_NR_CONN | mp.SMFIP_NR_HELO | mp.SMFIP_NR_MAIL | mp.SMFIP_NR_RCPT | mp.SMFIP_NR_HDR | mp.SMFIP_NR_EOH
    | mp.SMFIP_NR_BODY
)
# Macros that describe the connection, kept across messages (others are per message).
CONTINUE = mp.reply(mp.SMFIR_CONTINUE)
CONNECTION_MACROS = frozenset(("j", "_", "client_addr", "client_name", "client_port", "daemon_name", "if_addr",
                               "if_name", "client_ptr", "client_connections", "tls_version", "cipher",
                               "cipher_bits", "cert_subject", "cert_issuer"))


# What one connection may make us keep besides the message itself (which max_message_size
# bounds). Postfix's macros for a connection and a message are a few hundred bytes (a TLS
# client certificate's subject and issuer the largest), and its smtpd_recipient_limit is
# 1000 recipients by default; without bounds anyone who can reach the milter's socket
# could send macros or RCPT packets with new names until the milter ran out of memory
# (300 MB from one connection in a test). Over either bound the connection is closed and
# the MTA applies milter_default_action (tempfail: the sender retries).
MAX_MACRO_BYTES = 1 << 16  # the names and values of the macros held at once
MAX_RECIPIENT_BYTES = 1 << 20  # the recipient addresses of one message (10,000 of 100 bytes)


TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _quick_ack_socket(transport: asyncio.BaseTransport) -> Any:
    """The connection's socket when it is TCP and the system has quick-ack mode, else None.

    We ask the MTA for no reply to most steps (SKIPPED_STEPS), so after sending a header
    or body packet Postfix has nothing to read back, and its next small write waits, by
    Nagle's rule, for the ACK of the last one; our kernel, with no reply to carry the ACK,
    delays it (up to 40 ms on Linux). Every message then waited about 40 ms at end of
    message: 48 ms a message through Postfix at one SMTP session, rspamd's milter the same,
    against 2 ms for Postfix alone. ACKing at once (TCP_QUICKACK, set again after each read
    since the kernel leaves quick-ack mode by itself) took it to 7-9 ms (bench/anchors.py,
    one_session_msg_per_s_median). Unix sockets have no such delay."""
    if TCP_QUICKACK is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


class CloseConnection(Exception):
    """The MTA said quit, or the connection must end."""


class Session(asyncio.Protocol):
    """One MTA connection: negotiated options, the SMTP session's facts, and the message
    being received.

    An ``asyncio.Protocol``, not streams and a task: Postfix opens one milter connection
    per SMTP session, so a stream reader, writer and task per connection, and a timeout
    context and two awaits per read, were a large part of the milter's CPU per message.
    Here every whole packet in what arrived is handled at once, synchronously, and the
    replies go out in one write; only end of message (the scan) runs as a task, with
    reading paused until it is answered. One timer per connection watches for idleness."""

    def __init__(self, engine: Engine, sessions: set["Session"] | None = None) -> None:
        self.engine = engine
        self.sessions = sessions  # the server's set of open connections (max_connections, shutdown)
        self.transport: asyncio.Transport | None = None
        self.protocol = 0
        self.actions = 0  # what the MTA allowed us to do (SMFIF_*)
        self.deciding = False  # between end of message and our answer: let it finish on shutdown
        self.decision: asyncio.Task[None] | None = None
        self.macros: dict[str, str] = {}
        self.client_address = self.helo = self.mail_from = ""
        self.rcpt_tos: list[str] = []
        self._rcpt_bytes = 0  # the length of the addresses in rcpt_tos (MAX_RECIPIENT_BYTES)
        self.message = ReceivedMessage()
        self.refused = False  # over max_message_size: ignore the rest of this message
        self._entry_id = ""  # the quarantine id of the message being decided, for its log line
        self._out: list[bytes] = []  # replies not yet written
        self._last_macros: bytes | None = None  # the last macro packet, already applied
        self._pending = bytearray()  # the start of a packet not yet whole
        self._needed = 0  # bytes _pending must reach before it is worth parsing again
        self._last_heard = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_paused = False
        self._quickack: Any = None  # the TCP socket to keep in quick-ack mode (see _quick_ack_socket)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.sessions is not None:
            if len(self.sessions) >= self.engine.settings.max_connections:
                log.warning("over max_connections (%d); connection closed, the MTA applies its default action",
                            self.engine.settings.max_connections)
                transport.abort()
                return
            self.sessions.add(self)
        self._loop = loop = asyncio.get_running_loop()
        self._quickack = _quick_ack_socket(transport)
        self._last_heard = loop.time()
        self._idle_timer = loop.call_at(self._last_heard + self.engine.settings.idle_timeout, self._idle)

    def data_received(self, data: bytes) -> None:
        if self._quickack is not None:
            try:
                self._quickack.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)  # the kernel clears it: again each read
            except OSError:
                self._quickack = None
        pending = self._pending
        if self.deciding:  # reading is paused, but a read may already be under way: keep it for later
            pending += data
            return
        if pending:
            pending += data
            if len(pending) < self._needed:
                # A large packet still arriving: parse it once it is all here. Only whole
                # packets count as heard, so a peer trickling a byte now and then cannot
                # keep one of max_connections for ever: a packet must be complete within
                # idle_timeout of its first bytes.
                return
            data = bytes(pending)
            pending.clear()
        self._last_heard = self._loop.time()
        self._handle(data)

    def eof_received(self) -> bool:
        if self._pending:
            log.warning("connection closed in the middle of a packet")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self.sessions is not None:
            self.sessions.discard(self)
        if exc is not None and self.decision is None:
            log.info("MTA connection lost")
        # a decision under way finishes (a store must not be cut short); its replies are dropped

    def pause_writing(self) -> None:  # the MTA is not reading: stop reading from it too
        self._write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume()

    # ------------------------------------------------------------------ packets

    def _handle(self, data: bytes) -> None:
        """Every whole packet in ``data``; the rest waits for more. End of message starts
        the decision and leaves what follows it for when the answer is out."""
        start, end = 0, len(data)
        try:
            while end - start >= 4:
                length = int.from_bytes(data[start: start + 4], "big")
                if length < 1 or length > mp.MAX_PACKET:
                    mp.packet_length(data[start: start + 4])  # raises with the reason
                stop = start + 4 + length
                if stop > end:
                    break
                command, packet = data[start + 4: start + 5], data[start + 5: stop]
                start = stop
                if command == mp.SMFIC_BODYEOB:
                    if packet and not self.refused:
                        self.message.add_body(packet)
                    self._decide_later(data[start:])
                    return
                self._dispatch(command, packet)
        except CloseConnection:
            self._close()
            return
        except mp.ProtocolError as exc:
            log.warning("milter protocol error, closing the connection: %s", exc)
            self._close()
            return
        except Exception:  # a bug here must cost one connection (the MTA tempfails), not the server
            log.exception("internal error; connection closed, the MTA applies milter_default_action")
            self._close()
            return
        finally:  # replies to what was handled go out even when the connection ends here
            if self._out:
                self._flush()
        if start < end:
            self._pending += data[start:]
            self._needed = 4 + int.from_bytes(data[start: start + 4], "big") if end - start >= 4 else 4

    def _close(self) -> None:
        if self._out:
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.deciding \
                and not self._write_paused:
            self.transport.resume_reading()

    def _idle(self) -> None:
        """No command from the MTA for idle_timeout: close (not while deciding: then the
        MTA is waiting for us)."""
        loop = self._loop
        assert loop is not None
        due = self._last_heard + self.engine.settings.idle_timeout
        if self.deciding or due > loop.time():
            self._idle_timer = loop.call_at(max(due, loop.time() + 1.0) if self.deciding else due, self._idle)
            return
        log.info("no command from the MTA for %.0f s, closing", self.engine.settings.idle_timeout)
        self._idle_timer = None
        self._close()

    def _decide_later(self, rest: bytes) -> None:
        """Run end of message as a task; reading waits until its answer is written, then
        ``rest`` (what the MTA sent after it, normally nothing) is handled."""
        self._pause()
        self.deciding = True
        assert self._loop is not None
        task = self._loop.create_task(self._end_of_message())
        self.decision = task

        def done(_: asyncio.Task[None]) -> None:
            self.decision = None
            if task.cancelled():
                self._close()
                return
            if task.exception() is not None:  # _end_of_message answers its own failures
                log.error("internal error at end of message: %r", task.exception())
                self._close()
                return
            self._last_heard = task.get_loop().time()
            self._resume()
            data = rest
            if self._pending:  # arrived while deciding, after ``rest``
                data = rest + bytes(self._pending)
                self._pending.clear()
            if data:
                self._handle(data)

        task.add_done_callback(done)

    def _send(self, *packets: bytes) -> None:
        """Queue replies; they go out together once the packets at hand are handled."""
        self._out.extend(packets)

    def _flush(self) -> None:
        if self.transport is not None:
            self.transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
        self._out.clear()

    def _continue(self, command: bytes) -> None:
        flag = mp.NO_REPLY_FLAG.get(command, 0)
        if not self.protocol & flag:
            self._send(CONTINUE)

    def _reset_message(self) -> None:
        """A new transaction starts (MAIL): forget the previous envelope and message. The
        macros stay: the MTA sends those of a stage just before the stage's command."""
        self.mail_from, self.rcpt_tos, self._rcpt_bytes = "", [], 0
        self.message, self.refused = ReceivedMessage(), False

    def _end_transaction(self) -> None:
        """After end of message or abort: also drop the per-message macros (queue id...)."""
        self._reset_message()
        for name in [n for n in self.macros if n not in CONNECTION_MACROS]:
            del self.macros[name]
        self._last_macros = None

    def _dispatch(self, command: bytes, data: bytes) -> None:
        if command == mp.SMFIC_MACRO:
            # Postfix sends the same end-of-header macros before every header: decoded once
            if data != self._last_macros:
                _, values = mp.decode_macros(data)
                self.macros.update(values)
                self._last_macros = data
                held = sum(len(name) + len(value) for name, value in self.macros.items())
                if held > MAX_MACRO_BYTES:
                    raise mp.ProtocolError(f"macros of {held} bytes, over the {MAX_MACRO_BYTES} a connection may hold")
        elif command == mp.SMFIC_HEADER:
            name, value = mp.decode_header_bytes(data)
            if not self.refused:
                self.message.add_field(name, value)
            self._after_content(command)
        elif command == mp.SMFIC_OPTNEG:
            self._negotiate(mp.decode_optneg(data))
        elif command == mp.SMFIC_CONNECT:
            info = mp.decode_connect(data)
            self.client_address = info.address
            self._continue(command)
        elif command == mp.SMFIC_HELO:
            self.helo = (mp.decode_strings(data, "helo") or [""])[0]
            self._continue(command)
        elif command == mp.SMFIC_MAIL:
            self._reset_message()
            self.mail_from = mp.envelope_address((mp.decode_strings(data, "mail") or [""])[0])
            self._continue(command)
        elif command == mp.SMFIC_RCPT:
            rcpt = mp.envelope_address((mp.decode_strings(data, "rcpt") or [""])[0])
            self._rcpt_bytes += len(rcpt)
            if self._rcpt_bytes > MAX_RECIPIENT_BYTES:
                raise mp.ProtocolError(f"recipients of over {MAX_RECIPIENT_BYTES} bytes for one message")
            self.rcpt_tos.append(rcpt)
            self._continue(command)
        elif command == mp.SMFIC_BODY:
            if not self.refused:
                self.message.add_body(data)
            self._after_content(command)
        elif command == mp.SMFIC_EOH:
            self._after_content(command)
        elif command == mp.SMFIC_DATA:
            self._continue(command)
        elif command == mp.SMFIC_UNKNOWN:
            mp.decode_strings(data, "unknown")  # checked for form; nothing to do with it
            self._continue(command)
        elif command == mp.SMFIC_ABORT:
            self._end_transaction()
        elif command == mp.SMFIC_QUIT:
            raise CloseConnection
        elif command == mp.SMFIC_QUIT_NC:
            self._end_transaction()
            self.macros.clear()
            self.client_address = self.helo = ""
        else:
            raise mp.ProtocolError(f"unknown command {command!r}")

    def _negotiate(self, offer: mp.OptNeg) -> None:
        if offer.version < 2:
            raise mp.ProtocolError(f"milter protocol version {offer.version} is too old")
        self.actions = WANTED_ACTIONS & offer.actions
        missing = WANTED_ACTIONS & ~self.actions
        if missing:
            log.warning("the MTA does not allow every change we make (missing actions 0x%x); those are left out",
                        missing)
        self.protocol = SKIPPED_STEPS & offer.protocol
        self._send(mp.OptNeg(min(offer.version, mp.VERSION), self.actions, self.protocol).encode())

    def _after_content(self, command: bytes) -> None:
        """Continue, or refuse a message over the size bound as soon as it is known."""
        if self.refused or self.message.size <= self.engine.settings.max_message_size:
            self._continue(command)
            return
        self.refused = True
        self.message = ReceivedMessage()  # free the memory now
        log.info("message over max_message_size refused%s", self._queue_id_text())
        if not self.protocol & mp.NO_REPLY_FLAG.get(command, 0):
            self._send(mp.reply_code(oversize_reply(self.engine.settings)))
        # else no reply is allowed here: the refusal goes out at end of message

    def _queue_id_text(self) -> str:
        return f" (queue id {self.macros['i']})" if self.macros.get("i") else ""

    async def _end_of_message(self) -> None:
        try:
            if self.refused or self.message.size > self.engine.settings.max_message_size:
                self._send(mp.reply_code(oversize_reply(self.engine.settings)))
                return
            await self._with_progress(self._decide())
        finally:
            if self._out:
                self._flush()
            self.deciding = False
            self._end_transaction()

    async def _with_progress(self, work: Awaitable[list[bytes]]) -> None:
        """Run ``work``, sending SMFIR_PROGRESS while it lasts and 451 if it overruns."""
        task = asyncio.ensure_future(work)
        settings = self.engine.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.scan_timeout
        try:
            while not task.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.error("scan took longer than %.0f s; answered 451%s", settings.scan_timeout,
                              self._queue_id_text())
                    self._send(mp.reply_code(TEMPFAIL_REPLY))
                    return
                done, _ = await asyncio.wait({task}, timeout=min(settings.progress_interval, remaining))
                if not done and loop.time() < deadline:
                    self._send(mp.reply(mp.SMFIR_PROGRESS))
                    self._flush()
        finally:
            if not task.done():
                task.cancel()  # the worker thread finishes on its own; its result is dropped
        try:
            replies = task.result()
        except Exception:
            log.exception("scan failed; answered 451%s", self._queue_id_text())
            replies = [mp.reply_code(TEMPFAIL_REPLY)]
        self._send(*replies)

    async def _decide(self) -> list[bytes]:
        """Scan, act, log one line, and return the replies for end of message."""
        engine, message = self.engine, self.message
        started = time.perf_counter()
        self._entry_id = ""
        scanner = engine.scanner  # one scanner for the whole message, even if a reload swaps it
        policy = scanner.config.section("policy")
        raw = message.raw()
        direction = engine.settings.direction.direction(self.macros, self.client_address)
        envelope = Envelope(self.mail_from, tuple(self.rcpt_tos), self.client_address, self.helo, direction)
        released = self._released(raw)
        if released:  # a release from our own quarantine: it passes once, the marker removed
            self._entry_id = released
            log.info("released message passed", extra={"fields": {"quarantine_id": released,
                                                                   "queue_id": self.macros.get("i", "")}})
            replies = allowed_replies(release_token_removal(message.headers), self.actions)
            return [*replies, mp.reply(mp.SMFIR_CONTINUE)]
        verdict: Verdict = await engine.scan(scanner, raw, envelope)
        if direction == "outbound" and not verdict.tempfail:
            verdict = apply_outbound(engine.outbound, verdict, envelope.rcpt_tos, engine.settings.outbound_tls_by_mta)
        replies: list[bytes]
        if verdict.tempfail:
            outcome, replies = "tempfail", [mp.reply_code(TEMPFAIL_REPLY)]
        elif verdict.action == Action.REJECT:
            outcome, replies = "reject", [mp.reply_code(reject_reply(verdict))]
        elif verdict.action == Action.QUARANTINE and engine.settings.quarantine == "store":
            held = await engine.run(stamp_authentication_results, apply_verdict(raw, verdict), verdict.auth,
                                    scanner.authserv_id, envelope.mail_from, envelope.helo)
            outcome, replies = await self._store(held, envelope, verdict)
        elif verdict.action == Action.QUARANTINE and not self.actions & mp.SMFIF_QUARANTINE:
            log.error("quarantine = \"hold\" but the MTA does not allow quarantine; answered 451")
            outcome, replies = "tempfail", [mp.reply_code(TEMPFAIL_REPLY)]
        else:
            replies = header_edits(verdict, message, policy["subject_tag"], scanner.authserv_id, envelope)
            if verdict.action == Action.QUARANTINE:
                outcome = "hold"
                replies.append(mp.quarantine(hold_reason(verdict)))
            else:
                outcome = str(verdict.action)
                if verdict.action == Action.TAG and policy["banner"] and self.actions & mp.SMFIF_CHGBODY:
                    body = await engine.run(banner_body, raw, verdict, engine.add_banner)
                    if body is not None:
                        replies.extend(mp.replace_body(body))
            replies = allowed_replies(replies, self.actions)
            replies.append(mp.reply(mp.SMFIR_CONTINUE))
        self._log(verdict, outcome, started)
        return replies

    def _released(self, raw: bytes) -> str:
        """The quarantine entry id when the message carries a valid release marker."""
        quarantine = self.engine.quarantine
        if quarantine is None:
            return ""
        for name, value in self.message.headers:
            if name.lower() == RELEASE_TOKEN_HEADER.lower():
                return released_entry(quarantine.keys, value, raw) or ""
        return ""

    async def _store(self, raw: bytes, envelope: Envelope, verdict: Verdict) -> tuple[str, list[bytes]]:
        """Discard only once the message is durably in the quarantine; otherwise 451."""
        try:
            # The queue id Postfix gives the sender ("queued as ..."), so the entry can be found by it.
            store = functools.partial(self.engine.quarantine.store, queue_id=self.macros.get("i", ""))
            entry_id = await self.engine.run(store, raw, envelope, verdict)
        except Exception as exc:
            log.error("quarantine store failed, answered 451 (the sender retries): %s", exc)
            return "tempfail", [mp.reply_code(TEMPFAIL_REPLY)]
        self._entry_id = entry_id
        return "quarantine", [mp.reply(mp.SMFIR_DISCARD)]

    def _log(self, verdict: Verdict, outcome: str, started: float) -> None:
        """The one line per message, with the relay's fields (``result`` in its words)."""
        fields = verdict_log_fields(
            verdict, self.engine.config.section("logging"), self.message.subject() or "",
            self.mail_from, tuple(self.rcpt_tos),
        )
        fields["queue_id"] = self.macros.get("i", "")
        fields["elapsed_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        fields["result"] = MILTER_RESULTS.get(outcome, outcome)
        fields["client"] = self.client_address
        fields["size"] = self.message.size
        if self._entry_id:
            fields["quarantine_id"] = self._entry_id
        log_message(log, "milter", fields)
