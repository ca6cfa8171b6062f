"""Scanning workers that cannot start (issue 16): `mailguard serve` with pool = "processes"
as a real process, and a third-party analyzer installed the way a plug-in is (an entry point
on the Python path) that fails to build inside the workers' fresh processes, as a plug-in
or rules file can that the relay's own process got past.

- Never able to start: the relay does not report itself listening; it exits with status 2
  and one line naming the component, the worker's error and what to do.
- Unable to start again later (the worker died, its replacement fails): every message is
  answered 451 at once, not after scan_queue_timeout; once a worker starts, mail flows.

The process's JSON log lines on standard error are the synchronisation points.
"""
from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_relay_overrun import install_plugin
from test_relay_process import serve, write_config  # noqa: F401 (fixture)
from test_relay_support import RECIPIENT, SENDER, Sink, clean_message, loop_thread, sink  # noqa: F401

PLUGIN = '''
import multiprocessing
import os

from mailguard.analyzers.base import Analyzer


class Fragile(Analyzer):
    """Builds in the relay's own process; in a scanning worker only while the file named by
    FRAGILE_BROKEN does not exist. A message whose subject says "crash" ends its worker."""
    name = "fragile"

    def __init__(self, settings, context):
        super().__init__(settings, context)
        broken = os.environ["FRAGILE_BROKEN"]
        if multiprocessing.parent_process() is not None and (broken == "always" or os.path.exists(broken)):
            raise RuntimeError("licence file /etc/fragile.lic is missing")

    def analyze(self, message):
        if "crash" in message.subject:
            os._exit(3)
        return ()
'''

QUEUE_TIMEOUT = 300.0  # far longer than any answer below may take


def plugin_env(folder: Path, broken: str) -> dict[str, str]:
    env = install_plugin(folder, "fragileplugin", PLUGIN, "fragile = fragileplugin:Fragile")
    return {**env, "FRAGILE_BROKEN": broken}


def deliver(port: int, data: bytes) -> tuple[int, bytes]:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            client.sendmail(SENDER, [RECIPIENT], data)
        return 250, b""
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error


def crash_message() -> bytes:
    return (f"From: <a@partner.example>\r\nTo: <{RECIPIENT}>\r\nSubject: crash\r\n"
            "Message-ID: <crash@partner.example>\r\n\r\nThis one ends the worker scanning it.\r\n").encode()


def test_workers_that_never_start_stop_the_relay_at_start_up(tmp_path: Path, sink: Sink) -> None:
    env = plugin_env(tmp_path / "plugins", "always")
    config = tmp_path / "mailguard.toml"
    write_config(config, sink.port, ["practice.example"], relay='pool = "processes"\n')
    # before this change it listened after waiting 60 s, then answered 451 after 120 s more
    done = subprocess.run([sys.executable, "-m", "mailguard.cli", "serve", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=55)
    assert done.returncode == 2, done.stderr
    assert '"event": "listening"' not in done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("mailguard serve: ")]
    assert len(said) == 1, done.stderr  # one line for the person at the console
    last = said[0]
    assert last.startswith("mailguard serve: [relay] pool = \"processes\": no scanning worker could start")
    assert "RuntimeError: licence file /etc/fragile.lic is missing" in last  # the worker's own error
    assert "did not start listening" in last and 'pool = "threads"' in last  # and what to do


def test_workers_that_cannot_restart_get_451_at_once_then_mail_flows_again(serve: Any, sink: Sink,
                                                                           tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    env = plugin_env(tmp_path / "plugins", str(broken))
    relay = serve(env=env, relay=f'pool = "processes"\nscan_queue_timeout = {QUEUE_TIMEOUT}\n')
    assert deliver(relay.port, clean_message(1))[0] == 250
    broken.touch()  # from now on a new worker fails to build
    code, _ = deliver(relay.port, crash_message())
    assert code == 451  # its worker died under it: deferred, never delivered
    assert relay.wait_for("scanning workers cannot start")["lane"] == "small"
    code, text = deliver(relay.port, clean_message(2))
    assert code == 451 and b"unavailable" in text
    line = relay.wait_for("message")
    while line.get("result") != "tempfail" or "licence" not in str(line.get("scan_error")):
        line = relay.wait_for("message")
    assert line["elapsed_ms"] < QUEUE_TIMEOUT * 1000 / 10  # answered at once, not after the queue timeout
    broken.unlink()  # the cause fixed: the next try starts a worker
    relay.wait_for("scanning workers available again")
    assert deliver(relay.port, clean_message(3))[0] == 250
    assert [b"Thursday 3" in m.data for m in sink.handler.wait_for(2)] == [False, True]
    assert relay.stop() == 0
