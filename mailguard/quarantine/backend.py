"""The storage interface under the quarantine, so another database can be plugged in.

``Quarantine`` (``store``) does the encryption, SMTP release and audit
wording; a backend only keeps rows whose sensitive fields are already sealed, so it never
sees plaintext. The embedded default is SQLite (``sqlite``); PostgreSQL
(``postgres``) lets several gateway machines share one quarantine. Both run the
same SQL (``sql``) on the same tables (meta, entries with their rules and
recipients, an append-only audit); each method is one transaction, and ``insert`` is durable
when it returns. Another database is added by implementing ``QuarantineBackend``; callers
do not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

HELD = "held"
RELEASED = "released"
STATUSES = (HELD, RELEASED)


@dataclass(frozen=True)
class RecipientRow:
    """One envelope recipient of an entry: its position in the sealed envelope, a keyed hash
    of the address (for lookups), and when it was delivered by a release (None: not yet)."""

    index: int
    mac: str
    delivered_at: float | None = None


@dataclass(frozen=True)
class EntryRow:
    """An entry as stored. Only non-identifying fields are in the clear: times, status,
    action, score, rule ids, size and the queue id the sender was told (a random id the
    logs carry too). ``sealed_info`` (envelope, verdict, subject...) and
    ``sealed_message`` (the raw bytes) are encrypted by the caller."""

    id: str
    created: float
    status: str
    action: str
    score: float
    rules: tuple[str, ...]
    size: int
    sealed_info: bytes
    sealed_message: bytes | None = None  # left out by listing queries
    released_at: float | None = None
    recipients: tuple[RecipientRow, ...] = ()
    queue_id: str = ""  # the relay's or the MTA's ("250 2.0.0 OK: queued as ..."); '' if unknown


@dataclass(frozen=True)
class AuditRow:
    """One line of the append-only audit log. ``detail`` never carries addresses, subjects
    or content: the caller redacts it."""

    time: float
    actor: str
    operation: str
    entry_id: str
    result: str
    detail: str = ""
    seq: int = 0  # assigned by the backend
    as_actor: str = ""  # what --actor said, recorded beside the OS user, never instead
    mac: str = ""  # the chain MAC (mailguard.quarantine.audit), assigned by the backend


@dataclass(frozen=True)
class EntryQuery:
    """Filters for listing; every field optional, all given ones must match."""

    since: float | None = None
    before: float | None = None
    recipient_mac: str | None = None
    rule: str | None = None
    action: str | None = None
    status: str | None = None
    queue_id: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class AuditQuery:
    since: float | None = None
    entry_id: str | None = None
    operation: str | None = None
    limit: int | None = None


class BackendError(Exception):
    """The database failed (locked past the timeout, disk full, damaged...)."""


class KeyChangedError(BackendError):
    """The store was re-encrypted with another key (``rekey``) since this process opened it."""


class QuarantineBackend(Protocol):
    """What ``Quarantine`` needs from a database. Each method is one transaction."""

    def claim_key_id(self, key_id: str) -> str:
        """Record ``key_id`` if the store has none yet; return the recorded one."""

    def stored_key_id(self) -> str | None: ...

    def count(self) -> int: ...

    def insert(self, row: EntryRow, audit: AuditRow, key_id: str) -> None:
        """Add an entry and its audit line together; durable (committed and synced) on return.
        Raises KeyChangedError (and adds nothing) unless the store's key id is ``key_id``."""

    def select(self, query: EntryQuery) -> list[EntryRow]:
        """Entries matching, newest first, without ``sealed_message``."""

    def fetch(self, entry_id: str, with_message: bool = False) -> EntryRow | None: ...

    def match_ids(self, prefix: str) -> list[str]:
        """Entry ids starting with ``prefix`` (people type short prefixes, as with git)."""

    def mark_delivered(
        self, entry_id: str, indexes: Sequence[int], at: float, released: bool, audit: AuditRow
    ) -> None:
        """Record delivered recipients (and the entry as released if ``released``) with the audit line."""

    def delete(self, entry_ids: Sequence[str], audits: Sequence[AuditRow]) -> int:
        """Remove entries (content overwritten) with their audit lines; return how many existed."""

    def ids_older_than(self, cutoff: float) -> list[str]: ...

    def claim(self, key: str, value: str, stale: Callable[[str], bool]) -> str:
        """Take the named claim for ``value`` unless a holder for whom ``stale`` is false has
        it; return the holder's value (``value`` when taken). Atomic across processes and
        machines: a release holds one on its entry so it is never sent twice at once."""

    def unclaim(self, key: str, value: str) -> None:
        """Give a claim back (only if ``value`` still holds it)."""

    def reseal(
        self, old_key_id: str, new_key_id: str, reseal: Callable[[EntryRow], EntryRow], audit: AuditRow
    ) -> int:
        """In one transaction, and only if the store's key id is ``old_key_id``: replace every
        entry's sealed fields and recipient hashes with those of ``reseal(row)``, record
        ``new_key_id`` and the audit line; return the number of entries. Any exception from
        ``reseal`` leaves everything as it was."""

    def append_audit(self, audit: AuditRow) -> None: ...

    def audit_rows(self, query: AuditQuery) -> list[AuditRow]:
        """Audit lines in the order written."""

    def close(self) -> None: ...
