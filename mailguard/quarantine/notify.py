"""Digests of held messages, mailed to each recipient or to an administrator.

Off by default (``[quarantine] notify``): a digest carries senders and subjects, which may
be patient data, so the practice decides. It never carries a message body or attachment,
only what a person needs to recognise a real message they expect (sender, subject, when,
why it was held) and the entry id to quote when asking IT to release it. Sent through the
same SMTP server as releases, so it is not scanned and held itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from mailguard.ops.shown import inline
from mailguard.quarantine.smtp import send

if TYPE_CHECKING:
    from mailguard.quarantine import Entry, Quarantine


@dataclass(frozen=True)
class Digest:
    """One digest mail: who gets it and which entries it lists."""

    to: str
    entry_ids: tuple[str, ...]
    message: EmailMessage

    def as_bytes(self) -> bytes:
        return self.message.as_bytes()


def build_digests(entries: list["Entry"], notify_to: tuple[str, ...], sender: str, now: datetime) -> list[Digest]:
    """One digest per administrator in ``notify_to`` listing everything, or else one per
    envelope recipient listing what was held for them."""
    if not entries:
        return []
    if notify_to:
        groups = {addr: list(entries) for addr in notify_to}
    else:
        groups = {}
        for entry in entries:
            for rcpt in dict.fromkeys(r.lower() for r in entry.envelope.rcpt_tos):
                groups.setdefault(rcpt, []).append(entry)
    return [_digest(to, held, sender, now, for_admin=bool(notify_to)) for to, held in groups.items()]


def _digest(to: str, held: list["Entry"], sender: str, now: datetime, for_admin: bool) -> Digest:
    whom = "for your practice" if for_admin else "addressed to you"
    lines = [
        f"mailguard held {len(held)} message(s) {whom}. They were not delivered because they look",
        "like phishing or carry a dangerous attachment. Nothing needs doing if you do not expect them.",
        "",
    ]
    for n, entry in enumerate(held, 1):
        lines += [
            f"{n}. From:     {inline(entry.from_header or entry.envelope.mail_from)}",
            f"   Subject:  {inline(entry.subject)}",
            f"   Received: {entry.created:%Y-%m-%d %H:%M} UTC",
            f"   Why:      {inline('; '.join(entry.reasons[:3]) or str(entry.action))}",
            f"   Entry:    {entry.id[:10]}",
        ]
        if for_admin:
            lines.append(f"   To:       {inline(', '.join(entry.envelope.rcpt_tos))}")
        lines.append("")
    lines += [
        "If one of these is a real message you expected, ask IT to release it and quote its entry",
        "number. Never reply to a suspicious message or use the links or phone numbers in it.",
    ]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"[mailguard] {len(held)} message(s) held {whom}"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain="mailguard.invalid")
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("\n".join(lines) + "\n")
    return Digest(to, tuple(e.id for e in held), msg)


def send_digests(q: "Quarantine", since: str | float | None, dry_run: bool = False) -> list[tuple[Digest, str]]:
    """Build and (unless ``dry_run``) send the digests of messages held since ``since``;
    return each digest with the error that stopped it ('' when sent). Audited."""
    settings = q.notify_settings
    now = datetime.fromtimestamp(q.clock(), timezone.utc)
    entries = q.list(since=since, status="held")
    digests = build_digests(entries, tuple(settings.get("notify_to", ())), settings.get("notify_from", ""), now)
    if dry_run or not digests:
        return [(d, "") for d in digests]
    host, port = q.release_target()
    results = []
    for digest in digests:
        outcome = send(host, port, digest.message["From"], [digest.to], digest.as_bytes(), q.release_timeout)
        error = "" if outcome.ok else (outcome.error or "; ".join(outcome.refused.values()))
        q.record("notify", "*", "ok" if not error else "failed",
                 f"digest of {len(digest.entry_ids)} message(s)" + (f": {error}" if error else ""))
        results.append((digest, error))
    return results
