"""The release marker: how a released message passes the milter (or relay) exactly once.

In milter store mode a held message is released by handing it to the same Postfix that
received it, so it passes the milter again; without a marker it would be scanned and held
again, while the command and the audit said "released". So the quarantine adds
``X-MailGuard-Release-Token: <entry id>.<MAC>``, an HMAC under a key derived from the
quarantine key over the entry id and the message body. A sender cannot forge it (no key),
cannot move it to another message (the body is bound in), and never sees it: the milter and
the relay recognise a valid token, let that message pass unscanned, and strip the header
before delivery. A token that does not verify is stripped like any forged X-MailGuard header,
and the message is scanned as usual.
"""
from __future__ import annotations

import hashlib
import hmac
import re

from mailguard.headers import _header_lines, split_head_body
from mailguard.quarantine.crypto import KeyRing

RELEASE_TOKEN_HEADER = "X-MailGuard-Release-Token"
_TOKEN = re.compile(r"^\s*([0-9a-f]{16})\.([0-9a-f]{64})\s*$")
_EOL = re.compile(rb"\r\n|\r|\n")


def _body_digest(raw: bytes) -> bytes:
    """The body as any MTA passes it on: line endings and trailing blank lines normalised."""
    body = split_head_body(raw)[2]
    return hashlib.sha256(_EOL.sub(b"\n", body).rstrip(b"\n")).digest()


def release_token(keys: KeyRing, entry_id: str, raw: bytes) -> str:
    return f"{entry_id}.{keys.release_mac(entry_id.encode() + b':' + _body_digest(raw))}"


def released_entry(keys: KeyRing, token: str, raw: bytes) -> str | None:
    """The entry id when ``token`` is a valid release token for this message, else None."""
    match = _TOKEN.match(token or "")
    if match is None:
        return None
    entry_id, mac = match.groups()
    expected = keys.release_mac(entry_id.encode() + b":" + _body_digest(raw))
    return entry_id if hmac.compare_digest(mac, expected) else None


def marker_of(raw: bytes) -> tuple[str, bytes]:
    """The release token in ``raw`` (first one; "" if none) and ``raw`` without any."""
    head, sep, body = split_head_body(raw)
    prefix = RELEASE_TOKEN_HEADER.lower().encode() + b":"
    token, kept = "", []
    for line in _header_lines(head):
        if line.lower().startswith(prefix):
            token = token or line[len(prefix):].decode("ascii", "replace").strip()
        else:
            kept.append(line)
    return token, b"".join(kept) + sep + body
