"""The outbound guard measured: false holds on real mail sent as outbound, recall on
generated patient-data messages, and what the PHI analyzer costs.

    .venv/bin/python bench/outbound.py [--ham DIR ...] [--generated N] [--repeat R]

- false positives: every message of the ham folders (default ../shared/corpus/dev/ham and
  ../shared/corpus/notifications) scanned as outbound mail to an outside address and put
  through the default outbound policy with a next hop that offers no TLS: "held" is what
  the listener would hold or refuse (patient data at medium confidence or more, plus
  anything the ordinary scan quarantines). Reported per folder, with the rules.
- recall: tests/phi_samples.generated(N) (formats, separators, body/HTML/PDF/Word/Excel/
  CSV/text/zip, four languages of the surrounding text): share found at medium or more,
  per container and language.
- cost: the PHI analyzer alone (parse excluded) on ham messages without attachments,
  median per message over R repeats of the whole set, and the same for the whole scan
  inbound vs outbound (a ratio, as the machine is shared).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import phi_samples  # noqa: E402

from mailguard import Config, Scanner  # noqa: E402
from mailguard.model import Action, Envelope  # noqa: E402
from mailguard.relay.outbound import OutboundSettings, decide, outbound_verdict  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpus"  # ../shared beside the checkout
OUTSIDE = "someone@outside.example"


def held(settings: OutboundSettings, verdict) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
    verdict = outbound_verdict(settings, verdict)
    if verdict.action >= Action.QUARANTINE:
        return True, "scan:" + ",".join(verdict.rules)
    decision = decide(settings, verdict, (OUTSIDE,))
    # No TLS at the next hop: require_tls means held.
    return decision.action in ("hold", "refuse", "require_tls"), decision.action


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ham", nargs="*", default=[str(SHARED / "dev" / "ham"), str(SHARED / "notifications")])
    parser.add_argument("--generated", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    config = Config.from_dict({"outbound": {"listen": "127.0.0.1:0", "next_hop": "127.0.0.1:25",
                                            "internal_domains": ["practice.example"]}})
    settings = OutboundSettings.from_config(config, "mailguard.test")
    assert settings is not None
    scanner = Scanner(config)
    phi = next(a for a in scanner.analyzers if a.name == "phi")
    out_env = Envelope("staff@practice.example", (OUTSIDE,), direction="outbound")
    in_env = Envelope("someone@outside.example", ("staff@practice.example",), direction="inbound")
    result: dict[str, object] = {}

    missing = [folder for folder in args.ham if not Path(folder).is_dir()]
    if missing:
        print(f"bench/outbound.py: no such folder {', '.join(missing)} (give the ham folders with --ham)", file=sys.stderr)
        return 2
    plain_messages = []
    for folder in args.ham:
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        count, hits, levels, reasons = 0, 0, Counter(), Counter()
        for path in files:
            raw = path.read_bytes()
            verdict = scanner.scan(raw, out_env)
            count += 1
            conf = next((f.details["confidence"] for f in verdict.findings if f.analyzer == "phi"), "none")
            levels[conf] += 1
            is_held, why = held(settings, verdict)
            if is_held:
                hits += 1
                reasons[why] += 1
            parsed = scanner.parse(raw, out_env)
            if not parsed.attachments:
                plain_messages.append(parsed)
        result[f"fp:{Path(folder).name}"] = {"messages": count, "held": hits,
                                              "held_pct": round(100.0 * hits / max(count, 1), 3),
                                              "phi_levels": dict(levels), "why": dict(reasons.most_common(10))}

    samples = phi_samples.generated(args.generated)
    found, by_container, by_lang, levels = 0, Counter(), Counter(), Counter()
    totals_c, totals_l = Counter(s.container for s in samples), Counter(s.lang for s in samples)
    for sample in samples:
        verdict = scanner.scan(sample.raw, out_env)
        conf = next((f.details["confidence"] for f in verdict.findings if f.analyzer == "phi"), "none")
        levels[conf] += 1
        if conf in ("medium", "high"):
            found += 1
            by_container[sample.container] += 1
            by_lang[sample.lang] += 1
    result["recall"] = {
        "messages": len(samples), "medium_or_more": found, "recall_pct": round(100.0 * found / len(samples), 2),
        "levels": dict(levels),
        "per_container_pct": {c: round(100.0 * by_container[c] / n, 1) for c, n in totals_c.items()},
        "per_language_pct": {lang: round(100.0 * by_lang[lang] / n, 1) for lang, n in totals_l.items()},
    }

    def per_message(fn) -> float:  # type: ignore[no-untyped-def]
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for m in plain_messages:
                fn(m)
            runs.append((time.perf_counter() - t0) * 1000.0 / max(len(plain_messages), 1))
        return statistics.median(runs)

    raws = [m.raw for m in plain_messages]
    result["cost"] = {
        "messages_without_attachments": len(plain_messages),
        "phi_analyzer_ms_per_message": round(per_message(phi.report), 4),
        "scan_inbound_ms_per_message": round(per_message(lambda m: scanner.scan(m.raw, in_env)), 3),
        "scan_outbound_ms_per_message": round(per_message(lambda m: scanner.scan(m.raw, out_env)), 3),
        "includes": "phi: text gathering + identifier/term search + confidence, parse excluded; scan: parse and "
                    "every analyzer",
    }
    cost = result["cost"]
    assert isinstance(cost, dict)
    cost["outbound_over_inbound"] = round(cost["scan_outbound_ms_per_message"] / cost["scan_inbound_ms_per_message"], 3)
    del raws
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
