"""The audit log's keyed MAC chain against someone who can write the database but has no
key (issue 12): they drop the triggers, then edit, delete, reorder, forge or strip records,
and `audit --verify` names the first broken record. SQLite and a throwaway PostgreSQL.
Also: the OS user is the actor, reads are audited, re-release needs --force, a key file
open to others is refused."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailguard.quarantine import QuarantineError, open_quarantine
from mailguard.quarantine.store import default_actor
from dns_server import loopback_dns_toml
from test_quarantine import Backend, backend, opened, postgres  # noqa: F401 (fixtures)
from test_quarantine_support import SmtpServer, make_envelope, make_message, make_verdict


def drop_triggers(backend: Backend) -> None:
    """The attacker's first step: the append-only triggers are only a speed bump."""
    if backend.kind == "sqlite":
        backend.execute("DROP TRIGGER audit_no_update")
        backend.execute("DROP TRIGGER audit_no_delete")
    else:
        backend.execute("DROP TRIGGER audit_no_change ON audit")
        backend.execute("DROP TRIGGER audit_no_truncate ON audit")


def seeded(backend: Backend) -> list[int]:
    with opened(backend.config(), actor="relay") as q:
        for n in range(3):
            q.store(make_message(n), make_envelope(), make_verdict(n))
        q.list()
        assert q.verify_audit().ok
    return [int(r[0]) for r in backend.execute("SELECT seq FROM audit ORDER BY seq")]


TAMPERING = {
    "edit actor": ("UPDATE audit SET actor = 'someone-else' WHERE seq = {s[1]}", "s1"),
    "edit detail": ("UPDATE audit SET detail = 'nothing happened' WHERE seq = {s[0]}", "s0"),
    "delete a middle record": ("DELETE FROM audit WHERE seq = {s[1]}", "s2"),
    "delete the last record": ("DELETE FROM audit WHERE seq = {s[3]}", "end"),
    "delete everything": ("DELETE FROM audit", "end"),
    "swap two records": ("UPDATE audit SET seq = CASE WHEN seq = {s[1]} THEN {s[2]} + 1000 ELSE {s[1]} + 1000 END"
                         " WHERE seq IN ({s[1]}, {s[2]})", "s1-swapped"),
    "strip every MAC": ("UPDATE audit SET mac = ''", "end"),
    "remove the chain head": ("DELETE FROM meta WHERE key = 'audit_head'", "end"),
    "forge a record": ("INSERT INTO audit (time, actor, operation, entry_id, result, detail, as_actor, mac)"
                       " VALUES (1, 'root', 'delete', 'x', 'ok', '', '', '{fake}')", "forged"),
}


@pytest.mark.parametrize("attack", sorted(TAMPERING))
def test_tampering_is_detected(backend: Backend, attack: str) -> None:
    seqs = seeded(backend)
    drop_triggers(backend)
    sql, where = TAMPERING[attack]
    backend.execute(sql.format(s=seqs, fake="ab" * 32))
    if attack == "swap two records":  # put them back in the two slots, exchanged
        backend.execute(f"UPDATE audit SET seq = seq - 1000 WHERE seq > 1000")
    with opened(backend.config()) as q:
        result = q.verify_audit()
    assert not result.ok, attack
    expected = {"s0": seqs[0], "s1": seqs[1], "s2": seqs[2], "end": None, "s1-swapped": seqs[1]}
    if where == "forged":
        assert result.first_broken is not None and result.first_broken > seqs[-1]
    else:
        assert result.first_broken == expected[where], result
    assert "BROKEN" in result.describe()


def test_an_intact_log_verifies_and_keeps_verifying_after_rekey(backend: Backend) -> None:
    seeded(backend)
    with opened(backend.config()) as q:
        assert q.rekey(backend.tmp_path / "new.key") == 3
    with opened(backend.config(key_file=str(backend.tmp_path / "new.key"))) as q:
        result = q.verify_audit()
        assert result.ok and result.records == 5, result  # 3 stores, the list, the rekey
    with pytest.raises(QuarantineError):
        open_quarantine(backend.config())  # the old key is retired


def test_actor_is_the_os_user_and_reads_are_audited(backend: Backend) -> None:
    with SmtpServer() as smtp, opened(backend.config(release_host=smtp.address), actor="dr-roe") as q:
        entry_id = q.store(make_message(), make_envelope(), make_verdict())
        q.list(rule="URGENT_PAYMENT")
        q.get(entry_id)
        q.raw(entry_id)
        [first] = q.release([entry_id], to=["it@practice.example"])
        assert first.ok
        [again] = q.release([entry_id], to=["attacker@evil.example"])
        assert not again.ok and "--force" in again.message
        [forced] = q.release([entry_id], to=["second@practice.example"], force=True)
        assert forced.ok
        assert [m.rcpt_tos for m in smtp.handler.received] == [["it@practice.example"], ["second@practice.example"]]
        lines = q.audit()
        assert {a.actor for a in lines} == {default_actor()} and {a.as_actor for a in lines} == {"dr-roe"}
        assert [(a.operation, a.result) for a in lines] == [
            ("store", "ok"), ("list", "ok"), ("view", "ok"), ("view_raw", "ok"),
            ("release", "ok"), ("release", "refused"), ("release", "ok")]
        releases = [a.detail for a in lines if a.operation == "release"]
        assert "<it@practice.example>" in releases[0] and "<second@practice.example>" in releases[2]
        assert "again (--force)" in releases[2]
        assert q.verify_audit().ok


def test_sudo_user_is_the_actor_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    monkeypatch.setenv("USER", "mallory")  # $USER is not believed
    actor = default_actor()
    if os.geteuid() == 0:
        assert actor == "alice (sudo as root)"
    else:
        assert "alice" not in actor and "mallory" not in actor


def cli(config: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailguard.cli", "quarantine", *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "mailguard.toml"
    path.write_text(f'[quarantine]\npath = "{tmp_path / "q"}"\nkey_file = "{tmp_path / "q.key"}"\n' + loopback_dns_toml())
    return path


def test_audit_verify_command_exit_codes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    q = open_quarantine(__import__("mailguard.config", fromlist=["load_config"]).load_config(config))
    try:
        for n in range(3):
            q.store(make_message(n), make_envelope(), make_verdict(n))
    finally:
        q.close()
    ok = cli(config, "audit", "--verify")
    assert ok.returncode == 0 and "intact: 3 records" in ok.stdout, ok.stderr
    import sqlite3

    db = sqlite3.connect(tmp_path / "q" / "quarantine.sqlite3", isolation_level=None)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET result = 'failed' WHERE seq = 2")
    db.close()
    broken = cli(config, "audit", "--verify")
    assert broken.returncode == 1 and "BROKEN at record 2" in broken.stdout


def test_a_key_file_open_to_others_is_refused_with_the_chmod(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "list").returncode == 0  # creates the key, mode 0600
    key = tmp_path / "q.key"
    key.chmod(0o644)
    listed = cli(config, "list")
    assert listed.returncode == 2 and f"chmod 600 {key}" in listed.stderr
    served = subprocess.run([sys.executable, "-m", "mailguard.cli", "serve", "--config", str(config),
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert served.returncode == 2 and f"chmod 600 {key}" in served.stderr
    key.chmod(0o600)
    assert cli(config, "list").returncode == 0
