"""The log as the IT person meets it, from `mailguard serve` and `mailguard milter` as real
processes (the milter behind a real Postfix): a log file that logrotate renames is reopened
on SIGHUP (the next message's line lands in a new file at the configured path), syslog =
true sends the very same lines to a Unix datagram socket (facility mail), and relay and
milter write one line per message with the same fields.

The syslog socket here is a real one bound in a temporary folder (``[logging]
syslog_socket``); /dev/log is the default.
"""
from __future__ import annotations

import json
import queue
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.logsetup import MESSAGE_FIELDS
from postfix_instance import PostfixInstance, Sink, free_port, require_postfix, wait_until
from test_relay_support import RECIPIENT, SENDER, clean_message, malware_message

SYSLOG_MAIL_INFO = 2 * 8 + 6  # <facility mail (2) * 8 + severity info (6)>


class SyslogSocket:
    """A Unix datagram socket standing in for /dev/log; keeps every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.datagrams: queue.Queue[bytes] = queue.Queue()
        self.seen: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                self.datagrams.put(self.sock.recv(65536))
            except OSError:
                return

    def records(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(priority, ident, JSON record) of every datagram so far."""
        while not self.datagrams.empty():
            self.seen.append(self.datagrams.get())
        out = []
        for data in self.seen:
            text = data.rstrip(b"\0").decode()
            priority, _, rest = text[1:].partition(">")
            ident, _, payload = rest.partition(": ")
            out.append((int(priority), ident, json.loads(payload)))
        return out

    def close(self) -> None:
        self.sock.close()


def lines_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_line(path: Path, what: str, **match: Any) -> dict[str, Any]:
    """The first JSON line of ``path`` whose event starts with ``what`` and has ``match``."""
    def found() -> dict[str, Any] | None:
        for line in lines_of(path):
            if str(line.get("event", "")).startswith(what) and all(line.get(k) == v for k, v in match.items()):
                return line
        return None

    return wait_until(found, 60, f"a {what!r} line in {path}")


def write_config(path: Path, body: str, log_file: Path, syslog: Path) -> Path:
    path.write_text(
        "[auth]\nenabled = false\n"  # no DNS: nothing here may ask the system resolver
        + body
        + f"[logging]\nformat = \"json\"\nfile = \"{log_file}\"\nsyslog = true\nsyslog_socket = \"{syslog}\"\n"
    )
    return path


@pytest.fixture()
def folder() -> Iterator[Path]:
    """A short path: a Unix socket's path is limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mg-log-", dir="/tmp"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def syslog(folder: Path) -> Iterator[SyslogSocket]:
    server = SyslogSocket(folder / "log.sock")
    yield server
    server.close()


@pytest.fixture()
def sink() -> Iterator[Sink]:
    server = Sink().start()
    yield server
    server.stop()


class Process:
    """`python -m mailguard.cli ARGS`; standard error kept for failure messages."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def rotate_and_reload(process: Process, log_file: Path, reloaded: str) -> Path:
    """What logrotate does (rename, then `systemctl reload` = SIGHUP); returns the old file's
    new name once the service writes to a new file at the original path."""
    rotated = log_file.with_name(log_file.name + ".1")
    log_file.rename(rotated)
    process.proc.send_signal(signal.SIGHUP)
    wait_line(log_file, reloaded)
    return rotated


