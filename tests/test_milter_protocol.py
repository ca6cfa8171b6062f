"""The milter protocol, driven over a real socket with hand-built packets.

The server runs in a background thread (as `mailguard milter` runs it); each test plays the
MTA: option negotiation, the SMTP session's commands, the message, and end of message,
and reads back exactly what a Postfix would get.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import pytest

from mailguard.milter import protocol as mp
from mailguard.analyzers import analyzer_classes
from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.config import Config
from mailguard.message import ParsedMessage
from mailguard.milter import Engine, MilterSettings
from mailguard.model import Action, Finding
from mailguard.scanner import Scanner
from dns_server import loopback_dns, loopback_dns_toml
from postfix_instance import MilterThread, wait_until

ALL_ACTIONS = 0x1FF
ALL_STEPS = 0x1FFFFF


class KeywordAnalyzer(Analyzer):
    """Deterministic findings from words in the subject, so each test picks its verdict."""

    name = "keyword"

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        subject = message.subject or ""
        if "BOOM" in subject:
            raise RuntimeError("analyzer failure on purpose")
        if "PHISH" in subject:
            yield self.finding("TEST_PHISH", 6.0, "Looks like a phish. More detail here")
        if "VIRUS" in subject:
            yield self.finding("TEST_VIRUS", 1.0, "Contains a test virus", min_action=Action.QUARANTINE)
        if "SLOW" in subject:
            time.sleep(0.6)
        if "STUCK" in subject:
            time.sleep(1.8)
        if any(text.rstrip().endswith("TAIL-MARKER") for text in message.text_parts):
            yield self.finding("TEST_TAIL", 6.0, "The last line of the body was seen")
        if "REFUSE" in subject:
            yield self.finding("TEST_REFUSE", 1.0, "Refused 100% for testing. Second sentence",
                               min_action=Action.REJECT)


def make_config(tmp_path: Path, **milter: object) -> Config:
    """Built-in analyzers off: only KeywordAnalyzer decides, so verdicts are exact."""
    return Config.from_dict({
        "milter": {"listen": "inet:127.0.0.1:0", **milter},
        "quarantine": {"path": str(tmp_path / "q"), "key_file": str(tmp_path / "q.key"), "release_host": "127.0.0.1:25"},
        **{name: {"enabled": False} for name in analyzer_classes()},
        "auth": {"enabled": False},  # no DNS here; tests/test_auth_*.py cover it with a loopback server
        "dns": loopback_dns(),
    })


def make_engine(config: Config) -> Engine:
    from mailguard.quarantine import open_quarantine

    settings = MilterSettings.from_config(config)
    quarantine = open_quarantine(config) if settings.quarantine == "store" else None
    return Engine(config, settings, Scanner(config, extra_analyzers=[KeywordAnalyzer({}, AnalyzerContext(config))]),
                  quarantine)


@pytest.fixture
def milter(tmp_path: Path) -> Iterator[MilterThread]:
    config = make_config(tmp_path, max_message_size=200_000)
    with MilterThread(config, make_engine(config)) as running:
        yield running


class MTA:
    """The MTA side: sends packets, reads replies."""

    def __init__(self, port: int | None = None, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port or 0), timeout=10)
        self.buffer = b""
        self.no_reply = 0  # the SMFIP_NR_* steps the milter asked to need no reply, as Postfix honours them

    def send(self, command: bytes, data: bytes = b"") -> None:
        self.sock.sendall(mp.encode_packet(command, data))

    def read(self) -> tuple[bytes, bytes]:
        while True:
            packets, rest = mp.split_packets(self.buffer)
            if packets:
                command, data = packets[0]
                self.buffer = self.buffer[5 + len(data):]
                return command, data
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("milter closed the connection")
            self.buffer += chunk

    def until_final(self) -> list[tuple[bytes, bytes]]:
        """Replies up to and including the final one of end of message."""
        out = []
        while True:
            command, data = self.read()
            out.append((command, data))
            if command in (mp.SMFIR_CONTINUE, mp.SMFIR_ACCEPT, mp.SMFIR_DISCARD, mp.SMFIR_REJECT,
                           mp.SMFIR_TEMPFAIL, mp.SMFIR_REPLYCODE):
                return out

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def negotiate(self, actions: int = ALL_ACTIONS, steps: int = ALL_STEPS) -> mp.OptNeg:
        self.send(mp.SMFIC_OPTNEG, struct.pack("!III", 6, actions, steps))
        command, data = self.read()
        assert command == mp.SMFIC_OPTNEG
        answer = mp.decode_optneg(data)
        self.no_reply = answer.protocol
        return answer

    def expect_continue(self, command: bytes, data: bytes = b"") -> None:
        self.send(command, data)
        if self.no_reply & mp.NO_REPLY_FLAG.get(command, 0):
            return
        assert self.read() == (mp.SMFIR_CONTINUE, b"")

    def envelope(self) -> None:
        self.send(mp.SMFIC_MACRO, b"C" + b"j\0mx.practice.example\0{daemon_name}\0smtpd\0")
        self.expect_continue(mp.SMFIC_CONNECT, b"client.example\x004" + struct.pack("!H", 40000) + b"192.0.2.7\0")
        self.expect_continue(mp.SMFIC_HELO, b"client.example\0")
        self.send(mp.SMFIC_MACRO, b"M" + b"i\0ABC123\0")
        self.expect_continue(mp.SMFIC_MAIL, b"<sender@example.org>\0SIZE=100\0")
        self.expect_continue(mp.SMFIC_RCPT, b"<frontdesk@practice.example>\0")

    def message(self, headers: list[tuple[str, str]], body: bytes, chunk: int = 65535) -> list[tuple[bytes, bytes]]:
        for name, value in headers:
            self.expect_continue(mp.SMFIC_HEADER, name.encode() + b"\0" + value.encode() + b"\0")
        self.expect_continue(mp.SMFIC_EOH)
        for i in range(0, len(body), chunk):
            self.expect_continue(mp.SMFIC_BODY, body[i: i + chunk])
        self.send(mp.SMFIC_MACRO, b"E" + b"i\0ABC123\0")
        self.send(mp.SMFIC_BODYEOB)
        return self.until_final()

    def close(self) -> None:
        self.sock.close()


def headers_for(subject: str) -> list[tuple[str, str]]:
    return [("From", "Sender <sender@example.org>"), ("To", "frontdesk@practice.example"),
            ("Subject", subject), ("Message-ID", "<m1@example.org>")]


def inserted(replies: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out = {}
    for command, data in replies:
        if command == mp.SMFIR_INSHEADER:
            name, value = data[4:-1].split(b"\0")
            out[name.decode()] = value.decode()
    return out


def one_message(tmp_path: Path, subject: str, actions: int = ALL_ACTIONS, **milter: object
                ) -> list[tuple[bytes, bytes]]:
    """The replies to one message, from a milter started with these [milter] settings."""
    config = make_config(tmp_path, **milter)
    with MilterThread(config, make_engine(config)) as running:
        mta = MTA(running.port)
        try:
            mta.negotiate(actions=actions)
            mta.envelope()
            return mta.message(headers_for(subject), b"payload\r\n")
        finally:
            mta.close()


@pytest.fixture
def mta(milter: MilterThread) -> Iterator[MTA]:
    client = MTA(milter.port)
    yield client
    client.close()


# ---------------------------------------------------------------------- codec


def test_packet_framing_round_trip() -> None:
    packet = mp.encode_packet(mp.SMFIC_HEADER, b"Subject\0hi\0")
    assert packet == b"\x00\x00\x00\x0cLSubject\0hi\0"
    assert mp.split_packets(packet + packet[:3]) == ([(b"L", b"Subject\0hi\0")], packet[:3])


def test_decoders_reject_malformed_arguments() -> None:
    with pytest.raises(mp.ProtocolError):
        mp.decode_optneg(b"\0\0\0\x06")
    with pytest.raises(mp.ProtocolError):
        mp.decode_header(b"Subject\0no terminator")
    with pytest.raises(mp.ProtocolError):
        mp.decode_connect(b"host\x00X")
    with pytest.raises(mp.ProtocolError):
        mp.packet_length(b"\0\0\0\0")
    assert mp.decode_connect(b"host\0U") == mp.Connect("host", "U", 0, "")
    assert mp.decode_macros(b"Mi\0Q1\0{mail_addr}\0a@b\0") == (b"M", {"i": "Q1", "mail_addr": "a@b"})


def test_reply_code_is_one_printable_line() -> None:
    packet = mp.reply_code("550 5.7.1 bad\r\nnews 100%")
    assert packet[4:5] == mp.SMFIR_REPLYCODE
    assert packet[5:] == b"550 5.7.1 bad news 100\0"
    with pytest.raises(ValueError):
        mp.reply_code("250 ok")


def test_replace_body_splits_into_chunks() -> None:
    packets = mp.replace_body(b"x" * (mp.CHUNK_SIZE * 2 + 10))
    assert [len(p) - 5 for p in packets] == [mp.CHUNK_SIZE, mp.CHUNK_SIZE, 10]


# ---------------------------------------------------------------------- server


def test_negotiation_asks_for_header_changes_and_skips_unneeded_steps(mta: MTA) -> None:
    answer = mta.negotiate()
    assert answer.version == 6
    assert answer.actions == mp.SMFIF_ADDHDRS | mp.SMFIF_CHGHDRS | mp.SMFIF_CHGBODY | mp.SMFIF_QUARANTINE
    assert answer.protocol == mp.SMFIP_NOUNKNOWN | mp.SMFIP_NODATA | (
        mp.SMFIP_NR_CONN | mp.SMFIP_NR_HELO | mp.SMFIP_NR_MAIL | mp.SMFIP_NR_RCPT | mp.SMFIP_NR_HDR | mp.SMFIP_NR_EOH
        | mp.SMFIP_NR_BODY
    )  # steps only ever answered "continue" need no reply: no round trip per header or body chunk


def test_negotiation_only_takes_what_the_mta_offers(mta: MTA) -> None:
    answer = mta.negotiate(actions=mp.SMFIF_ADDHDRS, steps=0)
    assert (answer.actions, answer.protocol) == (mp.SMFIF_ADDHDRS, 0)


def test_clean_message_gets_verdict_headers_and_continue(mta: MTA) -> None:
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("Appointment on Tuesday"), b"See you then.\r\n")
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"")
    assert inserted(replies) == {"X-MailGuard-Action": "accept", "X-MailGuard-Score": "0.0",
                                 "X-MailGuard-Rules": "none"}
    assert [struct.unpack("!I", d[:4])[0] for c, d in replies if c == mp.SMFIR_INSHEADER] == [0, 1, 2]
    assert not [c for c, _ in replies if c == mp.SMFIR_CHGHEADER]


def test_every_command_including_data_unknown_abort_and_quit_nc(mta: MTA) -> None:
    mta.negotiate(steps=0)  # nothing skipped: the MTA sends DATA and unknown commands too
    mta.envelope()
    mta.expect_continue(mp.SMFIC_UNKNOWN, b"XFOO bar\0")
    mta.expect_continue(mp.SMFIC_DATA)
    mta.expect_continue(mp.SMFIC_HEADER, b"Subject\0PHISH first\0")
    mta.send(mp.SMFIC_ABORT)  # no reply; the message is forgotten
    mta.expect_continue(mp.SMFIC_MAIL, b"<other@example.org>\0")
    mta.expect_continue(mp.SMFIC_RCPT, b"<frontdesk@practice.example>\0")
    replies = mta.message(headers_for("Second try"), b"hello\r\n")
    assert inserted(replies)["X-MailGuard-Action"] == "accept"
    mta.send(mp.SMFIC_QUIT_NC)  # a new SMTP session on the same connection
    mta.envelope()
    replies = mta.message(headers_for("Third"), b"hi\r\n")
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"")
    mta.send(mp.SMFIC_QUIT)
    assert mta.closed()


def test_macros_and_connect_without_reply_when_negotiated(mta: MTA) -> None:
    no_reply = mp.SMFIP_NR_CONN | mp.SMFIP_NR_HELO | mp.SMFIP_NR_MAIL | mp.SMFIP_NR_RCPT
    mta.negotiate(steps=no_reply)
    mta.send(mp.SMFIC_CONNECT, b"h\x004" + struct.pack("!H", 1) + b"192.0.2.1\0")
    mta.send(mp.SMFIC_HELO, b"h\0")
    mta.send(mp.SMFIC_MAIL, b"<a@example.org>\0")
    mta.send(mp.SMFIC_RCPT, b"<b@practice.example>\0")
    replies = mta.message(headers_for("hello"), b"x\r\n")  # the first reply seen is the header's
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def message_lines() -> Iterator[list[logging.LogRecord]]:
    """The milter's one-line-per-message records logged inside the block (filled at its end)."""
    logger = logging.getLogger("mailguard.milter")
    handler = Records()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    lines: list[logging.LogRecord] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        lines.extend(r for r in handler.records if r.getMessage() == "message")


