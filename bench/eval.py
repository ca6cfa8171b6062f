"""Detection rates on a labelled corpus: a folder with ``phish/`` and ``ham/``.

    python bench/eval.py ../shared/corpus/dev [--manifest ../shared/corpus/MANIFEST-dev.tsv]
                         [--config mailguard.toml] [--jobs N] [--results out.jsonl]

Prints one JSON object: per label and per source (from the manifest, when given), the
share flagged (tag or worse) and quarantined-or-worse, plus the rules that fire most on
ham (where false positives come from) and on phish. Built-in defaults unless --config.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import Action, Config, Scanner, load_config  # noqa: E402

_SCANNER: Scanner | None = None


def _init(config: Config) -> None:
    global _SCANNER  # one Scanner per worker process
    _SCANNER = Scanner(config)


def _scan(item: tuple[str, str]) -> dict[str, Any]:
    label, path = item
    assert _SCANNER is not None
    verdict = _SCANNER.scan(Path(path).read_bytes())
    return {
        "path": path,
        "label": label,
        "action": str(verdict.action),
        "score": verdict.score,
        "rules": [f.rule for f in verdict.findings],
        "analyzers": sorted({f.analyzer for f in verdict.findings}),
        "errors": len(verdict.errors),
    }


def _load_manifest(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {row["filename"]: row["source_repo"] for row in csv.DictReader(handle, delimiter="\t")}


def _source_group(repo: str) -> str:
    """Group mirrors of one corpus under one name (the manifest lists mirror repos)."""
    lowered = repo.lower()
    if "phishing_pot" in lowered:
        return "phishing_pot"
    if "nazario" in lowered or "phishing_emails" in lowered or "phishing-detection" in lowered:
        return "nazario"
    if "spam-assassin" in lowered or "spamassassin" in lowered:
        return "spamassassin"
    if "linux-mips" in lowered or "mipsel" in lowered:
        return "linux-mips"
    if "linux-clk" in lowered:
        return "linux-clk"
    return repo or "unknown"


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    flagged = sum(1 for r in rows if Action.parse(r["action"]) >= Action.TAG)
    held = sum(1 for r in rows if Action.parse(r["action"]) >= Action.QUARANTINE)
    return {
        "messages": n,
        "flagged": flagged,
        "flagged_pct": round(100.0 * flagged / n, 2) if n else 0.0,
        "quarantined_or_worse": held,
        "quarantined_or_worse_pct": round(100.0 * held / n, 2) if n else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder with phish/ and ham/ subfolders")
    parser.add_argument("--manifest", type=Path, help="TSV with filename and source_repo columns")
    parser.add_argument("--config", type=Path, help="configuration file (default: built-in defaults)")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results", type=Path, help="also write one JSON line per message here")
    parser.add_argument("--top", type=int, default=15, help="how many top rules to list")
    args = parser.parse_args()

    manifest_path = args.manifest
    if manifest_path is None:
        guess = args.corpus.parent / f"MANIFEST-{args.corpus.name}.tsv"
        manifest_path = guess if guess.exists() else None
    sources = _load_manifest(manifest_path)
    config = load_config(args.config) if args.config else Config.default()

    items = []
    for label in ("phish", "ham"):
        folder = args.corpus / label
        if not folder.is_dir():
            print(f"eval: {folder} is missing (expected phish/ and ham/ subfolders)", file=sys.stderr)
            return 2
        items.extend((label, str(p)) for p in sorted(folder.iterdir()) if p.is_file())

    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init, initargs=(config,)) as pool:
        rows = list(pool.map(_scan, items, chunksize=16))

    if args.results:
        with args.results.open("w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")

    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_source: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
        source = _source_group(sources.get(Path(row["path"]).name, ""))
        by_source[(row["label"], source)].append(row)

    def top_rules(label: str, minimum: Action) -> list[tuple[str, int]]:
        counts: Counter[str] = Counter()
        for row in by_label[label]:
            if Action.parse(row["action"]) >= minimum:
                counts.update(set(row["rules"]))
        return counts.most_common(args.top)

    def rule_hits(label: str) -> list[tuple[str, int]]:
        counts: Counter[str] = Counter()
        for row in by_label[label]:
            counts.update(set(row["rules"]))
        return counts.most_common(args.top)

    report = {
        "corpus": str(args.corpus),
        "config": str(args.config) if args.config else "built-in defaults",
        "labels": {label: _rates(rs) for label, rs in by_label.items()},
        "sources": {f"{label}/{source}": _rates(rs) for (label, source), rs in sorted(by_source.items())},
        "errors": sum(r["errors"] for r in rows),
        "rules_on_flagged_ham": top_rules("ham", Action.TAG),
        "rules_on_ham": rule_hits("ham"),
        "rules_on_phish": rule_hits("phish"),
        "phish_missed_by_score_band": dict(
            sorted(Counter(min(int(r["score"]), 5) for r in by_label["phish"] if r["action"] == "accept").items())
        ),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
