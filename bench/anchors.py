"""mailguard against Debian's rspamd, side by side in one run (../shared/anchors/).

    python bench/anchors.py [--sample LIST] [--runs 3] [--parts check,one,mta] [--out FILE]

check: the anchors' fixed 1,000-message sample (make_sample.py), `rspamc -n 8` against
       rspamd's 2 normal workers, `mailguard check -j 2` through `mailguard daemon` (2 workers)
       and `mailguard check -j 2 --daemon off` (cold: the scanner built in each worker).
one:   `mailguard check one.eml` through the daemon, cold with the build cache filled, cold
       with an empty cache; `rspamc one.eml` beside them. mailguard's modules are compiled
       first (`compileall`), as an installed wheel's are.
mta:   Postfix (a throwaway instance) fed by Postfix's `smtp-source -s 16` with one 15 KB
       HTML message, delivering to `smtp-sink`: with no filter, with rspamd's milter proxy,
       with `mailguard milter`; and `mailguard serve` straight in front of `smtp-sink`.

Each measurement is repeated --runs times, the tools taking turns within each round, so a
burst of load on the shared machine hits all of them; medians and ratios are printed as
one JSON object (wall-clock msg/s; seconds for one message). Peak resident memory of each
daemon worker (VmHWM) is read at the end. Needs root (rspamd and Postfix drop to their users).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = ROOT.parent / "shared" / "anchors"
if not ANCHORS.is_dir():
    ANCHORS = Path("/work/shared/anchors")
DEV = Path(os.environ.get("DEV", ANCHORS.parent / "corpus" / "dev"))
MAILGUARD = [sys.executable, "-m", "mailguard"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def timed(command: list[str], **kwargs: Any) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4) if values else 0.0


# ----------------------------------------------------------------------------- rspamd


class Rspamd:
    """rspamd 3.4 with the anchors' offline local.d (and its milter proxy on 11332)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.milter_socket = root / "run" / "milter.sock"  # the proxy also on a unix socket (bench/anchors_mta.py)
        shutil.copytree(ANCHORS / "rspamd" / "local.d", root / "local.d")
        (root / "local.d" / "worker-proxy.inc").write_text(
            f'enabled = true;\nbind_socket = "127.0.0.1:11332";\nbind_socket = "{self.milter_socket} mode=0666";\n'
            'milter = yes;\ntimeout = 120s;\ncount = 1;\n'
            'upstream "local" { default = yes; hosts = "127.0.0.1:11333"; }\n'
        )
        for name in ("db", "run", "log"):
            (root / name).mkdir()
            shutil.chown(root / name, "_rspamd", "_rspamd")

    def start(self) -> "Rspamd":
        r = self.root
        subprocess.run(
            ["rspamd", "-c", "/etc/rspamd/rspamd.conf", f"--var=LOCAL_CONFDIR={r}", f"--var=DBDIR={r}/db",
             f"--var=RUNDIR={r}/run", f"--var=LOGDIR={r}/log", "-u", "_rspamd", "-g", "_rspamd",
             "-p", f"{r}/run/rspamd.pid"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        log = r / "log" / "rspamd.log"
        wait_until(lambda: log.exists() and "hyperscan" in log.read_text(errors="replace"), 300, "rspamd's hyperscan database")
        wait_until(lambda: port_answers(11333) and port_answers(11332) and self.milter_socket.exists(), 60,
                   "rspamd's workers")
        return self

    def pid(self) -> int:
        """The main process's (its workers are its children)."""
        return int((self.root / "run" / "rspamd.pid").read_text().strip())

    def stop(self) -> None:
        pidfile = self.root / "run" / "rspamd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "rspamd to stop")
        except (OSError, ValueError, RuntimeError):
            pass


# ----------------------------------------------------------------------------- mailguard daemon


class Daemon:
    def __init__(self, root: Path, env: dict[str, str], workers: int = 2) -> None:
        self.config = root / "mailguard.toml"
        self.socket = root / "daemon.sock"
        # DNS as offline as the anchors' rspamd (127.0.0.1, nothing listening: immediate failure)
        self.config.write_text(f'[daemon]\nsocket = "{self.socket}"\nworkers = {workers}\n'
                               '\n[dns]\nnameservers = ["127.0.0.1:53"]\ntimeout_ms = 200\n')
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Daemon":
        self.log = self.config.with_suffix(".log")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*MAILGUARD, "daemon", "--config", str(self.config)], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_until(self._answers, 120, "mailguard daemon")
        except RuntimeError:
            sys.stderr.write(self.log.read_text(errors="replace")[-3000:])
            raise
        return self

    def _answers(self) -> bool:
        sys.path.insert(0, str(ROOT))
        from mailguard.daemon.client import DaemonClient, DaemonUnavailable
        from mailguard.daemon.protocol import config_fingerprint

        try:
            DaemonClient(self.socket, config_fingerprint(self.config), 5).connect().close()
            return True
        except DaemonUnavailable:
            return False

    def worker_peaks_mb(self) -> list[float]:
        assert self.proc is not None
        out = []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out.append(round(int(line.split()[1]) / 1024, 1))
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


# ----------------------------------------------------------------------------- parts


def part_check(sample: list[str], runs: int, daemon: Daemon, env: dict[str, str]) -> dict[str, Any]:
    n = len(sample)
    listing = "\n".join(sample).encode() + b"\n"
    rows: dict[str, list[float]] = {"rspamd_rspamc_n8": [], "mailguard_check_j2_daemon": [], "mailguard_check_j2_cold": []}
    for _ in range(runs):
        rows["rspamd_rspamc_n8"].append(n / timed(["xargs", "rspamc", "-h", "127.0.0.1:11333", "-t", "60", "-n", "8"],
                                                  input=listing))
        rows["mailguard_check_j2_daemon"].append(n / timed(
            ["xargs", *MAILGUARD, "check", "-q", "--json", "-j", "2", "--config", str(daemon.config)], input=listing, env=env))
        rows["mailguard_check_j2_cold"].append(n / timed(
            ["xargs", *MAILGUARD, "check", "-q", "--json", "-j", "2", "--daemon", "off", "--config", str(daemon.config)],
            input=listing, env=env))
    med = {k: median(v) for k, v in rows.items()}
    base = med["rspamd_rspamc_n8"]
    return {
        "messages": n,
        "msg_per_s_runs": {k: [round(x, 1) for x in v] for k, v in rows.items()},
        "msg_per_s_median": med,
        "ratio_to_rspamd": {k: round(v / base, 2) for k, v in med.items() if base},
        "commands": {
            "rspamd_rspamc_n8": "xargs -a SAMPLE rspamc -h 127.0.0.1:11333 -t 60 -n 8",
            "mailguard_check_j2_daemon": "mailguard daemon --config C (2 workers); xargs -a SAMPLE mailguard check -q --json -j 2 --config C",
            "mailguard_check_j2_cold": "xargs -a SAMPLE mailguard check -q --json -j 2 --daemon off --config C",
        },
    }


def part_one(one: str, runs: int, daemon: Daemon, env: dict[str, str], root: Path) -> dict[str, Any]:
    rows: dict[str, list[float]] = {"mailguard_daemon": [], "mailguard_cold_cached": [], "mailguard_cold_empty_cache": [],
                                    "rspamc": []}
    for i in range(max(runs, 5)):
        rows["mailguard_daemon"].append(timed([*MAILGUARD, "check", "--config", str(daemon.config), one], env=env))
        rows["mailguard_cold_cached"].append(timed([*MAILGUARD, "check", "--daemon", "off", "--config", str(daemon.config), one],
                                                   env=env))
        empty = root / f"empty-cache-{i}"
        rows["mailguard_cold_empty_cache"].append(timed(
            [*MAILGUARD, "check", "--daemon", "off", "--config", str(daemon.config), one],
            env={**env, "MAILGUARD_CACHE_DIR": str(empty)}))
        rows["rspamc"].append(timed(["rspamc", "-h", "127.0.0.1:11333", one]))
    return {
        "message": one,
        "seconds_runs": {k: [round(x, 3) for x in v] for k, v in rows.items()},
        "seconds_median": {k: median(v) for k, v in rows.items()},
        "commands": {
            "mailguard_daemon": "mailguard check --config C one.eml (daemon running)",
            "mailguard_cold_cached": "mailguard check --daemon off --config C one.eml (build cache filled)",
            "mailguard_cold_empty_cache": "MAILGUARD_CACHE_DIR=EMPTY mailguard check --daemon off --config C one.eml",
            "rspamc": "rspamc -h 127.0.0.1:11333 one.eml",
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, help="list of message paths (default: make_sample.py's 1,000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", default="check,one,mta")
    parser.add_argument("--mta-messages", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    root = Path(tempfile.mkdtemp(prefix="mailguard-anchors-", dir="/tmp"))
    root.chmod(0o755)
    env = {**os.environ, "MAILGUARD_CACHE_DIR": str(root / "cache"), "PYTHONPATH": str(ROOT)}
    if args.sample:
        sample = [line.strip() for line in args.sample.read_text().splitlines() if line.strip()]
    else:
        listing = root / "sample.txt"
        subprocess.run([sys.executable, str(ANCHORS / "make_sample.py"), str(listing)], env={**os.environ, "DEV": str(DEV)},
                       check=True)
        sample = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    result: dict[str, Any] = {
        "bench": "anchors",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "python_executable": sys.executable,  # a distribution's build or not: see docs/performance.md
                    "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "runs": args.runs,
    }
    # as an installed wheel has them: without compiled modules (PYTHONDONTWRITEBYTECODE set,
    # a fresh checkout) every cold start would also compile mailguard's source
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mailguard")], stdout=subprocess.DEVNULL,
                   check=False)
    rspamd = Rspamd(root / "rspamd")
    daemon = Daemon(root, env)
    try:
        rspamd.start()
        subprocess.run([*MAILGUARD, "check", "--daemon", "off", sample[0]], env=env, stdout=subprocess.DEVNULL)  # fill the cache
        daemon.start()
        if "check" in parts:
            result["check"] = part_check(sample, args.runs, daemon, env)
        if "one" in parts:
            result["one"] = part_one(sample[0], args.runs, daemon, env, root)
        if "mta" in parts:
            from anchors_mta import part_mta  # noqa: PLC0415 - the Postfix half lives beside this file

            result["mta"] = part_mta(args.runs, args.mta_messages, daemon, env, root, rspamd.pid(),
                                     rspamd.milter_socket)
        result["daemon_worker_peak_mb"] = daemon.worker_peaks_mb()
        result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        daemon.stop()
        rspamd.stop()
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
