"""Authentication cost: per message with a cold and a warm DNS cache and with DNS down,
and relay throughput with authentication on and off.

    python bench/auth.py [--corpus DIR] [--messages 200] [--clients 8] [--rounds 3] [--repeat 30]

Needs dnsmasq (as the tests do): it serves the test world of tests/auth_world.py on a free
loopback port (SPF, DKIM keys, DMARC). Part 1 times ``Authenticator.authenticate`` alone on
parsed messages (a DKIM-signed aligned message, a forgery of a p=reject domain, unsigned
mail of a domain without policy): "cold" clears the answer cache before each message (every
lookup goes to the server), "warm" keeps it, "dns_down" points at a port where nothing
answers, after the first timeout. Part 2 runs bench/relay.py's harness (real `mailguard
serve` process, concurrent aiosmtplib clients, one connection per message) on a seeded
corpus sample rewritten as DKIM-signed good.example mail, so authentication does its full
work (SPF, DKIM verification, DMARC) on every message, with [auth] on and off.

Prints one JSON object. Medians of repeats; the machine is shared: read the ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback DNS world the tests use

from auth_world import auth_config, dns_server, message, sign, via_mx  # noqa: E402
from dns_server import closed_port  # noqa: E402
from relay import DEFAULT_CORPUS, _SinkSMTP, _Sink, _send_all, _start_relay, sample  # noqa: E402

from mailguard.auth.stage import Authenticator  # noqa: E402
from mailguard.config import Config  # noqa: E402
from mailguard.message import parse  # noqa: E402
from mailguard.model import Envelope  # noqa: E402

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_DROP = re.compile(rb"(?im)^(from|dkim-signature|arc-[a-z-]+|authentication-results):.*(?:\r?\n[ \t].*)*\r?\n")


def world_messages() -> dict[str, tuple[bytes, Envelope]]:
    def env(mail_from: str, ip: str) -> Envelope:
        return Envelope(mail_from, ("frontdesk@practice.example",), ip, "mail.sender.example")

    return {
        "signed_aligned": (sign(message("Good Bank <alerts@good.example>")), env("bounce@good.example", "192.0.2.10")),
        "forged_p_reject": (message("Bank <security@bank.example>"), env("security@bank.example", "192.0.2.66")),
        "unsigned_no_policy": (message("<someone@nowhere.example>"), env("someone@nowhere.example", "192.0.2.66")),
    }


def time_stage(auth: Authenticator, parsed: Any, repeat: int, cold: bool) -> float:
    times = []
    for _ in range(repeat):
        if cold:
            auth.resolver._cache.clear()  # every lookup goes to the server
        t0 = time.perf_counter()
        auth.authenticate(parsed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 3)


def corpus_cost(nameserver: str, corpus: Path, count: int, seed: int) -> dict[str, Any]:
    """The stage on real message sizes and shapes: the corpus sample re-signed as
    good.example mail (DKIM body hashing grows with the body), warm cache."""
    auth = Authenticator(Config.from_dict(auth_config(nameserver)))
    env = Envelope("bounce@good.example", ("frontdesk@practice.example",), "127.0.0.1", "bench.test")
    parsed = [parse(raw, env) for _, raw in signed_sample(corpus, count, seed)]
    for message in parsed:
        auth.authenticate(message)
    times = []
    for message in parsed:
        t0 = time.perf_counter()
        auth.authenticate(message)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"messages": len(parsed), "warm_median_ms": round(statistics.median(times), 3) if times else None,
            "warm_mean_ms": round(statistics.mean(times), 3) if times else None,
            "warm_max_ms": round(max(times), 3) if times else None}


def stage_costs(nameserver: str, repeat: int) -> dict[str, Any]:
    auth = Authenticator(Config.from_dict(auth_config(nameserver)))
    down = Authenticator(Config.from_dict(auth_config(f"127.0.0.1:{closed_port()}")))
    out: dict[str, Any] = {}
    for name, (raw, envelope) in world_messages().items():
        parsed = parse(raw, envelope)
        first = time.perf_counter()
        down.authenticate(parsed)  # the one message that waits for the timeout
        first_down_ms = (time.perf_counter() - first) * 1000.0
        out[name] = {
            "cold_ms": time_stage(auth, parsed, repeat, cold=True),
            "warm_ms": time_stage(auth, parsed, repeat, cold=False),
            "dns_down_ms": time_stage(down, parsed, repeat, cold=False),
            "first_message_after_outage_ms": round(first_down_ms, 1),
            "result": auth.authenticate(parsed).to_dict(),
        }
    return out


def signed_sample(corpus: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    """bench/relay.py's sample, each message re-addressed from good.example and signed."""
    out = []
    for _, raw in sample(corpus, count, seed):
        match = _HEADER_END.search(raw)
        head, body = (raw[: match.start() + 2], raw[match.end():]) if match else (raw + b"\r\n", b"")
        head = _DROP.sub(b"", head)
        rewritten = b"From: Good Bank <alerts@good.example>\r\n" + head + b"\r\n" + body
        # the bench client is on loopback, like Postfix in front of the relay: its Received
        # line names good.example's server, so SPF is checked too
        out.append(("bounce@good.example", via_mx(sign(rewritten))))
    return out


