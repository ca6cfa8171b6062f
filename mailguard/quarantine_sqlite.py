"""The embedded quarantine database: one SQLite file in WAL mode.

Why these settings: WAL lets readers (the CLI) work while the relay writes;
``synchronous=FULL`` makes every commit fsync the log, so a store is durable when it
returns (the relay answers 250 on it); ``busy_timeout`` and ``BEGIN IMMEDIATE`` let several
threads and processes write without losing anything; ``secure_delete`` overwrites the
(already encrypted) content of deleted entries. The audit table refuses UPDATE and DELETE
through triggers, so it is append-only even for a careless script.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from mailguard.quarantine_backend import (
    AuditQuery,
    AuditRow,
    BackendError,
    EntryQuery,
    EntryRow,
    RecipientRow,
    RELEASED,
)

DB_NAME = "quarantine.sqlite3"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    action TEXT NOT NULL,
    score REAL NOT NULL,
    size INTEGER NOT NULL,
    released_at REAL,
    sealed_info BLOB NOT NULL,
    sealed_message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created);
CREATE TABLE IF NOT EXISTS entry_rules (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    rule TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entry_rules_rule ON entry_rules (rule);
CREATE INDEX IF NOT EXISTS entry_rules_entry ON entry_rules (entry_id);
CREATE TABLE IF NOT EXISTS entry_recipients (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    mac TEXT NOT NULL,
    delivered_at REAL,
    PRIMARY KEY (entry_id, idx)
);
CREATE INDEX IF NOT EXISTS entry_recipients_mac ON entry_recipients (mac);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    operation TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the quarantine audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the quarantine audit log is append-only'); END;
"""

_ENTRY_COLUMNS = "id, created, status, action, score, size, released_at, sealed_info"


class SQLiteBackend:
    """A ``QuarantineBackend`` on one SQLite file. One connection per instance, guarded by a
    lock so the instance can be shared between threads. A process forked after opening gets
    a fresh connection of its own on first use (SQLite connections must not cross a fork)."""

    def __init__(self, folder: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = folder / DB_NAME
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        fresh = not self.path.exists()
        self._db = self._connect()
        self._pid = os.getpid()
        if fresh:  # SQLite gives its -wal and -shm files the database file's mode
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open quarantine database {self.path}: {exc}") from None
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        """This process's connection (call with the lock held)."""
        if self._pid != os.getpid():
            self._db = self._connect()  # the parent's connection is left alone, not closed
            self._pid = os.getpid()
        return self._db

    def _setup(self) -> None:
        conn = self._db
        deadline = time.monotonic() + self._busy_timeout_s
        while True:  # switching to WAL needs a moment alone; another process may be doing it too
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise BackendError(f"{self.path}: the file system does not support SQLite WAL mode")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise BackendError(f"cannot open quarantine database {self.path}: {exc}") from None
                time.sleep(0.05)
        with self._transaction() as cur:
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            version = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise BackendError(
                f"{self.path} was written by a different mailguard version (schema {version}, expected {SCHEMA_VERSION})"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction; committed (and, with synchronous=FULL, synced) on exit."""
        with self._lock:
            try:
                conn = self._conn
                cur = conn.cursor()
            except sqlite3.Error as exc:
                raise BackendError(f"quarantine database {self.path}: {exc}") from None
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth reporting
                if isinstance(exc, sqlite3.Error):
                    raise BackendError(f"quarantine database {self.path}: {exc}") from None
                raise
            finally:
                cur.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise BackendError(f"quarantine database {self.path}: {exc}") from None

    # -- key binding

    def claim_key_id(self, key_id: str) -> str:
        with self._transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_id', ?)", (key_id,))
            return str(cur.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()[0])

    def stored_key_id(self) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = 'key_id'")
        return str(rows[0][0]) if rows else None

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM entries")[0][0])

    # -- entries

    def insert(self, row: EntryRow, audit: AuditRow) -> None:
        if row.sealed_message is None:
            raise ValueError("an entry is stored with its message")
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO entries (id, created, status, action, score, size, released_at, sealed_info, sealed_message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.created, row.status, row.action, row.score, row.size, row.released_at,
                 row.sealed_info, row.sealed_message),
            )
            cur.executemany("INSERT INTO entry_rules (entry_id, rule) VALUES (?, ?)",
                            [(row.id, rule) for rule in dict.fromkeys(row.rules)])
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
            ("id IN (SELECT entry_id FROM entry_rules WHERE rule = ?)", query.rule),
            ("id IN (SELECT entry_id FROM entry_recipients WHERE mac = ?)", query.recipient_mac),
        ))
        sql += " ORDER BY created DESC, id"
        if query.limit:
            sql += f" LIMIT {int(query.limit)}"
        rows = self._read(sql, params)
        return [self._complete(r, None) for r in rows]

    def fetch(self, entry_id: str, with_message: bool = False) -> EntryRow | None:
        columns = _ENTRY_COLUMNS + (", sealed_message" if with_message else "")
        rows = self._read(f"SELECT {columns} FROM entries WHERE id = ?", (entry_id,))
        if not rows:
            return None
        return self._complete(rows[0][:8], rows[0][8] if with_message else None)

    def _complete(self, r: tuple[Any, ...], message: bytes | None) -> EntryRow:
        rules = tuple(x[0] for x in self._read("SELECT rule FROM entry_rules WHERE entry_id = ? ORDER BY rowid", (r[0],)))
        recipients = tuple(
            RecipientRow(int(i), str(m), d)
            for i, m, d in self._read(
                "SELECT idx, mac, delivered_at FROM entry_recipients WHERE entry_id = ? ORDER BY idx", (r[0],)
            )
        )
        return EntryRow(
            id=r[0], created=r[1], status=r[2], action=r[3], score=r[4], size=r[5], released_at=r[6],
            sealed_info=bytes(r[7]), sealed_message=bytes(message) if message is not None else None,
            rules=rules, recipients=recipients,
        )

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

    def ids_older_than(self, cutoff: float) -> list[str]:
        return [r[0] for r in self._read("SELECT id FROM entries WHERE created < ? ORDER BY created", (cutoff,))]

    # -- audit

    @staticmethod
    def _audit(cur: sqlite3.Cursor, a: AuditRow) -> None:
        cur.execute(
            "INSERT INTO audit (time, actor, operation, entry_id, result, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (a.time, a.actor, a.operation, a.entry_id, a.result, a.detail),
        )

    def append_audit(self, audit: AuditRow) -> None:
        with self._transaction() as cur:
            self._audit(cur, audit)

    def audit_rows(self, query: AuditQuery) -> list[AuditRow]:
        sql, params = _filtered("SELECT seq, time, actor, operation, entry_id, result, detail FROM audit", (
            ("time >= ?", query.since),
            ("entry_id = ?", query.entry_id),
            ("operation = ?", query.operation),
        ))
        if query.limit:  # the most recent N, still in the order written
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT {int(query.limit)}) ORDER BY seq"
        else:
            sql += " ORDER BY seq"
        return [AuditRow(time=t, actor=ac, operation=op, entry_id=e, result=r, detail=d, seq=s)
                for s, t, ac, op, e, r, d in self._read(sql, params)]

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._db.close()


def _filtered(select: str, conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``select`` with a WHERE clause of the conditions whose value is given (not None/empty)."""
    used = [(clause, value) for clause, value in conditions if value is not None and value != ""]
    if not used:
        return select, []
    return select + " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]
