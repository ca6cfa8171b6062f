"""The relay's daemon pool tries a scan a second time only when that can help (issue 16):
after the connection broke mid-request (its worker was killed; a replacement answers),
never after the daemon refused the message, which would refuse it again.

A scripted daemon on a real Unix socket (the daemon's wire format) stands in for `mailguard
daemon`, so the test decides what each connection gets; the relay is the real one, with
`[relay] pool = "daemon"`, and the client is smtplib on loopback.
"""
from __future__ import annotations

import smtplib
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailguard.config import Config
from mailguard.daemon.protocol import config_fingerprint, frame, read_exact, receive
from test_relay_support import RECIPIENT, SENDER, RelayRunner, Sink, clean_message, loop_thread, relay_config, sink  # noqa: F401

ACCEPT = {"score": 0.0, "action": "accept", "findings": [], "errors": [], "message_id": "", "elapsed_ms": 1.0,
          "tempfail": False, "auth": None, "summary": ""}


class ScriptedDaemon:
    """Answers hello as a daemon with ``fingerprint`` would; each scan connection takes the
    next step of ``script``: "ok" (a clean verdict), "refuse" ({"ok": false}) or "break"
    (hang up after reading the request, as a worker killed mid-scan)."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.script: list[str] = []
        self.scans: list[str] = []  # what each scan connection got
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as stream:
                request = receive(stream)
                if request is None:
                    continue
                if request["op"] == "hello":
                    conn.sendall(frame({"ok": True, "config": self.fingerprint, "pid": 1, "version": "test"}))
                    continue
                read_exact(stream, request["size"])
                step = self.script.pop(0) if self.script else "ok"
                self.scans.append(step)
                if step == "ok":
                    conn.sendall(frame({"ok": True, "verdict": ACCEPT}))
                elif step == "refuse":
                    conn.sendall(frame({"ok": False, "error": "message is over [daemon] max_message_bytes"}))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def relay_and_daemon(tmp_path: Path, sink: Sink) -> Iterator[tuple[RelayRunner, ScriptedDaemon]]:
    source = tmp_path / "mailguard.toml"
    source.write_text("# the configuration both sides run (its bytes make the fingerprint)\n")
    base = relay_config(tmp_path, sink.port, {"pool": "daemon"}).to_dict()
    config = Config.from_dict({**base, "daemon": {"socket": str(tmp_path / "d.sock")}}, source)
    daemon = ScriptedDaemon(tmp_path / "d.sock", config_fingerprint(source))
    relay = RelayRunner(config)
    yield relay, daemon
    relay.stop()
    daemon.close()


def send(relay: RelayRunner, n: int) -> int:
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=60) as client:
            client.sendmail(SENDER, [RECIPIENT], clean_message(n))
        return 250
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code


def test_a_refusal_is_answered_451_without_a_second_try(relay_and_daemon: Any, sink: Sink) -> None:
    relay, daemon = relay_and_daemon
    daemon.script = ["refuse", "ok"]
    assert send(relay, 1) == 451
    assert daemon.scans == ["refuse"]  # not sent again: the daemon would refuse it again
    assert send(relay, 2) == 250
    assert daemon.scans == ["refuse", "ok"]


def test_a_connection_broken_mid_scan_is_tried_once_more(relay_and_daemon: Any, sink: Sink) -> None:
    relay, daemon = relay_and_daemon
    daemon.script = ["break", "ok"]
    assert send(relay, 1) == 250  # a replacement worker answered the second try
    assert daemon.scans == ["break", "ok"]
    daemon.script = ["break", "break"]
    assert send(relay, 2) == 451  # twice broken: deferred, the sender retries
    assert daemon.scans == ["break", "ok", "break", "break"]
    assert len(sink.handler.wait_for(1)) == 1