def test_one_log_line_per_message_with_the_queue_id_and_no_content(mta: MTA) -> None:
    """The queue id comes with MAIL (Postfix's milter_mail_macros) and is kept to the end."""
    with message_lines() as lines:
        mta.negotiate()
        mta.send(mp.SMFIC_MACRO, b"M" + b"i\0QID42\0")
        mta.expect_continue(mp.SMFIC_MAIL, b"<sender@example.org>\0")
        mta.expect_continue(mp.SMFIC_RCPT, b"<frontdesk@practice.example>\0")
        for name, value in headers_for("PHISH Jane Example's lab results"):
            mta.expect_continue(mp.SMFIC_HEADER, name.encode() + b"\0" + value.encode() + b"\0")
        mta.expect_continue(mp.SMFIC_EOH)
        mta.expect_continue(mp.SMFIC_BODY, b"Diagnosis: confidential\r\n")
        mta.send(mp.SMFIC_BODYEOB)
        mta.until_final()
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["queue_id"] == "QID42" and fields["result"] == "delivered" and fields["action"] == "tag" and fields["rules"] == ["TEST_PHISH"]
    text = repr(fields)
    assert "Jane" not in text and "Diagnosis" not in text and "sender@example.org" not in text


def test_macros_repeated_by_the_mta_are_kept_for_every_message_on_a_connection(mta: MTA) -> None:
    """Postfix sends the same macros before each header; they are applied once, and the
    next message on the connection still gets its queue id when its macros are the same bytes."""
    with message_lines() as lines:
        mta.negotiate()
        for _ in range(2):
            mta.send(mp.SMFIC_MACRO, b"M" + b"i\0QID7\0")
            mta.expect_continue(mp.SMFIC_MAIL, b"<sender@example.org>\0")
            mta.expect_continue(mp.SMFIC_RCPT, b"<frontdesk@practice.example>\0")
            for name, value in headers_for("hello"):
                mta.send(mp.SMFIC_MACRO, b"L" + b"i\0QID7\0")
                mta.expect_continue(mp.SMFIC_HEADER, name.encode() + b"\0" + value.encode() + b"\0")
            mta.expect_continue(mp.SMFIC_EOH)
            mta.expect_continue(mp.SMFIC_BODY, b"hi\r\n")
            mta.send(mp.SMFIC_BODYEOB)
            assert mta.until_final()[-1] == (mp.SMFIR_CONTINUE, b"")
    assert [r.fields["queue_id"] for r in lines] == ["QID7", "QID7"]  # type: ignore[attr-defined]


