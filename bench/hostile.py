"""What hostile message shapes cost to scan: bodies and headers a stranger can send.

    python bench/hostile.py [--repeat 3] [--size 20000]

Each case is one message built here (a body of one 20,000-character word of letters, of
digits, of "a." ..., deep HTML nesting, 60 KB header values, thousands of addresses),
scanned by a Scanner on built-in defaults. Prints one JSON object: per case the median
wall-clock milliseconds of --repeat scans, the verdict, and the analyzer (or "parse")
that took longest with its milliseconds, so a shape that costs seconds (a regular
expression retried at every position of a long word) shows by name. Start-up excluded.
For comparison, an ordinary message costs a few milliseconds (bench/stages.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import Scanner  # noqa: E402


def message(body: str = "hello", ctype: str = "text/plain", **headers: str) -> bytes:
    fields = {"From": "A <a@example.org>", "To": "b@practice.example", "Subject": "hi", "Message-ID": "<x@y>",
              "MIME-Version": "1.0", "Content-Type": f"{ctype}; charset=utf-8"}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    return ("".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n" + body + "\r\n").encode("utf-8")


def cases(n: int) -> dict[str, bytes]:
    half = n // 2
    bodies = {
        "body_letters": "a" * n, "body_digits": "1" * n, "body_letters_dots": "a." * half, "body_dashes": "a-" * half,
        "body_apostrophes": "a'" * half, "body_plus_digits": "+1" * half, "body_capital_i": "Ia" * half,
        "body_dots": "." * n, "body_at_signs": "a@" * half, "body_url": "http://" + "a" * n, "body_www": "www." + "a." * half,
        "body_spaced_letters": "a " * half, "body_cyrillic": "\u0430" * n, "body_mixed_scripts": "pa\u0455sword" * (n // 8),
        "body_emoji": "\U0001F600a" * half, "body_entities": "&amp;" * (n // 5), "body_percent": "%41" * (n // 3),
        "body_redirect_chain": "https://x.example/?" + "u=https%3A%2F%2F" * (n // 16),
    }
    out = {name: message(body) for name, body in bodies.items()}
    out["html_nested_divs"] = message("<div>" * (n // 4), "text/html")
    out["html_many_links"] = message("<a href='http://x.example/'>x</a>" * (n // 32), "text/html")
    big = 3 * n
    out.update({
        "to_letters": message(To="a" * big), "to_at_signs": message(To="a@" * (big // 2)),
        "to_many_addresses": message(To=", ".join(f"x{i}@practice.example" for i in range(3000))),
        "from_long_name": message(From='"' + "a" * big + '" <a@example.org>'),
        "from_commas": message(From="a," * (big // 2) + " <a@example.org>"),
        "from_many_addresses": message(From=", ".join(f"x{i}@example.org" for i in range(3000))),
        "reply_to_many_addresses": message(Reply_To=", ".join(f"x{i}@example.org" for i in range(3000))),
        "subject_letters": message(Subject="a" * big), "subject_digits": message(Subject="1" * big),
        "subject_encoded_words": message(Subject=" ".join(["=?utf-8?q?a?="] * 5000)),
        "content_type_parameters": message(Content_Type="text/plain; " + "a=b; " * 10000),
    })
    return out


def slowest_stage(scanner: Scanner, raw: bytes) -> tuple[str, float]:
    started = time.perf_counter()
    parsed = scanner.parse(raw)
    stages = {"parse": time.perf_counter() - started}
    parsed = scanner._authenticate(parsed, [])
    findings = []
    for analyzer in scanner.analyzers:
        started = time.perf_counter()
        findings.extend(analyzer.analyze(parsed))
        stages[analyzer.name] = time.perf_counter() - started
    if scanner.coherence is not None:
        started = time.perf_counter()
        scanner.coherence.review(parsed, findings)
        stages["coherence"] = time.perf_counter() - started
    name = max(stages, key=stages.__getitem__)
    return name, round(stages[name] * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=20000, help="characters of a hostile body (headers: 3x)")
    args = parser.parse_args()
    scanner = Scanner()
    scanner.scan(message())
    report: dict[str, dict[str, object]] = {}
    for name, raw in cases(args.size).items():
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            verdict = scanner.scan(raw)
            times.append((time.perf_counter() - started) * 1000)
        stage, stage_ms = slowest_stage(scanner, raw)
        report[name] = {"bytes": len(raw), "median_ms": round(statistics.median(times), 1), "action": str(verdict.action),
                        "slowest": stage, "slowest_ms": stage_ms}
    worst = max(report, key=lambda k: report[k]["median_ms"])  # type: ignore[arg-type, return-value]
    print(json.dumps({"bench": "hostile", "size": args.size, "repeat": args.repeat, "worst": worst, "cases": report},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
