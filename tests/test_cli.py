"""`mailguard check` as DESIGN.md fixes it, run from a real non-editable install.

The wheel is built from this tree and installed (without dependencies) into a fresh venv
that borrows the test environment's dependencies through a .pth file, so the test needs no
network and proves that rules/ and yara/ ship inside the wheel.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from dns_server import loopback_dns_toml

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "messages"
DESIGN_FIELDS = {"path", "message_id", "action", "score", "findings", "errors", "elapsed_ms"}
FINDING_FIELDS = {"analyzer", "rule", "score", "summary", "details"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the `mailguard` script of a fresh venv with the wheel built from this tree."""
    work = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(REPO)],
        check=True, capture_output=True,
    )
    [wheel] = work.glob("mailguard-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = Path(subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True,
    )
    # Only now borrow the dependencies, so pip above could not see this tree's own install.
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin" / "mailguard"


def run(installed: Path, *args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(installed), *args], cwd=cwd, input=stdin, capture_output=True, env=env, timeout=300)


def test_json_lines_for_every_example(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "check", "--json", str(EXAMPLES), cwd=tmp_path)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(list(EXAMPLES.iterdir()))
    records = [json.loads(line) for line in lines]
    for record in records:
        assert DESIGN_FIELDS <= set(record)
        for finding in record["findings"]:
            assert FINDING_FIELDS <= set(finding)
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["clean-appointment.eml"]["action"] == "accept"
    flagged = [r for r in records if r["action"] != "accept"]
    assert result.returncode == (1 if flagged else 0)


def test_exit_status_contract(installed: Path, tmp_path: Path) -> None:
    clean = run(installed, "check", str(EXAMPLES / "clean-appointment.eml"), cwd=tmp_path)
    assert clean.returncode == 0
    assert b"ACCEPT" in clean.stdout
    missing = run(installed, "check", "--json", str(tmp_path / "nope.eml"), cwd=tmp_path)
    assert missing.returncode == 2
    assert b"no such file" in missing.stderr
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[policy]\ntag_at = 'x'\n")
    config_error = run(installed, "check", "--config", str(bad_config), str(EXAMPLES), cwd=tmp_path)
    assert config_error.returncode == 2
    assert b"bad.toml" in config_error.stderr and b"tag_at" in config_error.stderr


def test_flagged_message_exits_1(installed: Path, tmp_path: Path) -> None:
    config = tmp_path / "strict.toml"
    config.write_text("[policy]\ntag_at = 0.0\n" + loopback_dns_toml())
    result = run(installed, "check", "--config", str(config), "-", cwd=tmp_path,
                 stdin=(EXAMPLES / "clean-appointment.eml").read_bytes())
    assert result.returncode == 1
    assert b"TAG" in result.stdout


def test_text_from_the_message_cannot_act_on_the_terminal_or_add_lines(installed: Path, tmp_path: Path) -> None:
    """An attachment name, message id or file name with an escape sequence or a line break
    is printed escaped: it neither clears the reader's screen nor adds a fake finding line."""
    name = "inv%1B%5B2Joice%0D%0A%20%20-%20%5BSAFE%20-10%5D%20ok.exe"  # RFC 2231: "inv\x1b[2Joice\r\n  - [SAFE -10] ok.exe"
    raw = ("From: a@example.org\r\nTo: b@practice.example\r\nSubject: invoice\r\n"
           "Message-ID: <x\x1b]0;pwned\x07@example.org>\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
           "--b\r\nContent-Type: application/octet-stream\r\n"
           f"Content-Disposition: attachment; filename*=utf-8''{name}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA4fug4AtAnNIbgBTM0h\r\n"
           "--b--\r\n").encode()
    message = tmp_path / "x\x1b[2J\n  - [SAFE -10] fine.eml"  # the file's own name too
    message.write_bytes(raw)
    result = run(installed, "check", str(message), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith(f"{tmp_path}/x\\u001b[2J\\u000a  - [SAFE -10] fine.eml: ")
    assert "  message-id: <x\\u001b]0;pwned\\u0007@example.org>" in lines
    assert not any(line.startswith("  - [SAFE") for line in lines)
    [executable] = [line for line in lines if line.startswith("  - [FILETYPE_EXECUTABLE")]
    assert "inv\\u001b[2Joice" in executable
    as_json = json.loads(run(installed, "check", "--json", str(message), cwd=tmp_path).stdout)
    assert as_json["message_id"] == "<x\x1b]0;pwned\x07@example.org>"  # JSON carries the value itself, escaped by JSON


def test_garbage_from_stdin_is_still_a_verdict(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "check", "--json", "-", cwd=tmp_path, stdin=os.urandom(4096))
    record = json.loads(result.stdout)
    assert record["path"] == "-" and record["action"] in {"accept", "tag", "quarantine", "reject"}


def test_folder_scanned_in_parallel_gives_one_verdict_per_file(installed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    (folder / "sub").mkdir(parents=True)
    for i in range(40):
        target = folder / ("sub" if i % 2 else "") / f"m{i}.eml"
        target.write_bytes(b"From: a@example.com\nSubject: note %d\n\nhello\n" % i)
    result = run(installed, "check", "--json", "-j", "2", str(folder), cwd=tmp_path)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == sorted(f"m{i}.eml" for i in range(40))


def test_detection_data_ships_inside_the_wheel(installed: Path, tmp_path: Path) -> None:
    python = installed.parent / "python"
    code = "from mailguard.resources import data_dir; print(data_dir('rules')); print(data_dir('yara'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True, env=env)
    for line in out.stdout.splitlines():
        assert str(installed.parent.parent) in line, line
