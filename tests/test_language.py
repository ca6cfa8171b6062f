"""The language analyzer on written messages, scanned the way a front desk meets them:
each category with obfuscated variants that must still match, benign look-alikes that must
stay quiet, and the combination scoring that separates a lure from ordinary business."""
from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailguard import Config, Scanner
from mailguard.analyzers import analyzer_classes
from mailguard.analyzers.base import AnalyzerContext
from mailguard.analyzers.language import LanguageAnalyzer
from mailguard.message import parse


def language_only() -> Config:
    others = {name: {"enabled": False} for name in analyzer_classes() if name != "language"}
    return Config.from_dict(others)


@pytest.fixture(scope="module")
def analyzer() -> LanguageAnalyzer:
    config = language_only()
    return LanguageAnalyzer(config.section("language"), AnalyzerContext(config))


def mail(subject: str, body: str, html: str | None = None, reply: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Someone <someone@example.com>"
    msg["To"] = "frontdesk@example.org"
    msg["Subject"] = subject
    if reply:
        msg["In-Reply-To"] = "<earlier@example.org>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def rules(analyzer: LanguageAnalyzer, raw: bytes) -> dict[str, float]:
    return {f.rule: f.score for f in analyzer.analyze(parse(raw))}


def total(analyzer: LanguageAnalyzer, raw: bytes) -> float:
    return sum(rules(analyzer, raw).values())


def test_urgent_credential_lure_is_strong(analyzer: LanguageAnalyzer) -> None:
    raw = mail("Your account has been suspended",
               "We detected unusual sign-in activity. Verify your account within 24 hours "
               "or it will be closed. Click here to sign in.")
    found = rules(analyzer, raw)
    assert "LANGUAGE_ACCOUNT_THREAT" in found and "LANGUAGE_CREDENTIAL_REQUEST" in found
    assert sum(found.values()) >= 10


@pytest.mark.parametrize("body", [
    "Please v e r i f y  y o u r  account now.",
    "Please verify your acc0unt now.",
    "Please ver\u200bify your acc\u200dount now.",
    "Please verify your \u0430ccount now.",              # Cyrillic a
    "Please \uff56\uff45\uff52\uff49\uff46\uff59 your account now.",  # full-width
    "Please verify&#32;your&nbsp;account now.",
    "Please V-E-R-I-F-Y your account now.",
])
def test_obfuscated_credential_request_still_matches(analyzer: LanguageAnalyzer, body: str) -> None:
    assert "LANGUAGE_CREDENTIAL_REQUEST" in rules(analyzer, mail("Notice", body))


def test_urgent_alone_in_a_reply_is_quiet(analyzer: LanguageAnalyzer) -> None:
    raw = mail("Re: schedule", "Urgent: can we move Tuesday's 3pm to 4pm? Reply asap.", reply=True)
    assert total(analyzer, raw) < 5
