"""Faults and abuse: slow and stalled clients, too many connections, oversize messages,
SMTP smuggling, a saturated scanner, TLS rules. Real sockets on loopback throughout."""
from __future__ import annotations

import smtplib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.model import Finding
from mailguard.scanner import Scanner
from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    SENDER,
    RawClient,
    Sink,
    clean_message,
    wire,
    loop_thread,
    relay_config,
    scanner,
    sink,
    start_relay,
)


def open_transaction(client: RawClient) -> None:
    assert client.reply()[0] == 220
    assert client.command("EHLO client.test")[0] == 250
    assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert client.command(f"RCPT TO:<{RECIPIENT}>")[0] == 250
    assert client.command("DATA")[0] == 354


# ---------------------------------------------------------------- timeouts


def test_silent_client_is_disconnected(start_relay: Any) -> None:
    relay = start_relay({"command_timeout": 1.0})
    with RawClient(relay.host, relay.port) as client:
        assert client.reply()[0] == 220
        started = time.monotonic()
        assert client.closed_by_server()
        assert time.monotonic() - started < 10


def test_stalled_transfer_times_out_and_nothing_is_delivered(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"data_timeout": 1.0, "command_timeout": 30.0})
    with RawClient(relay.host, relay.port) as client:
        open_transaction(client)
        client.send(b"Subject: half a message\r\n\r\nand then nothing")
        assert client.closed_by_server()
    assert sink.handler.messages == []


def test_trickling_client_cannot_hold_a_transfer_open(start_relay: Any, sink: Sink) -> None:
    """A byte every 50 ms keeps any idle timer happy; the whole transfer is still bounded."""
    relay = start_relay({"data_timeout": 1.0, "command_timeout": 30.0})
    with RawClient(relay.host, relay.port) as client:
        open_transaction(client)
        started = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - started < 15:
                client.send(b"x")
                time.sleep(0.05)  # the client's pace, not synchronisation
        assert time.monotonic() - started < 10
    assert sink.handler.messages == []


# ---------------------------------------------------------------- limits


def test_connections_over_the_limit_are_refused_cleanly(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"max_connections": 2})
    first, second = RawClient(relay.host, relay.port), RawClient(relay.host, relay.port)
    try:
        assert first.reply()[0] == 220 and second.reply()[0] == 220
        with RawClient(relay.host, relay.port) as third:
            code, text = third.reply()
            assert code == 421 and "4.7.0" in text
            assert third.closed_by_server()
        assert first.command("QUIT")[0] == 221
        assert first.closed_by_server()
    finally:
        first.close()
        second.close()
    # A freed place is usable again (the limit counts live sessions, not history).
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.sendmail(SENDER, [RECIPIENT], clean_message())
    assert len(sink.handler.wait_for(1)) == 1


def test_oversize_is_refused(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"max_message_bytes": 4096})
    big = clean_message() + b"x" * 70 + b"\r\n"
    big = big + (b"y" * 70 + b"\r\n") * 100
    with smtplib.SMTP(relay.host, relay.port, timeout=20) as client:
        client.ehlo()
        assert client.has_extn("size") and client.esmtp_features["size"] == "4096"
        code, _ = client.mail(SENDER, ["SIZE=100000"])
        assert code == 552
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(RECIPIENT)[0] == 250
        code, _ = client.data(big)
        assert code == 552
    assert sink.handler.messages == []


# ---------------------------------------------------------------- SMTP smuggling


SMUGGLED = (
    b"MAIL FROM:<ceo@practice.example>\r\n"
    b"RCPT TO:<" + RECIPIENT.encode() + b">\r\n"
    b"DATA\r\n"
    b"From: ceo@practice.example\r\n"
    b"Subject: smuggled\r\n\r\n"
    b"Please wire the money.\r\n"
)