def test_a_folded_header_reaches_the_scanner_with_crlf() -> None:
    from mailguard.milter.actions import ReceivedMessage

    message = ReceivedMessage()
    message.add_field(b"Subject", b"one\n two")  # Postfix sends a folded header's lines joined by LF
    message.add_field(b"From", b"a@example.org")
    message.add_body(b"body\r\n")
    assert message.raw() == b"Subject: one\r\n two\r\nFrom: a@example.org\r\n\r\nbody\r\n"
    assert message.headers == [("Subject", "one\n two"), ("From", "a@example.org")]
    assert message.subject() == "one\n two"


def test_phish_is_tagged_in_subject_and_headers(mta: MTA) -> None:
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("PHISH your password expires"), b"click\r\n")
    assert inserted(replies)["X-MailGuard-Action"] == "tag"
    assert "TEST_PHISH(6)" in inserted(replies)["X-MailGuard-Rules"]
    changes = [d for c, d in replies if c == mp.SMFIR_CHGHEADER]
    assert changes == [struct.pack("!I", 1) + b"Subject\0[SUSPICIOUS] PHISH your password expires\0"]
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"")


def test_forged_verdict_headers_are_deleted_by_index(mta: MTA) -> None:
    mta.negotiate()
    mta.envelope()
    headers = [("X-MailGuard-Action", "accept"), *headers_for("hi"), ("x-mailguard-action", "accept"),
               ("X-MailGuard-Score", "-100")]
    replies = mta.message(headers, b"body\r\n")
    deletions = [(struct.unpack("!I", d[:4])[0], d[4:]) for c, d in replies if c == mp.SMFIR_CHGHEADER]
    assert deletions == [(1, b"X-MailGuard-Score\0\0"), (2, b"x-mailguard-action\0\0"),
                         (1, b"X-MailGuard-Action\0\0")]


