"""What a quarantine entry looks like to its readers, and how its details are prepared.

Kept apart from the store itself (quarantine.py): the decrypted views (``Entry``,
``ReleaseResult``, ``AuditEntry``), what is sealed next to a message (envelope, verdict and
the headers a reviewer looks at first), and the time filters people type ("2d", "12h").
"""
from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from mailguard.model import Action, Envelope, Verdict

_HEADER_PARSER = email.parser.BytesParser(policy=email.policy.default)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Entry:
    """A held message as a reviewer sees it (decrypted). The raw bytes are fetched
    separately with ``Quarantine.raw`` so that every view of content is audited."""

    id: str
    created: datetime
    status: str
    action: Action
    score: float
    rules: tuple[str, ...]
    size: int
    envelope: Envelope
    subject: str
    from_header: str
    message_id: str
    verdict: Mapping[str, Any]
    released_at: datetime | None = None
    delivered: tuple[str, ...] = ()
    queue_id: str = ""  # what the sender was told ("queued as ..."); '' for entries from before it was kept
    # clear columns of the database that did not match the sealed record (edited without the
    # key); the fields above then hold the sealed values
    altered: tuple[str, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """The findings' plain-English summaries, strongest first."""
        findings = sorted(self.verdict.get("findings", ()), key=lambda f: -float(f.get("score", 0)))
        return tuple(str(f.get("summary", "")) for f in findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": iso(self.created),
            "status": self.status,
            "action": str(self.action),
            "score": self.score,
            "rules": list(self.rules),
            "size": self.size,
            "envelope": self.envelope.to_dict(),
            "subject": self.subject,
            "from": self.from_header,
            "message_id": self.message_id,
            "queue_id": self.queue_id,
            "released_at": iso(self.released_at) if self.released_at else None,
            "delivered": list(self.delivered),
            "verdict": dict(self.verdict),
            **({"altered": list(self.altered)} if self.altered else {}),
        }


@dataclass(frozen=True)
class ReleaseResult:
    """What one release did. ``ok``: every intended recipient was accepted downstream."""

    entry_id: str
    ok: bool
    delivered: int = 0
    refused: int = 0
    message: str = ""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: datetime
    actor: str
    operation: str
    entry_id: str
    result: str
    detail: str
    as_actor: str = ""  # what --actor said; ``actor`` is always the OS user

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": iso(self.time), "actor": self.actor, "as_actor": self.as_actor,
                "operation": self.operation, "entry_id": self.entry_id, "result": self.result,
                "detail": self.detail}


def parse_since(text: str, now: float | None = None) -> float:
    """'30m', '12h', '2d', '1w' (ago), or an ISO date/time ('2026-11-01', '2026-11-01T08:00',
    UTC unless a zone is given) -> a Unix time."""
    now = time.time() if now is None else now
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2).lower()]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot understand the time {text!r}; use e.g. 2d, 12h, 30m or 2026-11-01") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def info_for(raw: bytes, envelope: Envelope, verdict: Verdict) -> dict[str, Any]:
    """What is sealed next to the message: envelope, verdict, and the headers a reviewer
    looks at first (read from the header block only; never fails on broken mail)."""
    subject = from_header = message_id = ""
    try:
        headers = _HEADER_PARSER.parsebytes(header_block(raw), headersonly=True)
        subject = _header_text(headers, "Subject")
        from_header = _header_text(headers, "From")
        message_id = _header_text(headers, "Message-ID")
    except Exception:  # noqa: BLE001 - hostile headers must not stop a store
        pass
    return {
        "envelope": envelope.to_dict(),
        "verdict": verdict.to_dict(),
        "subject": subject,
        "from": from_header,
        "message_id": verdict.message_id or message_id,
    }


def to_json(info: Mapping[str, Any]) -> bytes:
    """JSON of the sealed details. An analyzer may put anything in a finding's details
    (bytes, sets, paths): it is kept as text rather than failing the store, which would
    leave the sender retrying a message that can never be stored."""
    return json.dumps(info, default=repr).encode("ascii")  # ASCII: lone surrogates from 8-bit headers survive


def _header_text(headers: Any, name: str) -> str:
    """The decoded header, or else the header as it arrived (still encoded). The email
    package refuses to build some values at all, e.g. an address whose encoded display name
    decodes to CR/LF ("=?utf-8?q?a=0Ab?="), on ``get`` and ``get_all`` alike: the reviewer
    must then see the raw text, not an empty From."""
    try:
        value = headers.get(name)
        return "" if value is None else str(value)[:2000]
    except Exception:  # noqa: BLE001 - a malformed encoded word, etc.
        pass
    try:
        return next((str(v)[:2000] for k, v in headers.raw_items() if k.lower() == name.lower()), "")
    except Exception:  # noqa: BLE001 - hostile headers must not stop a store
        return ""


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")  # a header field name and its colon


def header_block(raw: bytes) -> bytes:
    """The header block: up to and including the blank line that ends it, or else up to the
    first line that is not a header field (nor its continuation), where mail parsers start
    the body too. Without that second rule a message with no blank line would be all
    header, and ``show`` (which prints the headers, audited as a view of headers only)
    would print its body."""
    pos = 0
    for match in _LINE.finditer(raw):
        line = match.group()
        if not line:
            break  # the end of the message
        text = line.rstrip(b"\r\n")
        if not text:
            return raw[: match.end()]
        continued = text[:1] in (b" ", b"\t") and pos > 0
        if not (continued or _FIELD.match(text) or (pos == 0 and text.startswith(b"From "))):
            return raw[:pos]
        pos = match.end()
    return raw


def envelope_of(info: Mapping[str, Any]) -> Envelope:
    env = info.get("envelope", {})
    return Envelope(
        mail_from=env.get("mail_from", ""),
        rcpt_tos=tuple(env.get("rcpt_tos", ())),
        client_address=env.get("client_address", ""),
        helo=env.get("helo", ""),
        direction=env.get("direction", ""),
    )


def iso(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z") if when else ""