@pytest.mark.parametrize("dot_line", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"])
def test_smuggling_never_splits_a_message(start_relay: Any, sink: Sink, dot_line: bytes) -> None:
    relay = start_relay()
    with RawClient(relay.host, relay.port) as client:
        open_transaction(client)
        client.send(b"From: someone@partner.example\r\nSubject: first\r\n\r\nhello" + dot_line + SMUGGLED
                    + b"\r\n.\r\n")
        code, _ = client.reply()
        assert code == 250
        assert client.command("QUIT")[0] == 221
    received = sink.handler.wait_for(1)
    assert len(received) == 1  # one message downstream, the "second" is inside its body
    data = received[0].data
    assert b"Subject: first" in data and b"Please wire the money." in data
    assert data.replace(b"\r\n", b"") .count(b"\r") == 0 and data.replace(b"\r\n", b"").count(b"\n") == 0


def test_smuggling_rejected_when_configured(start_relay: Any, sink: Sink) -> None:
    relay = start_relay({"bare_line_endings": "reject"})
    with RawClient(relay.host, relay.port) as client:
        open_transaction(client)
        client.send(b"Subject: first\r\n\r\nhello\n.\n" + SMUGGLED + b"\r\n.\r\n")
        code, text = client.reply()
        assert code == 550 and "5.5.2" in text
        assert client.command("NOOP")[0] == 250  # the session is still in step: nothing was split
    assert sink.handler.messages == []


# ---------------------------------------------------------------- back-pressure


class _Blocking(Analyzer):
    """Holds every scan until the test releases it: a saturated scanner on demand."""

    name = "blocking"

    def __init__(self, settings: Any, context: Any, started: threading.Semaphore, release: threading.Event) -> None:
        super().__init__(settings, context)
        self.started, self.release = started, release

    def analyze(self, message: Any) -> list[Finding]:
        self.started.release()
        self.release.wait(30)
        return []


def test_saturated_scanner_answers_451_and_421(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    config = relay_config(tmp_path, sink.port)
    started, release = threading.Semaphore(0), threading.Event()
    blocking = Scanner(config, extra_analyzers=[_Blocking({}, AnalyzerContext(config), started, release)])
    relay = start_relay({"workers": 1, "queue_limit": 1}, scanner_override=blocking)
    first = RawClient(relay.host, relay.port)
    try:
        open_transaction(first)
        first.send(wire(clean_message(1)))
        assert started.acquire(timeout=20)  # the only slot is taken
        with RawClient(relay.host, relay.port) as refused:
            code, text = refused.reply()
            assert code == 421 and "4.3.2" in text
        release.set()
        assert first.reply()[0] == 250
    finally:
        release.set()
        first.close()
    assert len(sink.handler.wait_for(1)) == 1


def test_full_queue_at_end_of_data_is_451(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    config = relay_config(tmp_path, sink.port)
    started, release = threading.Semaphore(0), threading.Event()
    blocking = Scanner(config, extra_analyzers=[_Blocking({}, AnalyzerContext(config), started, release)])
    relay = start_relay({"workers": 1, "queue_limit": 1}, scanner_override=blocking)
    first, second = RawClient(relay.host, relay.port), RawClient(relay.host, relay.port)
    try:
        open_transaction(first)
        open_transaction(second)  # connected while there was room
        first.send(wire(clean_message(1)))
        assert started.acquire(timeout=20)
        second.send(wire(clean_message(2)))
        code, text = second.reply()
        assert code == 451 and "4.3.2" in text
        release.set()
        assert first.reply()[0] == 250
    finally:
        release.set()
        first.close()
        second.close()
    assert [b"Thursday 1" in m.data for m in sink.handler.wait_for(1)] == [True]


@pytest.mark.parametrize("body", [b"", b"Subject: headers only\r\n", b"no headers at all, just words\r\n",
                                  b"\x00\xff binary \x80 junk\r\n"])
def test_odd_messages_are_still_delivered(start_relay: Any, sink: Sink, body: bytes) -> None:
    relay = start_relay()
    with RawClient(relay.host, relay.port) as client:
        open_transaction(client)
        client.send(wire(body))
        assert client.reply()[0] == 250
    assert len(sink.handler.wait_for(1)) == 1


class _SlowOnMarker(_Blocking):
    """Blocks only the message whose subject says so: one slow message among quick ones."""

    name = "slow_on_marker"

    def analyze(self, message: Any) -> list[Finding]:
        if "SLOW" in (message.subject or ""):
            return super().analyze(message)
        return []


def test_one_slow_scan_does_not_stall_other_sessions(start_relay: Any, sink: Sink, tmp_path: Path) -> None:
    config = relay_config(tmp_path, sink.port)
    started, release = threading.Semaphore(0), threading.Event()
    slow = Scanner(config, extra_analyzers=[_SlowOnMarker({}, AnalyzerContext(config), started, release)])
    relay = start_relay({"workers": 2}, scanner_override=slow)
    first = RawClient(relay.host, relay.port)
    try:
        open_transaction(first)
        first.send(wire(clean_message(1).replace(b"Subject: ", b"Subject: SLOW ")))
        assert started.acquire(timeout=20)  # that message is stuck in its scan
        with smtplib.SMTP(relay.host, relay.port, timeout=20) as other:
            other.sendmail(SENDER, [RECIPIENT], clean_message(2))  # goes through meanwhile
        assert [b"Thursday 2" in m.data for m in sink.handler.wait_for(1)] == [True]
        release.set()
        assert first.reply()[0] == 250
    finally:
        release.set()
        first.close()
    assert len(sink.handler.wait_for(2)) == 2
