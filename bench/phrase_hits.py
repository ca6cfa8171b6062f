"""How often phrases fire per label and source: check a phrase before adding it to rules/language.

    python bench/phrase_hits.py ../shared/corpus/dev --ham-dir ../shared/corpus/notifications \
        [--cache /tmp/texts.pkl] [--results eval-results.jsonl] "phrase" "{a|b} [c] phrase" ...
    python bench/phrase_hits.py ... --category urgency      # every phrase of a shipped category

A phrase is written as in the rule files ({a|b} choices, [x] optional, * one word) and is
matched as the language analyzer matches it: subject and visible body text, normalised by
the analyzer's own normaliser. Prints one JSON object: per phrase, the messages it fires on
per source (phish: each source; ham: each source and the notifications), and, with
``--results`` from bench/eval.py, how many of the phish it fires on were missed out of fold.
Message texts are parsed once and kept in ``--cache`` (delete it when the corpus changes).
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import corpus_items  # noqa: E402
from mailguard.analyzers.language.analyzer import phrase_key  # noqa: E402
from mailguard.analyzers.language.match import build_matcher  # noqa: E402
from mailguard.analyzers.language.rules import expand, load_rules, rule_files  # noqa: E402
from mailguard.analyzers.language.text import Normaliser  # noqa: E402
from mailguard.analyzers.lookalike.glyphs import GlyphTable  # noqa: E402
from mailguard.message import parse  # noqa: E402
from mailguard.resources import data_dir, rules_file  # noqa: E402

MAX_BODY = 100_000


def _texts(item: tuple[str, str, str, str]) -> tuple[str, str, str, str, str]:
    label, source, _, path = item
    message = parse(Path(path).read_bytes())
    return label, source, path, message.subject, message.body_text[:MAX_BODY]


def load_texts(items: list[tuple[str, str, str, str]], cache: Path | None) -> list[tuple[str, str, str, str, str]]:
    if cache is not None and cache.exists():
        return pickle.loads(cache.read_bytes())
    with ProcessPoolExecutor() as pool:
        texts = list(pool.map(_texts, items, chunksize=32))
    if cache is not None:
        cache.write_bytes(pickle.dumps(texts))
    return texts


def group(label: str, source: str) -> str:
    if label == "ham" and "/" in source:
        return "ham:" + source.split("/", 1)[0]  # notifications/<app>
    return f"{label}:{source}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--ham-dir", type=Path, action="append", default=[])
    parser.add_argument("--cache", type=Path, help="parsed subjects and texts (pickle): read if present, else written")
    parser.add_argument("--results", type=Path, help="bench/eval.py --results file: count missed phish too")
    parser.add_argument("--category", action="append", default=[], help="count every phrase of this shipped category")
    parser.add_argument("--examples", type=int, default=0, help="list this many ham paths per phrase")
    parser.add_argument("phrases", nargs="*")
    args = parser.parse_intermixed_args()

    rules = load_rules(rule_files(data_dir("rules") / "language"))
    normaliser = Normaliser(GlyphTable.load(rules_file("confusables.toml")), rules.words())
    patterns: list[str] = list(args.phrases)
    for name in args.category:
        patterns += [p.text for p in rules.phrases if p.category == name]
    keys: list[str] = []
    owner: list[int] = []
    for n, pattern in enumerate(patterns):
        for variant in expand(pattern, "command line"):
            key = phrase_key(normaliser, variant)
            if key.strip():
                keys.append(key)
                owner.append(n)
    matcher = build_matcher(keys)
    missed: set[str] = set()
    if args.results:
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            if row.get("label") == "phish" and row.get("out_of_fold", row.get("action")) in ("accept", "pass"):
                missed.add(row["path"])
    texts = load_texts(corpus_items(args.corpus, args.ham_dir), args.cache)
    counts: list[dict[str, int]] = [defaultdict(int) for _ in patterns]
    examples: list[list[str]] = [[] for _ in patterns]
    totals: dict[str, int] = defaultdict(int)
    for label, source, path, subject, body in texts:
        where = group(label, source)
        totals[where] += 1
        text = normaliser.normalise(subject) + normaliser.normalise(body)
        for n in {owner[k] for k in matcher.find(text)}:
            counts[n][where] += 1
            if label == "phish" and path in missed:
                counts[n]["phish:missed"] += 1
            if label == "ham" and len(examples[n]) < args.examples:
                examples[n].append(path)
    out: dict[str, Any] = {"totals": dict(totals), "phrases": {}}
    for n, pattern in enumerate(patterns):
        entry: dict[str, Any] = dict(sorted(counts[n].items()))
        if examples[n]:
            entry["ham_examples"] = examples[n]
        out["phrases"][pattern] = entry
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
