"""Parser differentials: one message, one reading, whatever the sender does to its bytes.

Each case is a message an attacker writes so that two readers disagree about what it is:
where the header block ends, which From or Subject counts, what a display name is. What is
asserted is what a person sees: the verdict and its findings, the headers written into the
message, the authentication result. The DKIM cases run against the loopback dnsmasq world
of ``auth_world.py``.
"""
from __future__ import annotations

from typing import Iterator

import dkim
import pytest

import mailguard
from mailguard import Action
from mailguard.auth import dkimcheck
from mailguard.config import Config
from mailguard.headers import apply_verdict, split_head_body
from mailguard.message import parse
from mailguard.model import Envelope

from auth_world import auth_config, dns_server, key, message
from dns_server import DnsServer

LURE = (b"Your account is locked. Sign in at https://paypa1-secure.example/login today to verify your "
        b"password, or it will be closed.\r\n")
PHISH_HEAD = b"From: PayPal <service@paypa1.com>\r\nTo: frontdesk@practice.example\r\nSubject: Account locked\r\n" \
             b"Message-ID: <1@paypa1.com>\r\n"


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


def rules(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings}


# ---------------------------------------------------------------------- the header block

# A line put in front of (or inside) the header block that Python's email parser does not
# take for a field: it used to end the headers there, and the From a mail program shows (it
# reads on to the blank line, as Postfix, dkimpy and our header edits do) became body text.
HOSTILE_PREFIXES = {
    "no colon": b"X-Campaign 1\r\n",
    "space before the colon": b"X-Campaign : 1\r\n",
    "NUL in a name": b"X-Camp\x00aign: 1\r\n",
    "8-bit name": b"X-Camp\xc3\xa4ign: 1\r\n",
    "lone CR blank line": b"X-Campaign: 1\r\r",
    "first line a continuation": b" folded: 1\r\n",
    "mbox line among the fields": b"X-Campaign: 1\r\nFrom someone Tue Dec  1 10:00:00 2026\r\n",
}


