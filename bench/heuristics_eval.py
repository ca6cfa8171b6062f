"""Per-rule firing rates of the links and sender analyzers on a labelled corpus.

    python bench/heuristics_eval.py ../shared/corpus/dev [--manifest ../shared/corpus/MANIFEST-dev.tsv]
                                    [--jobs 2] [--limit N] [--examples RULE]

Runs only these two analyzers (built-in data, default settings) on every message of
``phish/`` and ``ham/`` and prints, per rule, how often it fires in each label and source
(``--counts`` for message counts), the share whose links+sender score alone reaches the
tag threshold (the budget: at most 0.3% of ham), and the mean cost per message.
``--with-all`` runs every registered analyzer as well and shows how often these two
change the outcome; ``--examples RULE`` lists files where RULE fired on ham (``--label
phish`` for phish), to read what the false positives are; ``--results FILE`` writes one
JSON line per message.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import Scanner  # noqa: E402
from mailguard.analyzers import analyzer_classes  # noqa: E402
from mailguard.analyzers.base import AnalyzerContext  # noqa: E402
from mailguard.analyzers.links import LinksAnalyzer  # noqa: E402
from mailguard.analyzers.sender import SenderAnalyzer  # noqa: E402
from mailguard.config import Config  # noqa: E402
from mailguard.message import parse  # noqa: E402

MINE = ("links", "sender")
_ANALYZERS: list[Any] = []
_SCANNER: list[Scanner] = []


def _init(with_all: bool) -> None:
    config = Config.default()
    context = AnalyzerContext(config)
    for cls in (LinksAnalyzer, SenderAnalyzer):
        settings = {k: o.check(o.default, k) for k, o in cls.full_schema().items()}
        _ANALYZERS.append(cls(settings, context))
    if with_all:
        registered = set(analyzer_classes())
        extra = [a for a in _ANALYZERS if a.name not in registered]
        _SCANNER.append(Scanner(config, extra_analyzers=extra))


def _scan(item: tuple[str, str]) -> dict[str, Any]:
    label, path = item
    raw = Path(path).read_bytes()
    cost: dict[str, float] = {}
    if _SCANNER:
        findings = list(_SCANNER[0].scan(raw).findings)
    else:
        message = parse(raw)
        findings = []
        for analyzer in _ANALYZERS:
            started = time.perf_counter()
            findings += analyzer.analyze(message)
            cost[analyzer.name] = (time.perf_counter() - started) * 1000
    mine = sum(f.score for f in findings if f.analyzer in MINE)
    total = sum(f.score for f in findings)
    forced = any(f.min_action is not None and f.min_action > 0 for f in findings)
    return {
        "path": path, "label": label, "rules": sorted({f.rule for f in findings if f.analyzer in MINE}),
        "other_rules": sorted({f.rule for f in findings if f.analyzer not in MINE}),
        "score": mine, "total": total, "others": total - mine, "forced": forced, "ms": cost,
    }


def _source(repo: str) -> str:
    lowered = repo.lower()
    if "phishing_pot" in lowered:
        return "phishing_pot"
    if "spam-assassin" in lowered or "spamassassin" in lowered:
        return "spamassassin"
    if "linux-clk" in lowered:
        return "linux_clk"
    if "mips" in lowered:
        return "linux_mips"
    if "phishing" in lowered.replace("_", "-") or "nazario" in lowered:
        return "nazario"
    return repo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--manifest", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--examples", default="")
    ap.add_argument("--label", default="ham")
    ap.add_argument("--counts", action="store_true", help="print message counts instead of percentages")
    ap.add_argument("--results", type=Path, help="write one JSON line per message here")
    ap.add_argument("--with-all", action="store_true",
                    help="run every registered analyzer too and show how often these two change the outcome")
    args = ap.parse_args()
    manifest_path = args.manifest or args.corpus.parent / "MANIFEST-dev.tsv"
    sources: dict[str, str] = {}
    if manifest_path.exists():
        with manifest_path.open(newline="") as handle:
            sources = {r["filename"]: _source(r["source_repo"]) for r in csv.DictReader(handle, delimiter="\t")}
    items = []
    for label in ("phish", "ham"):
        files = sorted((args.corpus / label).glob("*.eml"))
        if args.limit:
            files = files[: args.limit]
        items += [(label, str(f)) for f in files]
    totals: Counter[tuple[str, str]] = Counter()
    hits: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    flagged: Counter[tuple[str, str]] = Counter()
    with_mine: Counter[tuple[str, str]] = Counter()
    without_mine: Counter[tuple[str, str]] = Counter()
    examples: list[str] = []
    cost: Counter[str] = Counter()
    out = args.results.open("w") if args.results else None
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(args.with_all,)) as pool:
        for result in pool.map(_scan, items, chunksize=64):
            key = (result["label"], sources.get(Path(result["path"]).name, "?"))
            if out is not None:
                out.write(json.dumps({**result, "source": key[1]}) + "\n")
            totals[key] += 1
            cost.update(result["ms"])
            if result["score"] >= 5:
                flagged[key] += 1
            with_mine[key] += result["total"] >= 5 or result["forced"]
            without_mine[key] += result["others"] >= 5 or result["forced"]
            for rule in result["rules"]:
                hits[rule][key] += 1
                if rule == args.examples and result["label"] == args.label:
                    examples.append(result["path"])
    if out is not None:
        out.close()
    keys = sorted(totals)
    print("rule".ljust(34) + "".join(f"{l[:2]}:{s[:12]:>13}" for l, s in keys))
    print("(messages)".ljust(34) + "".join(f"{totals[k]:>16}" for k in keys))
    for rule in sorted(hits):
        if args.counts:
            print(rule.ljust(34) + "".join(f"{hits[rule][k]:>16}" for k in keys))
        else:
            print(rule.ljust(34) + "".join(f"{100 * hits[rule][k] / totals[k]:>15.2f}%" for k in keys))
    print("score>=5 alone".ljust(34) + "".join(f"{100 * flagged[k] / totals[k]:>15.2f}%" for k in keys))
    if args.with_all:
        print("flagged, all analyzers".ljust(34) + "".join(f"{100 * with_mine[k] / totals[k]:>15.2f}%" for k in keys))
        print("flagged, without these".ljust(34) + "".join(f"{100 * without_mine[k] / totals[k]:>15.2f}%" for k in keys))
    if cost:
        count = sum(totals.values())
        print("mean ms per message: " + ", ".join(f"{name} {ms / count:.3f}" for name, ms in sorted(cost.items())))
    if args.examples:
        print(json.dumps(examples[:40], indent=0))


if __name__ == "__main__":
    main()
