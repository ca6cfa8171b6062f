"""A short warning at the top of a suspicious message's text, in plain words.

Staff read the body, not the headers: the banner tells them, where they look, why mailguard
thinks the message is dangerous (the findings' own summaries) and what to do.

Only the first text/plain and the first text/html body parts get it (both halves of a
multipart/alternative; not text attachments, not attached messages, nothing inside a
signed or encrypted part). Those parts are decoded
and re-encoded in their own transfer encoding and charset; every header, every other part,
every boundary and the preamble and epilogue stay byte for byte as they were. No header is
ever changed (a banner that cannot be written in a 7-bit part's charset degrades to '?'),
so a milter can replace the body alone.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import html
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailguard.headers import line_ending, split_head_body
from mailguard.model import Verdict

MAX_REASONS = 4
MAX_REASON_CHARS = 160
MAX_DEPTH = 20

_BODY_TAG = re.compile(rb"<body\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(rb"<html\b[^>]*>", re.IGNORECASE)
_ASCII_UNSAFE = ("utf-16", "utf-32", "utf_16", "utf_32")
# Signed or encrypted content is left whole: a banner inside would break the signature that
# tells staff who really sent it (headers and subject tag still warn them).
_SEALED = ("multipart/signed", "multipart/encrypted")


def banner_reasons(verdict: Verdict) -> list[str]:
    """The strongest findings' summaries, shortened, one line each."""
    ranked = sorted((f for f in verdict.findings if f.score > 0 or f.min_action is not None),
                    key=lambda f: (f.min_action or 0, f.score), reverse=True)
    reasons: list[str] = []
    for finding in ranked:
        text = " ".join(str(finding.summary).split())
        if len(text) > MAX_REASON_CHARS:
            text = text[: MAX_REASON_CHARS - 3].rstrip() + "..."
        if text and text not in reasons:
            reasons.append(text)
        if len(reasons) == MAX_REASONS:
            break
    return reasons


def banner_text(verdict: Verdict) -> str:
    lines = ["CAUTION: this message may be a scam or may be dangerous (checked by mailguard)."]
    reasons = banner_reasons(verdict)
    if reasons:
        lines.append("Why:")
        lines.extend(f"  - {reason}" for reason in reasons)
    lines.append("Do not click its links, open its attachments, pay, or give a password or patient details "
                 "until you have checked with the sender by phone, using a number you already know.")
    lines.append("-" * 60)
    return "\n".join(lines) + "\n\n"


def banner_html(verdict: Verdict) -> str:
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in banner_reasons(verdict))
    why = f"<div>Why:</div><ul style=\"margin:4px 0 4px 20px;padding:0\">{reasons}</ul>" if reasons else ""
    return (
        "<div style=\"border:2px solid #b00020;background:#fff4e5;color:#000;padding:8px 12px;margin:0 0 12px 0;"
        "font-family:Arial,sans-serif;font-size:14px\"><strong>CAUTION: this message may be a scam or may be "
        f"dangerous (checked by mailguard).</strong>{why}<div>Do not click its links, open its attachments, pay, "
        "or give a password or patient details until you have checked with the sender by phone, using a number "
        "you already know.</div></div>\n"
    )


@dataclass
class _Banners:
    plain: str
    html: str
    eol: bytes
    done: set[str] = field(default_factory=set)


def add_banner(raw: bytes, verdict: Verdict) -> bytes:
    """The whole message with the warning at the top of its first text/plain and text/html
    body parts. Returns ``raw`` itself when there is no such part or nothing can be changed
    safely (an unknown transfer encoding, a charset that is not ASCII-compatible)."""
    banners = _Banners(banner_text(verdict), banner_html(verdict), line_ending(raw))
    return _entity(raw, banners, 0)


