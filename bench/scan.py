"""Scanning throughput and latency over a folder of messages.

    python bench/scan.py DIR [--config FILE] [--jobs N] [--limit N]

Prints one JSON object: messages/s (wall clock, across --jobs worker processes, default
one per core), per-message scan time p50/p90/p99/max in ms (measured inside each worker),
MB/s, and the peak resident memory of a worker. The machine is shared and noisy: compare
runs by medians and ratios, not single figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import Config, Scanner, load_config  # noqa: E402

_SCANNER: Scanner | None = None


def _init(config: Config) -> None:
    global _SCANNER  # one Scanner per worker process, built once
    _SCANNER = Scanner(config)


def _scan_chunk(paths: list[str]) -> tuple[list[float], int, int]:
    assert _SCANNER is not None
    times = []
    total_bytes = 0
    for path in paths:
        raw = Path(path).read_bytes()
        total_bytes += len(raw)
        t0 = time.perf_counter()
        _SCANNER.scan(raw)
        times.append((time.perf_counter() - t0) * 1000.0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return times, total_bytes, peak_kb


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=0, help="scan at most N messages")
    args = parser.parse_args()

    paths = sorted(str(p) for p in args.folder.rglob("*") if p.is_file())
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        print(f"scan: no files under {args.folder}", file=sys.stderr)
        return 2
    config = load_config(args.config) if args.config else Config.default()
    chunks = [paths[i: i + 64] for i in range(0, len(paths), 64)]

    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init, initargs=(config,)) as pool:
        list(pool.map(_init_probe, range(args.jobs)))  # start workers and build scanners before timing
        t0 = time.perf_counter()
        results = list(pool.map(_scan_chunk, chunks))
        wall = time.perf_counter() - t0

    times = [t for chunk_times, _, _ in results for t in chunk_times]
    total_bytes = sum(b for _, b, _ in results)
    peak_kb = max(p for _, _, p in results)
    print(json.dumps({
        "folder": str(args.folder),
        "messages": len(times),
        "jobs": args.jobs,
        "wall_s": round(wall, 3),
        "messages_per_s": round(len(times) / wall, 1),
        "mb_per_s": round(total_bytes / wall / 1e6, 2),
        "scan_ms": {
            "p50": round(percentile(times, 50), 3),
            "p90": round(percentile(times, 90), 3),
            "p99": round(percentile(times, 99), 3),
            "max": round(max(times), 3),
            "mean": round(statistics.fmean(times), 3),
        },
        "peak_rss_mb_per_worker": round(peak_kb / 1024.0, 1),
    }, indent=2))
    return 0


def _init_probe(_: int) -> bool:
    return _SCANNER is not None


if __name__ == "__main__":
    sys.exit(main())