def send(port: int, data: bytes) -> str:
    """One message with smtplib; the text of the DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("client.test")
        smtp.mail(SENDER)
        smtp.rcpt(RECIPIENT)
        code, text = smtp.data(data)
    assert code == 250, text
    return text.decode()


def check_message_lines(way: str, log_lines: list[dict[str, Any]], syslog: SyslogSocket) -> list[dict[str, Any]]:
    """The message lines of ``way``: the documented fields in each, and each line also on
    syslog exactly as in the file (facility mail, severity info, ident mailguard)."""
    messages = [line for line in log_lines if line.get("event") == "message"]

    def message_records() -> list[tuple[int, str, dict[str, Any]]] | None:
        found = [(p, i, r) for p, i, r in syslog.records() if r.get("event") == "message" and r.get("way") == way]
        return found if len(found) >= len(messages) else None

    # The service has exited, so every datagram is in the socket's buffer; the reader thread
    # may not have taken the last ones out yet.
    by_syslog = wait_until(message_records, 30, f"{len(messages)} {way} message lines on syslog")
    assert [(p, i) for p, i, _ in by_syslog] == [(SYSLOG_MAIL_INFO, "mailguard")] * len(messages)
    assert [r for _, _, r in by_syslog] == messages
    for line in messages:
        assert set(MESSAGE_FIELDS) <= set(line), (way, sorted(line))
        assert line["way"] == way and line["queue_id"] and isinstance(line["rules"], list)
        assert isinstance(line["score"], (int, float)) and isinstance(line["elapsed_ms"], (int, float))
    return messages


def test_relay_log_file_is_reopened_on_sighup_and_copied_to_syslog(
    folder: Path, syslog: SyslogSocket, sink: Sink
) -> None:
    log_file = folder / "relay.log"
    config = write_config(folder / "relay.toml", (
        f'[relay]\nlisten = "127.0.0.1:0"\ndownstream = "127.0.0.1:{sink.port}"\n'
        'relay_domains = ["practice.example"]\nhostname = "mailguard.test"\nworkers = 1\n'
        f'[quarantine]\npath = "{folder / "q"}"\nkey_file = "{folder / "quarantine.key"}"\n'
    ), log_file, syslog.path)
    relay = Process("serve", "--config", str(config))
    try:
        port = int(wait_line(log_file, "listening")["port"])
        send(port, clean_message(1))
        first = wait_line(log_file, "message")
        rotated = rotate_and_reload(relay, log_file, "reloaded")
        held = send(port, malware_message()).rsplit(" ", 1)[1]  # "... queued as ID"
        second = wait_line(log_file, "message", queue_id=held)
        assert relay.stop() == 0
    finally:
        relay.kill()
    old, new = lines_of(rotated), lines_of(log_file)
    assert first in old and second not in old  # nothing more went to the rotated file
    assert second in new and first not in new
    assert [line for line in new if held in json.dumps(line)] == [second]  # one line for the held message
    assert (first["result"], second["result"]) == ("delivered", "quarantined") and second["quarantine_id"]
    check_message_lines("relay", old + new, syslog)


def test_milter_log_file_is_reopened_on_sighup_and_has_the_relays_fields(
    folder: Path, syslog: SyslogSocket, sink: Sink
) -> None:
    require_postfix()
    milter_port = free_port()
    postfix = PostfixInstance(sink.port, milter_port)
    log_file = folder / "milter.log"
    config = write_config(folder / "milter.toml", (
        f'[milter]\nlisten = "inet:127.0.0.1:{milter_port}"\n'
        f'[quarantine]\npath = "{folder / "q"}"\nkey_file = "{folder / "quarantine.key"}"\n'
        f'release_host = "127.0.0.1:{postfix.smtpd_port}"\n'
    ), log_file, syslog.path)
    milter = Process("milter", "--config", str(config))
    try:
        wait_line(log_file, "milter listening")
        postfix.start()
        send(postfix.smtpd_port, clean_message(2))
        first = wait_line(log_file, "message")
        rotated = rotate_and_reload(milter, log_file, "configuration reloaded")
        held = send(postfix.smtpd_port, malware_message()).rsplit(" ", 1)[1]  # Postfix's queue id
        second = wait_line(log_file, "message", queue_id=held)
        assert milter.stop() == 0
    finally:
        milter.kill()
        postfix.stop()
    old, new = lines_of(rotated), lines_of(log_file)
    assert first in old and second not in old
    assert second in new and first not in new
    assert [line for line in new if held in json.dumps(line)] == [second]
    assert (first["result"], second["result"]) == ("delivered", "quarantined") and second["quarantine_id"]
    check_message_lines("milter", old + new, syslog)