def test_reject_has_550_and_the_rule_never_the_summary(mta: MTA) -> None:
    """The reply reaches the sender's bounce and Postfix's mail log: the strongest rule id,
    as the relay answers, not the finding's summary, which may quote the message (before,
    "...: Refused 100 for testing"; an attachment named after a patient would be quoted)."""
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("REFUSE"), b"x\r\n")
    assert replies == [(mp.SMFIR_REPLYCODE, b"550 5.7.1 Message refused as dangerous (TEST_REFUSE)\0")]


def test_quarantine_store_keeps_the_message_then_discards(tmp_path: Path, mta: MTA, milter: MilterThread) -> None:
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("VIRUS inside"), b"payload\r\n")
    assert replies == [(mp.SMFIR_DISCARD, b"")]
    entries = list(milter.engine.quarantine.list())
    assert len(entries) == 1 and entries[0].rules == ("TEST_VIRUS",)


def test_quarantine_store_failure_is_tempfail(tmp_path: Path, mta: MTA, milter: MilterThread) -> None:
    milter.engine.quarantine.close()  # a broken database: storing fails
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("VIRUS inside"), b"payload\r\n")
    assert replies[-1][0] == mp.SMFIR_REPLYCODE and replies[-1][1].startswith(b"451 4.7.1 ")


