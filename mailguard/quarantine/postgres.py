"""The shared quarantine: PostgreSQL, for several gateway machines using one quarantine.

Same tables and statements as the embedded SQLite store (``sql``); only the
connection differs. Each machine needs the same ``[quarantine] key_file`` (copy it with
mode 0600): the key id recorded in the database refuses any other key. A commit returns
after the server has flushed its write-ahead log (``synchronous_commit = on`` is forced per
session), so a store is durable when it returns, as the relay's 250 requires. The audit
table refuses UPDATE, DELETE and TRUNCATE through triggers. Needs the ``psycopg`` package
(``pip install 'psycopg[binary]'``); the password belongs in ``~/.pgpass`` or the
``PGPASSWORD`` environment variable, not in mailguard's configuration.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from mailguard.quarantine.backend import BackendError
from mailguard.quarantine.sql import ADDED_COLUMNS, ADDED_INDEXES, TABLES, SQLBackend, create_schema

_SCHEMA_LOCK = 0x6D67_7175  # advisory lock id: only one process creates the tables at a time

_AUDIT_LOCK = 0x6D67_6175  # advisory lock id: one audit append at a time (the chain has no forks)
_SCHEMA = TABLES.format(real="DOUBLE PRECISION", bigint="BIGINT", blob="BYTEA", serial="BIGSERIAL PRIMARY KEY") + "".join(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {spec};\n"
    for table, columns in ADDED_COLUMNS.items() for column, spec in columns.items()
) + ADDED_INDEXES + """
CREATE OR REPLACE FUNCTION mailguard_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the quarantine audit log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_no_change ON audit;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION mailguard_audit_append_only();
DROP TRIGGER IF EXISTS audit_no_truncate ON audit;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION mailguard_audit_append_only()
"""


def _pg(sql: str) -> str:
    """The shared statements use '?' placeholders; psycopg takes '%s'."""
    return sql.replace("?", "%s")


class _Cursor:
    """A psycopg cursor that accepts the shared '?'-style statements."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cur.execute(_pg(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(_pg(sql), rows)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class PostgresBackend(SQLBackend):
    """A ``QuarantineBackend`` on a PostgreSQL database given as a libpq connection string
    ("postgresql://mailguard@db.practice.example/mailguard" or "host=... dbname=...")."""

    def __init__(self, conninfo: str, connect_timeout_s: float = 30.0) -> None:
        try:
            import psycopg
        except ImportError:
            raise BackendError(
                "[quarantine] backend = \"postgresql\" needs the psycopg package: pip install 'psycopg[binary]'"
            ) from None
        super().__init__()
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._connect_timeout = max(1, int(connect_timeout_s))
        try:
            with self._transaction() as cur:
                cur.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                create_schema(cur, _SCHEMA)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> Any:
        try:
            conn = self._psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout)
            conn.execute("SET synchronous_commit = on")
        except self._psycopg.Error as exc:
            raise BackendError(f"cannot connect to the quarantine database: {_first_line(exc)}") from None
        return conn

    def _lock_audit(self, cur: Any) -> None:
        cur.execute(f"SELECT pg_advisory_xact_lock({_AUDIT_LOCK})")

    def _usable(self, conn: Any) -> bool:
        return not conn.closed and not conn.broken  # reconnect after a server restart

    @contextmanager
    def _transaction(self) -> Iterator[_Cursor]:
        """One transaction, committed (WAL flushed) on exit."""
        with self._lock:
            conn = self._conn
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield _Cursor(cur)
            except self._psycopg.Error as exc:
                raise BackendError(f"quarantine database: {_first_line(exc)}") from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                with self._conn.cursor() as cur:
                    return list(cur.execute(_pg(sql), params).fetchall())
            except self._psycopg.Error as exc:
                raise BackendError(f"quarantine database: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """psycopg errors can span lines (hints, context); one line reads better in a log."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
