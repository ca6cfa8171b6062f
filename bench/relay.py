"""End-to-end relay throughput and latency with concurrent real SMTP clients.

    python bench/relay.py [--corpus DIR] [--clients 16] [--messages 600] [--rounds 3]
                          [--pool threads|processes|daemon] [--workers 0] [--sink smtp-sink|python]

Starts a sink SMTP server and `mailguard serve` as a real process on loopback, then N
concurrent clients (aiosmtplib, one connection per message, as inbound MX traffic) send a
seeded random sample of the corpus (phish and ham mixed) through the relay. Also sends the
same sample straight to the sink, as the cost of SMTP alone on this machine. The sink is
Postfix's `smtp-sink` when it is installed (C, in its own process, as bench/anchors.py
uses it: it costs the two cores next to nothing), otherwise (or with ``--sink python``) an
aiosmtpd sink offering PIPELINING as Postfix does, which runs in the clients' own event
loop: there it cost about as much CPU as the clients (straight to it 560 msg/s against
940-1440 to smtp-sink), taken from the relay being measured.

Prints one JSON object: messages/s and latency p50/p90/p99 (ms, from connect to the DATA
reply) per round and their medians, the replies seen (250/451/550...), and the ratio of
relay to direct throughput. The machine is shared and noisy: read medians and ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402

from anchors import free_port, port_answers, wait_until  # noqa: E402
from scan import percentile  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "dev"
RECIPIENT = "frontdesk@practice.example"
_FROM = re.compile(rb"^Return-Path:\s*<([^<>\s@]+@[^<>\s]+)>", re.IGNORECASE | re.MULTILINE)


class _SinkSMTP(SMTP):
    line_length_limit = 1 << 20  # as the relay and Postfix: long lines are not refused


class _Sink:
    """Counts what arrives; answers 250 like a mail server's queue, and offers PIPELINING
    as Postfix does (aiosmtpd reads pipelined commands but does not say so itself)."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 2.0.0 Ok: queued"


def sample(corpus: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in corpus.rglob("*.eml") if p.is_file())
    chosen = random.Random(seed).sample(files, min(count, len(files)))
    out = []
    for path in chosen:
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        match = _FROM.search(raw[:8192])
        sender = match.group(1).decode("ascii", "replace") if match else "sender@example.org"
        out.append((sender if sender.isascii() else "sender@example.org", raw))
    return out


async def _send_all(port: int, messages: list[tuple[str, bytes]], clients: int) -> dict[str, Any]:
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in messages:
        queue.put_nowait(item)
    latencies: list[float] = []
    replies: Counter[str] = Counter()

    async def client() -> None:
        while True:
            try:
                sender, raw = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            code = "250"
            try:
                await aiosmtplib.send(raw, sender=sender, recipients=[RECIPIENT], hostname="127.0.0.1", port=port,
                                      timeout=120, start_tls=False, local_hostname="bench.test")
            except aiosmtplib.SMTPResponseException as exc:
                code = str(exc.code)
            except (aiosmtplib.SMTPException, OSError) as exc:
                code = type(exc).__name__
            latencies.append((time.perf_counter() - t0) * 1000.0)
            replies[code] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "messages": len(messages),
        "seconds": round(wall, 3),
        "messages_per_s": round(len(messages) / wall, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p90_ms": round(percentile(latencies, 90), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "replies": dict(replies),
    }


def _tally(stream: Any, outcomes: Counter[str]) -> None:
    """Counts the relay's per-message log lines by result and reply (and any errors)."""
    for line in stream:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "message":
            key = f"{record.get('result')} {record.get('reply')}"
            for note in ("busy", "scan_error", "downstream", "smuggling_attempt"):
                if record.get(note):
                    key += f" {note}={str(record[note])[:60]}"
            outcomes[key] += 1


def _wait_for_daemon(config: Path, sock: Path, timeout: float = 120.0) -> None:
    from mailguard.daemon.client import DaemonClient, DaemonUnavailable
    from mailguard.daemon.protocol import config_fingerprint

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            DaemonClient(sock, config_fingerprint(config), 5).connect().close()
            return
        except DaemonUnavailable:
            time.sleep(0.1)
    raise SystemExit("mailguard daemon did not start")


