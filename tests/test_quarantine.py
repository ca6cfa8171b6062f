"""The quarantine library: store, list, show, release to a real SMTP server on loopback,
delete, purge, the audit log, encryption at rest, key handling and concurrent stores."""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sqlite3
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.config import Config
from mailguard.model import Action, Finding, Verdict
from mailguard.quarantine import QuarantineError, open_quarantine, parse_since
from mailguard.quarantine.crypto import create_key_file
from mailguard.quarantine.store import default_actor
from test_quarantine_support import (
    BODY_MARKER,
    RECIPIENT,
    SENDER,
    SUBJECT_MARKER,
    PostgresServer,
    SmtpServer,
    files_containing,
    make_config,
    make_envelope,
    make_message,
    make_verdict,
    refused_port,
    start_postgres,
    store_many,
)


class Clock:
    """A settable clock, so retention and 'since' are tested without waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One kind of quarantine database under test: its configuration, and how to look at
    what it has on disk from outside mailguard."""

    kind: str
    tmp_path: Path
    server: PostgresServer | None = None
    url: str = ""

    def config(self, folder: Path | None = None, **quarantine: Any) -> Config:
        if self.kind == "postgresql":
            quarantine.update(backend="postgresql", database_url=self.url)
        return make_config(folder or self.tmp_path, **quarantine)

    def files_containing(self, marker: str) -> list[Path]:
        if self.server is None:
            return files_containing(self.tmp_path / "q", marker)
        self.server.checkpoint()  # every row written into the server's data files
        return files_containing(self.server.base, marker)

    def snapshot(self) -> Any:
        """Everything on disk (SQLite: every file byte for byte), to show that a refused open
        wrote nothing at all."""
        if self.server is None:
            folder = self.tmp_path / "q"
            return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.contents()

    def contents(self) -> Any:
        """Every row of every table, to show that a failed operation changed no data."""
        return {table: self.execute(f"SELECT * FROM {table} ORDER BY 1")
                for table in ("meta", "entries", "entry_rules", "entry_recipients", "audit")}

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL directly against the database, as a careless script would."""
        if self.server is None:
            db = sqlite3.connect(self.tmp_path / "q" / "quarantine.sqlite3", isolation_level=None)
            try:
                return db.execute(sql).fetchall()
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from start_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgresql", tmp_path, server, server.new_database())


@contextmanager
def opened(config: Config, **kwargs: object) -> Iterator[object]:
    q = open_quarantine(config, **kwargs)  # type: ignore[arg-type]
    try:
        yield q
    finally:
        q.close()


def test_store_then_list_and_show(backend: Backend) -> None:
    raw = make_message(1)
    with opened(backend.config(), actor="tester") as q:
        entry_id = q.store(raw, make_envelope(), make_verdict(1))
        entries = q.list()
        assert [e.id for e in entries] == [entry_id]
        entry = q.get(entry_id[:6])  # a unique prefix is enough
        assert entry.status == "held"
        assert entry.action is Action.QUARANTINE
        assert entry.envelope == make_envelope()
        assert entry.subject == f"{SUBJECT_MARKER} invoice 1"
        assert SENDER in entry.from_header
        assert entry.message_id == "<msg1@paypa1-secure.example>"
        assert entry.rules == ("LOOKALIKE_SENDER_DOMAIN", "URGENT_PAYMENT")
        assert entry.reasons[0].startswith("Sender domain paypa1-secure.example imitates")
        assert q.raw(entry_id) == raw  # byte for byte
        assert q.raw(entry_id, headers_only=True).endswith(b"\r\n\r\n")
        operations = [(a.operation, a.entry_id, a.actor, a.as_actor, a.result) for a in q.audit()]
        me = default_actor()  # the OS user always; --actor beside it, never instead
        assert operations == [("store", entry_id, me, "tester", "ok"), ("list", "*", me, "tester", "ok"),
                              ("view", entry_id, me, "tester", "ok"), ("view_raw", entry_id, me, "tester", "ok"),
                              ("view_headers", entry_id, me, "tester", "ok")]


def test_findings_with_any_details_are_stored(backend: Backend) -> None:
    odd = Finding("signatures", "YARA_ODD", 10.0, "Odd details", details={"raw": b"\x00\xff", "set": {1},
                                                                            "path": Path("/x")})
    verdict = Verdict(10.0, Action.QUARANTINE, (odd,), message_id="<odd@example>")
    with opened(backend.config()) as q:
        entry_id = q.store(make_message(), make_envelope(), verdict)
        assert q.get(entry_id).verdict["findings"][0]["details"]["raw"] == "b'\\x00\\xff'"
        raw8 = make_message().replace(b"Subject: ", b"Subject: Rechnung f\xfcr \xe9t\xe9 ")  # raw 8-bit header
        eight = q.store(raw8, make_envelope(), verdict)
        assert "Rechnung" in q.get(eight).subject and q.raw(eight) == raw8


def test_list_filters(backend: Backend) -> None:
    clock = Clock()
    with opened(backend.config(), clock=clock) as q:
        old = q.store(make_message(1), make_envelope("a@practice.example"), make_verdict(1))
        clock.now += 3 * 86400
        new = q.store(make_message(2), make_envelope("B@practice.example", "c@practice.example"),
                      make_verdict(2, rule="YARA_MACRO_DROPPER", action=Action.REJECT))
        assert [e.id for e in q.list()] == [new, old]
        assert [e.id for e in q.list(since="1d")] == [new]
        assert [e.id for e in q.list(recipient="b@PRACTICE.example")] == [new]  # case-insensitive
        assert [e.id for e in q.list(recipient="a@practice.example")] == [old]
        assert q.list(recipient="nobody@practice.example") == []
        assert [e.id for e in q.list(rule="yara_macro_dropper")] == [new]
        assert [e.id for e in q.list(action="quarantine")] == [old]
        assert [e.id for e in q.list(status="held", limit=1)] == [new]
        with pytest.raises(QuarantineError, match="unknown action"):
            q.list(action="bounce")


def test_an_entry_is_found_by_the_queue_id_the_sender_was_told(backend: Backend) -> None:
    with opened(backend.config()) as q:
        held = q.store(make_message(1), make_envelope(), make_verdict(1), queue_id="672DD632CD07")
        other = q.store(make_message(2), make_envelope(), make_verdict(2), queue_id="4Xq8Sv0ZHhz9sWd")
        q.store(make_message(3), make_envelope(), make_verdict(3))  # no queue id known
        assert [e.id for e in q.list(queue_id="672DD632CD07")] == [held]
        assert [e.id for e in q.list(queue_id=" 4Xq8Sv0ZHhz9sWd ")] == [other]  # pasted with spaces
        assert q.list(queue_id="4xq8sv0zhhz9swd") == []  # Postfix's long queue ids are case-sensitive
        assert q.get(held).queue_id == "672DD632CD07" and q.get(held).to_dict()["queue_id"] == "672DD632CD07"
        assert "queue_id=672DD632CD07" in q.audit(operation="list")[0].detail


def test_an_older_database_gets_the_queue_id_column(backend: Backend) -> None:
    """A quarantine written before entries kept their queue id: opened by this version, its
    entries are all still there (with no queue id) and new ones are found by theirs."""
    with opened(backend.config()) as q:
        old = q.store(make_message(1), make_envelope(), make_verdict(1))
    backend.execute("DROP INDEX entries_queue_id")  # the tables as the older version made them
    backend.execute("ALTER TABLE entries DROP COLUMN queue_id")
    with opened(backend.config()) as q:
        assert [(e.id, e.queue_id) for e in q.list()] == [(old, "")]
        new = q.store(make_message(2), make_envelope(), make_verdict(2), queue_id="5B1C0A2D3E4F")
        assert [e.id for e in q.list(queue_id="5B1C0A2D3E4F")] == [new]
        assert q.raw(old) == make_message(1)
    with opened(backend.config()) as q:  # and opening it again changes nothing more
        assert {e.id for e in q.list()} == {old, new}


def test_listing_many_entries_keeps_each_ones_rules_and_recipients(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailguard.quarantine.sql._BATCH", 2)  # several batches from a few entries
    with opened(backend.config()) as q:
        stored = {q.store(make_message(n), make_envelope(f"r{n}@practice.example", f"s{n}@practice.example"),
                          make_verdict(n, rule=f"RULE_{n}")): n for n in range(5)}
        entries = q.list()
        assert len(entries) == 5
        for entry in entries:
            n = stored[entry.id]
            assert entry.rules == (f"RULE_{n}", "URGENT_PAYMENT")
            assert entry.envelope.rcpt_tos == (f"r{n}@practice.example", f"s{n}@practice.example")
        assert [e.id for e in q.list(recipient="s3@practice.example")] == [e for e, n in stored.items() if n == 3]


def test_nothing_identifying_is_on_disk_in_plaintext(backend: Backend) -> None:
    with opened(backend.config()) as q:
        for n in range(3):
            q.store(make_message(n), make_envelope(), make_verdict(n))
        q.purge(older_than_days=365)  # exercises the audit table too
        assert len(q.list()) == 3
    for marker in (BODY_MARKER, SUBJECT_MARKER, SENDER, RECIPIENT, "paypa1", "Dear client"):
        assert backend.files_containing(marker) == [], marker
    assert backend.files_containing("LOOKALIKE_SENDER_DOMAIN")  # rule ids stay searchable: the search works


def test_key_file_is_created_0600_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path)
    key = tmp_path / "keys" / "quarantine.key"
    with caplog.at_level(logging.WARNING, logger="mailguard.quarantine"):
        with opened(config):
            pass
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "q" / "quarantine.sqlite3").stat().st_mode) == 0o600
    assert any("created a new quarantine key file" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mailguard.quarantine"):
        with opened(config):
            pass
    assert not caplog.records  # reused, not recreated


def test_missing_key_is_a_clear_error_and_changes_nothing(backend: Backend) -> None:
    config = backend.config()
    with opened(config) as q:
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
    key = backend.tmp_path / "keys" / "quarantine.key"
    saved = key.read_bytes()
    key.unlink()
    before = backend.snapshot()
    with pytest.raises(QuarantineError) as info:
        open_quarantine(config)
    message = str(info.value)
    assert "does not exist" in message and "restore that key file" in message and "Nothing was changed" in message
    assert not key.exists()  # no new key was made for a quarantine that has one
    assert backend.snapshot() == before
    key.write_bytes(saved)
    key.chmod(0o600)
    with opened(config) as q:
        assert q.raw(entry_id) == make_message()


def test_wrong_key_is_a_clear_error_and_changes_nothing(backend: Backend) -> None:
    config = backend.config()
    with opened(config) as q:
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
    other_key = backend.tmp_path / "other.key"
    create_key_file(other_key)
    before = backend.snapshot()
    with pytest.raises(QuarantineError, match="is not the key of the"):
        open_quarantine(backend.config(key_file=str(other_key)))
    assert backend.snapshot() == before
    broken = backend.tmp_path / "broken.key"
    broken.write_text("not a key\n")
    broken.chmod(0o600)
    with pytest.raises(QuarantineError, match="not a mailguard quarantine key file"):
        open_quarantine(backend.config(key_file=str(broken)))
    with opened(config) as q:
        assert q.get(entry_id).status == "held"


def test_rekey_reencrypts_everything_and_retires_the_old_key(backend: Backend) -> None:
    config = backend.config()
    relay = open_quarantine(config)  # a long-running program that still holds the old key
    try:
        first = relay.store(make_message(1), make_envelope(RECIPIENT, "billing@practice.example"), make_verdict(1))
        with opened(config, actor="it-admin") as q:
            new_key = backend.tmp_path / "keys" / "new.key"
            assert q.rekey(new_key) == 1
            assert stat.S_IMODE(new_key.stat().st_mode) == 0o600
            assert q.raw(first) == make_message(1)  # this object goes on with the new key
            with pytest.raises(QuarantineError, match="already in use"):
                q.rekey(new_key)
        with pytest.raises(QuarantineError, match="re-encrypted with another key"):
            relay.store(make_message(2), make_envelope(), make_verdict(2))  # refused (451), not mixed in
    finally:
        relay.close()
    with pytest.raises(QuarantineError, match="is not the key of the"):
        open_quarantine(config)  # the old key no longer opens it
    with opened(backend.config(key_file=str(new_key))) as q:
        assert [e.id for e in q.list(recipient="billing@practice.example")] == [first]  # hashes redone
        assert q.raw(first) == make_message(1) and q.count() == 1
        [line] = q.audit(operation="rekey")
        assert line.as_actor == "it-admin" and line.actor == default_actor() and line.result == "ok"


def store_good_and_damaged(backend: Backend, q: Any, column: str) -> tuple[str, str]:
    """Two entries; the second's ``column`` is replaced by the first's. Authenticated
    encryption binds each sealed value to its entry, so the second can no longer be opened."""
    good = q.store(make_message(1), make_envelope(), make_verdict(1))
    bad = q.store(make_message(2), make_envelope(), make_verdict(2))
    backend.execute(f"UPDATE entries SET {column} = (SELECT {column} FROM entries WHERE id = '{good}') "
                    f"WHERE id = '{bad}'")
    return good, bad


def test_rekey_stops_at_a_damaged_entry_and_changes_nothing(backend: Backend) -> None:
    with opened(backend.config()) as q:
        good, bad = store_good_and_damaged(backend, q, "sealed_message")
        before = backend.contents()
        with pytest.raises(QuarantineError, match=f"{bad}.*Nothing was changed"):
            q.rekey(backend.tmp_path / "new.key")
        assert backend.contents() == before
        assert q.raw(good) == make_message(1)


def test_release_delivers_with_the_original_envelope(backend: Backend) -> None:
    raw = make_message(5)
    envelope = make_envelope(RECIPIENT, "billing@practice.example")
    with SmtpServer() as smtp, opened(backend.config(release_host=smtp.address), actor="reviewer") as q:
        entry_id = q.store(raw, envelope, make_verdict(5))
        [result] = q.release([entry_id])
        assert result.ok and result.delivered == 2
        [got] = smtp.handler.received
        assert got.mail_from == SENDER
        assert got.rcpt_tos == list(envelope.rcpt_tos)
        header, _, rest = got.data.partition(b"\r\n")
        marker, _, rest = rest.partition(b"\r\n")  # the signed release marker (milter store mode)
        assert marker.startswith(b"X-MailGuard-Release-Token: " + entry_id.encode() + b".")
        assert header.startswith(b"X-MailGuard-Released: entry " + entry_id.encode() + b" by "
                                 + default_actor().replace(" ", "_").encode() + b" as reviewer;")
        assert rest == raw  # the message itself unchanged, dot line included
        entry = q.get(entry_id)
        assert entry.status == "released" and entry.released_at is not None
        assert entry.delivered == envelope.rcpt_tos
        [again] = q.release([entry_id])  # a second release sends nothing
        assert again.ok and again.message.startswith("already released")
        assert len(smtp.handler.received) == 1
        audit = [(a.operation, a.result) for a in q.audit(entry_id=entry_id)]
        assert audit == [("store", "ok"), ("release", "ok"), ("view", "ok"), ("release", "refused")]


def test_release_of_a_message_with_bare_newlines_sends_crlf(backend: Backend) -> None:
    raw = make_message(3).replace(b"\r\n", b"\n")
    with SmtpServer() as smtp, opened(backend.config(release_host=smtp.address)) as q:
        entry_id = q.store(raw, make_envelope(), make_verdict(3))
        assert q.release([entry_id])[0].ok
        assert q.raw(entry_id) == raw  # kept as received
        assert smtp.handler.received[0].data.split(b"\r\n", 2)[2] == make_message(3)  # after stamp and marker


def test_release_to_another_address(backend: Backend) -> None:
    with SmtpServer() as smtp, opened(backend.config(release_host=smtp.address)) as q:
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
        [result] = q.release([entry_id], to=["it@practice.example"])
        assert result.ok
        assert smtp.handler.received[0].rcpt_tos == ["it@practice.example"]
        assert q.get(entry_id).status == "released"
        [line] = q.audit(operation="release")
        # The destination is recorded, sealed: readable through the quarantine, not in the database.
        assert "it@practice.example" in line.detail and "--to" in line.detail
        assert "it@practice.example" not in str(backend.execute("SELECT detail FROM audit"))


def test_release_while_downstream_is_down_keeps_the_message(backend: Backend) -> None:
    for address in refused_port():
        with opened(backend.config(release_host=address, release_timeout=5.0)) as q:
            entry_id = q.store(make_message(), make_envelope(), make_verdict())
            [result] = q.release([entry_id])
            assert not result.ok and "cannot deliver" in result.message
            entry = q.get(entry_id)
            assert entry.status == "held" and entry.delivered == ()
            [line] = q.audit(operation="release")
            assert line.result == "failed" and address in line.detail
            assert q.raw(entry_id) == make_message()


def test_release_refused_by_the_server_keeps_the_message(backend: Backend) -> None:
    with SmtpServer(data_reply="451 4.3.0 try later") as smtp, \
            opened(backend.config(release_host=smtp.address)) as q:
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
        [result] = q.release([entry_id])
        assert not result.ok and "451" in result.message
        assert q.get(entry_id).status == "held"
        assert q.audit(operation="release")[0].result == "failed"


def test_partial_release_only_resends_to_the_refused(backend: Backend) -> None:
    envelope = make_envelope(RECIPIENT, "refuse-me@practice.example")
    with SmtpServer() as smtp, opened(backend.config(release_host=smtp.address)) as q:
        entry_id = q.store(make_message(), envelope, make_verdict())
        [result] = q.release([entry_id])
        assert not result.ok and result.delivered == 1 and result.refused == 1
        entry = q.get(entry_id)
        assert entry.status == "held" and entry.delivered == (RECIPIENT,)
        line = q.audit(operation="release")[0]
        assert line.result == "partial" and "refuse-me" not in line.detail  # no addresses in the audit log
        q.release([entry_id])  # retried: only the refused recipient is tried again
        assert [r.rcpt_tos for r in smtp.handler.received] == [[RECIPIENT]]


def test_release_without_a_server_configured(tmp_path: Path) -> None:
    config = make_config(tmp_path).to_dict()
    config["relay"]["downstream"] = ""  # neither release_host nor a relay downstream
    with opened(Config.from_dict(config)) as q:
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
        with pytest.raises(QuarantineError, match="release_host"):
            q.release([entry_id])


def test_delete_and_purge_are_audited(backend: Backend) -> None:
    clock = Clock()
    with opened(backend.config(retention_days=10), clock=clock) as q:
        old = q.store(make_message(1), make_envelope(), make_verdict(1))
        clock.now += 11 * 86400
        doomed = q.store(make_message(2), make_envelope(), make_verdict(2))
        kept = q.store(make_message(3), make_envelope(), make_verdict(3))
        with pytest.raises(QuarantineError, match="no quarantine entry"):
            q.delete([doomed, "deadbeefdeadbeef"])
        assert q.count() == 3  # nothing deleted when one id is unknown
        assert q.delete([doomed]) == 1
        assert q.purge() == [old]  # default: retention_days
        assert [e.id for e in q.list()] == [kept]
        with pytest.raises(QuarantineError):
            q.get(old)
        ops = [(a.operation, a.entry_id) for a in q.audit() if a.operation in ("delete", "purge")]
        assert ops == [("delete", doomed), ("purge", old), ("purge", "*")]


def test_a_damaged_entry_does_not_hide_the_others(backend: Backend) -> None:
    with opened(backend.config()) as q:
        good, bad = store_good_and_damaged(backend, q, "sealed_info")
        listed = {e.id: e for e in q.list()}
        assert listed[good].subject.startswith(SUBJECT_MARKER)
        assert listed[bad].subject.startswith("[damaged entry")
        with pytest.raises(QuarantineError, match=f"entry {bad} is damaged"):
            q.get(bad)
        assert q.raw(good) == make_message(1)


def test_audit_log_is_append_only(backend: Backend) -> None:
    with opened(backend.config()) as q:
        q.store(make_message(), make_envelope(), make_verdict())
    tampering = ["UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"]
    if backend.kind == "postgresql":
        tampering.append("TRUNCATE audit")
    for tamper in tampering:
        with pytest.raises(Exception, match="append-only"):
            backend.execute(tamper)
    assert len(backend.execute("SELECT * FROM audit")) == 1


def test_concurrent_stores_from_threads_lose_nothing(backend: Backend) -> None:
    per_thread, threads = 15, 6
    ids: list[str] = []
    lock = threading.Lock()
    with opened(backend.config()) as q:
        def work(t: int) -> None:
            mine = [q.store(make_message(i, f"t{t}"), make_envelope(), make_verdict(i)) for i in range(per_thread)]
            with lock:
                ids.extend(mine)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(set(ids)) == per_thread * threads
        assert {e.id for e in q.list()} == set(ids)
        assert sum(1 for a in q.audit(operation="store") if a.result == "ok") == len(ids)


def test_concurrent_stores_from_processes_lose_nothing(backend: Backend) -> None:
    config = backend.config()
    processes, per_process = 3, 20
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)  # all open (and race to create the key), then all store at once
    results = context.Queue()
    workers = [context.Process(target=store_many, args=(config, per_process, f"p{p}", barrier, results))
               for p in range(processes)]
    for w in workers:
        w.start()
    ids = [i for _ in workers for i in results.get(timeout=120)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert len(set(ids)) == processes * per_process
    with opened(config) as q:
        entries = q.list()
        assert {e.id for e in entries} == set(ids)
        assert all(q.raw(e.id).startswith(b"From: ") for e in entries)


def test_a_forked_process_can_keep_using_an_open_quarantine(backend: Backend) -> None:
    with opened(backend.config()) as q:
        parent_id = q.store(make_message(1), make_envelope(), make_verdict(1))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: store through the inherited object, report the id, exit
            code = 1
            try:
                os.write(write_end, q.store(make_message(2), make_envelope(), make_verdict(2)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        child_id = os.read(read_end, 100).decode()
        os.close(read_end)
        assert os.waitpid(pid, 0)[1] == 0
        q.store(make_message(3), make_envelope(), make_verdict(3))  # the parent's connection still works
        assert {parent_id, child_id} <= {e.id for e in q.list()} and q.count() == 3


def test_store_failure_raises_quarantine_error(backend: Backend) -> None:
    q = open_quarantine(backend.config())
    q.close()  # a closed database cannot store: the caller must get QuarantineError (then 451)
    with pytest.raises(QuarantineError, match="could not store"):
        q.store(make_message(), make_envelope(), make_verdict())


def test_store_fails_cleanly_when_the_database_stays_locked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with opened(make_config(tmp_path, busy_timeout=0.2)) as q:
        blocker = sqlite3.connect(tmp_path / "q" / "quarantine.sqlite3", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer that does not let go in time
        try:
            with pytest.raises(QuarantineError, match="could not store.*locked"):
                q.store(make_message(), make_envelope(), make_verdict())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        entry_id = q.store(make_message(), make_envelope(), make_verdict())  # fine again
        assert [e.id for e in q.list()] == [entry_id]
        assert [a.result for a in q.audit(operation="store")] == ["ok"]  # the locked database took no audit line
        assert any("quarantine store failed" in r.getMessage() for r in caplog.records)  # the log has it


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("2d", now) == now - 2 * 86400
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2026-11-01", now) == 1_793_491_200.0
    with pytest.raises(ValueError, match="cannot understand"):
        parse_since("yesterday", now)
