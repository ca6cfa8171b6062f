"""The warning banner: it is where staff read, says why in plain words, and leaves every
other byte of the message (headers, other parts, boundaries) as it was."""
from __future__ import annotations

import base64
import email
import quopri
from email.message import Message
from email.policy import default as default_policy

from mailguard.banner import add_banner, banner_reasons
from mailguard.headers import split_head_body
from mailguard.model import Action, Finding, Verdict

WHY = "Sender domain paypa1.com imitates paypal.com"
VERDICT = Verdict(
    score=12.0,
    action=Action.TAG,
    findings=(
        Finding("lookalike", "LOOKALIKE_SENDER_DOMAIN", 9.0, WHY),
        Finding("language", "LANGUAGE_URGENCY", 3.0, "Pressure to act now: 'pay today to avoid suspension'"),
        Finding("lookalike", "LOOKALIKE_NOTE", 0.0, "a neutral observation"),
    ),
)


def structure(raw: bytes) -> list[str]:
    return [part.get_content_type() for part in email.message_from_bytes(raw).walk()]


def part_text(raw: bytes, ctype: str) -> str:
    message = email.message_from_bytes(raw, policy=default_policy)
    for part in message.walk():
        if part.get_content_type() == ctype and not part.is_multipart():
            content = part.get_content()
            return content if isinstance(content, str) else content.decode()
    raise AssertionError(f"no {ctype} part")


def alternative(plain: bytes, html: bytes, plain_headers: bytes = b"", html_headers: bytes = b"",
                eol: bytes = b"\r\n") -> bytes:
    lines = [
        b"From: billing@paypa1.com", b"To: frontdesk@practice.example", b"Subject: Invoice",
        b"MIME-Version: 1.0", b"Content-Type: multipart/mixed; boundary=\"mixed\"", b"",
        b"This is a preamble.", b"--mixed",
        b"Content-Type: multipart/alternative; boundary=\"alt\"", b"",
        b"--alt", b"Content-Type: text/plain; charset=utf-8" + plain_headers, b"", plain,
        b"--alt", b"Content-Type: text/html; charset=utf-8" + html_headers, b"", html,
        b"--alt--", b"",
        b"--mixed",
        b"Content-Type: text/plain; name=\"notes.txt\"", b"Content-Disposition: attachment; filename=\"notes.txt\"",
        b"", b"attached notes stay as they are",
        b"--mixed",
        b"Content-Type: message/rfc822", b"",
        b"Subject: forwarded", b"Content-Type: text/plain", b"", b"an attached message stays as it is",
        b"--mixed--", b"epilogue", b"",
    ]
    return eol.join(lines)


def test_plain_single_part_gets_the_reasons_at_the_top() -> None:
    raw = b"From: a@b.example\r\nSubject: Pay now\r\n\r\nPlease pay the attached invoice.\r\n"
    out = add_banner(raw, VERDICT)
    head, _, body = split_head_body(out)
    assert head == b"From: a@b.example\r\nSubject: Pay now\r\n"
    assert body.startswith(b"CAUTION: this message may be a scam")
    assert WHY.encode() in body and b"pay today to avoid suspension" in body
    assert b"neutral observation" not in body  # zero-score notes are not reasons
    assert body.endswith(b"\r\n\r\nPlease pay the attached invoice.\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")  # the message's own line ending


def test_alternative_both_halves_and_nothing_else() -> None:
    raw = alternative(b"Pay today.", b"<html><head><title>x</title></head><body class=\"m\"><p>Pay today.</p></body></html>")
    out = add_banner(raw, VERDICT)
    assert structure(out) == structure(raw)
    plain = part_text(out, "text/plain")
    assert plain.startswith("CAUTION") and plain.rstrip().endswith("Pay today.")
    html = part_text(out, "text/html")
    assert html.index("<body class=\"m\">") < html.index("CAUTION") < html.index("<p>Pay today.</p>")
    assert "<title>x</title>" in html
    # Preamble, boundaries, the text attachment, the attached message and the epilogue: identical.
    for piece in (b"This is a preamble.\r\n--mixed\r\n", b"attached notes stay as they are\r\n--mixed\r\n",
                  b"an attached message stays as it is\r\n--mixed--\r\nepilogue\r\n", b"\r\n--alt--\r\n"):
        assert piece in out
    assert out.count(b"CAUTION: this message") == 2


