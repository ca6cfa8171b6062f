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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from mailguard.quarantine_backend import BackendError
from mailguard.quarantine_sql import SQLBackend

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
    pos INTEGER NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY (entry_id, pos)
);
CREATE INDEX IF NOT EXISTS entry_rules_rule ON entry_rules (rule);
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


class SQLiteBackend(SQLBackend):
    """A ``QuarantineBackend`` on one SQLite file in ``folder``."""

    def __init__(self, folder: Path, busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.path = folder / DB_NAME
        self._busy_timeout_s = busy_timeout_s
        fresh = not self.path.exists()
        with self._lock:
            conn = self._conn
        if fresh:  # SQLite gives its -wal and -shm files the database file's mode
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
        try:
            self._setup(conn)
        except BaseException:
            self.close()
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

    def _setup(self, conn: sqlite3.Connection) -> None:
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
            cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                        (SCHEMA_VERSION,))
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
