"""Everyday mistakes at start-up give one line per problem (file, key, port or path; what is
wrong; what to do), exit status 2, and never a traceback. `config check` refuses what
start-up refuses. The failures that need a second user (a quarantine made by root, port 25
without root) are in test_deploy.py, which has one."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dns_server import loopback_dns_toml


def mailguard(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run([sys.executable, "-m", "mailguard", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def base_config(folder: Path, extra: str = "", relay: str = 'listen = "127.0.0.1:0"\n') -> Path:
    path = folder / "mailguard.toml"
    path.write_text(
        "[relay]\n" + relay +
        "[quarantine]\n"
        f'path = "{folder / "q"}"\nkey_file = "{folder / "q.key"}"\nrelease_host = "127.0.0.1:25"\n'
        + loopback_dns_toml() + extra
    )
    return path


def assert_one_line_errors(run: subprocess.CompletedProcess[str], *fragments: str, lines: int = 1) -> list[str]:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    errors = [line for line in run.stderr.splitlines() if line.startswith("mailguard")]
    assert len(errors) == lines, run.stderr
    text = "\n".join(errors)
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return errors


@pytest.mark.parametrize("command, key, relay, extra", [
    ("serve", "[relay] listen", 'listen = "127.0.0.1:{port}"\n', ""),
    ("milter", "[milter] listen", 'listen = "127.0.0.1:0"\n', '[milter]\nlisten = "inet:127.0.0.1:{port}"\n'),
    ("serve", "[metrics] listen", 'listen = "127.0.0.1:0"\n', '[metrics]\nlisten = "127.0.0.1:{port}"\n'),
])
def test_port_in_use_is_one_line(tmp_path: Path, command: str, key: str, relay: str, extra: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = base_config(tmp_path, relay=relay.format(port=port), extra=extra.format(port=port))
        run = mailguard(command, "--config", str(config), cwd=tmp_path)
    assert_one_line_errors(run, f"127.0.0.1:{port}", "already in use", key, config.name)


def test_missing_tls_files_named_by_serve_and_config_check(tmp_path: Path) -> None:
    config = base_config(tmp_path, relay='listen = "127.0.0.1:0"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n')
    for command in (("serve",), ("config", "check")):
        run = mailguard(*command, "--config", str(config), cwd=tmp_path)
        assert_one_line_errors(run, f"[relay] tls_cert: {tmp_path / 'cert.pem'}: no such file",
                               f"[relay] tls_key: {tmp_path / 'key.pem'}: no such file", lines=2)


def test_unknown_action_name_in_config_check_check_and_serve(tmp_path: Path) -> None:
    config = base_config(tmp_path, extra='[policy]\nactions = { SIGNATURE_EICAR = "rejekt" }\n')
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    for command in (("config", "check"), ("check", str(message)), ("serve",), ("milter",)):
        run = mailguard(*command, "--config", str(config), cwd=tmp_path)
        assert_one_line_errors(run, str(config), "[policy] actions: SIGNATURE_EICAR = 'rejekt' is not an action")


def test_misspelled_rule_id_and_threshold_order(tmp_path: Path) -> None:
    config = base_config(tmp_path, extra="[policy]\ntag_at = 12.0\nscores = { LANGUAGE_URGENCI = 1.0 }\n")
    run = mailguard("config", "check", "--config", str(config), cwd=tmp_path)
    errors = assert_one_line_errors(run, "[policy] tag_at: 12 is above quarantine_at 10", lines=1)
    assert errors  # threshold order is a load error: the rule ids are checked once the file loads
    config = base_config(tmp_path, extra="[policy]\nscores = { LANGUAGE_URGENCI = 1.0 }\n")
    for command in (("config", "check"), ("serve",)):
        run = mailguard(*command, "--config", str(config), cwd=tmp_path)
        assert_one_line_errors(run, "[policy] scores: LANGUAGE_URGENCI is not a rule id",
                               "did you mean LANGUAGE_URGENCY?")


def test_every_error_of_a_file_at_once(tmp_path: Path) -> None:
    config = base_config(tmp_path, relay='listen = "127.0.0.1:99999"\n', extra=(
        '[milter]\nlisten = "127.0.0.1:8894"\n'
        '[policy]\ntag_at = "high"\nactions = { SIGNATURE_EICAR = "rejekt" }\nbogus = 1\n'))
    run = mailguard("config", "check", "--config", str(config), cwd=tmp_path)
    assert_one_line_errors(
        run, "[relay] listen: '127.0.0.1:99999': the port must be a number from 0 to 65535",
        "[milter] listen: '127.0.0.1:8894' is not \"inet:HOST:PORT\"",
        "[policy] tag_at: expected a number", "unknown key 'bogus' in [policy]",
        "SIGNATURE_EICAR = 'rejekt' is not an action", lines=5)


def test_listen_without_a_port_is_refused(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    run = mailguard("serve", "--config", str(config), "--listen", "127.0.0.1", cwd=tmp_path)
    assert_one_line_errors(run, "[relay] listen: '127.0.0.1' is not \"host:port\"")


@pytest.mark.parametrize("way, extra, listening, failed, text", [
    ("serve", "", '"event": "listening"', '"event": "reload failed"', "error"),
    ("milter", '[milter]\nlisten = "inet:127.0.0.1:0"\n', '"event": "milter listening', '"event": "reload failed',
     "event"),  # the milter says it all in the event: "reload failed, keeping the previous configuration: ..."
])
def test_sighup_reload_with_a_bad_action_names_file_and_key(tmp_path: Path, way: str, extra: str, listening: str,
                                                             failed: str, text: str) -> None:
    config = base_config(tmp_path, extra=extra + '[logging]\nformat = "json"\n')
    proc = subprocess.Popen([sys.executable, "-m", "mailguard", way, "--config", str(config)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if listening in line:
                break
        config.write_text(config.read_text() + '[policy]\nactions = { SIGNATURE_EICAR = "rejekt" }\n')
        proc.send_signal(signal.SIGHUP)
        record: dict[str, str] = {}
        for line in proc.stderr:
            if failed in line:
                record = json.loads(line)
                break
        assert str(config) in record[text] and "[policy] actions: SIGNATURE_EICAR" in record[text], record
        assert "running configuration" in record.get("kept", "") or "keeping the previous configuration" in record[text]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # still running after the refused reload
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_quarantine_with_an_unreadable_database_is_one_line(tmp_path: Path) -> None:
    """A quarantine the current user cannot open (owner/mode; as root a file where the
    folder should be) is exit 2 with the path, for list as for serve."""
    config = base_config(tmp_path)
    (tmp_path / "q").write_text("not a folder")
    run = mailguard("quarantine", "list", "--config", str(config), cwd=tmp_path)
    assert_one_line_errors(run, str(tmp_path / "q"))
    run = mailguard("serve", "--config", str(config), cwd=tmp_path)
    assert_one_line_errors(run, str(tmp_path / "q"))
