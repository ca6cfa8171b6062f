"""The SQL shared by the quarantine's database backends (SQLite, PostgreSQL).

Both keep the same tables (``meta``, ``entries`` with ``entry_rules`` and
``entry_recipients``, and the append-only ``audit``) and run the same statements, written
with ``?`` placeholders; a backend supplies only its connection handling: ``_transaction``
(one committed, durable transaction yielding a cursor that takes ``?``) and ``_read``.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import AbstractContextManager
from typing import Any, Callable, Sequence

from mailguard.quarantine.audit import BROKEN_LINK, GENESIS, AuditChain
from mailguard.quarantine.backend import (
    RELEASED,
    BackendError,
    KeyChangedError,
    AuditQuery,
    AuditRow,
    EntryQuery,
    EntryRow,
    RecipientRow,
)

log = logging.getLogger("mailguard.quarantine")

SCHEMA_VERSION = "1"

# The tables, with the column types each database spells differently left as fields.
TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    created {real} NOT NULL,
    status TEXT NOT NULL,
    action TEXT NOT NULL,
    score {real} NOT NULL,
    size {bigint} NOT NULL,
    released_at {real},
    queue_id TEXT NOT NULL DEFAULT '',
    sealed_info {blob} NOT NULL,
    sealed_message {blob} NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created);
CREATE TABLE IF NOT EXISTS entry_rules (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    pos INTEGER NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY (entry_id, pos)
);
CREATE INDEX IF NOT EXISTS entry_rules_rule ON entry_rules (rule);
CREATE TABLE IF NOT EXISTS entry_recipients (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    mac TEXT NOT NULL,
    delivered_at {real},
    PRIMARY KEY (entry_id, idx)
);
CREATE INDEX IF NOT EXISTS entry_recipients_mac ON entry_recipients (mac);
CREATE TABLE IF NOT EXISTS audit (
    seq {serial},
    time {real} NOT NULL,
    actor TEXT NOT NULL,
    operation TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    as_actor TEXT NOT NULL DEFAULT '',
    mac TEXT NOT NULL DEFAULT ''
);
"""
# Columns added to tables made by an older mailguard: to the audit (before the MAC chain), to
# the entries (before they kept the queue id the sender was told: old entries keep '').
# Not a new schema version: an older mailguard reading the database ignores them.
ADDED_COLUMNS = {
    "audit": {"as_actor": "TEXT NOT NULL DEFAULT ''", "mac": "TEXT NOT NULL DEFAULT ''"},
    "entries": {"queue_id": "TEXT NOT NULL DEFAULT ''"},
}
# Indexes on added columns: created once the columns exist (an older table gets them first).
ADDED_INDEXES = "CREATE INDEX IF NOT EXISTS entries_queue_id ON entries (queue_id);\n"


def statements(script: str) -> list[str]:
    """The statements of a schema script (one per ';' at a line end)."""
    return [s for s in script.split(";\n") if s.strip()]


def create_schema(cur: Any, script: str) -> None:
    """Create the tables if absent and check that they are of this version; ``cur`` is in a
    transaction. Raises BackendError for a database written by another version."""
    for statement in statements(script):
        cur.execute(statement)
    cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                (SCHEMA_VERSION,))
    version = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise BackendError(
            f"the quarantine database was written by a different mailguard version (schema {version}, "
            f"expected {SCHEMA_VERSION})"
        )


_BATCH = 500  # ids per IN (...) list, well under SQLite's limit of bound parameters
_ENTRY_COLUMNS = "id, created, status, action, score, size, released_at, queue_id, sealed_info"


