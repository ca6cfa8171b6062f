"""The quarantine against hostile and mistaken input: ids typed on the command line, held
messages crafted to fool the reviewer's screen, damaged or swapped database rows, an audit
log cut short by someone without the key, two releases of one entry at once, a full disk,
and settings that make no sense. Real files, the real command (``python -m mailguard``), a
real SMTP server on loopback; nothing of the quarantine is mocked."""
from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dns_server import loopback_dns_toml
from mailguard.config import load_config
from mailguard.model import Action, Envelope, Finding, Verdict
from mailguard.quarantine import QuarantineError, open_quarantine
from test_quarantine import Backend, backend, opened, postgres  # noqa: F401 (fixtures)
from test_quarantine_audit import drop_triggers
from test_quarantine_support import (
    BODY_MARKER,
    RECIPIENT,
    SENDER,
    SUBJECT_MARKER,
    EphemeralController,
    RecordingHandler,
    SmtpServer,
    make_envelope,
    make_message,
    make_verdict,
    refused_port,
)


def write_config(tmp_path: Path, **quarantine: Any) -> Path:
    settings = {"path": str(tmp_path / "q"), "key_file": str(tmp_path / "q.key"), **quarantine}
    path = tmp_path / "mailguard.toml"
    path.write_text("[quarantine]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
                    + loopback_dns_toml())
    return path