def test_a_well_formed_message_reads_as_before(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(PHISH_HEAD + b"\r\n" + LURE)
    assert verdict.action >= Action.QUARANTINE and "LOOKALIKE_SENDER_DOMAIN" in rules(verdict)
    assert not rules(verdict) & {"HEADER_MALFORMED", "HEADER_DUPLICATE"}
    assert parse(b"From x@y Tue Dec  1 2026\nFrom: a@b.example\nSubject: hi\n\nbody\n").problems == ()


@pytest.mark.parametrize("prefix", list(HOSTILE_PREFIXES.values()), ids=list(HOSTILE_PREFIXES))
def test_a_malformed_line_cannot_hide_the_from_from_the_analyzers(scanner: mailguard.Scanner, prefix: bytes) -> None:
    raw = prefix + PHISH_HEAD + b"\r\n" + LURE
    message = parse(raw)
    assert [a.address for a in message.from_] == ["service@paypa1.com"]
    assert message.subject == "Account locked" and "Sign in at" in message.text and "From:" not in message.text
    verdict = scanner.scan(raw)
    assert verdict.action >= Action.QUARANTINE
    assert {"LOOKALIKE_SENDER_DOMAIN", "HEADER_MALFORMED"} <= rules(verdict)
    # the verdict headers go on top of the same block the parser read; the body stays as sent
    out = apply_verdict(raw, verdict, "[SUSPICIOUS]")
    assert out.startswith(b"X-MailGuard-Action: quarantine\r\n") and out.endswith(b"\r\n\r\n" + LURE)


def test_from_with_white_space_before_the_colon_is_the_from(scanner: mailguard.Scanner) -> None:
    """RFC 5322 4.5 obsolete syntax, which mail programs still read: "From :" is the From."""
    raw = PHISH_HEAD.replace(b"From:", b"From :") + b"\r\n" + LURE
    verdict = scanner.scan(raw)
    assert verdict.action >= Action.QUARANTINE and {"LOOKALIKE_SENDER_DOMAIN", "HEADER_MALFORMED"} <= rules(verdict)


def test_no_blank_line_the_body_starts_where_the_parser_reads_it_and_is_written_so(
        scanner: mailguard.Scanner) -> None:
    raw = PHISH_HEAD + LURE  # no blank line: the first line that is not a field starts the body
    verdict = scanner.scan(raw)
    assert verdict.action >= Action.QUARANTINE and "HEADER_MALFORMED" in rules(verdict)
    assert "paypa1-secure.example" in {link.host for link in parse(raw).links}
    # the relay's output has the blank line there, so the next program reads the same split
    out = apply_verdict(raw, verdict, "[SUSPICIOUS]")
    head, sep, body = split_head_body(out)
    assert sep == b"\r\n" and body == LURE and b"Subject: [SUSPICIOUS] Account locked\r\n" in head
    again = parse(out)
    assert again.text == LURE.decode() and [a.address for a in again.from_] == ["service@paypa1.com"]


def test_an_lf_blank_line_in_crlf_mail_ends_the_headers_for_every_reader(scanner: mailguard.Scanner) -> None:
    raw = b"X-Campaign: 1\r\n\n" + PHISH_HEAD + b"\r\n" + LURE
    assert parse(raw).from_ == ()
    head, sep, _ = split_head_body(raw)
    assert (head, sep) == (b"X-Campaign: 1\r\n", b"\n")
    assert [name for name, _ in dkim.rfc822_parse(raw)[0]] == [b"X-Campaign"]
    assert scanner.scan(raw).action >= Action.TAG


# ---------------------------------------------------------------------- which field counts


def test_an_encoded_display_name_is_a_name_never_the_address(scanner: mailguard.Scanner) -> None:
    """``=?utf-8?q?PayPal_=3Cservice=40paypal.com=3E?=`` is what a mail program shows as the
    name of x@evil-mailer.top; decoded before splitting, it made paypal.com the sender."""
    raw = (b"From: =?utf-8?q?PayPal_=3Cservice=40paypal.com=3E?= <x@evil-mailer.top>\r\n"
           + PHISH_HEAD.split(b"\r\n", 1)[1] + b"\r\n" + LURE)
    message = parse(raw)
    assert [(a.display_name, a.address) for a in message.from_] == [("PayPal <service@paypal.com>",
                                                                      "x@evil-mailer.top")]
    verdict = scanner.scan(raw)
    assert verdict.action >= Action.QUARANTINE and "LOOKALIKE_DISPLAY_NAME_BRAND" in rules(verdict)
    assert "SENDER_FROM_SEVERAL_DOMAINS" not in rules(verdict)


def test_an_encoded_name_with_a_comma_is_one_address() -> None:
    message = parse(b"From: =?utf-8?q?M=C3=BCller=2C_Hans?= <hans@praxis.example>\r\nSubject: x\r\n\r\nhi\r\n")
    assert [(a.display_name, a.address) for a in message.from_] == [("Müller, Hans", "hans@praxis.example")]


def test_raw_8bit_text_beside_an_encoded_word_is_read_as_text() -> None:
    """An emoji sent raw (UTF-8) in front of an encoded name, and an en dash beside an
    encoded subject: the parts outside the encoded words came back from the stdlib as
    'raw-unicode-escape' bytes and were read as the text "\\udce2\\udc9c\\udc85..." (a
    sender name no person sees, and a "plain ASCII" subject that was not)."""
    message = parse("From: \"\u2705=?UTF-8?B?QmF1Y2gtV2VnIEV4cGVydGVu?=\" <a@shop.example>\r\n"
                    "Subject: Win \u2013 =?UTF-8?B?RW50ZXIgdG8gd2lu?=\r\n\r\nhi\r\n".encode())
    assert [(a.display_name, a.address) for a in message.from_] == [("\u2705Bauch-Weg Experten", "a@shop.example")]
    assert message.subject == "Win \u2013 Enter to win"


def test_duplicate_subject_and_content_type_are_reported(scanner: mailguard.Scanner) -> None:
    raw = (b"Subject: Urgent: wire the payment today\r\n" + PHISH_HEAD
           + b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\n" + LURE)
    verdict = scanner.scan(raw)
    duplicate = next(f for f in verdict.findings if f.rule == "HEADER_DUPLICATE")
    assert duplicate.details["fields"] == ["subject", "content-type"]


# ---------------------------------------------------------------------- authentication

OTHER_IP = "192.0.2.99"  # in no SPF record: DMARC rests on DKIM alone


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with dns_server() as server:
        yield server


@pytest.fixture(scope="module")
def auth_scanner(dns: DnsServer) -> mailguard.Scanner:
    return mailguard.Scanner(Config.from_dict(auth_config(dns.address)))


def smtp() -> Envelope:
    return Envelope("bounce@other.example", ("frontdesk@practice.example",), OTHER_IP, "mail.other.example")


def signed(raw: bytes, headers: tuple[bytes, ...] = (b"from", b"to", b"subject", b"date", b"message-id")) -> bytes:
    return dkim.sign(raw, b"sel", b"good.example", key("good").private_pem, include_headers=list(headers)) + raw


def test_the_genuine_signed_message_is_proven(auth_scanner: mailguard.Scanner) -> None:
    verdict = auth_scanner.scan(signed(message("Good Bank <alerts@good.example>")), smtp())
    assert [s.result for s in verdict.auth.dkim] == ["pass"] and verdict.auth.proven_domain == "good.example"


def test_an_unsigned_subject_added_above_a_signed_one_is_not_proven(auth_scanner: mailguard.Scanner) -> None:
    """A replayed real message with a second Subject on top: dkimpy verifies the signed one
    (the last), the reader and the analyzers read the first."""
    raw = b"Subject: Urgent: confirm your password today\r\n" + signed(message("Good Bank <alerts@good.example>"))
    verdict = auth_scanner.scan(raw, smtp())
    assert [s.result for s in verdict.auth.dkim] == ["policy"]
    assert verdict.auth.dmarc == "fail" and verdict.auth.proven_domain == ""
    assert "HEADER_DUPLICATE" in rules(verdict)


def test_two_from_fields_of_one_domain_are_never_proven(auth_scanner: mailguard.Scanner) -> None:
    """RFC 7489 6.6.1: a second From, even of the signed domain (a name and mailbox the
    sender chose, shown first), is handled strictly, never a DMARC pass."""
    genuine = signed(message("Good Bank <alerts@good.example>"), headers=(b"to", b"subject", b"date", b"from"))
    verdict = auth_scanner.scan(b"From: Good Bank Security <security-desk@good.example>\r\n" + genuine, smtp())
    assert verdict.auth.proven_domain == "" and verdict.auth.dmarc in ("fail", "permerror")


@pytest.mark.parametrize("prefix", [b"X-Campaign 1\r\n", b"X-Campaign: 1\r\rSubject: Pay now\r\n"],
                         ids=["no colon", "lone CR"])
def test_a_signature_over_a_malformed_header_block_proves_nothing(auth_scanner: mailguard.Scanner,
                                                                  prefix: bytes) -> None:
    verdict = auth_scanner.scan(prefix + signed(message("Good Bank <alerts@good.example>")), smtp())
    assert all(s.result != "pass" for s in verdict.auth.dkim)
    assert verdict.auth.proven_domain == "" and "HEADER_MALFORMED" in rules(verdict)


def test_body_hashing_is_bounded_per_message(auth_scanner: mailguard.Scanner,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each signature makes dkimpy hash the whole body again; past MAX_HASHED_BODY_BYTES the
    remaining signatures are "neutral" (not checked), never a failure or an error."""
    raw = message("Good Bank <alerts@good.example>", body="Your statement is ready.\r\n" * 4000)
    two = dkim.sign(raw, b"sel", b"good.example", key("good").private_pem, include_headers=[b"from"],
                    canonicalize=(b"relaxed", b"relaxed")) + signed(raw)
    monkeypatch.setattr(dkimcheck, "MAX_HASHED_BODY_BYTES", 150_000)  # the body is about 104,000 bytes
    verdict = auth_scanner.scan(two, smtp())
    assert [s.result for s in verdict.auth.dkim] == ["pass", "neutral"]
    assert verdict.auth.proven_domain == "good.example" and not verdict.errors and not verdict.tempfail
