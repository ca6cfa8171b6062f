"""The audit log as a keyed hash chain: who did what to held mail, and proof nobody rewrote it.

Database triggers stop a careless script, not someone who can write the database: they drop
the triggers and delete or edit rows. So every audit record carries an HMAC-SHA256 over its
own fields *and the previous record's MAC*, under a key that lives in the database only
sealed (AES-GCM) with the quarantine key. Without the quarantine key nobody can compute a
valid MAC: an edited record fails its own MAC, a deleted or moved one breaks the link of the
record after it, and a cut-off tail no longer matches the chain head (the count and last MAC,
itself MACed, kept in ``meta``). ``verify`` walks the chain and names the first broken record.

Records written before the chain existed (an older mailguard) have no MAC; they can only be
a prefix, and their number is part of the MACed head, so stripping MACs is noticed too.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from mailguard.quarantine.backend import AuditRow

GENESIS = "0" * 64


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
                return Verification(False, count, row.seq, "MAC does not match: the record was edited, or one "
                                    "before it was deleted or moved")
            previous = row.mac
        if count == 0 and not head:
            return Verification(True, 0, None, "empty")
        if not head:
            return Verification(False, count, None, "the chain head is missing from the database (removed?)")
        parts = head.split(":")
        if len(parts) != 4 or not hmac.compare_digest(head, self.head(int(parts[0]) if parts[0].isdigit() else -1,
                                                                      int(parts[1]) if parts[1].isdigit() else -1,
                                                                      parts[2])):
            return Verification(False, count, None, "the chain head was altered")
        if (int(parts[0]), int(parts[1]), parts[2]) != (count, legacy, previous):
            return Verification(False, count, None,
                                f"the chain head says {parts[0]} records ending in {parts[2][:12]}, the log has "
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
