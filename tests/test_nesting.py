"""Evasion by nesting (issue 12): a phish wrapped in message/rfc822 once or twenty times
keeps its verdict, because attached messages are analysed like the outer one; deeper than
the limit (21 levels, 500 levels) the message is held with MIME_TOO_DEEP. A limit never
lowers a verdict."""
from __future__ import annotations

from typing import Any

import pytest

from mailguard.model import Action
from mailguard.scanner import Scanner
from test_relay_support import clean_message, phish_message, scanner  # noqa: F401 (fixture)


def wrap(raw: bytes, times: int) -> bytes:
    """Forward ``raw`` as an attachment ``times`` times, as a mail program does."""
    for n in range(times):
        raw = (f"From: Forwarder <fwd{n}@partner.example>\r\nTo: frontdesk@practice.example\r\n"
               f"Subject: Fwd {n}\r\nMessage-ID: <w{n}@partner.example>\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: multipart/mixed; boundary=\"w{n}\"\r\n\r\n--w{n}\r\nContent-Type: text/plain\r\n\r\n"
               f"See attached.\r\n--w{n}\r\nContent-Type: message/rfc822\r\n\r\n").encode() + raw + f"\r\n--w{n}--\r\n".encode()
    return raw


@pytest.mark.parametrize("levels", [1, 2, 20])
def test_wrapping_never_lowers_the_verdict(scanner: Scanner, levels: int) -> None:
    alone = scanner.scan(phish_message())
    wrapped = scanner.scan(wrap(phish_message(), levels))
    assert wrapped.action >= alone.action and wrapped.score >= alone.score
    assert {f.rule for f in alone.findings} <= {f.rule for f in wrapped.findings}
    assert "MIME_TOO_DEEP" not in {f.rule for f in wrapped.findings}
    inner = [f for f in wrapped.findings if f.rule == "LOOKALIKE_SENDER_DOMAIN"]
    assert inner and inner[0].summary.startswith("In an attached message:")


@pytest.mark.parametrize("levels", [21, 25, 500])
def test_past_the_nesting_limit_the_message_is_held(scanner: Scanner, levels: int) -> None:
    for inner in (phish_message(), clean_message()):
        verdict = scanner.scan(wrap(inner, levels))
        assert "MIME_TOO_DEEP" in {f.rule for f in verdict.findings}
        assert verdict.action == Action.QUARANTINE


def test_a_forwarded_clean_message_stays_clean(scanner: Scanner) -> None:
    verdict = scanner.scan(wrap(clean_message(), 3))
    assert verdict.action == Action.ACCEPT
