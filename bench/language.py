"""Cost of the language analyzer per typical 20 KB message, and the phrase engines compared.

    python bench/language.py [--repeat N] [--corpus DIR]

Prints one JSON object: for a generated 20 KB message (plain text plus HTML, ordinary
business wording with a few lure phrases), the median time of the whole analyzer per
message, of its normaliser alone, and of the phrase matching alone for each engine: the
stdlib ``re`` (one alternation), ahocorasick-rs, the pure-Python word-trie fallback, and
hyperscan when it is installed; plus
the ratio of each engine to the fastest. With --corpus (a folder of .eml files) it also
reports the analyzer's median and p90 per real message. The machine is shared and noisy:
compare medians and ratios, not single runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mailguard.analyzers.base import AnalyzerContext  # noqa: E402
from mailguard.analyzers.language import LanguageAnalyzer  # noqa: E402
from mailguard.analyzers.language.match import AhoCorasickMatcher, RegexMatcher, WordTrieMatcher  # noqa: E402
from mailguard.config import Config  # noqa: E402
from mailguard.message import parse  # noqa: E402
from timing import median_ms  # noqa: E402

PARAGRAPHS = (
    "Thanks for sending over the intake forms for the new client. I have scheduled the first "
    "session for Tuesday at 3pm and will confirm the insurance details with the billing office "
    "before then. Please let me know if the family needs a Spanish-speaking clinician.",
    "The quarterly supervision meeting moved to the small conference room. Bring the updated "
    "caseload spreadsheet and the notes from the last peer consultation; we will also review "
    "the new telehealth consent wording that legal sent last week.",
    "Reminder: the copier on the second floor is out of toner again. Facilities has a ticket "
    "open, and in the meantime the printer by the front desk works fine for short jobs.",
    "Dear Dr. Roe, your account statement for October is attached. If you have questions about "
    "any line item, reply to this message or call our office during business hours.",
)
LURE = (
    "Your mailbox has been suspended due to unusual sign-in activity. Verify your account "
    "within 24 hours by clicking the link below to avoid losing access."
)


def typical_message(size: int = 20_000) -> bytes:
    """A 20 KB message: ordinary paragraphs with one lure, as text and as HTML."""
    text_parts: list[str] = []
    n = 0
    while sum(len(p) for p in text_parts) < size // 2:
        text_parts.append(PARAGRAPHS[n % len(PARAGRAPHS)])
        if n == 5:
            text_parts.append(LURE)
        n += 1
    text = "\n\n".join(text_parts)
    html = "<html><body>" + "".join(f"<p>{p}</p>" for p in text_parts) + "</body></html>"
    msg = EmailMessage()
    msg["From"] = "Billing <billing@example.com>"
    msg["To"] = "frontdesk@example.org"
    msg["Subject"] = "Re: October statement and scheduling"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


class HyperscanMatcher:
    """The same phrases in one Hyperscan database (only if the package is installed)."""

    def __init__(self, phrases: Sequence[str]) -> None:
        import hyperscan

        unique = sorted(set(phrases))
        self._ids = {p: [i for i, q in enumerate(phrases) if q == p] for p in unique}
        self._unique = unique
        self._db = hyperscan.Database()
        self._db.compile(
            expressions=[p.encode("utf-8") for p in unique],
            ids=list(range(len(unique))),
            elements=len(unique),
            flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(unique),
            literal=True,
        )

    def find(self, text: str) -> frozenset[int]:
        found: set[int] = set()

        def on_match(pid: int, start: int, end: int, flags: int, context: object) -> None:
            found.update(self._ids[self._unique[pid]])

        self._db.scan(text.encode("utf-8"), match_event_handler=on_match)
        return frozenset(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--corpus", type=Path, help="optional folder of .eml files for per-message figures")
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()

    config = Config.default()
    analyzer = LanguageAnalyzer(config.section("language"), AnalyzerContext(config))
    raw = typical_message()
    message = parse(raw)
    body = message.body_text
    normalised = analyzer.normaliser.normalise(body)
    keys = [analyzer.normaliser.normalise(v) for p in analyzer.rules.phrases for v in p.variants]

    build: dict[str, Callable[[], object]] = {
        "re": lambda: RegexMatcher(keys),
        "ahocorasick": lambda: AhoCorasickMatcher(keys),
        "python-trie": lambda: WordTrieMatcher(keys),
    }
    try:
        HyperscanMatcher(["x"])
        build["hyperscan"] = lambda: HyperscanMatcher(keys)
    except Exception as exc:  # not installed or no CPU support: reported, not fatal
        hyperscan_note = f"unavailable: {type(exc).__name__}: {exc}"
    else:
        hyperscan_note = "installed"

    engines: dict[str, dict[str, float | int]] = {}
    for name, make in build.items():
        t0 = time.perf_counter()
        matcher = make()
        built_ms = (time.perf_counter() - t0) * 1000.0
        engines[name] = {
            "build_ms": round(built_ms, 1),
            "match_ms_median": round(median_ms(lambda m=matcher: m.find(normalised), args.repeat, warm=True), 4),
            "phrases_found": len(matcher.find(normalised)),
        }
    fastest = min(e["match_ms_median"] for e in engines.values())
    for e in engines.values():
        e["ratio_to_fastest"] = round(float(e["match_ms_median"]) / fastest, 2) if fastest else 0.0

    report: dict[str, object] = {
        "message_bytes": len(raw),
        "body_chars": len(body),
        "phrase_rules": len(analyzer.rules.phrases),
        "phrase_variants": len(keys),
        "engine_in_use": type(analyzer._matcher).__name__,
        "analyze_ms_median": round(median_ms(lambda: list(analyzer.analyze(message)), args.repeat, warm=True), 4),
        "normalise_ms_median": round(median_ms(lambda: analyzer.normaliser.normalise(body), args.repeat, warm=True), 4),
        "parse_ms_median": round(median_ms(lambda: parse(raw), max(20, args.repeat // 10), warm=True), 4),
        "engines": engines,
        "hyperscan": hyperscan_note,
    }
    if args.corpus:
        files = sorted(p for p in args.corpus.rglob("*") if p.is_file())[: args.limit]
        times = []
        for path in files:
            parsed = parse(path.read_bytes())
            t0 = time.perf_counter()
            list(analyzer.analyze(parsed))
            times.append((time.perf_counter() - t0) * 1000.0)
        times.sort()
        report["corpus"] = {
            "messages": len(times),
            "analyze_ms_median": round(statistics.median(times), 4) if times else 0.0,
            "analyze_ms_p90": round(times[int(len(times) * 0.9)], 4) if times else 0.0,
            "analyze_ms_max": round(times[-1], 3) if times else 0.0,
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
