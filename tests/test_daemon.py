"""``mailguard daemon`` and ``mailguard check`` through it: a real daemon process on a real
Unix socket, real ``mailguard check`` client processes. What a user relies on: the same
output and exit status with or without the daemon, a check that works when there is no
daemon, a killed worker replaced, and no message lost when one dies mid-scan."""
from __future__ import annotations

import asyncio
import json
import os
import re
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from dns_server import loopback_dns_toml

PHISH = (
    "From: PayPal Security <service@paypa1-secure.com>\nTo: a@practice.example\n"
    "Subject: Urgent: verify your account {n}\nMessage-ID: <p{n}@x>\n\n"
    "Your account will be suspended within 24 hours. Verify your password now at http://paypa1-secure.com/login\n"
)
HAM = (
    "From: Jane <jane@example.org>\nTo: a@practice.example\nSubject: lunch {n}\nMessage-ID: <h{n}@x>\n\n"
    "See you at noon on Thursday.\n"
)
MAILGUARD = [sys.executable, "-m", "mailguard"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "MAILGUARD_CACHE_DIR": str(cache)}


@pytest.fixture()
def messages(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "mail"
    folder.mkdir()
    out = []
    for n in range(40):
        path = folder / f"{n:02d}.eml"
        path.write_text((PHISH if n % 3 == 0 else HAM).format(n=n))
        out.append(path)
    return out


def _config(tmp_path: Path, workers: int = 1, extra: str = "") -> Path:
    path = tmp_path / "mailguard.toml"
    path.write_text(f'[daemon]\nsocket = "{tmp_path / "d.sock"}"\nworkers = {workers}\n{extra}' + loopback_dns_toml())
    return path


class Daemon:
    """A ``mailguard daemon`` process and its log (standard error), read line by line."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([*MAILGUARD, "daemon", "--config", str(config)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._buffer = b""  # read with os.read: a buffered reader would hide lines from select()
        self.lines: list[str] = []
        self.worker_pids: dict[int, int] = {}
        self.wait_for(r"daemon ready")
        self.lines.clear()  # start-up lines are in worker_pids

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        regex = re.compile(pattern)
        for line in self.lines:
            found = regex.search(line)
            if found:
                self.lines.remove(line)
                return found
        fd = self.proc.stderr.fileno()  # type: ignore[union-attr]
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if b"\n" not in self._buffer:
                    if not selector.select(deadline - time.monotonic()):
                        break
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    self._buffer += chunk
                    continue
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                started = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
                if started:
                    self.worker_pids[int(started[1])] = int(started[2])
                found = regex.search(line)
                if found:
                    return found
                self.lines.append(line)
        finally:
            selector.close()
        raise AssertionError(f"daemon never logged {pattern!r}; log so far: {self.lines}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture()
def daemon_factory(env: dict[str, str]) -> Iterator:
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        daemon = Daemon(config, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def _check(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*MAILGUARD, "check", *args], env=env, capture_output=True, text=True, timeout=120, **kwargs)


def _records(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        record = json.loads(line)
        record.pop("elapsed_ms", None)
        out.append(record)
    return out


def test_check_through_the_daemon_prints_what_an_in_process_check_prints(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory
) -> None:
    config = _config(tmp_path, workers=2)
    daemon_factory(config)
    paths = [str(p) for p in messages] + [str(tmp_path / "missing.eml")]
    through = _check(["--config", str(config), "--json", "--daemon", "required", "-j", "2", *paths], env)
    local = _check(["--config", str(config), "--json", "--daemon", "off", "-j", "2", *paths], env)
    assert through.returncode == local.returncode == 2  # the missing file is an error either way
    assert _records(through.stdout) == _records(local.stdout)
    assert {r.get("action") for r in _records(through.stdout)} >= {"accept", "quarantine"}
    text_through = _check(["--config", str(config), "--daemon", "required", str(messages[0])], env)
    text_local = _check(["--config", str(config), "--daemon", "off", str(messages[0])], env)
    assert text_through.returncode == text_local.returncode == 1
    assert text_through.stdout == text_local.stdout
    ham = _check(["--config", str(config), "--daemon", "required", str(messages[1])], env)
    assert ham.returncode == 0, ham.stderr
    piped = _check(["--config", str(config), "--json", "--daemon", "required", "-"], env, input=messages[0].read_text())
    assert _records(piped.stdout)[0]["action"] == "quarantine"


def test_without_a_daemon_check_scans_in_process(tmp_path: Path, env: dict[str, str], messages: list[Path]) -> None:
    config = _config(tmp_path)
    auto = _check(["--config", str(config), "--json", str(messages[0])], env)
    assert auto.returncode == 1 and _records(auto.stdout)[0]["action"] == "quarantine"
    required = _check(["--config", str(config), "--json", "--daemon", "required", str(messages[0])], env)
    assert required.returncode == 2 and "no daemon" in required.stderr


def test_check_reaches_the_socket_the_file_names_now_not_the_one_it_named_before(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory
) -> None:
    """check keeps the socket it read from a configuration in the cache folder, keyed by
    the file's content: edited, the file is read again; an entry others may write is ignored."""
    config = _config(tmp_path)
    daemon_factory(config)
    first = _check(["--config", str(config), "--json", "--daemon", "required", str(messages[0])], env)
    assert first.returncode == 1, first.stderr
    entries = [e for e in Path(env["MAILGUARD_CACHE_DIR"]).glob("daemon-socket-*.json") if str(config) in e.read_text()]
    assert len(entries) == 1 and str(tmp_path / "d.sock") in entries[0].read_text()
    config.write_text(config.read_text().replace(str(tmp_path / "d.sock"), str(tmp_path / "e.sock")))
    daemon_factory(config)  # the edited file's daemon, beside the first one (still on d.sock)
    edited = _check(["--config", str(config), "--json", "--daemon", "required", str(messages[0])], env)
    assert edited.returncode == 1, edited.stderr
    assert str(tmp_path / "e.sock") in entries[0].read_text()
    # Someone else's entry, for this very content, pointing at the old daemon: not believed.
    fingerprint = json.loads(entries[0].read_text())["config"]
    entries[0].write_text(json.dumps({"config": fingerprint, "socket": str(tmp_path / "d.sock")}))
    entries[0].chmod(0o666)
    foreign = _check(["--config", str(config), "--json", "--daemon", "required", str(messages[0])], env)
    assert foreign.returncode == 1, foreign.stderr


def test_a_daemon_with_another_configuration_is_not_used(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory
) -> None:
    config = _config(tmp_path)
    daemon_factory(config)
    other = tmp_path / "other.toml"
    other.write_text(config.read_text() + '[policy]\nquarantine_at = 1000\nreject_at = 2000\n')
    required = _check(["--config", str(other), "--json", "--daemon", "required", str(messages[0])], env)
    assert required.returncode == 2 and "another configuration" in required.stderr
    auto = _check(["--config", str(other), "--json", str(messages[0])], env)
    assert _records(auto.stdout)[0]["action"] == "tag"  # the other file's thresholds, scanned in-process


def test_a_killed_worker_is_replaced(tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory) -> None:
    config = _config(tmp_path, workers=1)
    daemon = daemon_factory(config)
    first = daemon.worker_pids[0]
    os.kill(first, signal.SIGKILL)
    replaced = daemon.wait_for(r"worker 0 started \(pid (\d+)\)")
    assert int(replaced[1]) != first
    done = _check(["--config", str(config), "--json", "--daemon", "required", str(messages[0])], env)
    assert done.returncode == 1 and _records(done.stdout)[0]["action"] == "quarantine"


def test_no_message_is_lost_when_a_worker_dies_mid_run(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory
) -> None:
    config = _config(tmp_path, workers=1)
    daemon = daemon_factory(config)
    expected = _records(_check(["--config", str(config), "--json", "--daemon", "off", *map(str, messages)], env).stdout)
    client = subprocess.Popen([*MAILGUARD, "check", "--config", str(config), "--json", "--daemon", "required",
                               "-j", "1", *map(str, messages)], env=env, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    lines = [client.stdout.readline()]  # the run is under way: now its worker dies
    os.kill(daemon.worker_pids[0], signal.SIGKILL)
    lines += client.stdout.readlines()
    assert client.wait(timeout=120) == 1
    assert _records("".join(lines)) == expected
    daemon.wait_for(r"worker 0 \(pid \d+\) ended with signal 9")


def test_hostile_frames_close_the_connection_and_the_daemon_keeps_serving(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory
) -> None:
    config = _config(tmp_path, workers=1, extra="max_message_bytes = 2048\n")
    daemon_factory(config)
    sock_path = str(tmp_path / "d.sock")
    assert oct(os.stat(sock_path).st_mode & 0o777) == "0o600"
    for payload in (
        struct.pack(">I", 1 << 30),  # a header length far over the limit
        struct.pack(">I", 7) + b"garbage",  # not JSON
        struct.pack(">I", 28) + b'{"op":"scan","size":9999999}',  # over max_message_bytes
        struct.pack(">I", 13) + b'{"op":"rm-rf"}',
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(sock_path)
            sock.sendall(payload)
            assert sock.recv(100) == b""  # closed without an answer
    done = _check(["--config", str(config), "--json", "--daemon", "required", str(messages[0])], env)
    assert done.returncode == 1


def _ask(sock: socket.socket, header: dict, body: bytes = b"") -> tuple[dict, bytes]:
    data = json.dumps(header).encode()
    sock.sendall(struct.pack(">I", len(data)) + data + body)
    stream = sock.makefile("rb")
    (length,) = struct.unpack(">I", stream.read(4))
    reply = json.loads(stream.read(length))
    return reply, stream.read(reply["size"]) if "size" in reply else b""


def test_a_client_of_the_daemons_user_may_name_files_and_get_the_rendered_verdict(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory
) -> None:
    """What `check` relies on for speed: the daemon reads a file a client of its own user
    names (it could read it itself), answers with the verdict as `check --json` prints it,
    and refuses what it cannot read without closing the connection (the client then sends
    the bytes)."""
    config = _config(tmp_path, workers=1)
    daemon_factory(config)
    expected = _records(_check(["--config", str(config), "--json", "--daemon", "off", str(messages[0])], env).stdout)[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(tmp_path / "d.sock"))
        hello, _ = _ask(sock, {"op": "hello", "config": "x"})
        assert hello["paths"] is True  # same user
        reply, body = _ask(sock, {"op": "scan", "path": str(messages[0]), "reply": "json"})
        verdict = json.loads(body)
        verdict.pop("elapsed_ms")
        assert reply["ok"] and reply["action"] == "quarantine" == verdict["action"]
        assert {"path": str(messages[0]), **verdict} == expected
        missing, _ = _ask(sock, {"op": "scan", "path": str(tmp_path / "gone.eml"), "reply": "json"})
        assert missing == {"ok": False, "error": "cannot read: No such file or directory"}
        raw = messages[1].read_bytes()  # the same connection still answers, bytes and old-style replies too
        plain, _ = _ask(sock, {"op": "scan", "size": len(raw)}, raw)
        assert plain["ok"] and plain["verdict"]["action"] == "accept"
        relative = b'{"op":"scan","path":"relative.eml"}'
        sock.sendall(struct.pack(">I", len(relative)) + relative)
        assert sock.recv(100) == b""  # a relative path is a broken client: closed


def test_many_large_messages_through_two_connections_give_the_in_process_output(
    tmp_path: Path, env: dict[str, str], daemon_factory
) -> None:
    """Large messages, 32 in flight on each connection, replies read while requests are
    still being sent; standard input goes as bytes, files by path."""
    config = _config(tmp_path, workers=2)
    daemon_factory(config)
    folder = tmp_path / "big"
    folder.mkdir()
    filler = "".join(f"Line {i} of the minutes: https://host{i}.example.net/page\n" for i in range(4000))
    for n in range(60):
        (folder / f"{n:02d}.eml").write_text(HAM.format(n=n) + filler)
    piped = _check(["--config", str(config), "--json", "--daemon", "required", "-j", "2", "-"], env,
                   input=HAM.format(n=99) + filler)
    through = _check(["--config", str(config), "--json", "--daemon", "required", "-j", "2", str(folder)], env)
    local = _check(["--config", str(config), "--json", "--daemon", "off", "-j", "2", str(folder)], env)
    assert _records(through.stdout) == _records(local.stdout) and len(_records(through.stdout)) == 60
    assert piped.returncode == 0 and len(_records(piped.stdout)) == 1


def test_a_second_daemon_on_the_same_socket_refuses_to_start(
    tmp_path: Path, env: dict[str, str], daemon_factory
) -> None:
    config = _config(tmp_path)
    daemon_factory(config)
    second = subprocess.run([*MAILGUARD, "daemon", "--config", str(config)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 2 and "already listening" in second.stderr


def test_remote_scanner_gives_the_scanners_verdict(
    tmp_path: Path, env: dict[str, str], messages: list[Path], daemon_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailguard import Envelope, Scanner, load_config
    from mailguard.daemon.protocol import config_fingerprint
    from mailguard.daemon.remote import RemoteScanner

    config_path = _config(tmp_path, workers=1)
    daemon_factory(config_path)
    monkeypatch.setenv("MAILGUARD_CACHE_DIR", env["MAILGUARD_CACHE_DIR"])
    config = load_config(config_path)
    remote = RemoteScanner(config, tmp_path / "d.sock", config_fingerprint(config_path))
    local = Scanner(config)
    envelope = Envelope("x@paypa1-secure.com", ("a@practice.example",), "192.0.2.7", "mx.example")
    for path in messages[:4]:
        raw = path.read_bytes()
        got, want = remote.scan(raw, envelope).to_dict(), local.scan(raw, envelope).to_dict()
        from_loop = asyncio.run(remote.scan_async(raw, envelope)).to_dict()  # as the milter's event loop asks
        for verdict in (got, want, from_loop):
            verdict.pop("elapsed_ms")
        assert got == want == from_loop


def test_remote_scanner_on_an_event_loop_says_when_the_daemon_is_gone(
    tmp_path: Path, env: dict[str, str], daemon_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailguard import load_config
    from mailguard.daemon.client import DaemonUnavailable
    from mailguard.daemon.protocol import config_fingerprint
    from mailguard.daemon.remote import RemoteScanner

    config_path = _config(tmp_path, workers=1)
    daemon = daemon_factory(config_path)
    monkeypatch.setenv("MAILGUARD_CACHE_DIR", env["MAILGUARD_CACHE_DIR"])
    remote = RemoteScanner(load_config(config_path), tmp_path / "d.sock", config_fingerprint(config_path))
    daemon.stop()
    with pytest.raises(DaemonUnavailable):  # the milter answers 451: the sender retries
        asyncio.run(remote.scan_async(b"Subject: hi\r\n\r\nbody\r\n"))


def test_milter_with_use_daemon_refuses_to_start_without_one(tmp_path: Path, env: dict[str, str]) -> None:
    config = _config(tmp_path, extra='[milter]\nuse_daemon = true\nlisten = "inet:127.0.0.1:0"\n')
    run = subprocess.run([*MAILGUARD, "milter", "--config", str(config)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "use_daemon" in run.stderr and "no daemon" in run.stderr


def test_milter_through_the_daemon_answers_451_once_the_daemon_is_gone(
    tmp_path: Path, env: dict[str, str], daemon_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mail lost: a message the daemon can no longer scan is refused for now (the sender
    retries), over the milter protocol as Postfix speaks it."""
    from mailguard.config import load_config
    from mailguard.milter import protocol as mp
    from postfix_instance import MilterThread
    from test_milter_protocol import MTA, headers_for

    config_path = _config(tmp_path, extra='[milter]\nuse_daemon = true\nlisten = "inet:127.0.0.1:0"\n'
                                          'quarantine = "hold"\n')
    daemon = daemon_factory(config_path)
    monkeypatch.setenv("MAILGUARD_CACHE_DIR", env["MAILGUARD_CACHE_DIR"])
    with MilterThread(load_config(config_path)) as milter:
        replies = []
        for _ in range(2):
            mta = MTA(milter.port)
            try:
                mta.negotiate()
                mta.envelope()
                replies.append(mta.message(headers_for("lunch"), b"See you at noon on Thursday.\r\n"))
            finally:
                mta.close()
            daemon.stop()
    assert replies[0][-1] == (mp.SMFIR_CONTINUE, b"")
    assert any(c == mp.SMFIR_INSHEADER and b"X-MailGuard-Action" in d for c, d in replies[0])
    assert replies[1] == [(mp.SMFIR_REPLYCODE, b"451 4.7.1 The message could not be checked right now; "
                                                b"please try again later\0")]


def test_relay_with_the_daemon_pool_refuses_to_start_without_one(tmp_path: Path, env: dict[str, str]) -> None:
    config = _config(tmp_path, extra='[relay]\npool = "daemon"\nlisten = "127.0.0.1:0"\n')
    run = subprocess.run([*MAILGUARD, "serve", "--config", str(config)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "pool" in run.stderr and "no daemon" in run.stderr


def test_workers_exit_when_the_master_is_killed(tmp_path: Path, env: dict[str, str], daemon_factory) -> None:
    """Killed at once after forking (before a worker has run a line of its own): the workers
    still know whose children they were and exit instead of serving on unsupervised."""
    config = _config(tmp_path, workers=2)
    daemon = daemon_factory(config)
    workers = {pid: os.pidfd_open(pid) for pid in daemon.worker_pids.values()}
    daemon.proc.kill()
    daemon.proc.wait(timeout=30)
    poller = select.poll()
    for fd in workers.values():
        poller.register(fd, select.POLLIN)  # readable once the process has exited
    exited: set[int] = set()
    try:
        while len(exited) < len(workers):  # each notices within its one-second accept timeout
            ready = poller.poll(60_000)
            assert ready, f"orphaned workers still running: {[p for p, fd in workers.items() if fd not in exited]}"
            for fd, _ in ready:
                poller.unregister(fd)
                exited.add(fd)
    finally:
        for fd in workers.values():
            os.close(fd)


def test_relay_with_the_daemon_pool_scans_through_it(
    tmp_path: Path, env: dict[str, str], daemon_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[relay] pool = "daemon"`: the relay's event loop sends each message to the daemon's
    workers and tags, holds or delivers by their verdict; a killed worker costs no message."""
    import smtplib

    from mailguard import load_config
    from mailguard.quarantine import open_quarantine
    from test_relay_support import LoopThread, RelayRunner, Sink

    sink_loop = LoopThread()
    sink = Sink(sink_loop)
    config_path = _config(tmp_path, workers=1, extra=(
        f'\n[relay]\npool = "daemon"\nlisten = "127.0.0.1:0"\ndownstream = "127.0.0.1:{sink.port}"\n'
        f'relay_domains = ["practice.example"]\nhostname = "mailguard.test"\n'
        f'\n[quarantine]\npath = "{tmp_path / "q"}"\nkey_file = "{tmp_path / "q.key"}"\n'
        '\n[auth]\nenabled = false\n'))
    daemon = daemon_factory(config_path)
    monkeypatch.setenv("MAILGUARD_CACHE_DIR", env["MAILGUARD_CACHE_DIR"])
    config = load_config(config_path)
    quarantine = open_quarantine(config)
    relay = RelayRunner(config, quarantine=quarantine)
    try:
        assert relay.server.state.pool.kind == "daemon"
        with smtplib.SMTP(relay.host, relay.port, timeout=60) as client:
            client.sendmail("jane@example.org", ["a@practice.example"], HAM.format(n=1).encode())
            os.kill(daemon.worker_pids[0], signal.SIGKILL)  # the next scan finds a replacement
            daemon.wait_for(r"worker 0 started")
            client.sendmail("jane@example.org", ["a@practice.example"], HAM.format(n=2).encode())
            client.sendmail("x@paypa1-secure.com", ["a@practice.example"], PHISH.format(n=3).encode())  # held
        held = quarantine.count()
    finally:
        relay.stop()
        quarantine.close()
        sink.stop()
        sink_loop.close()
    delivered = sink.handler.wait_for(2)
    assert [b"X-MailGuard-Action: accept" in m.data for m in delivered] == [True, True]
    assert len(sink.handler.messages) == 2 and held == 1