def _start_relay(folder: Path, sink_port: int, args: argparse.Namespace,
                 outcomes: Counter[str]) -> tuple[subprocess.Popen[str], int]:
    path = folder / "relay.toml"
    base = args.config.read_text() if args.config else ""
    path.write_text(
        base + "\n[relay]\n"
        'listen = "127.0.0.1:0"\n'
        f'downstream = "127.0.0.1:{sink_port}"\n'
        'relay_domains = ["practice.example"]\n'
        'hostname = "mailguard.bench"\n'
        f"workers = {args.workers}\n"
        f'pool = "{args.pool}"\n'
        "max_connections = 1000\n"
        "[quarantine]\n"
        f'path = "{folder / "q"}"\n'
        f'key_file = "{folder / "q.key"}"\n'
        "[logging]\n"
        'format = "json"\n'
        + (f'[daemon]\nsocket = "{folder / "d.sock"}"\nworkers = 2\n' if args.pool == "daemon" else "")
        if "[relay]" not in base else base
    )
    if args.pool == "daemon":  # the daemon's prebuilt workers scan; started with the same file
        args.daemon_proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli", "daemon", "--config", str(path)],
                                            stderr=subprocess.DEVNULL)
        _wait_for_daemon(path, folder / "d.sock")
    proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli", "serve", "--config", str(path)],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "listening":
            # One log line per message, as in production: keep reading so the pipe never fills.
            threading.Thread(target=_tally, args=(proc.stderr, outcomes), daemon=True).start()
            return proc, int(record["port"])
    raise SystemExit(f"relay did not start (exit {proc.wait()})")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    messages = sample(args.corpus, args.messages, args.seed)
    if not messages:
        raise SystemExit(f"no *.eml files under {args.corpus}")
    loop = asyncio.get_running_loop()
    server = sink_proc = None
    if args.sink == "smtp-sink":
        sink_port = free_port()
        sink_proc = subprocess.Popen(["smtp-sink", *(["-u", "postfix"] if os.geteuid() == 0 else []),
                                      f"127.0.0.1:{sink_port}", "256"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await loop.run_in_executor(None, wait_until, lambda: port_answers(sink_port), 30, "smtp-sink")
    else:
        sink = _Sink()
        server = await loop.create_server(lambda: _SinkSMTP(sink, hostname="sink.bench", enable_SMTPUTF8=True),
                                          "127.0.0.1", 0)
        sink_port = server.sockets[0].getsockname()[1]
    direct = [await _send_all(sink_port, messages, args.clients) for _ in range(args.rounds)]
    with tempfile.TemporaryDirectory(prefix="mailguard-bench-") as tmp:
        outcomes: Counter[str] = Counter()
        proc, relay_port = await loop.run_in_executor(None, _start_relay, Path(tmp), sink_port, args, outcomes)
        try:
            await _send_all(relay_port, messages[: args.clients * 2], args.clients)  # warm-up
            rounds = [await _send_all(relay_port, messages, args.clients) for _ in range(args.rounds)]
        finally:
            proc.send_signal(signal.SIGTERM)
            await loop.run_in_executor(None, proc.wait)
    if server is not None:
        server.close()
    if sink_proc is not None:
        sink_proc.terminate()
        sink_proc.wait()
    relay_mps = statistics.median(r["messages_per_s"] for r in rounds)
    direct_mps = statistics.median(r["messages_per_s"] for r in direct)
    return {
        "bench": "relay",
        "corpus": str(args.corpus),
        "sample": len(messages),
        "sample_bytes": sum(len(raw) for _, raw in messages),
        "clients": args.clients,
        "sink": args.sink,
        "pool": args.pool,
        "workers": args.workers or os.cpu_count(),
        "cpus": os.cpu_count(),
        "relay": {
            "messages_per_s": relay_mps,
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p90_ms": statistics.median(r["p90_ms"] for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "rounds": rounds,
        },
        "relay_outcomes": dict(outcomes.most_common()),
        "direct_to_sink": {
            "messages_per_s": direct_mps,
            "p99_ms": statistics.median(r["p99_ms"] for r in direct),
            "replies": direct[-1]["replies"],
        },
        "relay_vs_direct_throughput": round(relay_mps / direct_mps, 3) if direct_mps else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="[relay] workers (0: one per core)")
    parser.add_argument("--sink", choices=("smtp-sink", "python"), default="smtp-sink" if shutil.which("smtp-sink") else "python",
                        help="the downstream server: Postfix's smtp-sink (C, its own process; the default when installed) "
                             "or an aiosmtpd sink in the clients' own event loop")
    parser.add_argument("--pool", choices=("threads", "processes", "daemon"), default="threads",
                        help="[relay] pool (daemon: a `mailguard daemon` with 2 workers is started too)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", type=Path, help="a configuration to start from (its [relay] is used as is)")
    args = parser.parse_args()
    args.daemon_proc = None
    try:
        print(json.dumps(asyncio.run(main_async(args)), indent=2))
    finally:
        if args.daemon_proc is not None:
            args.daemon_proc.terminate()
            args.daemon_proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
