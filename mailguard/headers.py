"""Verdict headers and the subject tag, applied to the raw bytes.

Work is done on the header block only, line by line, so the body and every header we do
not touch stay byte for byte as they arrived (signatures such as DKIM keep verifying).
Incoming ``X-MailGuard-*`` headers are removed first: a sender must never be able to
forge a verdict that a mail client or a later filter trusts.
"""
from __future__ import annotations

import re
from email.header import Header

from mailguard.model import Action, Verdict

VERDICT_HEADER_PREFIX = b"x-mailguard-"
HEADER_ACTION = "X-MailGuard-Action"
HEADER_SCORE = "X-MailGuard-Score"
HEADER_RULES = "X-MailGuard-Rules"

# The blank line that ends the header block: an empty line after a CRLF or LF line end (or
# at the very start). A lone CR is not a line end here, as for Postfix and dkimpy.
_BLANK_LINE = re.compile(rb"(?:\A|\n)(\r?\n)")
# A line the stdlib feedparser (mailguard.message's parser) takes as a header line (its
# ``headerRE``, up to its line end): an mbox "From " line, a field name and a colon, or a continuation.
_HEADER_LINES = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\n]*(?:\n|\Z))*")


def split_head_body(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block including its last line ending, separator line ending, body).

    The one split every stage uses (the parser the analyzers read, the verdict headers, our
    Authentication-Results, the banner), so no stage can be shown a header block another
    stage reads as body. The block ends at the first empty line; a message with none has
    its body start at the first line that is not a header field, as Python's email parser
    reads it (separator ``b""``: ``apply_verdict`` writes one there, so what is passed on is
    read the same way by the next program)."""
    match = _BLANK_LINE.search(raw)
    if match is not None:
        return raw[: match.start(1)], match.group(1), raw[match.end():]
    pos = _HEADER_LINES.match(raw).end()  # type: ignore[union-attr]  (it matches the empty string)
    return raw[:pos], b"", raw[pos:]


def line_ending(raw: bytes) -> bytes:
    index = raw.find(b"\n")
    return b"\r\n" if index > 0 and raw[index - 1: index] == b"\r" else b"\n"


def _header_lines(head: bytes) -> list[bytes]:
    """Header fields, each with its continuation lines, line endings kept."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def strip_verdict_headers(raw: bytes) -> bytes:
    head, sep, body = split_head_body(raw)
    kept = [f for f in _header_lines(head) if not f.lower().startswith(VERDICT_HEADER_PREFIX)]
    return b"".join(kept) + sep + body


def verdict_headers(verdict: Verdict) -> list[tuple[str, str]]:
    rules = ", ".join(f"{f.rule}({f.score:g})" for f in verdict.findings) or "none"
    return [
        (HEADER_ACTION, str(verdict.action)),
        (HEADER_SCORE, f"{verdict.score:.1f}"),
        (HEADER_RULES, rules),
    ]


def fold_header(name: str, value: str, eol: bytes) -> bytes:
    """One header field, folded to RFC 5322 line lengths, with the message's line ending."""
    if value.isascii() and "\n" not in value and "\r" not in value:
        if len(name) + len(value) <= 76:  # fits on one line: email.header returns it as it is
            return f"{name}: {value}".encode("ascii") + eol
        return f"{name}: {_fold_ascii(value, len(name) + 2, eol.decode())}".encode("ascii") + eol
    text = Header(value, header_name=name, maxlinelen=78).encode(linesep=eol.decode())
    return f"{name}: {text}".encode("ascii", "replace") + eol


_FWS_RUNS = re.compile("([ \t]+)")


def _fold_ascii(value: str, header_len: int, linesep: str, maxlen: int = 78) -> str:
    """``Header(value, header_name=..., maxlinelen=78).encode(linesep)`` for a one-line
    ASCII value, line for line the same folds (break after ';', then ',', then at white
    space, from the end of the line backwards), kept with a running length instead of
    email.header's recount of the whole line at every word, which made each verdict
    header cost a tenth of a millisecond."""
    parts = _FWS_RUNS.split(value)
    if parts[0]:
        parts[:0] = [""]
    else:
        parts.pop(0)
    lines: list[str] = []
    line: list[tuple[str, str]] = []
    size = header_len  # the current line's length, the field name on the first
    initial = header_len
    for fws, part in zip(parts[::2], parts[1::2]):
        line.append((fws, part))
        size += len(fws) + len(part)
        if size <= maxlen:
            continue
        split = 0
        for ch in ";, \t":
            for i in range(len(line) - 1, 0, -1):
                if ch in " \t" and line[i][0][:1] == ch:
                    split = i
                    break
                if line[i - 1][1][-1:] == ch:
                    split = i
                    break
            if split:
                break
        if not split:
            fws, part = line.pop()
            if initial > 0:  # a word too long for the first line goes on a line of its own
                lines.append("".join(f + p for f, p in line))
                line, initial = [], 0
                fws = fws or " "
            line.append((fws, part))
            size = initial + sum(len(f) + len(p) for f, p in line)
            continue
        lines.append("".join(f + p for f, p in line[:split]))
        line, initial = line[split:], 0
        size = sum(len(f) + len(p) for f, p in line)
    text = "".join(f + p for f, p in line)
    if initial + len(text) > 0:
        if not initial and text.isspace() and lines:
            lines[-1] += text
        else:
            lines.append(text)
    return linesep.join(lines)


def tagged_subject(subject: str, tag: str) -> str:
    if not tag or subject.startswith(tag):
        return subject
    return f"{tag} {subject}" if subject else tag


def apply_verdict(raw: bytes, verdict: Verdict, subject_tag: str = "") -> bytes:
    """Remove forged verdict headers, add ours, and prefix the subject when tagged."""
    eol = line_ending(raw)
    tagging = bool(subject_tag) and verdict.action >= Action.TAG
    if not tagging:
        head, sep, _ = split_head_body(raw)
        if sep and VERDICT_HEADER_PREFIX not in head.lower():  # nothing to remove or change: ours on top
            return b"".join(fold_header(name, value, eol) for name, value in verdict_headers(verdict)) + raw
    head, sep, body = split_head_body(strip_verdict_headers(raw))
    fields = _header_lines(head)
    if subject_tag and verdict.action >= Action.TAG:
        fields = _tag_subject_fields(fields, subject_tag, eol)
    added = b"".join(fold_header(name, value, eol) for name, value in verdict_headers(verdict))
    if not sep:
        sep = eol
        if fields and not fields[-1].endswith(b"\n"):
            fields[-1] += eol
    return added + b"".join(fields) + sep + body


def _tag_subject_fields(fields: list[bytes], tag: str, eol: bytes) -> list[bytes]:
    out = []
    seen = False
    for field in fields:
        if not seen and field.lower().startswith(b"subject:"):
            seen = True
            value = field[len(b"subject:"):]
            stripped = value.lstrip(b" \t")
            if stripped.startswith(tag.encode("utf-8", "replace")):
                out.append(field)
                continue
            out.append(b"Subject: " + tag.encode("utf-8", "replace") + b" " + stripped)
            continue
        out.append(field)
    if not seen:
        out.append(fold_header("Subject", tag, eol))
    return out
