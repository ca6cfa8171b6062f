"""``mailguard daemon`` against hostile and mistaken clients: a real daemon on its real Unix
socket, spoken to byte by byte. What a user relies on: a broken or malicious request costs
its own connection, never a worker; an idle, stopped or greedy client cannot keep the
milter's and the relay's mail from the workers; the daemon never reads a file the client
may not read, nor another file than the one the client means."""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mailguard.daemon.protocol import MAX_HEADER_BYTES
from test_daemon import HAM, MAILGUARD, PHISH, Daemon, _check, _config, _records, env  # noqa: F401 - env: fixture

MESSAGE = HAM.format(n=1).encode()


class _Daemon(Daemon):
    """``test_daemon.Daemon``, started through ``prefix`` (e.g. ``unshare``)."""

    def __init__(self, config: Path, env: dict[str, str], prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([*prefix, *MAILGUARD, "daemon", "--config", str(config)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._buffer = b""
        self.lines: list[str] = []
        self.worker_pids: dict[int, int] = {}
        self.wait_for(r"daemon ready")
        self.lines.clear()


@pytest.fixture()
def start(env: dict[str, str]) -> Iterator:
    started: list[_Daemon] = []

    def run(config: Path, prefix: tuple[str, ...] = ()) -> _Daemon:
        daemon = _Daemon(config, env, prefix)
        started.append(daemon)
        return daemon

    yield run
    for daemon in started:
        daemon.stop()


def _connect(path: Path, timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def _frame(header: dict | bytes, body: bytes = b"") -> bytes:
    data = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">I", len(data)) + data + body


def _reply(sock: socket.socket) -> dict | None:
    """The next reply frame; None when the daemon closed the connection instead."""
    stream = sock.makefile("rb")
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack(">I", head)
    reply = json.loads(stream.read(length))
    if reply.get("size"):
        stream.read(reply["size"])
    return reply


def _ask(path: Path, header: dict | bytes, body: bytes = b"") -> dict | None:
    with _connect(path) as sock:
        sock.sendall(_frame(header, body))
        return _reply(sock)


def _worker_pid(path: Path) -> int:
    reply = _ask(path, {"op": "hello", "config": "x"})
    assert reply is not None
    return int(reply["pid"])


def test_wrong_shaped_requests_cost_their_connection_never_the_worker(
    tmp_path: Path, env: dict[str, str], start
) -> None:
    """Valid JSON of the wrong shape used to end the worker (an uncaught TypeError or
    ValueError); a FIFO named by path held it for ever, /dev/zero was read to the limit."""
    config = _config(tmp_path, workers=1, extra="max_message_bytes = 2048\n")
    daemon = start(config)
    sock_path = tmp_path / "d.sock"
    pid = _worker_pid(sock_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    scan = {"op": "scan", "size": len(MESSAGE)}
    refusals = {
        "envelope: rcpt_tos: expected a list of strings": [({**scan, "envelope": {"rcpt_tos": 5}}, MESSAGE),
                                                           ({**scan, "envelope": {"rcpt_tos": "a@b"}}, MESSAGE)],
        "envelope: expected an object or null": [({**scan, "envelope": [1, 2]}, MESSAGE)],
        "envelope: helo: expected a string, got int": [({**scan, "envelope": {"helo": 10 ** 30}}, MESSAGE)],
        "envelope: mail_from: not valid UTF-8": [  # a lone surrogate: valid JSON, not encodable
            (b'{"op":"scan","size":%d,"envelope":{"mail_from":"\\ud800@x.example"}}' % len(MESSAGE), MESSAGE)],
        "cannot read: embedded null byte": [({"op": "scan", "path": "/tmp/x\u0000y"}, b"")],
        "not a regular file; send the message": [({"op": "scan", "path": str(fifo)}, b""),
                                                 ({"op": "scan", "path": "/dev/zero"}, b""),
                                                 ({"op": "scan", "path": str(tmp_path)}, b"")],
    }
    for error, requests in refusals.items():
        for header, body in requests:
            assert _ask(sock_path, header, body) == {"ok": False, "error": error}, header
    closed = [
        struct.pack(">I", MAX_HEADER_BYTES + 1),  # just over the header limit: refused before it is read
        struct.pack(">I", 0),
        _frame(b'{"op":"scan","size":true}', b"x"),  # a boolean is no size
        _frame(b'{"op":"scan","size":-1}'),
        _frame(b'{"op":"scan","size":1e999}'),
        _frame(b'[{"op":"hello"}]'),
        _frame(b'null'),
        _frame(b'{"op":"hello","config":"\xff\xfe"}'),  # not UTF-8
    ]
    for payload in closed:
        with _connect(sock_path) as sock:
            sock.sendall(payload)
            assert sock.recv(100) == b"", payload[:40]
    padded = {"op": "hello", "config": "x", "pad": ""}  # a header of exactly the limit is still read
    padded["pad"] = "p" * (MAX_HEADER_BYTES - len(json.dumps(padded)))
    assert len(json.dumps(padded)) == MAX_HEADER_BYTES
    assert (_ask(sock_path, json.dumps(padded).encode()) or {}).get("ok") is True
    with _connect(sock_path) as sock:  # a body longer than announced: answered, then the rest is a broken frame
        sock.sendall(_frame(scan, MESSAGE + b"\x00\x00\x00\x05junk!"))
        assert (_reply(sock) or {}).get("ok") is True
        assert sock.recv(100) == b""
    ok = _ask(sock_path, {**scan, "envelope": {"mail_from": None, "rcpt_tos": None}}, MESSAGE)
    assert ok is not None and ok["ok"] and ok["verdict"]["action"] == "accept"  # nulls: empty, as before
    assert _worker_pid(sock_path) == pid  # the same worker throughout
    assert not [line for line in daemon.lines if "ended with" in line or "Traceback" in line], daemon.lines


def _scan_within(sock_path: Path, deadline_s: float) -> dict:
    """A scan request as the relay sends it (one connection, the fingerprint-free form),
    answered within ``deadline_s``."""
    started = time.monotonic()
    with _connect(sock_path, timeout=deadline_s) as sock:
        sock.sendall(_frame({"op": "scan", "size": len(MESSAGE), "envelope": None}, MESSAGE))
        reply = _reply(sock)
    assert reply is not None and reply["ok"], reply
    assert time.monotonic() - started < deadline_s
    return reply


def test_idle_and_trickling_clients_cannot_keep_every_worker_from_the_mail(
    tmp_path: Path, env: dict[str, str], start
) -> None:
    """Before: each connection held its worker until it had been silent for idle_timeout_s
    (300 s), reset by every byte, so a few idle connections (or one sending a byte a
    minute) kept all workers from the milter and the relay. Now a connection that gives
    its worker nothing yields it at once to a client that is waiting for one."""
    config = _config(tmp_path, workers=2)  # idle_timeout_s: the default, 300 s
    start(config)
    sock_path = tmp_path / "d.sock"
    hogs = []
    for n in range(2):  # one per worker: each greeted, so each is being served
        hog = _connect(sock_path)
        hog.sendall(_frame({"op": "hello", "config": "x"}))
        assert (_reply(hog) or {}).get("ok") is True
        hogs.append(hog)
    hogs[1].sendall(struct.pack(">I", 40) + b'{"op":')  # and one mid-header, then silent
    idle = [_connect(sock_path) for _ in range(6)]  # more, queued behind them, sending nothing
    try:
        for _ in range(3):
            assert _scan_within(sock_path, 30.0)["verdict"]["action"] == "accept"
        for hog in hogs:  # what the idle clients see: their connection closed
            hog.settimeout(30)
            assert hog.recv(100) == b""
    finally:
        for sock in hogs + idle:
            sock.close()


def test_a_long_check_run_shares_the_worker_with_the_servers_scans(
    tmp_path: Path, env: dict[str, str], start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `check` of a large folder used to hold its workers until it ended, the milter's
    and the relay's scans waiting (and tempfailing) meanwhile. Now it yields its worker
    to a waiting client between two of its requests and carries on on a new connection,
    every message still answered once and correctly."""
    from mailguard import load_config
    from mailguard.daemon.protocol import config_fingerprint
    from mailguard.daemon.remote import RemoteScanner

    config = _config(tmp_path, workers=1)
    start(config)
    folder = tmp_path / "mail"
    folder.mkdir()
    count = 3000
    for n in range(count):
        (folder / f"{n:04d}.eml").write_text((PHISH if n % 3 == 0 else HAM).format(n=n))
    client = subprocess.Popen([*MAILGUARD, "check", "--config", str(config), "--json", "--daemon", "required",
                               "-j", "1", str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    lines = [client.stdout.readline()]  # under way: the only worker is the check's
    monkeypatch.setenv("MAILGUARD_CACHE_DIR", env["MAILGUARD_CACHE_DIR"])
    remote = RemoteScanner(load_config(config), tmp_path / "d.sock", config_fingerprint(config), timeout_s=30)
    verdict = remote.scan(MESSAGE)
    still_running = client.poll() is None
    lines += client.stdout.readlines()
    assert client.wait(timeout=300) == 1
    assert verdict.action.name == "ACCEPT"
    assert still_running, "the server's scan waited for the whole check run"
    records = _records("".join(lines))
    assert [r["path"] for r in records] == [str(folder / f"{n:04d}.eml") for n in range(count)]
    assert [r["action"] for r in records] == ["quarantine" if n % 3 == 0 else "accept" for n in range(count)]


def test_a_client_that_leaves_mid_reply_costs_nothing(tmp_path: Path, env: dict[str, str], start) -> None:
    config = _config(tmp_path, workers=1)
    daemon = start(config)
    sock_path = tmp_path / "d.sock"
    pid = _worker_pid(sock_path)
    big = HAM.format(n=2).encode() + b"".join(b"line %d https://h%d.example.net/\n" % (i, i) for i in range(3000))
    with _connect(sock_path) as sock:  # many replies it will never read, then gone
        sock.sendall(b"".join(_frame({"op": "scan", "size": len(big), "reply": "json"}, big) for _ in range(40)))
        sock.recv(10)
    assert _scan_within(sock_path, 60.0)["verdict"]["action"] == "accept"
    assert _worker_pid(sock_path) == pid
    assert not [line for line in daemon.lines if "ended with" in line], daemon.lines


def test_the_socket_and_its_new_folder_are_private(tmp_path: Path, env: dict[str, str], start) -> None:
    config = tmp_path / "mailguard.toml"
    config.write_text(_config(tmp_path).read_text().replace(str(tmp_path / "d.sock"),
                                                            str(tmp_path / "run" / "sub" / "d.sock")))
    start(config)
    assert oct((tmp_path / "run" / "sub").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "run" / "sub" / "d.sock").stat().st_mode & 0o777) == "0o600"


IN_CI = os.environ.get("CI") == "true"  # CI runs as root with util-linux: these tests must run there, never skip
needs_root = pytest.mark.skipif(os.geteuid() != 0 and not IN_CI,
                                reason="needs root (another user's client, a mount namespace)")


def as_user(uid: int, work: Callable[[], object]) -> object:
    """``work()`` run in a child process as user (and group) ``uid``; its result, through JSON."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = json.loads(pipe.read() or b"null")
    assert os.waitpid(child, 0)[1] == 0
    return answer


@needs_root
def test_a_client_of_another_user_may_not_have_a_root_daemon_read_files(
    tmp_path: Path, env: dict[str, str], start
) -> None:
    """A root daemon whose socket others may use (socket_mode) must not read /etc/shadow
    for them: only a client of its own user, or root, may name files."""
    run = Path(tempfile.mkdtemp(prefix="mailguard-hostile-"))
    try:
        run.chmod(0o711)  # others may reach the socket, not list the folder
        config = tmp_path / "mailguard.toml"
        config.write_text(_config(tmp_path).read_text().replace(str(tmp_path / "d.sock"), str(run / "d.sock"))
                          .replace("[daemon]\n", '[daemon]\nsocket_mode = "0666"\n'))
        start(config)
        answers = as_user(65534, lambda: [_ask(run / "d.sock", header) for header in (  # nobody
            {"op": "hello", "config": "x"}, {"op": "scan", "path": "/etc/shadow", "reply": "json"})])
        assert answers[0]["ok"] is True and answers[0]["paths"] is False
        assert answers[1] == {"ok": False, "error": "this connection may not name files; send the message"}
    finally:
        shutil.rmtree(run, ignore_errors=True)


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None and not IN_CI, reason="needs unshare(1)")
def test_a_daemon_that_sees_another_file_at_the_path_does_not_scan_it(
    tmp_path: Path, env: dict[str, str], start
) -> None:
    """A daemon in its own mount namespace (systemd's PrivateTmp=) has its own file at the
    client's path. It used to scan that one and the client printed its verdict for its
    own message; now it refuses and the client sends the bytes."""
    config = _config(tmp_path, workers=1)
    folder = tmp_path / "mail"
    folder.mkdir()
    message = folder / "x.eml"
    message.write_text(PHISH.format(n=1))
    inner = (f'mount -t tmpfs none "{folder}" && printf "%s" "$HAM" > "{message}" && exec "$@"')
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        (pytest.fail if IN_CI else pytest.skip)(f"no mount namespaces here: {probe.stderr.decode(errors='replace')}")
    start(config, prefix=("env", f"HAM={HAM.format(n=2)}", "unshare", "-m", "--propagation", "private",
                          "sh", "-c", inner, "sh"))
    through = _check(["--config", str(config), "--json", "--daemon", "required", str(message)], env)
    assert through.returncode == 1, through.stderr
    assert _records(through.stdout)[0]["action"] == "quarantine"  # the client's message, not the daemon's file


def test_a_socket_folder_everyone_may_write_is_refused_by_daemon_and_client(tmp_path: Path, env: dict[str, str]) -> None:
    """Anyone who may write the socket's folder may swap the socket for theirs and be sent
    every message: the daemon does not start there, and check does not use a socket there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by all, no sticky bit
    config = tmp_path / "mailguard.toml"
    config.write_text(_config(tmp_path).read_text().replace(str(tmp_path / "d.sock"), str(shared / "d.sock")))
    started = subprocess.run([*MAILGUARD, "daemon", "--config", str(config)], env=env, capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 2
    assert f"socket folder {shared} may be written by every user" in started.stderr
    assert not (shared / "d.sock").exists()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # someone else's socket in that folder
    listener.bind(str(shared / "d.sock"))
    listener.listen(8)
    listener.setblocking(False)
    message = tmp_path / "x.eml"
    message.write_text(PHISH.format(n=1))
    checked = _check(["--config", str(config), "--json", str(message)], env)
    assert checked.returncode == 1  # scanned in-process: the phish is still held
    assert "the daemon is not used: the daemon's socket folder" in checked.stderr
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected to it
    listener.close()


@needs_root
def test_the_default_folder_in_tmp_made_by_someone_else_is_not_trusted(tmp_path: Path) -> None:
    """Without XDG_RUNTIME_DIR a user's daemon listens in /tmp/mailguard-UID, which any other
    user could make first and fill with their own socket. That folder is used only when it
    is the user's own and closed to others (as tmux does with /tmp/tmux-UID): the client
    does not connect there and the daemon does not bind there."""
    from mailguard.daemon.client import DaemonClient
    from mailguard.daemon.pipeline import scan_in_order
    from mailguard.daemon.protocol import UnsafeSocketFolder
    from mailguard.daemon.server import DaemonError, DaemonServer
    from mailguard.daemon.where import default_socket_file, unsafe_socket_folder

    uid = 54_321  # a user id of nobody on this machine
    folder = Path(f"/tmp/mailguard-{uid}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o755)  # made by root: "someone else" for that user
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / "daemon.sock"))
    listener.listen(8)
    listener.setblocking(False)
    try:
        def attempts() -> list[str]:
            path = default_socket_file({})
            seen: list[str] = [path]
            for attempt in (lambda: DaemonClient(Path(path), "x").connect(),
                            lambda: next(iter(scan_in_order(path, "x", ["-"], lambda *_: b""))),
                            lambda: DaemonServer(config=None, socket_path=Path(path), workers=1, fingerprint="x")._bind()):
                try:
                    attempt()
                    seen.append("connected or bound")
                except (UnsafeSocketFolder, DaemonError) as exc:
                    seen.append(str(exc))
            return seen

        seen = as_user(uid, attempts)
        assert isinstance(seen, list)
        assert seen[0] == str(folder / "daemon.sock")
        for refusal in seen[1:]:
            assert refusal.startswith(f"the daemon's socket folder {folder} belongs to user id 0, not to this user")
        with pytest.raises(BlockingIOError):
            listener.accept()
        def verdict() -> str | None:
            return unsafe_socket_folder(str(folder / "daemon.sock"))

        os.chown(folder, uid, uid)  # the user's own folder, but open to others
        assert "is open to other users (mode 0755); chmod 700" in str(as_user(uid, verdict))
        folder.chmod(0o700)
        assert as_user(uid, verdict) is None
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)



def test_a_file_over_the_daemons_limit_is_checked_here_reading_no_more_than_examined(
    tmp_path: Path, env: dict[str, str], start
) -> None:
    """The daemon refuses a file over its max_message_bytes and check scans it itself: that
    scan used to read the whole file (a 3 GB file: 22 GB of memory); it now reads [limits]
    max_message_bytes of it, examines that and holds the message (MESSAGE_TOO_LARGE)."""
    config = _config(tmp_path, extra="max_message_bytes = 65536\n[limits]\nmax_message_bytes = 65536\n")
    start(config)
    big = tmp_path / "big.eml"
    big.write_bytes(b"From: billing@example.com\r\nTo: frontdesk@practice.example\r\nSubject: statement\r\n\r\n"
                    + b"Your statement is attached.\r\n" * 10_000)
    done = _check(["--config", str(config), "--json", "--daemon", "required", str(big)], env)
    assert done.returncode == 1, done.stderr
    [record] = _records(done.stdout)
    assert record["action"] == "quarantine" and "MESSAGE_TOO_LARGE" in {f["rule"] for f in record["findings"]}
