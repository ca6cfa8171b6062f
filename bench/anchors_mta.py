"""The Postfix half of bench/anchors.py: milter and relay against Postfix + rspamd's milter.

Load is Postfix's `smtp-source -s 16` (a C client, so it measures the gateway and not the
load) sending one ~15 KB HTML message M times; the sink is Postfix's `smtp-sink`. Set-ups,
taking turns within each round:
  postfix_alone          smtp-source -> Postfix -> smtp-sink, no filter
  postfix_rspamd_milter  the same with smtpd_milters = rspamd's proxy (127.0.0.1:11332)
  postfix_mailguard_milter  the same with `mailguard milter` scanning in its own threads
  postfix_mailguard_milter_daemon  the same with `mailguard milter` through the daemon ([milter] use_daemon)
  mailguard_serve        smtp-source -> `mailguard serve` -> smtp-sink (no Postfix)
  postfix_rspamd_milter_unix, postfix_mailguard_milter_daemon_unix  the two milters again on a
                         unix socket each (smtpd_milters = unix:PATH) instead of TCP on loopback:
                         how a milter on the MTA's own machine is usually reached
msg/s is M over the wall time smtp-source needs (every message answered 250 before queue).
After each timed run the bench waits until that Postfix has delivered everything it accepted
(its queue folders empty), so one set-up's deliveries do not run during the next one's time,
and Postfix's CPU includes them.
serve_cpu_ms_per_msg: the `mailguard serve` process's own CPU (user + system, /proc) over
its rounds, per message: the relay's front end, without the daemon workers' scanning.
cpu_ms_per_msg_median: for each set-up, the CPU (user + system, /proc) per message of
Postfix (master and children) and of the filter (rspamd's processes; the milter process
and, through the daemon, its workers; serve and the daemon's workers): where a set-up's
two cores go, and so what bounds its rate.
one_session_msg_per_s_median: the same set-ups at `smtp-source -s 1` (100 messages a
round), one message at a time as a small practice's mail arrives: 1000 / msg/s is each
message's time through the set-up.
The relay's latency at 16 sessions comes from bench/relay.py (a Python client that times
each message from connect to the DATA reply), one round per run, the rounds' medians.
"""
from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from anchors import DEV, MAILGUARD, free_port, median, port_answers, wait_until  # noqa: E402
from postfix_instance import PostfixInstance  # noqa: E402

SENDER = "newsletter@sender.example"
RECIPIENT = "frontdesk@practice.example"


class _NoMilterPostfix(PostfixInstance):
    def main_cf(self) -> str:
        return "\n".join(line for line in super().main_cf().splitlines() if "milter" not in line) + "\n"


@dataclass
class _UnixMilterPostfix(PostfixInstance):
    """Postfix calling its milter on a unix socket (``milter_socket``) instead of TCP."""

    milter_socket: str = ""

    def main_cf(self) -> str:
        return super().main_cf().replace(f"inet:127.0.0.1:{self.milter_port}", f"unix:{self.milter_socket}")


ONE_SESSION_MESSAGES = 100  # a round at `smtp-source -s 1`


