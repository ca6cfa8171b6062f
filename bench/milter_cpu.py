"""The milter's own CPU per message behind a real Postfix, side by side between set-ups.

    python bench/milter_cpu.py [--messages 1000] [--rounds 3] [--mode workers --mode threads ...]
                               [--checkout DIR ...] [--py-spy FILE] [--one-at-a-time]

For each checkout and mode in turn within each round, starts `mailguard milter` from that
checkout (PYTHONPATH), a throwaway Postfix calling it (tests/postfix_instance.py) and
Postfix's `smtp-sink` as the next hop, and sends the anchors' 15 KB HTML message with
Postfix's `smtp-source -s 16` (one message per SMTP session, so one milter connection
each, as Postfix opens them). Modes are [milter] settings:
  workers  the checkout's defaults for [milter] (only listen, max_connections and quarantine set)
  threads  use_daemon = false, scan_workers = 4 (as bench/anchors.py)
  daemon   `mailguard daemon` (2 workers) running, use_daemon = true, scan_workers = 4
Reported per message, from /proc (user + system, start-up and a 64-message warm-up
excluded): milter_cpu_ms (the milter process and the scanning processes it started),
milter_front_ms (the milter process alone), daemon_cpu_ms (a separate daemon's workers),
postfix_cpu_ms (Postfix's master and its children, reaped ones included, until it has delivered
everything it accepted), and msg/s (smtp-source's time alone).
--py-spy FILE records the milter process of the last measured run (raw collapsed stacks);
--profile FILE runs that milter under cProfile with a CPU clock (bench/_profiled_milter.py)
and writes its stats there (start-up included; the CPU figures of that run are inflated).
--one-at-a-time sends the messages one after another from Python's smtplib, each in its own
SMTP session, and adds each message's time (connect to QUIT): p50/p90/p99/max and how many
took over 35 ms (a 40 ms delayed-ACK stall shows there; docs/milter.md).
--callgrind runs every milter under valgrind's callgrind, collecting only over the measured
messages: milter_instructions_k is the milter's user-space instructions per message (in
thousands), a count that the load on a shared machine does not change.
"""
from __future__ import annotations

import argparse
import json
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchors import free_port, port_answers, wait_until  # noqa: E402
from anchors_mta import (  # noqa: E402
    RECIPIENT, SENDER, callgrind_total, html_message, process_cpu_s, queue_empty, smtp_source, tree_cpu_s,
)
from postfix_instance import PostfixInstance  # noqa: E402 - anchors_mta puts tests/ on the path

ROOT = Path(__file__).resolve().parent.parent


def _milter_section(mode: str, port: int) -> str:
    lines = [f'listen = "inet:127.0.0.1:{port}"', "max_connections = 64", 'quarantine = "hold"']
    if mode in ("threads", "daemon"):
        lines.append(f"use_daemon = {'true' if mode == 'daemon' else 'false'}\nscan_workers = 4")
    return "[milter]\n" + "\n".join(lines) + "\n"