def test_base64_and_quoted_printable_parts_are_re_encoded() -> None:
    html = "<html><body><p>Gr\u00fc\u00dfe \u2013 bitte zahlen</p></body></html>".encode()
    b64 = base64.encodebytes(html).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    plain = "Gr\u00fc\u00dfe = bitte zahlen, a long line " + "x" * 90
    qp = quopri.encodestring(plain.encode()).replace(b"\n", b"\r\n")
    raw = alternative(qp, b64, b"\r\nContent-Transfer-Encoding: quoted-printable",
                      b"\r\nContent-Transfer-Encoding: base64")
    out = add_banner(raw, VERDICT)
    assert structure(out) == structure(raw)
    assert part_text(out, "text/plain").endswith(plain)
    assert part_text(out, "text/plain").startswith("CAUTION")
    new_html = part_text(out, "text/html")
    assert new_html.startswith("<html><body><div") and "Gr\u00fc\u00dfe \u2013 bitte zahlen" in new_html
    assert all(len(line) <= 76 for line in out.split(b"\r\n"))
    assert out.count(b"Content-Transfer-Encoding: base64") == 1


def test_summaries_in_html_are_escaped_and_non_ascii_degrades_in_7bit() -> None:
    tricky = Verdict(5.0, Action.TAG, (Finding("lookalike", "X", 5.0, "Link <script>alert(1)</script> to p\u0430ypal.com"),))
    raw = alternative(b"plain words", b"<p>hi</p>")
    raw = raw.replace(b"charset=utf-8", b"charset=us-ascii")
    out = add_banner(raw, tricky)
    html_part = out[out.index(b"Content-Type: text/html"):out.index(b"--alt--")]
    assert b"<script>" not in html_part and b"&lt;script&gt;" in html_part
    assert b"p&#1072;ypal.com" in out  # HTML: a character reference, still 7-bit
    assert b"p?ypal.com" in out  # plain 7-bit: the lookalike letter shows as '?'
    assert max(out) < 128


def test_8bit_latin1_part_keeps_its_charset() -> None:
    verdict = Verdict(5.0, Action.TAG, (Finding("language", "X", 5.0, "Demande urgente de paiement \u00e0 r\u00e9gler"),))
    raw = (b"Subject: x\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n"
           b"Merci d'avance, Ren\xe9e\n")
    out = add_banner(raw, verdict)
    assert "à régler".encode("latin-1") in out and out.endswith(b"Merci d'avance, Ren\xe9e\n")
    assert b"\r" not in out  # an LF message stays LF


def test_nothing_to_change_returns_the_message_unchanged() -> None:
    only_attachment = (b"Subject: scan\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                       b"JVBERi0xLjQK\r\n")
    assert add_banner(only_attachment, VERDICT) is only_attachment
    odd = b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644\r\n"
    assert add_banner(odd, VERDICT) is odd
    utf16 = b"Subject: x\r\nContent-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfeh\x00i\x00"
    assert add_banner(utf16, VERDICT) is utf16
    headers_only = b"Subject: no body at all\r\n"
    assert add_banner(headers_only, VERDICT) is headers_only


def test_broken_multipart_is_left_alone_not_broken_further() -> None:
    no_boundary = b"Content-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"
    assert add_banner(no_boundary, VERDICT) is no_boundary
    unterminated = (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n"
                    b"hi there\r\n")
    out = add_banner(unterminated, VERDICT)
    assert out.endswith(b"hi there\r\n") and b"CAUTION" in out


def test_reasons_are_the_strongest_few_and_short() -> None:
    many = Verdict(50.0, Action.QUARANTINE, tuple(
        Finding("x", f"R{i}", float(i), f"reason {i} " + "y" * 300) for i in range(1, 8)
    ) + (Finding("signatures", "MALWARE", 1.0, "known malware", min_action=Action.QUARANTINE),))
    reasons = banner_reasons(many)
    assert reasons[0] == "known malware"
    assert [r.split()[1] for r in reasons[1:]] == ["7", "6", "5"]
    assert all(len(r) <= 160 for r in reasons)


def test_result_parses_as_the_same_message() -> None:
    raw = alternative(b"Pay today.", b"<p>Pay today.</p>", eol=b"\n")
    out = add_banner(raw, VERDICT)
    before: Message = email.message_from_bytes(raw)
    after: Message = email.message_from_bytes(out)
    assert [p.get_content_type() for p in before.walk()] == [p.get_content_type() for p in after.walk()]
    assert [p.get_filename() for p in before.walk()] == [p.get_filename() for p in after.walk()]
    assert not after.defects


def test_signed_content_is_left_whole() -> None:
    signed = (b"Subject: signed\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
              b"boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned words\r\n--s\r\n"
              b"Content-Type: application/pkcs7-signature\r\n\r\nMIAG\r\n--s--\r\n")
    assert add_banner(signed, VERDICT) is signed