def html_message(target: int = 15_000) -> bytes:
    """The ham message with an HTML body closest to ``target`` bytes (a fixed choice: the
    corpus is sorted), with its envelope lines removed."""
    best: tuple[int, Path] | None = None
    for path in sorted((DEV / "ham").glob("*.eml")):
        size = path.stat().st_size
        if abs(size - target) > 3000:
            continue
        if b"text/html" not in path.read_bytes():
            continue
        if best is None or abs(size - target) < best[0]:
            best = (abs(size - target), path)
    assert best is not None, "no HTML message near 15 KB in the corpus"
    msg = email.message_from_bytes(best[1].read_bytes(), policy=policy.compat32)
    for name in ("Return-Path", "Delivered-To", "Received"):
        del msg[name]
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int, reaped: bool = False) -> float:
    """CPU of ``pid`` and its live descendants; with ``reaped``, also of the children it has
    already waited for (Postfix's smtpd and cleanup processes come and go)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)
    total = ticks / os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += tree_cpu_s(int(child), reaped)
        except OSError:
            pass  # ended meanwhile (its time is then in our cutime, next read)
    return total


def callgrind_total(path: Path) -> int:
    """The instruction count (Ir) of a callgrind output file: the sum of its parts'
    summary lines (a part's totals line when it has none). Each part states its count
    twice, as ``summary:`` and as ``totals:``: adding both would double it."""
    lines = path.read_text(errors="replace").splitlines()
    for key in ("summary:", "totals:"):
        counts = [int(line.split()[1]) for line in lines if line.startswith(key)]
        if any(counts):
            return sum(counts)
    raise RuntimeError(f"no instruction count in {path}")


def smtp_source(port: int, messages: int, sessions: int, path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", str(path), "-f", SENDER,
                    "-t", RECIPIENT, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=900)
    return time.perf_counter() - started


QUEUE_FOLDERS = ("maildrop", "incoming", "active", "deferred", "hold")


def queue_empty(instance: PostfixInstance) -> bool:
    """No message left in the instance's queue: everything it accepted was delivered."""
    for folder in QUEUE_FOLDERS:
        path = instance.queue_dir / folder
        if path.is_dir() and any(f.is_file() for f in path.rglob("*")):
            return False
    return True


def part_mta(runs: int, messages: int, daemon: Any, env: dict[str, str], root: Path, rspamd_pid: int,
             rspamd_socket: Path) -> dict[str, Any]:
    message = root / "message.eml"
    # LF line endings: smtp-source sends each line of the file with CRLF, so a CRLF file
    # arrives as "\r\r\n" (a bare CR on every line), which no real sender sends.
    message.write_bytes(html_message().replace(b"\r\n", b"\n"))
    sink_port, milter_port, relay_port = free_port(), free_port(), free_port()
    config = daemon.config
    config.write_text(config.read_text() + (
        f'\n[milter]\nlisten = "inet:127.0.0.1:{milter_port}"\nuse_daemon = true\nscan_workers = 4\nmax_connections = 64\n'
        'quarantine = "hold"\n'  # store mode needs a release_host; the message is ham either way
        'socket_mode = "0666"\n'  # for the unix socket below: Postfix's smtpd runs as postfix
        f'\n[relay]\nlisten = "127.0.0.1:{relay_port}"\ndownstream = "127.0.0.1:{sink_port}"\n'
        f'relay_domains = ["practice.example"]\ntrusted_networks = ["127.0.0.1/32"]\npool = "daemon"\nworkers = 4\n'
    ))
    daemon.stop()
    daemon.start()  # its fingerprint follows the file
    in_process = root / "milter-in-process.toml"  # the same settings, scanned in the milter's threads
    inproc_port = free_port()
    in_process.write_text(config.read_text().replace("use_daemon = true", "use_daemon = false").replace(
        f"inet:127.0.0.1:{milter_port}", f"inet:127.0.0.1:{inproc_port}"))
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    milter = subprocess.Popen([*MAILGUARD, "milter", "--config", str(config)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the same daemon-backed milter on a unix socket: the same file (the daemon answers only
    # to the configuration it was started with), its listen given on the command line
    unix_socket = root / "milter.sock"
    milter_unix = subprocess.Popen([*MAILGUARD, "milter", "--config", str(config), "--listen", f"unix:{unix_socket}"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    milter_threads = subprocess.Popen([*MAILGUARD, "milter", "--config", str(in_process)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = subprocess.Popen([*MAILGUARD, "serve", "--config", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    instances: dict[str, PostfixInstance] = {}
    rows: dict[str, list[float]] = {k: [] for k in ("postfix_alone", "postfix_rspamd_milter",
                                                    "postfix_mailguard_milter", "postfix_mailguard_milter_daemon",
                                                    "mailguard_serve", "postfix_rspamd_milter_unix",
                                                    "postfix_mailguard_milter_daemon_unix")}
    try:
        wait_until(lambda: port_answers(sink_port) and port_answers(milter_port) and port_answers(relay_port)
                   and port_answers(inproc_port) and unix_socket.exists() and rspamd_socket.exists(), 120,
                   "smtp-sink, mailguard milter and serve")
        instances["postfix_alone"] = _NoMilterPostfix(sink_port=sink_port, milter_port=0).start()
        instances["postfix_rspamd_milter"] = PostfixInstance(sink_port=sink_port, milter_port=11332).start()
        instances["postfix_mailguard_milter"] = PostfixInstance(sink_port=sink_port, milter_port=inproc_port).start()
        instances["postfix_mailguard_milter_daemon"] = PostfixInstance(sink_port=sink_port, milter_port=milter_port).start()
        instances["postfix_rspamd_milter_unix"] = _UnixMilterPostfix(
            sink_port=sink_port, milter_port=0, milter_socket=str(rspamd_socket)).start()
        instances["postfix_mailguard_milter_daemon_unix"] = _UnixMilterPostfix(
            sink_port=sink_port, milter_port=0, milter_socket=str(unix_socket)).start()
        ports = {name: inst.smtpd_port for name, inst in instances.items()}
        ports["mailguard_serve"] = relay_port
        for name, port in ports.items():  # warm-up: connections, caches, the first fork
            smtp_source(port, 32, 16, message)
        wait_until(lambda: all(queue_empty(inst) for inst in instances.values()), 120, "the queues to empty")
        serve_cpu: list[float] = []  # the relay process's own CPU (front end), ms per message
        # Where each set-up's CPU goes, ms per message: Postfix (its master and children,
        # reaped ones included) and the filter (rspamd's processes; the milter, the daemon's
        # workers, serve). The load and the sink are the same C tools for every set-up.
        masters = {name: int((inst.queue_dir / "pid" / "master.pid").read_text().split()[0])
                   for name, inst in instances.items()}
        filters: dict[str, Callable[[], float]] = {
            "postfix_alone": lambda: 0.0,
            "postfix_rspamd_milter": lambda: tree_cpu_s(rspamd_pid, reaped=True),
            "postfix_mailguard_milter": lambda: tree_cpu_s(milter_threads.pid),
            "postfix_mailguard_milter_daemon": lambda: process_cpu_s(milter.pid) + tree_cpu_s(daemon.proc.pid),
            "mailguard_serve": lambda: process_cpu_s(serve.pid) + tree_cpu_s(daemon.proc.pid),
            "postfix_rspamd_milter_unix": lambda: tree_cpu_s(rspamd_pid, reaped=True),
            "postfix_mailguard_milter_daemon_unix": lambda: process_cpu_s(milter_unix.pid) + tree_cpu_s(daemon.proc.pid),
        }
        cpu: dict[str, dict[str, list[float]]] = {name: {"postfix": [], "filter": []} for name in ports}
        one_session: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(runs):
            for name, port in ports.items():
                before = process_cpu_s(serve.pid)
                postfix_before = tree_cpu_s(masters[name], reaped=True) if name in masters else 0.0
                filter_before = filters[name]()
                rows[name].append(messages / smtp_source(port, messages, 16, message))
                cpu[name]["filter"].append((filters[name]() - filter_before) * 1000 / messages)
                if name in masters:
                    # Postfix goes on delivering what it accepted: wait for that, so its CPU
                    # counts here and not in the next set-up's time
                    wait_until(lambda n=name: queue_empty(instances[n]), 120, f"{name}'s queue to empty")
                    cpu[name]["postfix"].append((tree_cpu_s(masters[name], reaped=True) - postfix_before) * 1000 / messages)
                if name == "mailguard_serve":
                    serve_cpu.append((process_cpu_s(serve.pid) - before) * 1000 / messages)
            for name, port in ports.items():  # one session: each message's own latency, no overlap
                one_session[name].append(ONE_SESSION_MESSAGES / smtp_source(port, ONE_SESSION_MESSAGES, 1, message))
                if name in instances:
                    wait_until(lambda n=name: queue_empty(instances[n]), 120, f"{name}'s queue to empty")
        relay_latency = _relay_latency(env, root, runs)
    finally:
        for inst in instances.values():
            inst.stop()
        for proc in (serve, milter, milter_threads, milter_unix, sink):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    med = {k: median(v) for k, v in rows.items()}
    base = med["postfix_rspamd_milter"]
    return {
        "message_bytes": message.stat().st_size,
        "messages_per_run": messages,
        "msg_per_s_runs": {k: [round(x, 1) for x in v] for k, v in rows.items()},
        "msg_per_s_median": med,
        "ratio_to_postfix_rspamd_milter": {k: round(v / base, 2) for k, v in med.items() if base},
        # both milters on a unix socket: the same comparison, with the other way of reaching them
        "unix_ratio_mailguard_daemon_to_rspamd": round(med["postfix_mailguard_milter_daemon_unix"]
                                                       / med["postfix_rspamd_milter_unix"], 2)
        if med["postfix_rspamd_milter_unix"] else 0.0,
        "one_session_msg_per_s_median": {name: round(median(values), 1) for name, values in one_session.items()},
        "cpu_ms_per_msg_median": {name: {part: round(median(values), 2) for part, values in parts.items() if values}
                                  for name, parts in cpu.items()},
        "serve_cpu_ms_per_msg_runs": [round(x, 2) for x in serve_cpu],
        "serve_cpu_ms_per_msg_median": median(serve_cpu),
        "relay_latency_16_clients": relay_latency,
        "commands": {
            "load": f"smtp-source -s 16 -m {messages} -F message.eml -f {SENDER} -t {RECIPIENT} 127.0.0.1:PORT",
            "sink": "smtp-sink -u postfix 127.0.0.1:SINK 256",
            "postfix_mailguard_milter": "mailguard milter -c C2 ([milter] use_daemon = false, scan_workers = 4 threads)",
            "postfix_mailguard_milter_daemon": "mailguard daemon -c C (2 workers) + mailguard milter -c C ([milter] use_daemon = true)",
            "postfix_rspamd_milter_unix": "rspamd's proxy also on bind_socket = \"RUNDIR/milter.sock mode=0666\"; smtpd_milters = unix:RUNDIR/milter.sock",
            "postfix_mailguard_milter_daemon_unix": "as postfix_mailguard_milter_daemon, [milter] listen = \"unix:PATH\"; smtpd_milters = unix:PATH",
            "mailguard_serve": "mailguard serve -c C ([relay] pool = daemon, workers = 4, downstream = smtp-sink)",
            "relay_latency": "python bench/relay.py --clients 16 --messages 300 --rounds RUNS --pool daemon --workers 4 --config DNS_OFFLINE (sink: smtp-sink)",
        },
    }


def _relay_latency(env: dict[str, str], root: Path, runs: int) -> dict[str, Any]:
    """bench/relay.py at 16 sessions, ``runs`` rounds: its figures are the rounds' medians
    (a round's p99 is the third-slowest of its 300 messages, so one stall moves it)."""
    base = root / "relay-base.toml"
    base.write_text('[dns]\nnameservers = ["127.0.0.1:53"]\ntimeout_ms = 200\n')
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "relay.py"), "--clients", "16", "--messages", "300",
                          "--rounds", str(runs), "--pool", "daemon", "--workers", "4", "--corpus", str(DEV),
                          "--config", str(base)], env=env, capture_output=True, text=True, timeout=900)
    try:
        data = json.loads(run.stdout)
    except ValueError:
        return {"error": (run.stderr or run.stdout)[-500:]}
    return data
