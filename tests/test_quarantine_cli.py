"""``mailguard quarantine ...`` as the IT person uses it: a configuration file, the
commands, their output and exit statuses, and what the audit log then says."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailguard.cli import main as mailguard_main
from mailguard.config import load_config
from mailguard.quarantine.store import default_actor
from mailguard.quarantine import open_quarantine
from mailguard.quarantine.cli import cli_main
from test_quarantine_support import (
    BODY_MARKER,
    RECIPIENT,
    SENDER,
    SUBJECT_MARKER,
    SmtpServer,
    make_envelope,
    make_message,
    make_verdict,
    refused_port,
)


def write_config(tmp_path: Path, **extra: str | bool | list[str]) -> Path:
    lines = ["[quarantine]", 'path = "q"', 'key_file = "quarantine.key"']  # relative to the file
    for key, value in extra.items():
        lines.append(f"{key} = {json.dumps(value)}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "mailguard.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def seed(config_path: Path, count: int = 2) -> list[str]:
    q = open_quarantine(load_config(config_path), actor="relay")
    try:
        return [q.store(make_message(n), make_envelope(), make_verdict(n)) for n in range(count)]
    finally:
        q.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv), prog="mailguard quarantine")
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    ids = seed(config)
    code, out, _ = run(capsys, "list", "--config", str(config))
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "RECEIVED", "(UTC)", "STATUS", "ACTION", "SCORE", "FROM", "TO",
                                           "SUBJECT", "RULES"]
    assert all(i[:10] in out for i in ids) and SUBJECT_MARKER in out and "2 message(s)" in out
    code, out, _ = run(capsys, "--config", str(config), "list", "--json", "--recipient", RECIPIENT,
                       "--rule", "URGENT_PAYMENT", "--since", "1h")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {r["id"] for r in records} == set(ids)
    assert records[0]["reasons"][0].startswith("Sender domain") and records[0]["envelope"]["mail_from"] == SENDER
    code, out, _ = run(capsys, "list", "--config", str(config), "--recipient", "nobody@practice.example")
    assert code == 0 and out == "no messages match\n"


def test_list_by_the_queue_id_the_sender_quotes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sender calls about "queued as 672DD632CD07": the IT person finds the entry by it,
    held or already released, and `show` says it."""
    with SmtpServer() as smtp:
        config = write_config(tmp_path, release_host=smtp.address)
        q = open_quarantine(load_config(config), actor="relay")
        try:
            held = q.store(make_message(1), make_envelope(), make_verdict(1), queue_id="672DD632CD07")
            released = q.store(make_message(2), make_envelope(), make_verdict(2), queue_id="0A1B2C3D4E5F")
        finally:
            q.close()
        assert run(capsys, "release", released, "--config", str(config))[0] == 0
    code, out, _ = run(capsys, "list", "--queue-id", "672DD632CD07", "--config", str(config))
    assert code == 0 and held[:10] in out and released[:10] not in out and "1 message(s)" in out
    code, out, _ = run(capsys, "list", "--queue-id", "0A1B2C3D4E5F", "--json", "--config", str(config))
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["id"], r["status"], r["queue_id"]) for r in records] == [
        (released, "released", "0A1B2C3D4E5F")]
    code, out, _ = run(capsys, "list", "--queue-id", "0A1B2C3D4E5F", "--status", "held", "--config", str(config))
    assert code == 0 and out == "no messages match\n"
    code, out, _ = run(capsys, "show", held, "--config", str(config))
    assert code == 0 and "queued as 672DD632CD07" in out


def test_show_prints_reasons_and_headers_and_is_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    entry_id = seed(config, 1)[0]
    code, out, _ = run(capsys, "show", entry_id[:6], "--config", str(config), "--actor", "dr-roe")
    assert code == 0
    assert "Why it was held:" in out and "[LOOKALIKE_SENDER_DOMAIN +9]" in out
    assert f"Subject: {SUBJECT_MARKER} invoice 0" in out  # from the header block
    assert BODY_MARKER not in out  # the body only with --raw
    code, out, _ = run(capsys, "audit", "--config", str(config), "--json")
    lines = [json.loads(x) for x in out.splitlines()]
    assert [(x["operation"], x["as_actor"]) for x in lines] == [("store", "relay"), ("view", "dr-roe"),
                                                                 ("view_headers", "dr-roe")]
    assert {x["actor"] for x in lines} == {default_actor()}


def test_hostile_text_cannot_drive_the_reviewers_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    evil = "Invoice \x1b]0;owned\x07\x1b[2J paid\u202efdp.exe"
    q = open_quarantine(load_config(config))
    try:
        entry_id = q.store(make_message(0, subject=evil), make_envelope(), make_verdict())
    finally:
        q.close()
    for argv in (["list"], ["show", entry_id]):
        code, out, _ = run(capsys, *argv, "--config", str(config))
        assert code == 0
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\u001b]0;owned\\u0007" in out and "paid\\u202efdp.exe" in out