def _one_at_a_time(port: int, messages: int, message: Path, latencies: list[float]) -> float:
    """Send ``messages`` one after the other, each in its own SMTP session, as a small
    practice's mail arrives; ``latencies`` gets each one's milliseconds from connect to
    the reply to QUIT. Returns the seconds for all of them."""
    body = message.read_bytes().replace(b"\n", b"\r\n")
    started = time.perf_counter()
    for _ in range(messages):
        begun = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail(SENDER, [RECIPIENT], body)
        latencies.append((time.perf_counter() - begun) * 1000)
    return time.perf_counter() - started


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    at = {f"p{q}_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))], 1) for q in (50, 90, 99)}
    return {**at, "max_ms": round(ordered[-1], 1), "over_35_ms": sum(v > 35 for v in ordered)}


def one_run(checkout: Path, mode: str, messages: int, folder: Path, spy: Path | None,
            profile: Path | None = None, callgrind: bool = False, one_at_a_time: bool = False) -> dict[str, float]:
    message = folder / "message.eml"
    message.write_bytes(html_message().replace(b"\r\n", b"\n"))  # smtp-source sends CRLF itself
    sink_port, milter_port = free_port(), free_port()
    config = folder / "mailguard.toml"
    config.write_text(f'[daemon]\nsocket = "{folder / "d.sock"}"\nworkers = 2\n\n[dns]\nnameservers = ["127.0.0.1:53"]\n'
                      f'timeout_ms = 200\n\n' + _milter_section(mode, milter_port))
    # run from the run's folder: `python -m` puts the current folder first on the path
    env = {**os.environ, "MAILGUARD_CACHE_DIR": str(folder / "cache"), "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-m", "mailguard"]
    procs: list[subprocess.Popen[bytes]] = []
    postfix: PostfixInstance | None = None
    daemon: subprocess.Popen[bytes] | None = None
    try:
        if mode == "daemon":
            with (folder / "daemon.log").open("ab") as log:
                daemon = subprocess.Popen([*command, "daemon", "--config", str(config)], env=env, cwd=folder,
                                          stdout=subprocess.DEVNULL, stderr=log)
            procs.append(daemon)
            wait_until(lambda: "daemon ready" in (folder / "daemon.log").read_text(errors="replace"), 300, "the daemon")
        procs.append(subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "256"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with (folder / "milter.log").open("ab") as log:
            start = [sys.executable, str(Path(__file__).with_name("_profiled_milter.py")), str(profile)] if profile \
                else command
            if callgrind:
                start = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
                         f"--callgrind-out-file={folder}/callgrind.out", *start]
            milter = subprocess.Popen([*start, "milter", "--config", str(config)], env=env, cwd=folder,
                                      stdout=subprocess.DEVNULL, stderr=log)
        procs.append(milter)
        wait_until(lambda: port_answers(milter_port) and port_answers(sink_port), 900, "mailguard milter")
        postfix = PostfixInstance(sink_port=sink_port, milter_port=milter_port).start()
        master = int((postfix.queue_dir / "pid" / "master.pid").read_text().split()[0])
        smtp_source(postfix.smtpd_port, 64, 16, message)  # warm-up: connections, caches, forks
        recorder = None
        if spy is not None:
            recorder = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(milter.pid),
                                         "--format", "raw", "--output", str(spy), "--nonblocking", "--subprocesses"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(milter.pid)], check=True, capture_output=True)
        before = (process_cpu_s(milter.pid), tree_cpu_s(milter.pid), tree_cpu_s(daemon.pid) if daemon else 0.0,
                  tree_cpu_s(master, reaped=True))
        latencies: list[float] = []
        if one_at_a_time:
            seconds = _one_at_a_time(postfix.smtpd_port, messages, message, latencies)
        else:
            seconds = smtp_source(postfix.smtpd_port, messages, 16, message)
        instance = postfix
        wait_until(lambda: queue_empty(instance), 120, "Postfix's queue to empty")  # its deliveries count too
        after = (process_cpu_s(milter.pid), tree_cpu_s(milter.pid), tree_cpu_s(daemon.pid) if daemon else 0.0,
                 tree_cpu_s(master, reaped=True))
        if recorder is not None:
            recorder.send_signal(2)
            recorder.wait(timeout=60)
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "off", str(milter.pid)], check=True, capture_output=True)
    finally:
        if postfix is not None:
            postfix.stop()
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=180 if callgrind else 30)  # callgrind writes its counts on the way out
            except subprocess.TimeoutExpired:
                proc.kill()
    instructions = sum(callgrind_total(dump) for dump in folder.glob("callgrind.out*"))  # written when the milter ends
    per = [round((a - b) * 1000 / messages, 2) for a, b in zip(after, before)]
    return {"msg_per_s": round(messages / seconds, 1), "milter_front_ms": per[0], "milter_cpu_ms": per[1],
            "daemon_cpu_ms": per[2], "postfix_cpu_ms": per[3], "load_avg": round(os.getloadavg()[0], 1),
            **({"milter_instructions_k": round(instructions / messages / 1000)} if callgrind else {}),
            **(_percentiles(latencies) if latencies else {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", action="append", choices=("workers", "threads", "daemon"))
    parser.add_argument("--checkout", type=Path, action="append", help="a source tree (default: this one)")
    parser.add_argument("--py-spy", type=Path, help="record the milter of the last run here (py-spy, raw stacks)")
    parser.add_argument("--profile", type=Path, help="cProfile (CPU clock) stats of the last run's milter")
    parser.add_argument("--callgrind", action="store_true", help="count the milter's instructions per message")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="instead of smtp-source -s 16, one message at a time from Python's smtplib, "
                             "each message's time reported (p50/p90/p99/max, how many over 35 ms)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in (args.checkout or [ROOT])]
    setups = [(c, m) for c in checkouts for m in (args.mode or ["workers"])]
    rows: dict[str, list[dict[str, float]]] = {f"{c}:{m}": [] for c, m in setups}
    for round_no in range(args.rounds):
        for i, (checkout, mode) in enumerate(setups):
            last = round_no == args.rounds - 1 and i == len(setups) - 1
            with tempfile.TemporaryDirectory(prefix="mailguard-milter-cpu-", dir="/tmp") as folder:
                Path(folder).chmod(0o755)
                rows[f"{checkout}:{mode}"].append(one_run(checkout, mode, args.messages, Path(folder),
                                                          args.py_spy if last else None,
                                                          args.profile if last else None, args.callgrind,
                                                          args.one_at_a_time))
    result: dict[str, Any] = {"bench": "milter_cpu", "messages": args.messages, "rounds": rows, "median": {}}
    for key, runs in rows.items():
        result["median"][key] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
