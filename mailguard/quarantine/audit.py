"""The audit log as a keyed hash chain: who did what to held mail, and proof nobody rewrote it.

Database triggers stop a careless script, not someone who can write the database: they drop
the triggers and delete or edit rows. So every audit record carries an HMAC-SHA256 over its
own fields *and the previous record's MAC*, under a key that lives in the database only
sealed (AES-GCM) with the quarantine key. Without the quarantine key nobody can compute a
valid MAC: an edited record fails its own MAC, a deleted or moved one breaks the link of the
record after it, and a cut-off tail no longer matches the chain head (the count and last MAC,
itself MACed, kept in ``meta``). ``verify`` walks the chain and names the first broken record.

Records written before the chain existed (an older mailguard) have no MAC; they can only be
a prefix, and their number is part of the MACed head, so stripping MACs is noticed too. The
head is written when the chain starts (``start_chain``), so from then on a missing head is
tampering; writers check the head's MAC before continuing from it, and link to
``BROKEN_LINK`` when it is missing or wrong, so the next honest record cannot launder a log
that was cut short or stripped.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from mailguard.quarantine.backend import AuditRow

GENESIS = "0" * 64
# What a record is linked to when, at the time it is written, the chain head is missing or
# its MAC is wrong (someone cut records off the end and rewrote or removed the head, or
# stripped every MAC). Continuing from such a head would make the tampered log verify
# again; linking to this instead keeps it broken, and lets ``verify`` say why.
BROKEN_LINK = "broken-chain-head"


@dataclass(frozen=True)
class AuditChain:
    """Computes and checks the MACs of one quarantine's audit log (key from ``meta``)."""

    key: bytes

    def link(self, previous: str, row: AuditRow) -> str:
        """The MAC of ``row`` following the record whose MAC is ``previous``."""
        fields = [previous, repr(float(row.time)), row.actor, row.as_actor, row.operation, row.entry_id,
                  row.result, row.detail]
        message = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def head(self, count: int, legacy: int, last: str) -> str:
        """The chain head for ``meta``: record count, unchained prefix, last MAC, and a MAC of those."""
        body = f"{count}:{legacy}:{last}"
        return body + ":" + hmac.new(self.key, b"head:" + body.encode(), hashlib.sha256).hexdigest()

    def parse_head(self, head: str | None) -> tuple[int, int, str] | None:
        """(count, unchained prefix, last MAC) of a chain head whose own MAC is right, else
        None. Writers use it too: a head that does not verify must never be continued, or
        the next honest record would re-MAC a log someone cut short (see ``BROKEN_LINK``)."""
        parts = (head or "").split(":")
        if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        count, legacy, last = int(parts[0]), int(parts[1]), parts[2]
        if not hmac.compare_digest(head or "", self.head(count, legacy, last)):
            return None
        return count, legacy, last

    def verify(self, rows: Iterable[AuditRow], head: str | None) -> "Verification":
        previous, count, legacy, chained = GENESIS, 0, 0, False
        for row in rows:
            count += 1
            if not row.mac:
                if chained:
                    return Verification(False, count, row.seq, "has no MAC (stripped?)")
                legacy += 1
                continue
            chained = True
            if not hmac.compare_digest(row.mac, self.link(previous, row)):
                if hmac.compare_digest(row.mac, self.link(BROKEN_LINK, row)):
                    return Verification(False, count, row.seq, "written when the chain head was missing or "
                                        "altered: records before it were deleted, edited or stripped of their MAC")
                return Verification(False, count, row.seq, "MAC does not match: the record was edited, or one "
                                    "before it was deleted or moved")
            previous = row.mac
        if count == 0 and not head:
            return Verification(True, 0, None, "empty")
        if not head:
            return Verification(False, count, None, "the chain head is missing from the database (removed?)")
        trusted = self.parse_head(head)
        if trusted is None:
            return Verification(False, count, None, "the chain head was altered")
        if trusted != (count, legacy, previous):
            return Verification(False, count, None,
                                f"the chain head says {trusted[0]} records ending in {trusted[2][:12]}, the log has "
                                f"{count} ending in {previous[:12]}: records at the end were deleted or added")
        return Verification(True, count, None, "intact" + (f" ({legacy} older records without MAC)" if legacy else ""))


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    first_broken: int | None  # seq of the first bad record; None: the whole log (head) is wrong
    reason: str

    def describe(self) -> str:
        if self.ok:
            return f"audit log intact: {self.records} records, chain verified ({self.reason})"
        where = f"record {self.first_broken}" if self.first_broken is not None else "the end of the log"
        return f"audit log BROKEN at {where}: {self.reason}"


def chain_rows(rows: Sequence[AuditRow]) -> tuple[int, int, str]:
    """(count, unchained prefix, last MAC) of rows already in the log, for the next head."""
    legacy = 0
    for row in rows:
        if row.mac:
            break
        legacy += 1
    last = next((r.mac for r in reversed(rows) if r.mac), GENESIS)
    return len(rows), legacy, last