def test_show_raw_writes_the_exact_message(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    config = write_config(tmp_path)
    entry_id = seed(config, 1)[0]
    assert cli_main(["show", "--raw", entry_id, "--config", str(config)], prog="mailguard quarantine") == 0
    assert capsysbinary.readouterr().out == make_message(0)


def test_release_and_failed_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SmtpServer() as smtp:
        config = write_config(tmp_path, release_host=smtp.address)
        first, second = seed(config)
        code, out, _ = run(capsys, "release", first, "--config", str(config))
        assert code == 0 and f"{first}: released" in out
        assert smtp.handler.received[0].rcpt_tos == [RECIPIENT]
        code, out, _ = run(capsys, "release", second, "--to", "it@practice.example", "--config", str(config))
        assert code == 0 and smtp.handler.received[1].rcpt_tos == ["it@practice.example"]
    for address in refused_port():
        down = write_config(tmp_path / "down", release_host=address)
        third = seed(down, 1)[0]
        code, out, _ = run(capsys, "release", third, "--config", str(down))
        assert code == 1 and "NOT released, still held" in out
        code, out, _ = run(capsys, "list", "--config", str(down))
        assert third[:10] in out and "held" in out
        code, out, _ = run(capsys, "audit", "--operation", "release", "--config", str(down))
        assert "failed" in out and address in out


def test_delete_purge_and_unknown_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, retention_days=7)
    first, second = seed(config)
    code, _, err = run(capsys, "delete", "ffffffff", "--config", str(config))
    assert code == 1 and "no quarantine entry ffffffff" in err
    code, out, _ = run(capsys, "delete", first, "--config", str(config))
    assert code == 0 and out == "deleted 1 message(s)\n"
    code, out, _ = run(capsys, "purge", "--config", str(config))
    assert code == 0 and out == "purged 0 message(s) older than 7 days\n"  # nothing old enough yet
    code, out, _ = run(capsys, "purge", "--older-than", "0", "--config", str(config))
    assert code == 0 and out == "purged 1 message(s) older than 0 days\n"
    code, out, _ = run(capsys, "audit", "--config", str(config))
    table = out.splitlines()
    assert table[0].split()[:4] == ["TIME", "(UTC)", "ACTOR", "OPERATION"]
    assert [line.split()[3] for line in table[1:]] == ["store", "store", "delete", "purge", "purge", "purge"]
    assert table[1].split()[2] == default_actor().replace(" ", "_") + "[relay]"


def test_rekey_then_use_the_new_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    entry_id = seed(config, 1)[0]
    code, out, _ = run(capsys, "rekey", str(tmp_path / "new.key"), "--config", str(config))
    assert code == 0 and out.startswith("re-encrypted 1 message(s)") and "key_file" in out
    code, _, err = run(capsys, "list", "--config", str(config))
    assert code == 2 and "is not the key of the quarantine" in err
    (tmp_path / "new.key").replace(tmp_path / "quarantine.key")  # as the command's advice says
    code, out, _ = run(capsys, "list", "--config", str(config))
    assert code == 0 and entry_id[:10] in out


def test_wrong_key_and_bad_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    seed(config, 1)
    (tmp_path / "quarantine.key").unlink()
    code, _, err = run(capsys, "list", "--config", str(config))
    assert code == 2 and "quarantine.key does not exist" in err and "Nothing was changed" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[quarantine]\nretention = 3\n")
    code, _, err = run(capsys, "list", "--config", str(bad))
    assert code == 2 and "unknown key 'retention'" in err


def test_notify_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SmtpServer() as smtp:
        config = write_config(tmp_path, release_host=smtp.address)
        seed(config, 2)
        code, out, _ = run(capsys, "notify", "--config", str(config))
        assert code == 1 and "notification is off" in out and not smtp.handler.received
        config = write_config(tmp_path, release_host=smtp.address, notify=True)
        code, out, _ = run(capsys, "notify", "--config", str(config))
        assert code == 0 and f"digest to {RECIPIENT.lower()}: sent (2 message(s))" in out
        [digest] = smtp.handler.received
        assert digest.rcpt_tos == [RECIPIENT]
        text = digest.data.decode()
        assert "Subject: [mailguard] 2 message(s) held addressed to you" in text
        assert SUBJECT_MARKER in text and SENDER in text and "imitates paypal.com" in text
        assert BODY_MARKER not in text  # never the body
    code, out, _ = run(capsys, "audit", "--operation", "notify", "--config", str(config))
    assert "digest of 2 message(s)" in out and RECIPIENT not in out


def test_delegated_from_the_mailguard_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    seed(config, 1)
    assert mailguard_main(["quarantine", "list", "--json", "--config", str(config)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