def mailguard(config: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``mailguard quarantine ARGV --config CONFIG``, as the IT person runs it."""
    return subprocess.run([sys.executable, "-m", "mailguard", "quarantine", *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout)


def store(config: Path, raw: bytes, envelope: Envelope | None = None, verdict: Verdict | None = None,
          queue_id: str = "") -> str:
    q = open_quarantine(load_config(config), actor="relay")
    try:
        return q.store(raw, envelope or make_envelope(), verdict or make_verdict(), queue_id=queue_id)
    finally:
        q.close()


def database(tmp_path: Path) -> sqlite3.Connection:
    """The SQLite file opened directly, as someone with write access to it (no key) would."""
    return sqlite3.connect(tmp_path / "q" / "quarantine.sqlite3", isolation_level=None)


# --------------------------------------------------------------------------- ids


def test_ids_that_are_no_entry_ids_are_refused_plainly(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    store(config, make_message())
    for given in ("../../etc/passwd", "/etc/passwd", "a" * 100_000):
        for action in ("show", "delete"):
            done = mailguard(config, action, given)
            assert done.returncode == 1, (action, given[:20], done.stderr)
            assert "is not a quarantine entry id (entry ids are 16 hex characters" in done.stderr
            assert "Traceback" not in done.stderr and len(done.stderr) < 300  # a 100 kB id is not echoed back
    done = mailguard(config, "show", "deadbeefdeadbeef")  # looks right, is not there
    assert done.returncode == 1 and "no quarantine entry deadbeefdeadbeef" in done.stderr
    q = open_quarantine(load_config(config))
    try:
        with pytest.raises(QuarantineError, match="is not a quarantine entry id"):
            q.get("abcd\x00")  # a NUL cannot be in argv, but a script may pass one
    finally:
        q.close()


# --------------------------------------------------------------------------- what the reviewer sees


def test_show_keeps_every_value_from_the_message_on_its_own_line(tmp_path: Path) -> None:
    """A subject (RFC 2047 decodes to CR/LF), an attachment name in a finding and the queue
    id cannot add lines to `show` such as "Status: released" or "Verdict: ACCEPT"; a From
    whose display name decodes to a line break is still shown (raw), not left empty."""
    config = write_config(tmp_path)
    subject = "=?utf-8?q?Invoice=0D=0AStatus:_____released=0AVerdict:____ACCEPT,_score_0?="
    raw = (f"From: =?utf-8?q?PayPal=0ABilling?= <{SENDER}>\r\nTo: {RECIPIENT}\r\nSubject: {subject}\r\n"
           f"Message-ID: <m1@example>\r\n\r\n{BODY_MARKER}\r\n").encode()
    verdict = Verdict(12.0, Action.QUARANTINE, (Finding(
        "filetype", "DANGEROUS_ATTACHMENT", 12.0, "Attachment scan.pdf\n  - [SAFE_SENDER -20] known sender"),),
        message_id="<m1@example>")
    entry_id = store(config, raw, verdict=verdict, queue_id="4F2A\nStatus:     released")
    shown = mailguard(config, "show", entry_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line for line in lines if line.startswith("Status:")] == ["Status:     held"]
    assert [line for line in lines if line.startswith("Verdict:")] == ["Verdict:    QUARANTINE, score 12"]
    assert not any("SAFE_SENDER" in line and line.lstrip().startswith("- [SAFE") for line in lines)
    assert "Subject:    Invoice\\u000d\\u000aStatus:     released\\u000aVerdict:    ACCEPT, score 0" in lines
    assert "queued as 4F2A\\u000aStatus:     released" in shown.stdout
    [from_line] = [line for line in lines if line.startswith("From:       ")]
    assert SENDER in from_line
    listed = mailguard(config, "list")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 3  # header, one entry, the count
    digest = mailguard(config, "notify", "--dry-run")  # the digest mail a member of staff reads
    assert digest.returncode == 0, digest.stderr
    mail = email.message_from_string(digest.stdout, policy=email.policy.default)
    body = [line.strip() for line in mail.get_content().splitlines()]
    assert "Subject:  Invoice\\u000d\\u000aStatus:     released\\u000aVerdict:    ACCEPT, score 0" in body
    assert not any(line.startswith(("Status:", "Verdict:")) for line in body)


def test_show_of_a_message_without_a_blank_line_prints_no_body(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    raw = f"From: {SENDER}\r\nSubject: {SUBJECT_MARKER}\r\nnot a header: the body, {BODY_MARKER}\r\nmore\r\n".encode()
    entry_id = store(config, raw)
    shown = mailguard(config, "show", entry_id)
    assert shown.returncode == 0 and f"Subject: {SUBJECT_MARKER}" in shown.stdout
    assert BODY_MARKER not in shown.stdout  # audited as a view of the headers: it shows only them
    exact = subprocess.run([sys.executable, "-m", "mailguard", "quarantine", "show", "--raw", entry_id,
                            "--config", str(config)], capture_output=True, timeout=60)
    assert exact.returncode == 0 and exact.stdout == raw


def test_logs_carry_no_subject_address_or_body(tmp_path: Path) -> None:
    """Every quarantine operation, logged at debug level into a file, names entries, message
    ids, verdicts and rules only (the patient-data rule for logs)."""
    log_file = tmp_path / "mailguard.log"
    config = write_config(tmp_path)
    config.write_text(config.read_text() + f'[logging]\nlevel = "debug"\nfile = "{log_file}"\n')
    for address in refused_port():
        config.write_text(config.read_text().replace("[quarantine]\n", f'[quarantine]\nrelease_host = "{address}"\n'))
        first, second = store(config, make_message(1)), store(config, make_message(2))
        for argv in (["list"], ["show", first], ["release", first], ["release", second, "--to", "it@practice.example"],
                     ["delete", second], ["audit"], ["purge", "--older-than", "0"]):
            assert mailguard(config, *argv).returncode in (0, 1), argv
    log = log_file.read_text()
    assert "quarantine release failed" in log and "quarantine purge" in log  # it was logging
    for marker in (SUBJECT_MARKER, SENDER, RECIPIENT, BODY_MARKER, "it@practice.example"):
        assert marker not in log, marker


# --------------------------------------------------------------------------- damaged rows


def test_a_truncated_blob_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    for address in refused_port():
        config = write_config(tmp_path, release_host=address)
        good, bad = store(config, make_message(1)), store(config, make_message(2))
        database(tmp_path).execute("UPDATE entries SET sealed_message = substr(sealed_message, 1, 5) WHERE id = ?",
                                   (bad,))
        for argv in (["show", "--raw", bad], ["release", bad], ["rekey", str(tmp_path / "new.key")]):
            done = mailguard(config, *argv)
            assert done.returncode == 1, (argv, done.stderr)
            assert f"quarantine entry {bad} cannot be decrypted: the sealed data is truncated" in done.stderr
            assert "Traceback" not in done.stderr
        assert "Nothing was changed" in done.stderr  # the rekey
        exact = subprocess.run([sys.executable, "-m", "mailguard", "quarantine", "show", "--raw", good,
                                "--config", str(config)], capture_output=True, timeout=60)
        assert exact.returncode == 0 and exact.stdout == make_message(1)


def test_a_blob_moved_to_another_entry_does_not_open(tmp_path: Path) -> None:
    """Each sealed value is bound to its entry id (AES-GCM associated data)."""
    config = write_config(tmp_path)
    first, second = store(config, make_message(1)), store(config, make_message(2))
    database(tmp_path).execute("UPDATE entries SET sealed_message = (SELECT sealed_message FROM entries WHERE id = ?)"
                               " WHERE id = ?", (first, second))
    done = mailguard(config, "show", "--raw", second)
    assert done.returncode == 1 and f"entry {second} cannot be decrypted: authentication failed" in done.stderr
    assert BODY_MARKER not in done.stdout


def test_a_row_with_an_unknown_action_hides_no_other_entry(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    good, bad = store(config, make_message(1)), store(config, make_message(2))
    database(tmp_path).execute("UPDATE entries SET action = 'bogus' WHERE id = ?", (bad,))
    listed = mailguard(config, "list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert good[:10] in listed.stdout and f"{bad[:10]}" in listed.stdout and "[damaged entry" in listed.stdout
    shown = mailguard(config, "show", bad)
    assert shown.returncode == 1 and f"entry {bad} is damaged: unknown action 'bogus'" in shown.stderr


def test_clear_columns_edited_without_the_key_are_shown_as_edited_and_not_believed(tmp_path: Path) -> None:
    """Someone who can write the database but has no key rewrote a held phish's clear columns
    to read "tag, score 1, no rules". Before, list and show printed that and a release
    went out on it; now both show the sealed verdict with a warning, and a release needs
    --force."""
    with SmtpServer() as smtp:
        config = write_config(tmp_path, release_host=smtp.address)
        edited, untouched = store(config, make_message(1), queue_id="Q1"), store(config, make_message(2))
        db = database(tmp_path)
        db.execute("UPDATE entries SET action = 'tag', score = 1.0, size = 10, queue_id = 'OTHER' WHERE id = ?",
                   (edited,))
        db.execute("DELETE FROM entry_rules WHERE entry_id = ?", (edited,))
        listed = mailguard(config, "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith(edited[:10]))
        assert " quarantine " in row and " 14 " in row and "LOOKALIKE_SENDER_DOMAIN" in row and " tag " not in row
        assert f"WARNING: {edited[:10]}: the database's action, score, rules, size, queue_id for this entry were " \
               "edited" in listed.stdout
        assert untouched[:10] not in "".join(line for line in listed.stdout.splitlines() if "WARNING" in line)
        shown = mailguard(config, "show", edited)
        assert "Verdict:    QUARANTINE, score 14" in shown.stdout and "queued as Q1" in shown.stdout
        assert "WARNING:    the database's action, score, rules, size, queue_id for this entry were edited" \
            in shown.stdout
        as_json = json.loads(mailguard(config, "show", "--json", edited).stdout)
        assert as_json["action"] == "quarantine" and as_json["altered"] == ["action", "score", "rules", "size",
                                                                           "queue_id"]
        assert "altered" not in json.loads(mailguard(config, "show", "--json", untouched).stdout)
        refused = mailguard(config, "release", edited)
        assert refused.returncode == 1 and "its clear columns were edited in the database" in refused.stdout
        assert smtp.handler.received == []
        forced = mailguard(config, "release", "--force", edited)
        assert forced.returncode == 0 and len(smtp.handler.received) == 1, forced.stdout + forced.stderr
    audit = [json.loads(line) for line in mailguard(config, "audit", "--operation", "release", "--json").stdout.splitlines()]
    assert [a["result"] for a in audit] == ["refused", "ok"]


# --------------------------------------------------------------------------- the audit chain


def _cut_tail_and_forge_head(db: sqlite3.Connection) -> None:
    """Delete the last two records and write a head naming the new last record's MAC (it
    is in the table): the head's own MAC cannot be made without the key."""
    rows = db.execute("SELECT seq, mac FROM audit ORDER BY seq").fetchall()
    kept = rows[-3]
    db.execute("DELETE FROM audit WHERE seq > ?", (kept[0],))
    db.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (f"{len(rows) - 2}:0:{kept[1]}:{'0' * 64}",))


