"""Cost of the language analyzer and the coherence stage together on a typical 20 KB message.

    python bench/coherence.py [--repeat N]

Prints one JSON object: medians (ms) of the language analyzer alone, of the coherence stage
alone (given the findings of every analyzer), and of the two together, on the generated
20 KB message of bench/language.py (plain text plus HTML, business wording with a few
lure phrases and links). Parsing and the other analyzers are not included. The machine
is shared and noisy: medians of repeats.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from language import typical_message  # noqa: E402
from mailguard import Scanner  # noqa: E402
from timing import median_ms  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    scanner = Scanner()
    raw = typical_message()
    # Thirty links in the HTML part, half on the sender's domain, as a notification has.
    links = "".join(f'<a href="https://{"portal.sender.example" if i % 2 else f"cdn{i}.other.example"}/p{i}?u='
                    f'https%3A%2F%2Ftarget{i}.example%2F">View item {i}</a> ' for i in range(30))
    raw = raw.replace(b"</body>", links.encode() + b"</body>", 1)
    message = scanner.parse(raw)
    language = next(a for a in scanner.analyzers if a.name == "language")
    findings = [f for a in scanner.analyzers for f in a.analyze(message)]
    assert scanner.coherence is not None

    def both() -> None:
        found = list(language.analyze(message))
        scanner.coherence.review(message, findings + found)

    report = {
        "message_bytes": len(raw),
        "links": len(message.links),
        "language_ms": round(median_ms(lambda: list(language.analyze(message)), args.repeat, warm=True), 3),
        "coherence_ms": round(median_ms(lambda: scanner.coherence.review(message, findings), args.repeat, warm=True), 3),
        "language_plus_coherence_ms": round(median_ms(both, args.repeat, warm=True), 3),
        "repeat": args.repeat,
        "summary": scanner.coherence.review(message, findings).sentence,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
