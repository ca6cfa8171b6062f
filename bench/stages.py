"""Where one message's CPU goes: parse (and HTML to text) and each analyzer, per message.

    python bench/stages.py LIST_OR_DIR [--config FILE] [--limit N]

LIST_OR_DIR is a folder of messages or a file with one path a line (the anchors'
make_sample.py output). Prints one JSON object: the median and mean CPU milliseconds per
message of the whole scan, of parsing and of each analyzer, measured with
``time.process_time`` in this one process after the scanner is built (steady state; building
it is reported apart as ``build_s``). Single process: run it beside a reference, compare
ratios on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import Config, Scanner, load_config  # noqa: E402


def message_paths(source: Path, limit: int = 0) -> list[str]:
    """The files of a folder (recursively, sorted) or the lines of a list file."""
    if source.is_dir():
        paths = sorted(str(p) for p in source.rglob("*") if p.is_file())
    else:
        paths = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    return paths[:limit] if limit else paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    config = load_config(args.config) if args.config else Config.default()
    t0 = time.perf_counter()
    scanner = Scanner(config)
    build_s = time.perf_counter() - t0
    stages: dict[str, list[float]] = {"total": [], "parse": [], "auth": []}
    for analyzer in scanner.analyzers:
        stages[analyzer.name] = []
    clock = time.process_time
    for path in message_paths(args.source, args.limit):
        raw = Path(path).read_bytes()
        start = clock()
        message = scanner.parse(raw)
        stages["parse"].append((clock() - start) * 1000)
        a0 = clock()
        authenticate = getattr(scanner, "_authenticate", None)  # the authentication stage, when there is one
        if authenticate is not None:
            message = authenticate(message, [])
        stages["auth"].append((clock() - a0) * 1000)
        for analyzer in scanner.analyzers:
            a0 = clock()
            try:
                analyzer.analyze(message)
            except Exception:  # noqa: BLE001 - counted in the scan, not here
                pass
            stages[analyzer.name].append((clock() - a0) * 1000)
        stages["total"].append((clock() - start) * 1000)
    out = {
        "messages": len(stages["total"]),
        "build_s": round(build_s, 3),
        "median_ms": {k: round(statistics.median(v), 3) for k, v in stages.items() if v},
        "mean_ms": {k: round(statistics.fmean(v), 3) for k, v in stages.items() if v},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
