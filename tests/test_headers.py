"""Verdict headers: added, never forgeable, and nothing else in the message changes."""
from __future__ import annotations

from mailguard import Action, Finding, Verdict
from mailguard.headers import apply_verdict, strip_verdict_headers

RAW = (
    b"Received: from x by y\r\nX-MailGuard-Action: accept\r\nFrom: a@example.com\r\n"
    b"x-mailguard-score:\r\n -100\r\nSubject: Pay now\r\n\r\nBody line\r\nX-MailGuard-Action: body text stays\r\n"
)


def verdict(action: Action) -> Verdict:
    return Verdict(7.5, action, (Finding("t", "RULE_A", 7.5, "s"),), message_id="<m>")


def test_forged_headers_removed_body_untouched() -> None:
    out = strip_verdict_headers(RAW)
    assert b"X-MailGuard-Action: accept" not in out and b"-100" not in out
    assert out.endswith(b"\r\n\r\nBody line\r\nX-MailGuard-Action: body text stays\r\n")


def test_apply_verdict_adds_headers_tags_subject_keeps_line_endings() -> None:
    out = apply_verdict(RAW, verdict(Action.TAG), "[SUSPICIOUS]")
    head, body = out.split(b"\r\n\r\n", 1)
    head += b"\r\n"
    assert body == b"Body line\r\nX-MailGuard-Action: body text stays\r\n"
    assert b"X-MailGuard-Action: tag\r\n" in head
    assert b"X-MailGuard-Score: 7.5\r\n" in head
    assert b"X-MailGuard-Rules: RULE_A(7.5)\r\n" in head
    assert b"Subject: [SUSPICIOUS] Pay now\r\n" in head
    assert head.count(b"X-MailGuard-Action") == 1
    assert b"\n" not in head.replace(b"\r\n", b"")


def test_accepted_mail_is_byte_identical_apart_from_added_headers() -> None:
    clean = b"From: a@example.com\nSubject: Hello\n\nhi\n"
    out = apply_verdict(clean, verdict(Action.ACCEPT), "[SUSPICIOUS]")
    added, rest = out.split(b"From:", 1)
    assert b"From:" + rest == clean
    assert added.startswith(b"X-MailGuard-Action: accept\n")


def test_message_without_subject_or_body() -> None:
    out = apply_verdict(b"From: a@example.com", verdict(Action.TAG), "[SUSPICIOUS]")
    assert b"Subject: [SUSPICIOUS]" in out and out.startswith(b"X-MailGuard-Action: tag")


def test_long_verdict_headers_fold_as_email_header_folds_them() -> None:
    """The quick folder for ASCII values gives byte for byte what email.header gives."""
    import random
    from email.header import Header

    from mailguard.headers import fold_header

    rng = random.Random(16)
    words = ["spf=pass", "smtp.mailfrom=example.com;", "dkim=none", "LANGUAGE_BULK_PROMOTION(1.2),", "", ";", ",",
             "x" * 90, "header.from=example.org", "\t", "  ", "mx.practice.example;", "reason=\"no key\"", "é"]
    for _ in range(3000):
        name = rng.choice(["X-MailGuard-Rules", "Subject", "Authentication-Results", "X"])
        value = "".join(rng.choice(words) + rng.choice([" ", "  ", "\t", "", " \t "]) for _ in range(rng.randint(0, 25)))
        for eol in (b"\r\n", b"\n"):
            folded = Header(value, header_name=name, maxlinelen=78).encode(linesep=eol.decode())
            assert fold_header(name, value, eol) == f"{name}: {folded}".encode("ascii", "replace") + eol