async def throughput(nameserver: str, args: argparse.Namespace) -> dict[str, Any]:
    """Three relays at once (auth off, on, on with DNS down), rounds sent to each in turn so
    the machine's drift (other jobs on a shared box) hits all three alike."""
    messages = signed_sample(args.corpus, args.messages, args.seed)
    if not messages:
        raise SystemExit(f"no *.eml files under {args.corpus} (give --corpus)")
    bases = {
        "auth_off": "[auth]\nenabled = false\n",
        "auth_on": ('[auth]\nauthserv_id = "mailguard.bench"\n'
                    f'[dns]\nnameservers = ["{nameserver}"]\ntimeout_ms = 500\n'),
        "auth_on_dns_down": ('[auth]\nauthserv_id = "mailguard.bench"\n'
                             f'[dns]\nnameservers = ["127.0.0.1:{closed_port()}"]\ntimeout_ms = 500\n'),
    }
    loop = asyncio.get_running_loop()
    sink = _Sink()
    server = await loop.create_server(lambda: _SinkSMTP(sink, hostname="sink.bench"), "127.0.0.1", 0)
    sink_port = server.sockets[0].getsockname()[1]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mailguard-bench-auth-") as tmp:
        relays = {}
        try:
            for name, base in bases.items():
                folder = Path(tmp) / name
                folder.mkdir()
                (folder / "base.toml").write_text(base)
                relay_args = argparse.Namespace(config=folder / "base.toml", workers=args.workers, pool=args.pool)
                outcomes: Counter[str] = Counter()
                proc, port = await loop.run_in_executor(None, _start_relay, folder, sink_port, relay_args,
                                                        outcomes)
                relays[name] = (proc, port, outcomes)
                await _send_all(port, messages[: args.clients * 2], args.clients)  # warm-up (and DNS cache)
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in bases}
            for _ in range(args.rounds):
                for name, (_, port, _) in relays.items():
                    rounds[name].append(await _send_all(port, messages, args.clients))
        finally:
            for proc, _, _ in relays.values():
                proc.send_signal(signal.SIGTERM)
                await loop.run_in_executor(None, proc.wait)
    server.close()
    for name, done in rounds.items():
        results[name] = {
            "messages_per_s": statistics.median(r["messages_per_s"] for r in done),
            "p50_ms": statistics.median(r["p50_ms"] for r in done),
            "p99_ms": statistics.median(r["p99_ms"] for r in done),
            "per_round_messages_per_s": [r["messages_per_s"] for r in done],
            "replies": dict(sum((Counter(r["replies"]) for r in done), Counter())),
            "outcomes": dict(relays[name][2].most_common(4)),
        }
    off_mps = results["auth_off"]["messages_per_s"]
    results["on_vs_off_throughput"] = round(results["auth_on"]["messages_per_s"] / off_mps, 3) if off_mps else None
    results["dns_down_vs_off_throughput"] = (
        round(results["auth_on_dns_down"]["messages_per_s"] / off_mps, 3) if off_mps else None)
    results["sample"] = len(messages)
    results["clients"] = args.clients
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--pool", choices=("threads", "processes"), default="threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-relay", action="store_true", help="only the per-message stage costs")
    args = parser.parse_args()
    with dns_server() as dns:
        out: dict[str, Any] = {"bench": "auth", "stage": stage_costs(dns.address, args.repeat),
                               "stage_on_corpus_sample": corpus_cost(dns.address, args.corpus, args.messages,
                                                                     args.seed)}
        if not args.no_relay:
            out["relay"] = asyncio.run(throughput(dns.address, args))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
