"""XFORWARD (Postfix's XFORWARD_README) in the relay: offered to and accepted from
trusted_networks only, so the per-message log line (and any sender check) sees the real
client behind the Postfix in front; a stranger cannot claim another address."""
from __future__ import annotations

import logging
import smtplib
from pathlib import Path
from typing import Any

from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    Sink,
    clean_message,
    loop_thread,
    scanner,
    sink,
    start_relay,
)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def converse(port: int, xforward: str) -> tuple[bool, tuple[int, bytes], Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("postfix.practice.example")
        offered = client.has_extn("xforward")
        answer = client.docmd("XFORWARD", xforward)
        refused = client.sendmail("sender@partner.example", [RECIPIENT], clean_message())
    return offered, answer, refused


def test_xforward_from_trusted_networks_sets_the_client(start_relay: Any, sink: Sink) -> None:
    logger = logging.getLogger("mailguard.relay")
    records = Records()
    logger.addHandler(records)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        runner = start_relay({"trusted_networks": ["127.0.0.0/8"]})
        offered, answer, refused = converse(runner.port, "ADDR=203.0.113.7 NAME=mail.partner.example "
                                                         "HELO=mail.partner.example PROTO=ESMTP")
        assert offered and answer[0] == 250 and not refused
        sink.handler.wait_for(1)
        untrusted = start_relay({"trusted_networks": []})
        offered, answer, refused = converse(untrusted.port, "ADDR=198.51.100.9")
        assert not offered and answer[0] == 550 and not refused
        sink.handler.wait_for(2)
    finally:
        logger.removeHandler(records)
        logger.setLevel(old)
    clients = [r.fields["client"] for r in records.records if r.getMessage() == "message"]  # type: ignore[attr-defined]
    assert clients == ["203.0.113.7", "127.0.0.1"]