def test_quarantine_hold_uses_the_mta_hold_queue(tmp_path: Path) -> None:
    replies = one_message(tmp_path, "VIRUS inside", quarantine="hold")
    commands = [c for c, _ in replies]
    assert mp.SMFIR_QUARANTINE in commands and replies[-1] == (mp.SMFIR_CONTINUE, b"")
    reason = dict(replies)[mp.SMFIR_QUARANTINE]
    assert reason.startswith(b"mailguard score") and b"TEST_VIRUS" in reason
    assert inserted(replies)["X-MailGuard-Action"] == "quarantine"


def test_analyzer_failure_is_tempfail(mta: MTA) -> None:
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("BOOM"), b"x\r\n")
    assert replies == [(mp.SMFIR_REPLYCODE, b"451 4.7.1 The message could not be checked right now; "
                                            b"please try again later\0")]


@pytest.mark.parametrize("chunk", [65535, 150_000])  # libmilter's size; a larger negotiated one
def test_body_larger_than_one_packet_is_scanned_whole(mta: MTA, chunk: int) -> None:
    mta.negotiate()
    mta.envelope()
    body = (b"line of text\r\n" * 12000) + b"TAIL-MARKER\r\n"
    assert len(body) > 2 * 65535
    replies = mta.message(headers_for("big one"), body, chunk=chunk)
    assert "TEST_TAIL(6)" in inserted(replies)["X-MailGuard-Rules"]


def test_oversize_message_is_refused_at_end_of_message_when_body_chunks_need_no_reply(mta: MTA) -> None:
    mta.negotiate()
    mta.envelope()
    replies = mta.message(headers_for("large"), b"x" * (4 * 65535))
    assert replies == [(mp.SMFIR_REPLYCODE, b"552 5.3.4 Message too big to be checked (limit 200000 bytes)\0")]


