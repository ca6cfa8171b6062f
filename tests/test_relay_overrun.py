"""Overrun scans are abandoned and cannot starve other mail (issue 12, item 2).

`mailguard serve` runs as a real process with a third-party analyzer installed the way a
plug-in is (an entry point on the Python path) that burns CPU forever on messages whose
subject says "heavy": the worst case of a slow scan. Heavy messages are also large, so they
go to the large lane. The light ones must still be answered 250 within a minute, and the
heavy ones 451 (the sender retries), with every worker process that ran one killed.
"""
from __future__ import annotations

import os
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


def install_plugin(folder: Path) -> dict[str, str]:
    folder.mkdir()
    (folder / "burnplugin.py").write_text(PLUGIN)
    info = folder / "burnplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: burnplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mailguard.analyzers]\nburn = burnplugin:Burn\n")
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


def test_heavy_scans_are_abandoned_and_light_mail_flows(serve: Any, sink: Sink, tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "plugins")
    relay = serve(env=env, relay="scan_timeout = 2.0\nlarge_message_bytes = 20000\nlarge_queue_limit = 3\n"
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
    # Every heavy one is deferred (never 250: nothing was delivered or stored), quickly.
    assert sorted({code for code, _ in heavy_results}) == [451], heavy_results
    assert max(elapsed for _, elapsed in heavy_results) < 30
    records = []
    while not relay.lines.empty():
        records.append(relay.lines.get())
    timed_out = [r for r in records if r.get("event") == "message" and r.get("scan_error") == "timed out"]
    assert timed_out, "no scan overran"
    abandoned = [r for r in records if r.get("event") == "scan abandoned"]
    assert any(r["stopped"] == "process killed" and r["lane"] == "large" for r in abandoned), abandoned
    print(f"light: 20/20 answered 250 in {light_elapsed:.1f} s; heavy: {len(heavy_results)} answered 451",
          file=sys.stderr)
    assert relay.stop() == 0
