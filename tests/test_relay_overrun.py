"""Overrun scans are abandoned and cannot starve other mail (issue 12, item 2).

`mailguard serve` runs as a real process with a third-party analyzer installed the way a
plug-in is (an entry point on the Python path) that burns CPU forever on messages whose
subject says "heavy": the worst case of a slow scan. Heavy messages are also large, so they
go to the large lane. The light ones must still be answered 250 within a minute, and the
heavy ones 451 (the sender retries), with every worker process that ran one killed.

How soon a heavy one is answered depends on the relay's limits, not on the machine: each is
answered within scan_queue_timeout (waiting behind others while killed workers are replaced,
which takes seconds of compiling on a loaded machine) plus scan_timeout, as the relay's own
log line for it shows.
"""
from __future__ import annotations

import os
import queue
import smtplib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from test_relay_process import serve  # noqa: F401 (fixture)
from test_relay_support import RECIPIENT, SENDER, Sink, clean_message, loop_thread, sink  # noqa: F401

PLUGIN = '''
from mailguard.analyzers.base import Analyzer

class Burn(Analyzer):
    """Spins forever on a message whose subject says heavy: a scan that never ends."""
    name = "burn"

    def analyze(self, message):
        if "heavy" in message.subject:
            while True:
                pass
        return ()
'''


def install_plugin(folder: Path, module: str = "burnplugin", code: str = PLUGIN, entry: str = "burn = burnplugin:Burn",
                   ) -> dict[str, str]:
    """A plug-in analyzer installed as a third party's package is (its module and an entry
    point on the Python path); the environment for a process that should load it."""
    folder.mkdir()
    (folder / f"{module}.py").write_text(code)
    info = folder / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mailguard.analyzers]\n{entry}\n")
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def heavy_message(n: int) -> bytes:
    filler = "".join(f"Line {i} of a long report.\r\n" for i in range(2000))  # ~50 KB: the large lane
    return (f"From: <a@partner.example>\r\nTo: <{RECIPIENT}>\r\nSubject: heavy {n}\r\n"
            f"Message-ID: <heavy{n}@partner.example>\r\n\r\n{filler}").encode()


def deliver(port: int, data: bytes, source: str = "127.0.0.1") -> tuple[int, float]:
    started = time.monotonic()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=90, source_address=(source, 0)) as client:
            client.sendmail(SENDER, [RECIPIENT], data)
        return 250, time.monotonic() - started
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, time.monotonic() - started
    except smtplib.SMTPConnectError as exc:
        return exc.smtp_code, time.monotonic() - started


SCAN_TIMEOUT, QUEUE_TIMEOUT = 2.0, 10.0


def test_heavy_scans_are_abandoned_and_light_mail_flows(serve: Any, sink: Sink, tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "plugins")
    relay = serve(env=env, relay=f"scan_timeout = {SCAN_TIMEOUT}\nscan_queue_timeout = {QUEUE_TIMEOUT}\n"
                                 "large_message_bytes = 20000\nlarge_queue_limit = 3\n"
                                 "pool = \"processes\"\nmax_connections_per_client = 30\n")
    heavy_results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def heavy(n: int) -> None:
        result = deliver(relay.port, heavy_message(n))
        with lock:
            heavy_results.append(result)

    with ThreadPoolExecutor(24) as burst:
        for n in range(24):
            burst.submit(heavy, n)
        started = time.monotonic()
        with ThreadPoolExecutor(4) as light:
            light_results = list(light.map(lambda n: deliver(relay.port, clean_message(n), "127.0.0.2"), range(20)))
        light_elapsed = time.monotonic() - started
    assert [code for code, _ in light_results] == [250] * 20, light_results
    assert light_elapsed < 60
    assert len(sink.handler.wait_for(20)) == 20
    # Every heavy one is answered, and deferred (never 250: nothing was delivered or stored).
    assert len(heavy_results) == 24 and sorted({code for code, _ in heavy_results}) == [451], heavy_results
    records: list[dict[str, Any]] = []  # until every message's line is in (the reader thread may lag the replies)
    while sum(r.get("event") == "message" for r in records) < 24 + 20:
        try:
            records.append(relay.lines.get(timeout=60))
        except queue.Empty:
            raise AssertionError(f"the relay logged fewer than 44 messages: {records}") from None
    # Within the relay's limits (the reply is written when its log line is): no sender waits
    # on a scan that never ends. A second of slack for a loaded machine's event loop.
    heavy_lines = [r for r in records if r.get("event") == "message" and r.get("size", 0) >= 20000]
    assert len(heavy_lines) == 24, heavy_lines
    assert max(r["elapsed_ms"] for r in heavy_lines) <= (QUEUE_TIMEOUT + SCAN_TIMEOUT + 1) * 1000, heavy_lines
    timed_out = [r for r in records if r.get("event") == "message" and r.get("scan_error") == "timed out"]
    assert timed_out, "no scan overran"
    abandoned = [r for r in records if r.get("event") == "scan abandoned"]
    assert any(r["stopped"] == "process killed" and r["lane"] == "large" for r in abandoned), abandoned
    print(f"light: 20/20 answered 250 in {light_elapsed:.1f} s; heavy: {len(heavy_results)} answered 451",
          file=sys.stderr)
    assert relay.stop() == 0