def test_oversize_message_is_refused_at_once_when_body_chunks_need_a_reply(mta: MTA) -> None:
    mta.negotiate(steps=ALL_STEPS & ~mp.SMFIP_NR_BODY)
    mta.envelope()
    for name, value in headers_for("large"):
        mta.expect_continue(mp.SMFIC_HEADER, name.encode() + b"\0" + value.encode() + b"\0")
    mta.expect_continue(mp.SMFIC_EOH)
    for _ in range(3):
        mta.expect_continue(mp.SMFIC_BODY, b"x" * 65535)
    mta.send(mp.SMFIC_BODY, b"x" * 65535)
    assert mta.read() == (mp.SMFIR_REPLYCODE, b"552 5.3.4 Message too big to be checked (limit 200000 bytes)\0")


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x00",                       # no command byte
    b"\xff\xff\xff\xff",                       # absurd length
    mp.encode_packet(b"Z", b"what"),           # unknown command
    mp.encode_packet(mp.SMFIC_HEADER, b"Subject\0no end"),  # unterminated string
    mp.encode_packet(mp.SMFIC_OPTNEG, b"\0\0"),  # short negotiation
    b"\x00\x00\x01\x00L" + b"short",           # truncated: connection ends mid-packet
])
def test_malformed_packets_close_only_that_connection(milter: MilterThread, garbage: bytes) -> None:
    bad = MTA(milter.port)
    good = MTA(milter.port)
    good.negotiate()
    bad.sock.sendall(garbage)
    if garbage.startswith(b"\x00\x00\x01\x00"):
        bad.sock.shutdown(socket.SHUT_WR)
    assert bad.closed()
    good.envelope()
    assert good.message(headers_for("still served"), b"x\r\n")[-1] == (mp.SMFIR_CONTINUE, b"")
    fresh = MTA(milter.port)
    assert fresh.negotiate().version == 6
    for client in (bad, good, fresh):
        client.close()



def _macro_packet(stage: bytes, first: int, count: int, size: int = 1000) -> bytes:
    return stage + b"".join(b"name%d\0" % n + b"v" * size + b"\0" for n in range(first, first + count))


