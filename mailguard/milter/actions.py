"""What a verdict becomes as milter replies: header edits, the subject tag, the banner,
and the final reply (continue, discard, reject, tempfail).

Pure functions over the headers and body the MTA sent, so the mapping is tested without
sockets. The MTA keeps the message and applies the edits itself; we never resend headers
we did not change, so DKIM signatures over untouched fields keep verifying.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from mailguard.milter import protocol as mp
from mailguard.headers import VERDICT_HEADER_PREFIX, fold_header, split_head_body, tagged_subject, verdict_headers
from mailguard.auth.authresults import HEADER, header_value, is_ours
from mailguard.model import Action, Envelope, Verdict
from mailguard.quarantine.release import RELEASE_TOKEN_HEADER

log = logging.getLogger("mailguard.milter")

TEMPFAIL_REPLY = "451 4.7.1 The message could not be checked right now; please try again later"
REJECT_PREFIX = "550 5.7.1 Message refused as dangerous"


@dataclass
class ReceivedMessage:
    """One message as the MTA handed it over: headers in order, body as sent (CRLF).

    Each header is kept twice: decoded, for the few checks made on names and values, and
    as the bytes that go to the scanner, so the message is put together with one join."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    fields: list[bytes] = field(default_factory=list)  # b"Name: value" as received
    body: bytearray = field(default_factory=bytearray)
    size: int = 0  # bytes received so far (headers and body), for the size bound

    def add_header(self, name: str, value: str) -> None:
        self.add_field(name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))

    def add_field(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
        self.fields.append(name + b": " + value)
        self.size += len(name) + len(value) + 4

    def add_body(self, chunk: bytes) -> None:
        self.body += chunk
        self.size += len(chunk)

    def raw(self) -> bytes:
        """The message as RFC 5322 bytes with CRLF line endings, for the scanner (a folded
        header arrives with bare LF between its lines)."""
        head = b"\r\n".join(self.fields)
        if b"\n" in head:
            head = head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return head + b"\r\n\r\n" + bytes(self.body) if self.fields else b"\r\n" + bytes(self.body)

    def subject(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "subject":
                return value
        return None


def release_token_removal(headers: list[tuple[str, str]]) -> list[bytes]:
    """Delete the release marker of a released message (it must not reach the mailbox)."""
    return _remove(headers, lambda name, value: name.lower() == RELEASE_TOKEN_HEADER.lower())


def _remove(headers: list[tuple[str, str]], doomed_if: Callable[[str, str], bool]) -> list[bytes]:
    """Delete the fields ``doomed_if`` picks, by name and 1-based index among the fields of
    that name, highest index first (an MTA that renumbers after a deletion and one that does
    not both delete the right fields)."""
    seen: dict[str, int] = {}
    doomed: list[tuple[str, int]] = []
    for name, value in headers:
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        if doomed_if(name, value):
            doomed.append((name, seen[key]))
    return [mp.change_header(index, name, "") for name, index in reversed(doomed)]


def remove_forged_headers(headers: list[tuple[str, str]], authserv_id: str = "") -> list[bytes]:
    """Delete every incoming X-MailGuard-* header, and every Authentication-Results bearing
    our authserv-id (see ``_remove``)."""
    return _remove(headers, lambda name, value: name.lower().encode("ascii", "replace").startswith(
        VERDICT_HEADER_PREFIX) or is_ours(name, value, authserv_id))


def _milter_value(name: str, value: str) -> str:
    """A header value folded to RFC 5322 lengths; libmilter folds with LF + whitespace."""
    folded = fold_header(name, value, b"\r\n").decode("ascii")
    return folded[len(name) + 2:].rstrip("\r\n").replace("\r\n", "\n")


def header_edits(
    verdict: Verdict,
    message: ReceivedMessage,
    subject_tag: str,
    authserv_id: str = "",
    envelope: Envelope | None = None,
) -> list[bytes]:
    """Forged verdict headers and Authentication-Results bearing our authserv-id removed,
    ours inserted at the top (as the relay puts them), and the subject tagged from TAG up."""
    out = remove_forged_headers(message.headers, authserv_id)
    added = verdict_headers(verdict)
    if verdict.auth is not None and authserv_id:
        env = envelope or Envelope()
        added = [(HEADER, header_value(verdict.auth, authserv_id, env.mail_from, env.helo)), *added]
    for position, (name, value) in enumerate(added):
        out.append(mp.insert_header(position, name, _milter_value(name, value)))
    if subject_tag and verdict.action >= Action.TAG:
        subject = message.subject()
        if subject is None:
            out.append(mp.add_header("Subject", subject_tag))
        else:
            tagged = tagged_subject(subject.lstrip(" \t"), subject_tag)
            if tagged != subject.lstrip(" \t"):
                out.append(mp.change_header(1, "Subject", tagged))
    return out


_NEEDS = {
    mp.SMFIR_ADDHEADER: mp.SMFIF_ADDHDRS,
    mp.SMFIR_INSHEADER: mp.SMFIF_ADDHDRS,
    mp.SMFIR_CHGHEADER: mp.SMFIF_CHGHDRS,
    mp.SMFIR_REPLBODY: mp.SMFIF_CHGBODY,
    mp.SMFIR_QUARANTINE: mp.SMFIF_QUARANTINE,
}


def allowed_replies(packets: list[bytes], actions: int) -> list[bytes]:
    """Only the changes the MTA allowed in negotiation: sending another one is a protocol
    violation that makes the MTA drop the connection (and tempfail the message)."""
    return [p for p in packets if actions & _NEEDS.get(p[4:5], 0) or p[4:5] not in _NEEDS]


def banner_body(
    raw: bytes, verdict: Verdict, add_banner: Callable[[bytes, Verdict], bytes] | None
) -> bytes | None:
    """The new body with the warning banner, or None when there is nothing to replace.

    The banner may only change the body: if it would need different headers (a new
    Content-Type, say) we leave the message as it is rather than send a body that no
    longer matches its headers."""
    if add_banner is None:
        return None
    try:
        changed = add_banner(raw, verdict)
    except Exception:  # a banner bug must not lose or hold up mail; the tag still applies
        log.exception("banner failed; message tagged without a banner")
        return None
    head, _, body = split_head_body(raw)
    new_head, _, new_body = split_head_body(changed)
    if new_head != head:
        log.warning("banner would change the headers; message tagged without a banner")
        return None
    if new_body == body:
        return None
    return new_body


# Analyzers whose summaries are written to be told to the sender: kinds and counts of
# patient data, the outbound policy's reason, never a value or a name from the message.
TOLD_ANALYZERS = frozenset({"outbound", "phi"})


def reject_reply(verdict: Verdict) -> str:
    """``550 5.7.1`` and the strongest finding's rule id, as the relay answers; its summary
    only for TOLD_ANALYZERS (the practice's own sender must learn what kinds of patient
    data stopped the message). Other summaries may quote the message (an attachment's
    name, which a front desk may have made a patient's), and this text goes to the
    sender's bounce and to Postfix's mail log; the rule id is looked up in docs/detection.md."""
    top = max(verdict.findings, key=lambda f: (f.min_action if f.min_action is not None else Action.ACCEPT, f.score),
              default=None)
    if top is None:
        return REJECT_PREFIX
    if top.analyzer in TOLD_ANALYZERS:
        return mp.safe_reply_text(f"{REJECT_PREFIX}: {top.summary.split('. ')[0].rstrip('.')}", 200)
    return mp.safe_reply_text(f"{REJECT_PREFIX} ({top.rule})", 200)


def hold_reason(verdict: Verdict) -> str:
    """The reason Postfix shows for a message in its hold queue: score and rule ids only."""
    rules = ",".join(verdict.rules[:10]) or "none"
    return mp.safe_reply_text(f"mailguard score {verdict.score:g}: {rules}", 200)
