"""`mailguard check` on folders an attacker filled (a mailbox export from a compromised
account) and on broken configuration files: never a traceback or a hang, never a file left
out in silence, never a line of output that is not valid UTF-8 JSON (with --json), and the
exit status DESIGN.md fixes (0 all accepted, 1 something flagged, 2 an error).

Everything runs the real CLI in a subprocess. The tests that need a second user (an
unreadable file or folder, a config only root may read) or root (a device node) skip
outside CI when they cannot run; under CI=true, which runs as root with util-linux, they run.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from dns_server import loopback_dns_toml

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "messages"
CLEAN = (EXAMPLES / "clean-appointment.eml").read_bytes()
PHISH = (EXAMPLES / "lookalike-invoice.eml").read_bytes()
IN_CI = os.environ.get("CI") == "true"
needs_root = pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="needs root (runs under CI=true)")


def env(**extra: str) -> dict[str, str]:
    """The environment of a check: this tree's mailguard, output encoded strictly as on a
    desktop with a UTF-8 locale (where an unencodable name used to be a traceback)."""
    base = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET",)}
    return {**base, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8:strict", **extra}


def check(*args: str, timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailguard", "check", "--daemon", "off", *args], cwd=REPO,
                          capture_output=True, env=env(), timeout=timeout, **kwargs)  # type: ignore[call-overload]


def config_file(folder: Path, text: str | bytes, name: str = "mailguard.toml") -> Path:
    path = folder / name
    body = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(body + b"\n" + loopback_dns_toml().encode())
    return path


def json_records(run: subprocess.CompletedProcess[bytes]) -> list[dict]:
    """Every line of standard output as strict UTF-8 JSON (the test fails on any other)."""
    return [json.loads(line.decode("utf-8")) for line in run.stdout.splitlines()]


def no_traceback(run: subprocess.CompletedProcess[bytes]) -> str:
    err = run.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and b"Traceback" not in run.stdout, err
    return err


# --------------------------------------------------------------------------- hostile folders


HOSTILE_NAMES = ["new\nline.eml", "esc\x1b[2J\x1b]0;pwned\x07.eml", "-leading-dash.eml", "tab\there.eml",
                 os.fsdecode(b"not-utf8-\xff\xfe.eml"), "rtl\u202egpj.exe.eml"]


def hostile_folder(root: Path, fillers: int = 0) -> tuple[Path, set[str]]:
    """A folder with every kind of thing an attacker can leave in one, and the paths that
    are regular files and must each get a verdict."""
    box = root / "export"
    box.mkdir()
    expected: set[str] = set()
    for name in HOSTILE_NAMES:
        (box / name).write_bytes(CLEAN)
        expected.add(str(box / name))
    (box / "phish.eml").write_bytes(PHISH)
    (box / "empty.eml").write_bytes(b"")
    (box / "garbage.eml").write_bytes(bytes(range(256)) * 8)  # skipped with a note: binary, not a message
    (box / "text-garbage.eml").write_bytes(b"\xff\xfe\x80 ;;; \x1b[31m not a message at all \xc3\x28" * 50)
    expected |= {str(box / "phish.eml"), str(box / "empty.eml"), str(box / "text-garbage.eml")}
    (box / "folder.eml").mkdir()
    (box / "folder.eml" / "inner.eml").write_bytes(CLEAN)
    expected.add(str(box / "folder.eml" / "inner.eml"))
    outside = root / "outside-secret.txt"
    outside.write_bytes(b"Subject: root's secret\n\npassword=hunter2\n")
    (box / "link-outside.eml").symlink_to(outside)
    (box / "link-zero.eml").symlink_to("/dev/zero")
    (box / "loop").symlink_to(".")
    (box / "loop-up").symlink_to("..")
    os.mkfifo(box / "fifo.eml")
    (box / "link-fifo.eml").symlink_to(box / "fifo.eml")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(box / "socket.eml"))
    sock.close()
    for n in range(fillers):
        (box / f"filler-{n:03d}.eml").write_bytes(CLEAN)
        expected.add(str(box / f"filler-{n:03d}.eml"))
    return box, expected


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_hostile_folder_gives_one_valid_json_line_per_regular_file(tmp_path: Path, jobs: str) -> None:
    box, expected = hostile_folder(tmp_path, fillers=12)  # 12 more: -j 2 uses worker processes
    run = check("--json", "-j", jobs, str(box), timeout=300)
    err = no_traceback(run)
    assert run.returncode == 1, err  # the phish is flagged; nothing unreadable
    records = json_records(run)
    paths = [os.fsdecode(os.fsencode(r["path"])) for r in records]
    assert set(paths) == expected and len(paths) == len(expected)
    assert os.fsencode(next(p for p in paths if "not-utf8" in p)).endswith(b"\xff\xfe.eml")  # the exact name
    assert all("error" not in r for r in records)
    assert "hunter2" not in run.stdout.decode() and "outside-secret" not in run.stdout.decode()
    for name in ("link-outside.eml", "link-zero.eml", "loop", "link-fifo.eml"):
        assert f"{box / name}: skipped, a symbolic link" in err, err
    assert f"{box / 'fifo.eml'}: skipped, a FIFO" in err
    assert f"{box / 'socket.eml'}: skipped, a socket" in err
    assert f"{box / 'garbage.eml'}: skipped, binary content" in err


def test_text_report_and_notes_never_carry_raw_control_characters(tmp_path: Path) -> None:
    box, expected = hostile_folder(tmp_path)
    fifo = tmp_path / "named\x1b[2Jpipe\nERROR forged"
    os.mkfifo(fifo)
    run = check("-j", "1", str(box), str(fifo))
    err = no_traceback(run)
    assert run.returncode == 2  # the FIFO named on the command line is an error
    out = run.stdout.decode("utf-8")
    assert "\x1b" not in out and "\x1b" not in err
    verdict_lines = [line for line in out.splitlines() if not line.startswith("  ")]
    assert len(verdict_lines) == len(expected) + 1  # one per file, one for the FIFO: no line a name added
    assert "named\\u001b[2Jpipe\\u000aERROR forged: not a regular file (a FIFO (named pipe))" in err
    assert "give - and send it to standard input" in err


@needs_root
def test_device_node_in_a_folder_is_skipped_and_never_read(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "a.eml").write_bytes(CLEAN)
    os.mknod(box / "zero.eml", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero's numbers
    run = check("-j", "1", str(box), timeout=120)
    err = no_traceback(run)
    assert run.returncode == 0, err
    assert f"{box / 'zero.eml'}: skipped, a character device" in err


def test_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    folder = str(deep)
    os.mkdir(folder)
    for _ in range(1500):
        folder = os.path.join(folder, "d")
        os.mkdir(folder)
    Path(folder, "bottom.eml").write_bytes(PHISH)
    try:
        run = check("--json", "-j", "1", str(deep))
    finally:  # shutil.rmtree (pytest's clean-up of old tmp folders) recurses: remove it from the bottom up
        os.unlink(os.path.join(folder, "bottom.eml"))
        while folder != str(deep):
            os.rmdir(folder)
            folder = os.path.dirname(folder)
    no_traceback(run)
    assert run.returncode == 1
    [record] = json_records(run)
    assert record["path"].endswith("/d/bottom.eml") and record["action"] == "quarantine"


def unblocked_after_listing(box: Path, change: "callable[[], None]") -> subprocess.CompletedProcess[bytes]:
    """Run a check of ``box`` and call ``change`` after it listed the folder but before it
    reads the files named zz-*. No sleep: the listing is complete before the first verdict
    is printed, and the check then blocks on its full standard output pipe (64 KiB) long
    before it reaches the zz files behind 1,500 fillers of a kilobyte of JSON each."""
    proc = subprocess.Popen([sys.executable, "-m", "mailguard", "check", "--daemon", "off", "--json", "-j", "1",
                             str(box)], cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    assert proc.stdout is not None
    try:
        first = os.read(proc.stdout.fileno(), 1)
        change()
        out, err = proc.communicate(timeout=300)
    finally:  # a check hanging on the FIFO (as it did) must not outlive the test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def test_files_deleted_or_replaced_between_listing_and_reading(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    for n in range(1500):
        (box / f"a{n:04d}.eml").write_bytes(b"")
    for name in ("zz-deleted.eml", "zz-fifo.eml", "zz-link.eml", "zz-kept.eml"):
        (box / name).write_bytes(CLEAN)
    secret = tmp_path / "secret.eml"
    secret.write_bytes(PHISH)

    def swap() -> None:
        (box / "zz-deleted.eml").unlink()
        (box / "zz-fifo.eml").unlink()
        os.mkfifo(box / "zz-fifo.eml")  # opening it as before would wait for a writer for ever
        (box / "zz-link.eml").unlink()
        (box / "zz-link.eml").symlink_to(secret)

    run = unblocked_after_listing(box, swap)
    no_traceback(run)
    assert run.returncode == 2
    records = {Path(r["path"]).name: r for r in json_records(run)}
    assert len(records) == 1504
    assert "deleted or renamed since the folder was listed" in records["zz-deleted.eml"]["error"]
    assert "a FIFO (named pipe), not a regular file (it changed after the folder was listed)" in \
        records["zz-fifo.eml"]["error"]
    assert "a symbolic link (not followed" in records["zz-link.eml"]["error"]
    assert records["zz-kept.eml"]["action"] == "accept"


def test_a_hundred_thousand_empty_files_with_workers(tmp_path: Path) -> None:
    box = tmp_path / "many"
    box.mkdir()
    for n in range(100_000):
        os.close(os.open(box / f"{n:06d}.eml", os.O_CREAT | os.O_WRONLY, 0o644))
    run = check("--json", "-j", "2", str(box), timeout=600)
    no_traceback(run)
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    assert len(lines) == 100_000
    assert json.loads(lines[-1])["path"].endswith("099999.eml")


def test_a_worker_killed_mid_run_is_an_error_not_a_hang(tmp_path: Path) -> None:
    box = tmp_path / "many"
    box.mkdir()
    for n in range(3000):
        os.close(os.open(box / f"{n:05d}.eml", os.O_CREAT | os.O_WRONLY, 0o644))
    proc = subprocess.Popen([sys.executable, "-m", "mailguard", "check", "--daemon", "off", "--json", "-j", "2",
                             str(box)], cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 1)  # the pool is running; the check now waits on its full pipe
    assert first
    workers = [pid for pid in _children(proc.pid) if _cmdline(pid) == _cmdline(proc.pid)]
    assert workers
    os.kill(workers[0], 9)
    out, err = proc.communicate(timeout=300)
    text = err.decode()
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    assert "a scanning process died" in text and "were not checked" in text
    assert all(json.loads(line) for line in (first + out).splitlines())


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("value, fragment", [("-1", "must be 1 or more"), ("two", "expected a whole number")])
def test_jobs_must_be_a_positive_number(tmp_path: Path, value: str, fragment: str) -> None:
    run = check("-j", value, str(EXAMPLES))
    assert run.returncode == 2
    assert fragment in run.stderr.decode() and "-j/--jobs" in run.stderr.decode()


def test_more_jobs_than_files_still_gives_every_verdict_in_order(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    for n in range(20):
        (box / f"{n:02d}.eml").write_bytes(PHISH if n == 7 else CLEAN)
    run = check("--json", "-j", "64", str(box), timeout=300)
    no_traceback(run)
    assert run.returncode == 1
    assert [Path(r["path"]).name for r in json_records(run)] == [f"{n:02d}.eml" for n in range(20)]


def test_a_non_utf8_name_through_the_daemon(tmp_path: Path) -> None:
    from test_daemon import Daemon, _config

    box = tmp_path / "box"
    box.mkdir()
    (box / os.fsdecode(b"caf\xe9.eml")).write_bytes(PHISH)
    (box / "ok.eml").write_bytes(CLEAN)
    config = _config(tmp_path)
    daemon = Daemon(config, env(MAILGUARD_CACHE_DIR=str(tmp_path / "cache")))
    try:
        run = subprocess.run([sys.executable, "-m", "mailguard", "check", "--daemon", "required", "--config",
                              str(config), "--json", str(box)], cwd=REPO, env=env(), capture_output=True,
                             timeout=120)
    finally:
        daemon.stop()
    no_traceback(run)
    assert run.returncode == 1
    records = json_records(run)
    assert [os.fsencode(r["path"]) for r in records] == [os.fsencode(str(box)) + b"/caf\xe9.eml",
                                                        os.fsencode(str(box / "ok.eml"))]
    assert records[0]["action"] == "quarantine"


# --------------------------------------------------------------------------- another user


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A folder user nobody can reach (pytest's tmp_path is root's own, mode 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="mailguard-hostile-"))
    folder.chmod(0o755)
    yield folder
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(folder)


def as_nobody(*args: str) -> subprocess.CompletedProcess[bytes]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if IN_CI:
            raise RuntimeError("CI=true but not root or no setpriv (util-linux): this test must run there")
        pytest.skip("needs root and setpriv to run the check as user nobody")
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
                           "mailguard", *args], cwd=REPO, capture_output=True, timeout=300,
                          env=env(MAILGUARD_CACHE_DIR="off", HOME="/nonexistent"))


def test_an_unreadable_subfolder_is_an_error_never_left_out_in_silence(shared_tmp: Path) -> None:
    box = shared_tmp / "box"
    (box / "locked").mkdir(parents=True)
    (box / "ok.eml").write_bytes(CLEAN)
    (box / "locked" / "phish.eml").write_bytes(PHISH)
    (box / "locked").chmod(0o700)  # root's: nobody cannot list it
    box.chmod(0o755)
    run = as_nobody("check", "--daemon", "off", "-j", "1", str(box))
    err = no_traceback(run)
    assert run.returncode == 2, err  # not 0 "all accepted" with a message never looked at
    assert f"mailguard: {box / 'locked'}: cannot list the folder: permission denied for user nobody" in err


def test_an_unreadable_file_names_the_user_and_what_to_do(shared_tmp: Path) -> None:
    box = shared_tmp / "box"
    box.mkdir()
    (box / "ok.eml").write_bytes(CLEAN)
    (box / "secret.eml").write_bytes(CLEAN)
    (box / "secret.eml").chmod(0o600)
    run = as_nobody("check", "--daemon", "off", "--json", "-j", "1", str(box))
    no_traceback(run)
    assert run.returncode == 2
    records = json_records(run)
    assert records[1]["path"] == str(box / "secret.eml")
    assert records[1]["error"].startswith("cannot read: permission denied for user nobody; run the check as a user")


def test_an_unreadable_config_names_the_user(shared_tmp: Path) -> None:
    config = config_file(shared_tmp, "[policy]\ntag_at = 5.0\n")
    config.chmod(0o600)
    run = as_nobody("check", "--daemon", "off", "--config", str(config), str(EXAMPLES / "clean-appointment.eml"))
    err = no_traceback(run)
    assert run.returncode == 2
    assert f"mailguard: {config}: cannot read configuration file: permission denied for user nobody" in err


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("text, fragments", [
    ("[policy]\ntag_at = 5.0\nquarantine_at = \n",
     ["TOML syntax error: Invalid value (at line 3, column 17): quarantine_at ="]),
    ("[policy]\ntag_at = 5.0\ntag_at = 6.0\n", ["line 3", "a key or [section] is given twice", "tag_at = 6.0"]),
    ("[polcy]\ntag_at = 5.0\n", ["unknown section [polcy]; did you mean 'policy'?"]),
    ("[policy]\ntag_att = 5.0\n", ["unknown key 'tag_att' in [policy]; did you mean 'tag_at'?"]),
    ("[policy]\nprotected_domains = [\"practice.example\"]\n", ["'protected_domains' belongs in [lookalike]"]),
    ("[policy]\ntag_at = \"five\"\n", ["[policy] tag_at: expected a number, got string 'five'"]),
    ("[policy]\ntag_at = nan\n", ["[policy] tag_at: expected a finite number, got nan"]),
    ("[policy]\nquarantine_at = inf\n", ["[policy] quarantine_at: expected a finite number, got inf"]),
    ("[policy]\nscores = { LANGUAGE_URGENCY = nan }\n", ["[policy] scores: expected finite numbers"]),
    ("[policy]\nanalyzer_time_budget_ms = 99999999999999999999\n", ["analyzer_time_budget_ms", "out of range"]),
    ("[policy]\nscores_file = \"missing-scores.toml\"\n", ["[policy] scores_file:", "missing-scores.toml",
                                                          "cannot read the score table"]),
])
def test_config_mistakes_are_one_line_naming_file_and_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    config = config_file(tmp_path, text)
    run = check("--config", str(config), str(EXAMPLES / "clean-appointment.eml"))
    err = no_traceback(run)
    assert run.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("mailguard: ")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"mailguard: {config}: "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_a_broken_data_file_with_worker_processes_is_exit_2_not_a_traceback(tmp_path: Path) -> None:
    config = config_file(tmp_path, "[policy]\nscores_file = \"missing-scores.toml\"\n")
    box = tmp_path / "box"
    box.mkdir()
    for n in range(20):
        (box / f"{n:02d}.eml").write_bytes(CLEAN)
    run = check("--config", str(config), "-j", "2", str(box))
    err = no_traceback(run)
    assert run.returncode == 2, err
    assert f"mailguard: {config}: [policy] scores_file: " in err


@pytest.mark.parametrize("prefix, newline", [(b"\xef\xbb\xbf", b"\n"), (b"", b"\r\n"), (b"\xef\xbb\xbf", b"\r\n")])
def test_config_saved_by_windows_notepad_is_read(tmp_path: Path, prefix: bytes, newline: bytes) -> None:
    """A BOM and CRLF line endings: the settings apply (the phish is let through only
    because the thresholds say so)."""
    text = b"[policy]\ntag_at = 900.0\nquarantine_at = 1000.0\n".replace(b"\n", newline)
    config = config_file(tmp_path, prefix + text)
    run = check("--config", str(config), "--json", str(EXAMPLES / "lookalike-invoice.eml"))
    no_traceback(run)
    [record] = json_records(run)
    assert record["action"] == "accept" and run.returncode == 0, run.stderr


def test_config_that_is_a_folder_a_fifo_or_enormous(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it used to wait for ever
    big = tmp_path / "big.toml"
    big.write_bytes(b"[lookalike]\nprotected_names = [\n" + b'"Dr. Jane Roe",\n' * 400_000 + b"]\n")
    message = str(EXAMPLES / "clean-appointment.eml")
    for path, fragment in ((folder, "is a folder, not a configuration file; give the file in it"),
                           (fifo, "not a regular file"),
                           (big, "too large for a configuration file"),
                           (tmp_path / "missing.toml", "cannot read configuration file: no such file; correct the path, or write a "
                                                      "documented one with `mailguard config example > FILE`")):
        run = check("--config", str(path), message, timeout=60)
        err = no_traceback(run)
        assert run.returncode == 2, err
        assert err.splitlines() == [f"mailguard: {path}: " + err.split(f"{path}: ", 1)[1].strip()]
        assert fragment in err


def test_config_check_reports_the_same(tmp_path: Path) -> None:
    config = config_file(tmp_path, "[policy]\ntag_att = 5.0\n")
    run = subprocess.run([sys.executable, "-m", "mailguard", "config", "check", "--config", str(config)], cwd=REPO,
                         capture_output=True, env=env(), timeout=120)
    err = no_traceback(run)
    assert run.returncode == 2
    assert "did you mean 'tag_at'?" in err
