"""Cost of the language analyzer and the coherence stage together on a typical 20 KB message.

    python bench/coherence.py [--repeat N] [--runs R]

Prints one JSON object: medians (ms) of the language analyzer alone, of the coherence stage
alone (given the findings of every analyzer), and of the two together (coherence given the
other analyzers' findings plus the language findings just made, as the scanner runs them),
on the generated 20 KB message of bench/language.py (plain text plus HTML, business wording
with a few lure phrases) with 30 click-tracking links. Parsing and the other analyzers are
not included.

Every timed call gets a message of its own, parsed beforehand: the same text and link hosts
(a practice's senders recur, so per-word and per-host caches are warm as in a running
service), but link addresses unique to the message as real tracking links are, so nothing
computed for one message's addresses (or kept on the message object) is reused for the
next. ``same_message_ms`` is the old figure for comparison: one message scanned over and
over, which lets address caches (``urlsplit``'s) answer every time. The machine is shared
and noisy: medians of repeats, and with ``--runs R`` the measurement made R times over
(fresh messages each time) with the median of the R medians reported beside each run's.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from language import typical_message  # noqa: E402
from mailguard import Scanner  # noqa: E402
from mailguard.message import ParsedMessage  # noqa: E402
from timing import median_ms  # noqa: E402

LINKS = 30


def with_links(raw: bytes, serial: int) -> bytes:
    """The message with 30 tracking links in its HTML part, half on the sender's domain as
    a notification has; ``serial`` makes every address unique to this message. The part is
    decoded, added to and encoded again: written into the quoted-printable body as it
    stands, "m=80x0" would be read as the byte 0x80 ("=80"), as a mail reader reads it."""
    links = "".join(
        f'<a href="https://{"portal.sender.example" if i % 2 else f"cdn{i}.other.example"}/p{i}/{serial}'
        f'?u=https%3A%2F%2Ftarget{i}.example%2Fitem%2F{serial}&amp;m={serial}x{i}">View item {i}</a> '
        for i in range(LINKS))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    html = message.get_body(("html",))
    assert html is not None
    html.set_content(html.get_content().replace("</body>", links + "</body>", 1), subtype="html")
    return message.as_bytes()


def median_fresh(func: Callable[[ParsedMessage], object], messages: list[ParsedMessage]) -> float:
    """Median time of ``func`` over ``messages``, each message used once (after one untimed
    call on another message, so lazy imports are not counted)."""
    func(messages[0])
    times = []
    for message in messages[1:]:
        t0 = time.perf_counter()
        func(message)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1, help="measure this many times; report the median of the runs")
    args = parser.parse_args()
    scanner = Scanner()
    base = typical_message()
    serial = iter(range(10**9))

    def fresh() -> list[ParsedMessage]:
        return [scanner.parse(with_links(base, next(serial))) for _ in range(args.repeat + 1)]

    message = scanner.parse(with_links(base, next(serial)))
    language = next(a for a in scanner.analyzers if a.name == "language")
    assert scanner.coherence is not None
    coherence = scanner.coherence
    # The other analyzers' findings do not depend on the addresses' serial numbers.
    others = [f for a in scanner.analyzers if a is not language for f in a.analyze(message)]
    found = list(language.analyze(message))

    def both(m: ParsedMessage) -> None:
        coherence.review(m, others + list(language.analyze(m)))

    runs: dict[str, list[float]] = {"language_ms": [], "coherence_ms": [], "language_plus_coherence_ms": [],
                                    "same_message_ms": []}
    for _ in range(max(1, args.runs)):
        runs["language_ms"].append(round(median_fresh(lambda m: list(language.analyze(m)), fresh()), 3))
        runs["coherence_ms"].append(round(median_fresh(lambda m: coherence.review(m, others + found), fresh()), 3))
        runs["language_plus_coherence_ms"].append(round(median_fresh(both, fresh()), 3))
        runs["same_message_ms"].append(round(median_ms(lambda: both(message), args.repeat, warm=True), 3))
    report: dict[str, object] = {"message_bytes": len(message.raw), "links": len(message.links)}
    report.update({name: round(statistics.median(values), 3) for name, values in runs.items()})
    report.update({"repeat": args.repeat, "runs": args.runs,
                   "summary": coherence.review(message, others + found).sentence})
    if args.runs > 1:
        report["each_run"] = runs
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