def _strip_macs_and_head(db: sqlite3.Connection) -> None:
    """Make every record look as if an older mailguard (before the chain) had written it."""
    db.execute("UPDATE audit SET mac = ''")
    db.execute("DELETE FROM meta WHERE key = 'audit_head'")


@pytest.mark.parametrize("attack", [_cut_tail_and_forge_head, _strip_macs_and_head])
def test_a_tampered_log_stays_broken_after_later_operations(tmp_path: Path, attack: Any) -> None:
    """Before, the next honest record (any store or list) continued from whatever head it
    found, re-MACing the tampered log, and `audit --verify` then said "intact"."""
    config = write_config(tmp_path)
    entry_id = store(config, make_message())
    for argv in (["show", entry_id], ["show", "--raw", entry_id]):
        assert mailguard(config, *argv).returncode == 0
    db = database(tmp_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    attack(db)
    db.close()
    assert mailguard(config, "audit", "--verify").returncode == 1
    listed = mailguard(config, "list")  # an honest operation afterwards
    store(config, make_message(2))  # and a store
    verified = mailguard(config, "audit", "--verify")
    assert verified.returncode == 1, verified.stdout
    assert "audit log BROKEN at record" in verified.stdout and "chain head was missing or altered" in verified.stdout
    assert listed.returncode == 0 and "audit chain head is missing or altered" in listed.stderr  # and it said so


def test_records_of_an_older_mailguard_stay_a_verified_prefix(tmp_path: Path) -> None:
    """A database from before the chain (no MACs, no chain key, no head) gets a chain that
    counts those records as older, and verifies; the change above does not flag it."""
    config = write_config(tmp_path)
    store(config, make_message(1))
    store(config, make_message(2))
    db = database(tmp_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET mac = ''")
    db.execute("DELETE FROM meta WHERE key IN ('audit_head', 'audit_key')")
    db.close()
    assert mailguard(config, "list").returncode == 0
    verified = mailguard(config, "audit", "--verify")
    assert verified.returncode == 0 and "intact: 3 records" in verified.stdout
    assert "2 older records without MAC" in verified.stdout


# --------------------------------------------------------------------------- releases


class HeldSmtp:
    """A real SMTP server on loopback that holds each message's DATA until ``go`` is set,
    and sets ``sending`` as soon as one arrives: a release caught in the middle."""

    def __init__(self) -> None:
        self.sending, self.go = threading.Event(), threading.Event()
        outer = self

        class Handler(RecordingHandler):
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.sending.set()
                await asyncio.get_running_loop().run_in_executor(None, outer.go.wait, 60)
                return await super().handle_DATA(server, session, envelope)

        self.handler = Handler()
        self.controller = EphemeralController(self.handler, hostname="127.0.0.1", port=0)

    def __enter__(self) -> "HeldSmtp":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.go.set()
        self.controller.stop()


def test_two_releases_of_one_entry_at_once_deliver_it_once(tmp_path: Path) -> None:
    """Before, both processes read the entry as held and both sent it (documented then as a
    known limit). Now the second is told another release is running, and sends nothing."""
    with HeldSmtp() as smtp:
        config = write_config(tmp_path, release_host=f"127.0.0.1:{smtp.controller.port}")
        entry_id = store(config, make_message())
        first = subprocess.Popen([sys.executable, "-m", "mailguard", "quarantine", "release", entry_id,
                                  "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert smtp.sending.wait(60), "the first release never reached the server"
            second = mailguard(config, "release", entry_id)
            assert second.returncode == 1
            assert "another release of this entry is in progress" in second.stdout and "nothing was sent" in second.stdout
            assert f"process {first.pid}" in second.stdout
        finally:
            smtp.go.set()
            out, err = first.communicate(timeout=60)
        assert first.returncode == 0 and f"{entry_id}: released" in out, err
        assert len(smtp.handler.received) == 1
        third = mailguard(config, "release", entry_id)
        assert third.returncode == 0 and "already released" in third.stdout
        assert len(smtp.handler.received) == 1
    audit = [json.loads(line) for line in mailguard(config, "audit", "--operation", "release", "--json").stdout.splitlines()]
    assert [(a["result"], a["detail"].split(" (")[0]) for a in audit][0] == (
        "refused", "another release of this entry is in progress")
    assert [a["result"] for a in audit] == ["refused", "ok", "refused"]


def test_the_claim_of_a_release_that_died_does_not_block_the_next(tmp_path: Path) -> None:
    with HeldSmtp() as smtp:
        smtp.go.set()
        config = write_config(tmp_path, release_host=f"127.0.0.1:{smtp.controller.port}")
        entry_id = store(config, make_message())
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(gone.stdout)  # a process of this machine that has exited
        now = int(time.time())
        database(tmp_path).execute("INSERT INTO meta (key, value) VALUES (?, ?)", (
            f"releasing:{entry_id}", f"{now} {socket.gethostname()} {dead_pid} 0badc0de alice"))
        done = mailguard(config, "release", entry_id)
        assert done.returncode == 0 and f"{entry_id}: released" in done.stdout, done.stdout
        assert len(smtp.handler.received) == 1
    assert database(tmp_path).execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'releasing:%'").fetchone() == (0,)


# --------------------------------------------------------------------------- storage trouble

FULL_DISK = """
import json, resource, signal, sys
sys.path[:0] = sys.argv[2:]
from mailguard.config import load_config
from mailguard.quarantine import QuarantineError, open_quarantine
from test_quarantine_support import make_envelope, make_message, make_verdict

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
q = open_quarantine(load_config(sys.argv[1]))
kept = q.store(make_message(1), make_envelope(), make_verdict(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    q.store(make_message(2) + b"x" * 400_000, make_envelope(), make_verdict(2))
    failed = ""
except QuarantineError as exc:
    failed = str(exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
later = q.store(make_message(3), make_envelope(), make_verdict(3))
print(json.dumps({"failed": failed, "ids": sorted(e.id for e in q.list()), "kept": kept, "later": later,
                  "intact": q.verify_audit().ok}))
q.close()
"""


def test_a_store_on_a_full_disk_fails_so_the_sender_retries(tmp_path: Path) -> None:
    """The file system refuses the write (a file size limit stands in for a full disk: it
    works without root): store raises QuarantineError (the relay answers 451), nothing
    half-written is left, and stores work again once there is room."""
    config = write_config(tmp_path)
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(config), tests, str(Path(tests).parent)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["failed"].startswith("could not store the message in the quarantine: quarantine database")
    assert result["ids"] == sorted([result["kept"], result["later"]]) and result["intact"]


# --------------------------------------------------------------------------- mistaken settings


def test_purge_older_than_nan_is_refused(tmp_path: Path) -> None:
    """`--older-than nan` parsed as a float: on PostgreSQL every time is older than NaN."""
    config = write_config(tmp_path)
    entry_id = store(config, make_message())
    for value in ("nan", "inf", "-1"):
        done = mailguard(config, "purge", "--older-than", value)
        assert done.returncode == 1 and "--older-than must be a number of days, zero or more" in done.stderr
    assert entry_id[:10] in mailguard(config, "list").stdout


def test_a_key_file_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key = tmp_path / "q.key"
    key.mkdir(mode=0o700)
    done = mailguard(config, "list")
    assert done.returncode == 2 and f"quarantine key file {key} is a folder" in done.stderr
    key.rmdir()
    os.mkfifo(key, 0o600)  # reading it would wait for ever
    done = mailguard(config, "list", timeout=30)
    assert done.returncode == 2 and f"quarantine key file {key} is not a regular file" in done.stderr
    key.unlink()
    key.write_text("mailguard-quarantine-key-v1:" + "A" * 22 + "==\n")  # 16 bytes, not 32
    key.chmod(0o600)
    done = mailguard(config, "list")
    assert done.returncode == 2 and "the key must be 32 bytes, found 16" in done.stderr


# --------------------------------------------------------------------------- both databases


def test_on_each_database_a_held_claim_refuses_and_a_cut_log_stays_broken(backend: Backend) -> None:
    """The same two guarantees through the library on SQLite and on PostgreSQL: a release
    claimed by a live process elsewhere sends nothing, and a log cut short with a forged
    head is not re-MACed by the records written after it."""
    with HeldSmtp() as smtp, opened(backend.config(release_host=f"127.0.0.1:{smtp.controller.port}")) as q:
        smtp.go.set()
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
        backend.execute(f"INSERT INTO meta (key, value) VALUES ('releasing:{entry_id}', "
                        f"'{int(time.time())} {socket.gethostname()} {os.getpid()} 0badc0de alice')")
        [refused] = q.release([entry_id])
        assert not refused.ok and "another release of this entry is in progress (by alice" in refused.message
        assert smtp.handler.received == [] and q.get(entry_id).status == "held"
        backend.execute(f"DELETE FROM meta WHERE key = 'releasing:{entry_id}'")
        [released] = q.release([entry_id])
        assert released.ok and len(smtp.handler.received) == 1
        rows = backend.execute("SELECT seq, mac FROM audit ORDER BY seq")
        drop_triggers(backend)
        backend.execute(f"DELETE FROM audit WHERE seq > {rows[-3][0]}")
        backend.execute(f"UPDATE meta SET value = '{len(rows) - 2}:0:{rows[-3][1]}:{'0' * 64}' WHERE key = 'audit_head'")
        q.list()
        q.store(make_message(2), make_envelope(), make_verdict(2))
        result = q.verify_audit()
        assert not result.ok and "chain head was missing or altered" in result.reason, result