class SQLBackend:
    """The ``QuarantineBackend`` methods, on top of a subclass's connection handling.

    One connection per instance, guarded by a lock so the instance can be shared between
    threads. A process forked after opening gets a fresh connection of its own on first
    use: database connections must not cross a fork.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db: Any = None
        self._pid = 0
        self._closed = False
        self.chain: AuditChain | None = None  # set once the key is known (open_quarantine)

    def _connect(self) -> Any:
        """A new connection (raises BackendError)."""
        raise NotImplementedError

    def _usable(self, conn: Any) -> bool:
        """Whether this process's connection can still be used (or must be replaced)."""
        return True

    @property
    def _conn(self) -> Any:
        """This process's connection (call with the lock held)."""
        if self._closed:
            raise BackendError("the quarantine database was closed")
        if self._db is None or self._pid != os.getpid() or not self._usable(self._db):
            self._db = self._connect()  # a forked parent's connection is left alone, not closed
            self._pid = os.getpid()
        return self._db

    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None
            self._closed = True

    # -- key binding

    def claim_key_id(self, key_id: str) -> str:
        with self._transaction() as cur:
            cur.execute("INSERT INTO meta (key, value) VALUES ('key_id', ?) ON CONFLICT (key) DO NOTHING", (key_id,))
            return str(cur.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()[0])

    def stored_key_id(self) -> str | None:
        return self.meta_value("key_id")

    def meta_value(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM entries")[0][0])

    # -- entries

    def insert(self, row: EntryRow, audit: AuditRow, key_id: str) -> None:
        if row.sealed_message is None:
            raise ValueError("an entry is stored with its message")
        with self._transaction() as cur:
            self._check_key(cur, key_id)
            cur.execute(
                "INSERT INTO entries (id, created, status, action, score, size, released_at, queue_id, sealed_info,"
                " sealed_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.created, row.status, row.action, row.score, row.size, row.released_at,
                 row.queue_id, row.sealed_info, row.sealed_message),
            )
            cur.executemany("INSERT INTO entry_rules (entry_id, pos, rule) VALUES (?, ?, ?)",
                            [(row.id, pos, rule) for pos, rule in enumerate(dict.fromkeys(row.rules))])
            cur.executemany(
                "INSERT INTO entry_recipients (entry_id, idx, mac, delivered_at) VALUES (?, ?, ?, ?)",
                [(row.id, r.index, r.mac, r.delivered_at) for r in row.recipients],
            )
            self._audit(cur, audit)

    def select(self, query: EntryQuery) -> list[EntryRow]:
        sql, params = _filtered(f"SELECT {_ENTRY_COLUMNS} FROM entries", (
            ("created >= ?", query.since),
            ("created < ?", query.before),
            ("action = ?", query.action),
            ("status = ?", query.status),
            ("queue_id = ?", query.queue_id),
            ("id IN (SELECT entry_id FROM entry_rules WHERE rule = ?)", query.rule),
            ("id IN (SELECT entry_id FROM entry_recipients WHERE mac = ?)", query.recipient_mac),
        ))
        sql += " ORDER BY created DESC, id"
        if query.limit:
            sql += f" LIMIT {int(query.limit)}"
        return self._complete(self._read(sql, params), with_message=False)

    def fetch(self, entry_id: str, with_message: bool = False) -> EntryRow | None:
        columns = _ENTRY_COLUMNS + (", sealed_message" if with_message else "")
        rows = self._complete(self._read(f"SELECT {columns} FROM entries WHERE id = ?", (entry_id,)), with_message)
        return rows[0] if rows else None

    def _complete(self, rows: list[tuple[Any, ...]], with_message: bool) -> list[EntryRow]:
        """EntryRows with their rules and recipients, read for many entries at a time (a
        few queries for a whole listing, not two per entry: it matters over a network)."""
        rules: dict[str, list[str]] = {}
        recipients: dict[str, list[RecipientRow]] = {}
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            marks = ", ".join("?" * len(batch))
            for entry_id, rule in self._read(
                f"SELECT entry_id, rule FROM entry_rules WHERE entry_id IN ({marks}) ORDER BY entry_id, pos", batch
            ):
                rules.setdefault(entry_id, []).append(rule)
            for entry_id, index, mac, delivered_at in self._read(
                f"SELECT entry_id, idx, mac, delivered_at FROM entry_recipients WHERE entry_id IN ({marks})"
                " ORDER BY entry_id, idx", batch
            ):
                recipients.setdefault(entry_id, []).append(RecipientRow(int(index), str(mac), delivered_at))
        return [_row(r, rules.get(r[0], ()), recipients.get(r[0], ()), with_message) for r in rows]

    @staticmethod
    def _check_key(cur: Any, key_id: str) -> None:
        stored = cur.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()
        if stored is None or stored[0] != key_id:
            raise KeyChangedError(
                "the quarantine was re-encrypted with another key since this program opened it; restart it "
                "with the new [quarantine] key_file"
            )

    def reseal(
        self, old_key_id: str, new_key_id: str, reseal: Callable[[EntryRow], EntryRow], audit: AuditRow,
        meta: dict[str, str] | None = None,
    ) -> int:
        with self._transaction() as cur:
            self._check_key(cur, old_key_id)
            ids = [r[0] for r in cur.execute("SELECT id FROM entries ORDER BY created").fetchall()]
            for entry_id in ids:  # one at a time: a large quarantine need not fit in memory
                found = cur.execute(f"SELECT {_ENTRY_COLUMNS}, sealed_message FROM entries WHERE id = ?",
                                    (entry_id,)).fetchone()
                recipients = [RecipientRow(int(i), str(m), d) for i, m, d in cur.execute(
                    "SELECT idx, mac, delivered_at FROM entry_recipients WHERE entry_id = ? ORDER BY idx",
                    (entry_id,)).fetchall()]
                new = reseal(_row(found, (), recipients, True))
                cur.execute("UPDATE entries SET sealed_info = ?, sealed_message = ? WHERE id = ?",
                            (new.sealed_info, new.sealed_message, entry_id))
                cur.executemany("UPDATE entry_recipients SET mac = ? WHERE entry_id = ? AND idx = ?",
                                [(r.mac, entry_id, r.index) for r in new.recipients])
            cur.execute("UPDATE meta SET value = ? WHERE key = 'key_id'", (new_key_id,))
            for key, value in (meta or {}).items():
                cur.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
            self._audit(cur, audit)
        return len(ids)

    def match_ids(self, prefix: str) -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return [r[0] for r in self._read("SELECT id FROM entries WHERE id LIKE ? ESCAPE '\\' LIMIT 10",
                                         (escaped + "%",))]

    def mark_delivered(
        self, entry_id: str, indexes: Sequence[int], at: float, released: bool, audit: AuditRow
    ) -> None:
        with self._transaction() as cur:
            cur.executemany(
                "UPDATE entry_recipients SET delivered_at = ? WHERE entry_id = ? AND idx = ? AND delivered_at IS NULL",
                [(at, entry_id, i) for i in indexes],
            )
            if released:
                cur.execute("UPDATE entries SET status = ?, released_at = ? WHERE id = ?", (RELEASED, at, entry_id))
            self._audit(cur, audit)

    def delete(self, entry_ids: Sequence[str], audits: Sequence[AuditRow]) -> int:
        with self._transaction() as cur:
            removed = 0
            for entry_id in entry_ids:
                cur.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                removed += cur.rowcount
            for audit in audits:
                self._audit(cur, audit)
        return removed

    def claim(self, key: str, value: str, stale: Callable[[str], bool]) -> str:
        """Take the claim ``key`` (a row in ``meta``) for ``value``, unless someone else holds
        it and ``stale(their value)`` is false; return the value holding it now (``value``
        when taken). One transaction, and taking over a stale claim only replaces that very
        value: of two processes asking at the same moment, exactly one gets it."""
        held = ""
        with self._transaction() as cur:
            for _ in range(3):  # PostgreSQL: the holder may let go between two statements
                cur.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
                found = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if found is None:
                    continue
                held = str(found[0])
                if held == value or not stale(held):
                    return held
                cur.execute("UPDATE meta SET value = ? WHERE key = ? AND value = ?", (value, key, held))
        return held

    def unclaim(self, key: str, value: str) -> None:
        """Let go of a claim taken with ``claim`` (only if it is still ours)."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM meta WHERE key = ? AND value = ?", (key, value))

    def ids_older_than(self, cutoff: float) -> list[str]:
        return [r[0] for r in self._read("SELECT id FROM entries WHERE created < ? ORDER BY created", (cutoff,))]

    # -- audit

    def _lock_audit(self, cur: Any) -> None:
        """Serialise appends, so two writers never link to the same previous record."""

    def _audit(self, cur: Any, a: AuditRow) -> None:
        """Append one record, linked to the one before it (see mailguard.quarantine.audit)."""
        mac = ""
        chain = self.chain
        if chain is not None:
            self._lock_audit(cur)
            found = cur.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
            trusted = chain.parse_head(str(found[0])) if found else None
            if trusted is not None:
                count, legacy, previous = trusted
            else:
                count = int(cur.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
                legacy, previous = 0, GENESIS
                if found is not None or count:
                    # start_chain wrote a head when the chain began: without a valid one now,
                    # someone removed records or MACs. Never continue (and so re-MAC) that.
                    previous = BROKEN_LINK
                    log.error("the quarantine audit chain head is missing or altered: the audit log was "
                              "tampered with; 'mailguard quarantine audit --verify' names the record")
            mac = chain.link(previous, a)
        cur.execute(
            "INSERT INTO audit (time, actor, operation, entry_id, result, detail, as_actor, mac)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (a.time, a.actor, a.operation, a.entry_id, a.result, a.detail, a.as_actor, mac),
        )
        if chain is not None:
            cur.execute("INSERT INTO meta (key, value) VALUES ('audit_head', ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (chain.head(count + 1, legacy, mac),))

    def start_chain(self, key: str, sealed_key: str, chain: AuditChain) -> str:
        """Store the audit chain's (sealed) key unless one is there already, and return the
        one that won. The first to store it also writes the chain head, counting every
        record already in the log as written before the chain existed (an older mailguard),
        in the same transaction: from then on the head always exists, so ``_audit`` can
        tell a removed head from a chain that has not begun."""
        with self._transaction() as cur:
            self._lock_audit(cur)
            cur.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, sealed_key))
            won = str(cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
            if won == sealed_key:
                count = int(cur.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
                cur.execute("INSERT INTO meta (key, value) VALUES ('audit_head', ?) ON CONFLICT (key) DO NOTHING",
                            (chain.head(count, count, GENESIS),))
            return won

    def audit_head(self) -> str | None:
        return self.meta_value("audit_head")

    def append_audit(self, audit: AuditRow) -> None:
        with self._transaction() as cur:
            self._audit(cur, audit)

    def audit_rows(self, query: AuditQuery) -> list[AuditRow]:
        sql, params = _filtered("SELECT seq, time, actor, operation, entry_id, result, detail, as_actor, mac"
                                " FROM audit", (
            ("time >= ?", query.since),
            ("entry_id = ?", query.entry_id),
            ("operation = ?", query.operation),
        ))
        if query.limit:  # the most recent N, still in the order written
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT {int(query.limit)}) AS recent ORDER BY seq"
        else:
            sql += " ORDER BY seq"
        return [AuditRow(time=t, actor=ac, operation=op, entry_id=e, result=r, detail=d, seq=s, as_actor=aa, mac=m)
                for s, t, ac, op, e, r, d, aa, m in self._read(sql, params)]


def _row(r: Sequence[Any], rules: Sequence[str], recipients: Sequence[RecipientRow], with_message: bool) -> EntryRow:
    """An EntryRow from the columns ``_ENTRY_COLUMNS`` (+ ``sealed_message``)."""
    return EntryRow(
        id=r[0], created=float(r[1]), status=r[2], action=r[3], score=r[4], size=r[5], released_at=r[6],
        queue_id=str(r[7] or ""), sealed_info=bytes(r[8]), sealed_message=bytes(r[9]) if with_message else None,
        rules=tuple(rules), recipients=tuple(recipients),
    )


def _filtered(select: str, conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``select`` with a WHERE clause of the conditions whose value is given (not None/empty)."""
    used = [(clause, value) for clause, value in conditions if value is not None and value != ""]
    if not used:
        return select, []
    return select + " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]
