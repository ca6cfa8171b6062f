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

from mailguard.quarantine.backend import BackendError
from mailguard.quarantine.sql import ADDED_COLUMNS, ADDED_INDEXES, TABLES, SQLBackend, create_schema, statements

DB_NAME = "quarantine.sqlite3"
_SCHEMA = TABLES.format(real="REAL", bigint="INTEGER", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT") + """
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
            create_schema(cur, _SCHEMA)
            for table, columns in ADDED_COLUMNS.items():  # SQLite has no ADD COLUMN IF NOT EXISTS
                present = {row[1] for row in cur.execute(f"PRAGMA table_info({table})").fetchall()}
                for column, spec in columns.items():
                    if column not in present:
                        cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {spec}")
            for statement in statements(ADDED_INDEXES):
                cur.execute(statement)

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
