"""Lookalike analyzer benchmark: recall per dnstwist fuzzer class, false positives on
legitimate domains, effect on the labelled corpus, and cost per message with 1,000
protected domains. Prints JSON.

dnstwist is an independent permutation engine and serves as the oracle: every permutation
it generates for a protected domain is mail a practice should be warned about, except the
ones that really belong to the same organisation (bcbsm.com is a Blue Cross plan), which are
counted apart ("owned") and left out of recall.

    python bench/lookalike.py                       # uses ../shared/lookalike and ../shared/corpus
    python bench/lookalike.py --data DIR --corpus DIR --messages 400 --repeat 3

Timing numbers are medians over --repeat rounds; the machine is shared, so compare ratios.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dnstwist  # noqa: E402

from mailguard import Config  # noqa: E402
from mailguard.analyzers.base import AnalyzerContext  # noqa: E402
from mailguard.analyzers.lookalike import LookalikeAnalyzer  # noqa: E402
from mailguard.message import ParsedMessage, parse  # noqa: E402
from mailguard.model import Envelope  # noqa: E402

WORDS = ["login", "secure", "billing", "portal", "support", "verify", "account", "pay"]
TLDS = ["com", "net", "org", "co", "us", "info", "biz", "io"]


def read_list(path: Path) -> list[str]:
    return [line.strip().lower() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def analyzer_for(protected: list[str]) -> LookalikeAnalyzer:
    config = Config.from_dict({"lookalike": {"protected_domains": protected}})
    return LookalikeAnalyzer(config.section("lookalike"), AnalyzerContext(config))


def recall(protected: list[str]) -> dict[str, Any]:
    """Every dnstwist permutation of every protected domain, checked as a sender domain."""
    matcher = analyzer_for(protected).matcher
    total: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    owned: Counter[str] = Counter()
    right_target: Counter[str] = Counter()
    missed: dict[str, list[str]] = defaultdict(list)
    owned_examples: list[str] = []
    for domain in protected:
        fuzzer = dnstwist.Fuzzer(domain, dictionary=WORDS, tld_dictionary=TLDS)
        fuzzer.generate()
        for perm in fuzzer.domains:
            kind, candidate = perm["fuzzer"], perm["domain"]
            if kind == "*original":
                continue
            if matcher.is_owned(candidate):
                owned[kind] += 1
                owned_examples.append(f"{candidate} ({domain})")
                continue
            total[kind] += 1
            match = matcher.match(candidate)
            if match is not None:
                hit[kind] += 1
                right_target[kind] += match.target.domain == domain
            elif len(missed[kind]) < 8:
                missed[kind].append(candidate)
    recalls = {kind: hit[kind] / total[kind] for kind in total}
    classes: dict[str, dict[str, Any]] = {
        kind: {
            "permutations": total[kind],
            "detected": hit[kind],
            "recall": round(recalls[kind], 5),
            "imitated_domain_named_correctly": round(right_target[kind] / max(1, hit[kind]), 5),
            "owned_left_out": owned[kind],
            "missed_examples": missed.get(kind, []),
        }
        for kind in sorted(total)
    }
    all_total, all_hit, all_owned = sum(total.values()), sum(hit.values()), sum(owned.values())
    return {
        "protected_domains": len(protected),
        "dictionary": WORDS,
        "tld_dictionary": TLDS,
        "classes": classes,
        "overall_recall": round(all_hit / all_total, 5),
        "macro_recall": round(statistics.mean(recalls.values()), 5),
        "min_class_recall": round(min(recalls.values()), 5),
        "overall_recall_counting_owned_as_missed": round(all_hit / (all_total + all_owned), 5),
        "owned_left_out": owned_examples,
    }


def sender_message(domain: str) -> bytes:
    return (
        f"From: Accounts <accounts@{domain}>\r\nTo: frontdesk@practice.example\r\n"
        f"Subject: Statement\r\nMessage-ID: <1@{domain}>\r\n\r\n"
        f"Your statement is ready at https://www.{domain}/statements\r\n"
    ).encode()


def false_positives(protected: list[str], legit: list[str]) -> dict[str, Any]:
    """Legitimate domains used as senders (From, envelope sender and a link to the same
    site): any lookalike finding counts as a false positive."""
    analyzer = analyzer_for(protected)
    flagged = []
    for domain in legit:
        message = parse(sender_message(domain), Envelope(mail_from=f"bounce@{domain}"))
        findings = list(analyzer.analyze(message))
        if findings:
            flagged.append({"domain": domain, "rules": [f.rule for f in findings], "why": findings[0].summary})
    return {
        "legit_domains": len(legit),
        "flagged": len(flagged),
        "rate": round(len(flagged) / len(legit), 5),
        "examples": flagged,
    }


def synthetic_protected(n: int, seed: int = 7) -> list[str]:
    """n plausible practice and partner domains (deterministic)."""
    first = ["bright", "mind", "clear", "open", "true", "north", "river", "cedar", "harbor", "summit", "oak",
             "maple", "lake", "sun", "blue", "green", "silver", "golden", "hope", "new", "family", "valley",
             "pine", "stone", "willow", "coastal", "metro", "capital", "heart", "still"]
    second = ["path", "well", "view", "bridge", "light", "point", "field", "haven", "spring", "wood", "side",
              "grove", "crest", "way", "gate", "brook"]
    third = ["therapy", "psychology", "counseling", "behavioral", "health", "billing", "wellness", "psych",
             "clinic", "care", "mentalhealth", "family"]
    tlds = ["com", "org", "net", "health", "us", "co"]
    names = [f"{a}{b}{c}.{t}" for a, b, c, t in itertools.product(first, second, third, tlds)]
    random.Random(seed).shuffle(names)
    return names[:n]


def load_messages(corpus: Path, count: int, seed: int = 11) -> list[ParsedMessage]:
    files = sorted((corpus / "dev" / "ham").glob("*.eml")) + sorted((corpus / "dev" / "phish").glob("*.eml"))
    rng = random.Random(seed)
    chosen = rng.sample(files, min(count, len(files)))
    return [parse(p.read_bytes()) for p in chosen]


def time_pass(analyzer: LookalikeAnalyzer, messages: list[ParsedMessage]) -> list[float]:
    out = []
    for message in messages:
        t0 = time.perf_counter()
        list(analyzer.analyze(message))
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def cost(protected_count: int, messages: list[ParsedMessage], repeat: int) -> dict[str, Any]:
    """Per-message analyzer time with the built-in brands only and with protected_count
    extra protected domains; the first pass over fresh analyzers (cold per-domain cache)
    and a second pass (warm)."""
    result: dict[str, Any] = {"messages": len(messages), "repeat": repeat}
    for label, protected in (("builtin_only", []), (f"protected_{protected_count}", synthetic_protected(protected_count))):
        cold_means, warm_means, cold_medians, warm_medians, builds, p95s = [], [], [], [], [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            analyzer = analyzer_for(protected)
            builds.append((time.perf_counter() - t0) * 1000.0)
            cold = time_pass(analyzer, messages)
            warm = time_pass(analyzer, messages)
            cold_means.append(statistics.mean(cold))
            warm_means.append(statistics.mean(warm))
            cold_medians.append(statistics.median(cold))
            warm_medians.append(statistics.median(warm))
            p95s.append(sorted(cold)[int(0.95 * (len(cold) - 1))])
        result[label] = {
            "protected_domains_total": len(analyzer.matcher.protected),
            "build_ms": round(statistics.median(builds), 1),
            "cold_mean_ms": round(statistics.median(cold_means), 4),
            "cold_median_ms": round(statistics.median(cold_medians), 4),
            "cold_p95_ms": round(statistics.median(p95s), 4),
            "warm_mean_ms": round(statistics.median(warm_means), 4),
            "warm_median_ms": round(statistics.median(warm_medians), 4),
        }
    base, big = result["builtin_only"], result[f"protected_{protected_count}"]
    result["cold_mean_ratio"] = round(big["cold_mean_ms"] / max(base["cold_mean_ms"], 1e-9), 3)
    return result


def corpus_effect(protected: list[str], corpus: Path) -> dict[str, Any]:
    """What the analyzer alone does to real ham and phish: messages with any finding, and
    with findings adding up to the default tag (5) and quarantine (10) thresholds."""
    analyzer = analyzer_for(protected)
    out: dict[str, Any] = {}
    for label in ("ham", "phish"):
        files = sorted((corpus / "dev" / label).glob("*.eml"))
        rules: Counter[str] = Counter()
        any_finding = tagged = quarantined = 0
        for path in files:
            findings = list(analyzer.analyze(parse(path.read_bytes())))
            score = sum(f.score for f in findings)
            any_finding += bool(findings)
            tagged += score >= 5
            quarantined += score >= 10
            rules.update({f.rule for f in findings})
        out[label] = {
            "messages": len(files),
            "any_finding": any_finding,
            "score_at_least_5": tagged,
            "score_at_least_10": quarantined,
            "rate_at_least_5": round(tagged / max(1, len(files)), 5),
            "messages_per_rule": dict(rules.most_common()),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = ROOT.parent / "shared"
    parser.add_argument("--data", type=Path, default=shared / "lookalike")
    parser.add_argument("--corpus", type=Path, default=shared / "corpus")
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--protected", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    protected = read_list(args.data / "protected-domains-dev.txt")
    legit = read_list(args.data / "legit-domains-dev.txt")
    report: dict[str, Any] = {
        "recall": recall(protected),
        "false_positives": false_positives(protected, legit),
    }
    if (args.corpus / "dev").is_dir():
        report["corpus"] = corpus_effect(protected, args.corpus)
        report["cost"] = cost(args.protected, load_messages(args.corpus, args.messages), args.repeat)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