@pytest.mark.parametrize("flood", ["macros", "recipients"])
def test_a_flood_of_macros_or_recipients_closes_that_connection(milter: MilterThread, flood: str) -> None:
    """Each packet is under MAX_PACKET, but a connection may not make the milter keep more
    than MAX_MACRO_BYTES of macros or MAX_RECIPIENT_BYTES of recipients: the flooding one
    is closed (its MTA would apply milter_default_action), the others are served."""
    from mailguard.milter.session import MAX_MACRO_BYTES, MAX_RECIPIENT_BYTES

    bad, good = MTA(milter.port), MTA(milter.port)
    good.negotiate()
    bad.negotiate()
    if flood == "macros":
        # new names in packets of ~1 KB each: only their total is over the bound
        for first in range(0, MAX_MACRO_BYTES // 1000 + 2, 8):
            bad.send(mp.SMFIC_MACRO, _macro_packet(b"C", first, 8))
    else:
        bad.envelope()
        address = b"<" + b"r" * 1000 + b"@practice.example>\0"
        with contextlib.suppress(ConnectionError):  # the milter may close while we still send
            for _ in range(MAX_RECIPIENT_BYTES // 1000 + 2):
                bad.send(mp.SMFIC_RCPT, address)
    assert bad.closed()
    good.envelope()
    assert good.message(headers_for("still served"), b"x\r\n")[-1] == (mp.SMFIR_CONTINUE, b"")
    for client in (bad, good):
        client.close()


def test_macros_under_the_bound_are_kept_and_per_message_ones_do_not_pile_up(milter: MilterThread) -> None:
    """A connection carrying many messages, each with its own large per-message macros,
    stays open: what a message's macros held is let go at its end."""
    mta = MTA(milter.port)
    mta.negotiate()
    for _ in range(3):
        mta.envelope()
        mta.send(mp.SMFIC_MACRO, _macro_packet(b"R", 0, 40))  # 40 KB, under MAX_MACRO_BYTES
        assert mta.message(headers_for("many macros"), b"x\r\n")[-1] == (mp.SMFIR_CONTINUE, b"")
    mta.close()

def test_quarantine_hold_needs_the_mta_permission_else_tempfail(tmp_path: Path) -> None:
    replies = one_message(tmp_path, "VIRUS inside", actions=mp.SMFIF_ADDHDRS | mp.SMFIF_CHGHDRS, quarantine="hold")
    assert replies[-1][0] == mp.SMFIR_REPLYCODE and replies[-1][1].startswith(b"451 4.7.1")


def test_only_changes_the_mta_allowed_are_sent(tmp_path: Path) -> None:
    replies = one_message(tmp_path, "PHISH", actions=mp.SMFIF_CHGHDRS)
    assert [c for c, _ in replies] == [mp.SMFIR_CHGHEADER, mp.SMFIR_CONTINUE]


def test_stopping_does_not_wait_for_idle_connections(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    running = MilterThread(config, make_engine(config)).start()
    mta = MTA(running.port)
    mta.negotiate()
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 1.5
    assert mta.closed()
    mta.close()


def test_progress_is_sent_while_a_slow_scan_runs(tmp_path: Path) -> None:
    replies = one_message(tmp_path, "SLOW but fine", progress_interval=0.1)
    assert replies.count((mp.SMFIR_PROGRESS, b"")) >= 2
    assert replies[-1] == (mp.SMFIR_CONTINUE, b"")


def test_scan_over_its_time_limit_is_tempfail(tmp_path: Path) -> None:
    config = make_config(tmp_path, scan_timeout=1.0, progress_interval=0.3)
    with MilterThread(config, make_engine(config)) as running:
        mta = MTA(running.port)
        mta.negotiate()
        mta.envelope()
        started = time.monotonic()
        replies = mta.message(headers_for("STUCK"), b"x\r\n")
        took = time.monotonic() - started
        # the connection goes on serving the next message
        mta.expect_continue(mp.SMFIC_MAIL, b"<a@example.org>\0")
        mta.close()
    assert replies[-1][0] == mp.SMFIR_REPLYCODE and replies[-1][1].startswith(b"451 4.7.1")
    assert (mp.SMFIR_PROGRESS, b"") in replies
    assert 0.9 < took < 1.7


def test_connections_over_the_limit_are_closed_at_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_connections=1)
    with MilterThread(config, make_engine(config)) as running:
        first = MTA(running.port)
        first.negotiate()
        second = MTA(running.port)
        assert second.closed()
        first.close()
        second.close()

        def third_served() -> bool:
            third = MTA(running.port)
            try:
                return third.negotiate().version == 6
            except (EOFError, ConnectionError):
                return False
            finally:
                third.close()

        wait_until(third_served, 5, "a free connection slot")


def test_idle_connection_is_closed_after_idle_timeout(tmp_path: Path) -> None:
    config = make_config(tmp_path, idle_timeout=1.0)
    with MilterThread(config, make_engine(config)) as running:
        mta = MTA(running.port)
        mta.negotiate()
        started = time.monotonic()
        assert mta.closed()
        assert 0.9 < time.monotonic() - started < 3
        mta.close()


def test_a_packet_trickled_a_byte_at_a_time_is_bounded_by_idle_timeout(tmp_path: Path) -> None:
    """A byte every 200 ms would keep a per-read idle timer happy for ever, and with
    max_connections such peers could take every slot: only whole packets count as heard."""
    config = make_config(tmp_path, idle_timeout=1.0)
    with MilterThread(config, make_engine(config)) as running:
        mta = MTA(running.port)
        mta.negotiate()
        mta.sock.sendall(struct.pack("!I", 1000) + mp.SMFIC_HEADER)  # a header packet that never ends
        started = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - started < 15:
                mta.sock.sendall(b"x")
                time.sleep(0.2)  # the peer's pace, not synchronisation
        assert time.monotonic() - started < 5
        mta.close()


def test_example_configuration_is_valid() -> None:
    from mailguard.config import load_config

    example = Path(__file__).resolve().parent.parent / "examples" / "postfix-milter" / "mailguard.toml"
    settings = MilterSettings.from_config(load_config(example))
    assert str(settings.listen) == "inet:127.0.0.1:8894"


def test_listen_spellings() -> None:
    from mailguard.milter import Listen

    assert Listen.parse("inet:127.0.0.1:8894") == Listen("inet", host="127.0.0.1", port=8894)
    assert Listen.parse("inet:8894@127.0.0.1") == Listen("inet", host="127.0.0.1", port=8894)
    assert Listen.parse("inet6:[::1]:8894") == Listen("inet", host="::1", port=8894)
    assert Listen.parse("unix:/run/mailguard/milter.sock") == Listen("unix", path="/run/mailguard/milter.sock")


def test_bad_listen_setting_is_a_config_error(tmp_path: Path) -> None:
    from mailguard.config import ConfigError

    for bad in ("tcp:1.2.3.4:5", "inet:localhost", "inet:host:99999", "unix:"):
        with pytest.raises(ConfigError, match="listen"):
            MilterSettings.from_config(make_config(tmp_path, listen=bad))
    with pytest.raises(ConfigError, match="socket_mode"):
        MilterSettings.from_config(make_config(tmp_path, socket_mode="rw-rw----"))


# ---------------------------------------------------------------------- the command


def test_mailguard_milter_command_on_a_unix_socket(tmp_path: Path) -> None:
    """`mailguard milter --config F`: binds the socket with its mode, scans, logs one line
    without the body, reloads on SIGHUP, and stops cleanly on SIGTERM."""
    sock_path = tmp_path / "milter.sock"
    config_file = tmp_path / "mailguard.toml"
    log_file = tmp_path / "mailguard.log"
    config_file.write_text(
        "[milter]\n"
        f'listen = "unix:{sock_path}"\n'
        'socket_mode = "0600"\n'
        "[logging]\n"
        f'file = "{log_file}"\n'
        "[quarantine]\n"
        f'path = "{tmp_path / "q"}"\n'
        f'key_file = "{tmp_path / "q.key"}"\n'
        'release_host = "127.0.0.1:25"\n'
        + loopback_dns_toml()
    )
    proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli", "milter", "--config", str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: sock_path.exists() or proc.poll() is not None, 30, "the milter socket")
        assert proc.poll() is None, proc.communicate()[1]
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        client.connect(str(sock_path))
        mta = MTA(sock=client)
        mta.negotiate()
        mta.envelope()
        replies = mta.message(headers_for("Appointment"), b"Patient Jane Example, DOB 1970\r\n")
        action = inserted(replies)["X-MailGuard-Action"]  # real analyzers: whatever they say
        mta.send(mp.SMFIC_QUIT)
        mta.close()
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in log_file.read_text(), 30, "the reload")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert not sock_path.exists()
    log = log_file.read_text()
    assert " message " in log and 'queue_id="ABC123"' in log and f'action="{action}"' in log
    assert "Patient" not in log and "Appointment" not in log and "sender@example.org" not in log


def test_mailguard_milter_command_reports_a_bad_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "mailguard.toml"
    config_file.write_text('[milter]\nlisten = "nowhere"\n')
    result = subprocess.run([sys.executable, "-m", "mailguard.cli", "milter", "--config", str(config_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "listen" in result.stderr


def _milter_on(tmp_path: Path, sock_path: Path) -> subprocess.Popen[str]:
    config_file = tmp_path / "mailguard.toml"
    config_file.write_text(f'[milter]\nlisten = "unix:{sock_path}"\nquarantine = "hold"\n' + loopback_dns_toml())
    return subprocess.Popen([sys.executable, "-m", "mailguard.cli", "milter", "--config", str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_milter_does_not_take_over_a_socket_another_process_answers_on(tmp_path: Path) -> None:
    """A second milter started by mistake must not unlink the first one's socket and take
    its connections; it says so and exits 2. The running one keeps the socket."""
    sock_path = tmp_path / "milter.sock"
    running = socket.socket(socket.AF_UNIX)
    running.bind(str(sock_path))
    running.listen()
    try:
        proc = _milter_on(tmp_path, sock_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        assert f"already listening on {sock_path}" in err and "stop it first" in err
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(sock_path))  # still the first one's
        client.close()
    finally:
        running.close()


def test_the_milter_leaves_a_file_that_is_not_a_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    path.write_text("someone's data\n")
    proc = _milter_on(tmp_path, path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"{path} exists and is not a socket" in err
    assert path.read_text() == "someone's data\n"


def test_the_milter_names_a_missing_socket_folder(tmp_path: Path) -> None:
    proc = _milter_on(tmp_path, tmp_path / "missing" / "milter.sock")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"{tmp_path / 'missing'}: no such file or folder" in err and "create the folder" in err
    assert not (tmp_path / "missing").exists()


def test_the_milter_replaces_a_stale_socket_and_removes_its_own_on_stop(tmp_path: Path) -> None:
    """A socket left by a milter that was killed answers nobody: it is replaced."""
    sock_path = tmp_path / "milter.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens
    proc = _milter_on(tmp_path, sock_path)
    try:
        def answers() -> bool:
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(sock_path))
                return True
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                return False
            finally:
                probe.close()

        wait_until(answers, 60, "the milter on the replaced socket")
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660  # socket_mode's default
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    proc.send_signal(signal.SIGTERM)  # as systemd stops it: the socket goes with it
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not sock_path.exists()
