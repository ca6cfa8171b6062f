"""The relay front end's own CPU per message, side by side between checkouts.

    python bench/relay_cpu.py [--messages 1500] [--rounds 3] [--checkout DIR ...]

For each checkout in turn within each round (default: this one), starts `mailguard daemon`
(2 workers) and `mailguard serve` ([relay] pool = "daemon", workers = 4) from that
checkout (PYTHONPATH), Postfix's `smtp-sink` as the downstream server, and sends the
anchors' 15 KB HTML message with Postfix's `smtp-source -s 16` (C tools: the load costs
the measured process nothing). serve_cpu_ms_per_msg is the serve process's user + system
CPU (from /proc, all its threads) over the run divided by the messages: the SMTP front
end, without the scanning done in the daemon's workers (daemon_cpu_ms_per_msg). Start-up
and a 64-message warm-up are excluded. Prints JSON with every round and the medians.

    python bench/relay_cpu.py --instructions [--messages 400] [--checkout DIR ...]

runs serve under valgrind's callgrind instead, counting only while the measured messages
pass (``callgrind_control -i on/off``), and reports serve_instructions_per_msg: slow (about
50 times) but the same within 0.2 % whatever else the shared machine is doing, so two
checkouts can be compared on a loaded machine, where CPU seconds swing by a third between
rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchors import free_port, port_answers, wait_until  # noqa: E402
from anchors_mta import callgrind_total, html_message, process_cpu_s, smtp_source, tree_cpu_s  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def one_run(checkout: Path, messages: int, folder: Path, instructions: bool = False) -> dict[str, float]:
    message = folder / "message.eml"
    message.write_bytes(html_message().replace(b"\r\n", b"\n"))  # smtp-source sends CRLF itself
    sink_port, relay_port = free_port(), free_port()
    config = folder / "mailguard.toml"
    config.write_text(
        f'[daemon]\nsocket = "{folder / "d.sock"}"\nworkers = 2\n\n[dns]\nnameservers = ["127.0.0.1:53"]\n'
        f'timeout_ms = 200\n\n[relay]\nlisten = "127.0.0.1:{relay_port}"\ndownstream = "127.0.0.1:{sink_port}"\n'
        'relay_domains = ["practice.example"]\ntrusted_networks = ["127.0.0.1/32"]\npool = "daemon"\nworkers = 4\n')
    env = {**os.environ, "MAILGUARD_CACHE_DIR": str(folder / "cache"), "PYTHONPATH": str(checkout)}
    # started in the scratch folder: `python -m` puts its working folder first on the path,
    # so started from a checkout every run would import that checkout, whatever PYTHONPATH says
    command = [sys.executable, "-m", "mailguard"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (folder / "daemon.log").open("ab") as log:
            daemon = subprocess.Popen([*command, "daemon", "--config", str(config)], env=env, cwd=folder,
                                      stdout=subprocess.DEVNULL, stderr=log)
        procs.append(daemon)
        procs.append(subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "256"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: "daemon ready" in (folder / "daemon.log").read_text(errors="replace"), 300, "the daemon")
        counted = folder / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={counted}"]
        with (folder / "serve.log").open("ab") as log:
            serve = subprocess.Popen([*(valgrind if instructions else []), *command, "serve", "--config", str(config)],
                                     env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=log)
        procs.append(serve)
        wait_until(lambda: port_answers(relay_port), 1800 if instructions else 300, "mailguard serve")
        smtp_source(relay_port, 64, 16, message)  # warm-up: the first fork, connections, caches
        if instructions:
            subprocess.run(["callgrind_control", "-i", "on", str(serve.pid)], check=True, stdout=subprocess.DEVNULL)
        serve0, daemon0 = process_cpu_s(serve.pid), tree_cpu_s(daemon.pid)
        seconds = smtp_source(relay_port, messages, 16, message)
        serve1, daemon1 = process_cpu_s(serve.pid), tree_cpu_s(daemon.pid)
        if instructions:
            subprocess.run(["callgrind_control", "-i", "off", str(serve.pid)], check=True, stdout=subprocess.DEVNULL)
            serve.terminate()
            serve.wait(600)  # callgrind writes its counts as the process ends
            return {"serve_instructions_per_msg": round(callgrind_total(counted) / messages),
                    "load_avg": round(os.getloadavg()[0], 1)}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"msg_per_s": round(messages / seconds, 1),
            "serve_cpu_ms_per_msg": round((serve1 - serve0) * 1000 / messages, 2),
            "daemon_cpu_ms_per_msg": round((daemon1 - daemon0) * 1000 / messages, 2),
            "load_avg": round(os.getloadavg()[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkout", type=Path, action="append", help="a source tree (default: this one)")
    parser.add_argument("--instructions", action="store_true",
                        help="count serve's instructions under callgrind (one round unless --rounds says more)")
    args = parser.parse_args()
    if args.instructions and "--rounds" not in sys.argv:
        args.rounds = 1  # the count repeats exactly: one round is the answer
    checkouts = [c.resolve() for c in (args.checkout or [ROOT])]
    rows: dict[str, list[dict[str, float]]] = {str(c): [] for c in checkouts}
    for _ in range(args.rounds):
        for checkout in checkouts:
            with tempfile.TemporaryDirectory(prefix="mailguard-relay-cpu-") as folder:
                rows[str(checkout)].append(one_run(checkout, args.messages, Path(folder), args.instructions))
    result: dict[str, Any] = {"bench": "relay_cpu", "messages": args.messages, "rounds": rows, "median": {}}
    for checkout, runs in rows.items():
        result["median"][checkout] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
