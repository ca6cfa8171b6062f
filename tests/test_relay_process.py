"""`mailguard serve` as a real process: SIGTERM drains without losing a message, SIGHUP
reloads configuration and rules without dropping connections. The process's JSON log lines
on standard error are the synchronisation points."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import smtplib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from dns_server import loopback_dns_toml
from test_relay_support import (  # noqa: F401 (fixtures)
    RECIPIENT,
    SENDER,
    LoopThread,
    RawClient,
    Sink,
    clean_message,
    malware_message,
    phish_message,
    wire,
    loop_thread,
    sink,
)


def write_config(path: Path, downstream_port: int, domains: list[str], extra: str = "", relay: str = "") -> None:
    folder = path.parent
    path.write_text(
        "[relay]\n"
        'listen = "127.0.0.1:0"\n'
        f'downstream = "127.0.0.1:{downstream_port}"\n'
        f"relay_domains = {json.dumps(domains)}\n"
        'hostname = "mailguard.test"\n'
        "workers = 1\n"
        "shutdown_timeout = 20.0\n"
        + relay
        + "[quarantine]\n"
        f'path = "{folder / "q"}"\n'
        f'key_file = "{folder / "quarantine.key"}"\n'
        "[logging]\n"
        'format = "json"\n'
        + loopback_dns_toml()
        + extra
    )


class ServeProcess:
    """`python -m mailguard.cli serve --config FILE`, its log lines read by a thread."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailguard.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for("listening")["port"])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        while True:
            try:
                record = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {event!r} log line; stderr was:\n{''.join(self.raw)}") from None
            if record.get("event") == event:
                return record

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture()
def serve(tmp_path: Path, sink: Sink) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def start(domains: list[str] | None = None, extra: str = "", env: dict[str, str] | None = None,
              relay: str = "") -> ServeProcess:
        write_config(tmp_path / "mailguard.toml", sink.port, domains or ["practice.example"], extra, relay)
        process = ServeProcess(tmp_path / "mailguard.toml", env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


def begin(client: RawClient, rcpt: str = RECIPIENT) -> None:
    assert client.reply()[0] == 220
    assert client.command("EHLO client.test")[0] == 250
    assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert client.command(f"RCPT TO:<{rcpt}>")[0] == 250
    assert client.command("DATA")[0] == 354


def test_sigterm_during_a_transfer_loses_nothing(serve: Any, sink: Sink) -> None:
    relay = serve()
    idle = RawClient("127.0.0.1", relay.port)
    busy = RawClient("127.0.0.1", relay.port)
    try:
        assert idle.reply()[0] == 220
        begin(busy)
        message = clean_message(42)
        busy.send(wire(message)[:100])  # half a message is on its way
        relay.signal(signal.SIGTERM)
        assert relay.wait_for("draining")["in_transfer"] == 1
        code, text = idle.reply()
        assert code == 421 and "4.3.2" in text
        with pytest.raises(OSError):
            RawClient("127.0.0.1", relay.port).close()  # no longer listening
        busy.send(wire(message)[100:])
        assert busy.reply()[0] == 250
        assert busy.reply()[0] == 421  # then a goodbye
    finally:
        idle.close()
        busy.close()
    assert relay.proc.wait(60) == 0
    received = sink.handler.wait_for(1)
    assert len(received) == 1 and received[0].data.endswith(message.split(b"\r\n\r\n", 1)[1])
    assert "Thursday" not in "".join(relay.raw)  # no subjects or bodies in the logs


def test_sighup_reloads_without_dropping_connections(serve: Any, sink: Sink, tmp_path: Path) -> None:
    relay = serve(["practice.example"])
    with RawClient("127.0.0.1", relay.port) as client:
        assert client.reply()[0] == 220
        assert client.command("EHLO client.test")[0] == 250
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert client.command("RCPT TO:<desk@clinic.example>")[0] == 550
        assert client.command(f"RCPT TO:<{RECIPIENT}>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(wire(phish_message(1)))
        assert client.reply()[0] == 250  # held: the default policy quarantines it
        # New domains and new rules (this lookalike now counts for little: tag, not hold).
        write_config(tmp_path / "mailguard.toml", sink.port, ["practice.example", "clinic.example"],
                     "[policy]\nquarantine_at = 1000.0\n")
        relay.signal(signal.SIGHUP)
        relay.wait_for("reloaded")
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250  # same connection, new settings
        assert client.command("RCPT TO:<desk@clinic.example>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(wire(phish_message(2)))
        assert client.reply()[0] == 250
        # A broken file is refused and the running configuration kept.
        (tmp_path / "mailguard.toml").write_text("[relay]\nlisten = 25\n")
        relay.signal(signal.SIGHUP)
        assert relay.wait_for("reload failed")["error"] == _error_of(tmp_path / "mailguard.toml")
        assert client.command("MAIL FROM:<a@partner.example>")[0] == 250
        assert client.command("RCPT TO:<desk@clinic.example>")[0] == 250
        assert client.command("QUIT")[0] == 221
    received = sink.handler.wait_for(1)
    assert len(received) == 1 and received[0].rcpt_tos == ["desk@clinic.example"]
    assert b"X-MailGuard-Action: tag" in received[0].data and b"INV-2" in received[0].data
    assert relay.stop() == 0


def test_a_held_message_is_found_by_the_queue_id_in_its_reply(serve: Any, tmp_path: Path) -> None:
    """The sender is told "250 2.0.0 OK: queued as ID"; asked about it, the IT person runs
    `mailguard quarantine list --queue-id ID` and finds that entry."""
    relay = serve(extra="[auth]\nenabled = false\n")  # no DNS needed: the EICAR file holds it
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=60) as smtp:
        smtp.ehlo("client.test")
        smtp.mail(SENDER)
        smtp.rcpt(RECIPIENT)
        code, text = smtp.data(malware_message())
    found = re.fullmatch(r"2\.0\.0 OK: queued as (\S+)", text.decode())
    assert code == 250 and found, text
    queue_id = found.group(1)
    logged = relay.wait_for("message")
    assert logged["queue_id"] == queue_id and logged["result"] == "quarantined"
    listed = subprocess.run([sys.executable, "-m", "mailguard.cli", "quarantine", "list", "--queue-id", queue_id,
                             "--json", "--config", str(tmp_path / "mailguard.toml")],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["queue_id"]) for r in records] == [(logged["quarantine_id"], queue_id)]
    assert "SIGNATURE_EICAR_TEST_FILE" in records[0]["rules"]
    assert relay.stop() == 0


def _error_of(path: Path) -> str:
    from mailguard.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:
        return str(exc)
    raise AssertionError("expected a configuration error")


def test_serve_refuses_a_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[relay]\nlisten = "127.0.0.1:99999"\n')
    result = subprocess.run([sys.executable, "-m", "mailguard.cli", "serve", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 2
    assert "[relay] listen" in result.stderr and "65535" in result.stderr