def _entity(entity: bytes, banners: _Banners, depth: int) -> bytes:
    head, sep, body = split_head_body(entity)
    if not sep or depth > MAX_DEPTH:
        return entity
    headers = BytesHeaderParser(policy=compat32).parsebytes(head)
    ctype = headers.get_content_type()
    if ctype in _SEALED:
        return entity
    if ctype.startswith("multipart/"):
        boundary = headers.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            return entity
        new_body = _multipart(body, boundary, banners, depth)
    elif ctype in ("text/plain", "text/html") and not _is_attachment(headers):
        kind = ctype.split("/")[1]
        if kind in banners.done:
            return entity
        new_body = _text_part(body, headers, kind, banners)
        if new_body is not None:
            banners.done.add(kind)
    else:
        return entity
    if new_body is None or new_body == body:
        return entity
    return head + sep + new_body


def _is_attachment(headers: Message) -> bool:
    disposition = str(headers.get("Content-Disposition", "")).split(";", 1)[0].strip().lower()
    return disposition == "attachment"


def _multipart(body: bytes, boundary: str, banners: _Banners, depth: int) -> bytes | None:
    """Rebuild the body with changed parts; preamble, delimiters and epilogue untouched."""
    delimiter = re.compile(rb"(?m)^--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*(?=\r?\n|\Z)")
    matches = list(delimiter.finditer(body))
    if not matches:
        return None
    out = [body[: matches[0].start()]]
    changed = False
    for index, match in enumerate(matches):
        line_end = _after_line(body, match.end())
        out.append(body[match.start(): line_end])
        if match.group(1):  # the close delimiter: the rest is the epilogue
            out.append(body[line_end:])
            break
        stop = matches[index + 1].start() if index + 1 < len(matches) else len(body)
        part = body[line_end:stop]
        content, trailer = _split_trailing_eol(part)
        new = _entity(content, banners, depth + 1)
        changed = changed or new is not content
        out.append(new + trailer)
    return b"".join(out) if changed else None


def _after_line(data: bytes, pos: int) -> int:
    newline = data.find(b"\n", pos)
    return len(data) if newline < 0 else newline + 1


def _split_trailing_eol(part: bytes) -> tuple[bytes, bytes]:
    """The line ending before the next delimiter belongs to the delimiter (RFC 2046)."""
    for eol in (b"\r\n", b"\n"):
        if part.endswith(eol):
            return part[: -len(eol)], eol
    return part, b""


def _text_part(body: bytes, headers: Message, kind: str, banners: _Banners) -> bytes | None:
    cte = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower() or "7bit"
    charset = headers.get_content_charset() or "us-ascii"
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        codec = "ascii"
    if codec.startswith(_ASCII_UNSAFE):
        return None
    if cte in ("7bit", "8bit", "binary"):
        decoded = body
    elif cte == "base64":
        try:
            decoded = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return None
    elif cte == "quoted-printable":
        decoded = quopri.decodestring(body)
    else:
        return None
    eol = banners.eol
    if cte == "7bit":
        codec = "ascii"  # a 7-bit part must stay 7-bit: its headers are never changed
    if kind == "plain":
        banner = banners.plain.replace("\n", eol.decode()).encode(codec, "replace")
        new = banner + decoded
    else:
        banner = banners.html.replace("\n", eol.decode()).encode(codec, "xmlcharrefreplace")
        new = _insert_html(decoded, banner)
    if cte == "base64":
        return _base64_lines(new, eol, body)
    if cte == "quoted-printable":
        return quopri.encodestring(new)
    return new


def _insert_html(document: bytes, banner: bytes) -> bytes:
    """Right after <body>, else after <html>, else at the start (a fragment)."""
    match = _BODY_TAG.search(document) or _HTML_TAG.search(document)
    at = match.end() if match else 0
    return document[:at] + banner + document[at:]


def _base64_lines(data: bytes, eol: bytes, original: bytes) -> bytes:
    encoded = base64.b64encode(data)
    lines = [encoded[i: i + 76] for i in range(0, len(encoded), 76)]
    text = eol.join(lines)
    return text + eol if original.endswith((b"\n", b"\r")) else text
