"""Cost of attachment scanning per MB: YARA signatures, and with them the file-type and
macro analyzers when they are installed; optionally, which signature rules fire on a
labelled corpus.

    /tmp/venv/bin/python bench/attachments.py [--repeat 7] [--sizes 0.25,1,4]
    /tmp/venv/bin/python bench/attachments.py --corpus ../shared/corpus/dev   # ham/ and phish/ inside

Cost mode builds attachments of a few kinds and sizes in code (a PDF with an incompressible
stream, an HTML page, a CSV, a zip of documents, a random binary, a macro document),
parses each message once, then times ``analyze`` of each attachment analyzer alone (median
of --repeat runs) and reports milliseconds per MB of attachment data, plus the time to
compile the rule set. Corpus mode scans every message of each label folder and counts, per
signature rule, the messages it fires on, and how many messages signatures alone would
quarantine. Prints one JSON object. The machine is shared: read medians and ratios.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import attachment_samples as A  # noqa: E402
from timing import median_ms  # noqa: E402

from mailguard import Config, Scanner  # noqa: E402
from mailguard.analyzers import analyzer_classes  # noqa: E402
from mailguard.analyzers.base import Analyzer, AnalyzerContext  # noqa: E402
from mailguard.analyzers.signatures import compile_rules  # noqa: E402
from mailguard.message import parse  # noqa: E402
from mailguard.model import Action  # noqa: E402

ATTACHMENT_ANALYZERS = ("signatures", "filetype", "macros")
PER_DOCUMENT_KINDS = ("docm",)
MB = 1024 * 1024


def _random(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def pdf_of(size: int) -> bytes:
    stream = _random(size)
    return A.pdf(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")


def html_of(size: int) -> bytes:
    row = '<tr><td class="c">Appointment</td><td><a href="https://practice.example/a">details</a></td></tr>\n'
    rows = row * max(1, size // len(row))
    return A.page(f"<table>{rows}</table>").encode()


def csv_of(size: int) -> bytes:
    line = b"2026-01-05,1001,Follow-up session,120.00\n"
    return line * max(1, size // len(line))


def zip_of(size: int) -> bytes:
    """Documents of mixed compressibility, so parse-time unpacking is part of the cost."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("statement.pdf", pdf_of(size // 2))
        zf.writestr("notes.csv", csv_of(size // 2))
        zf.writestr("intake.docx", A.real_docx())
    return buffer.getvalue()


def macro_doc_of(size: int) -> bytes:
    return A.real_docx(macro_source=A.SUSPICIOUS_MACRO + ("' padding\n" * max(1, size // 400)))


KINDS: dict[str, tuple[str, str, Callable[[int], bytes]]] = {
    "pdf": ("statement.pdf", "application/pdf", pdf_of),
    "html": ("page.html", "text/html", html_of),
    "csv": ("payments.csv", "text/csv", csv_of),
    "zip": ("documents.zip", "application/zip", zip_of),
    "binary": ("data.bin", "application/octet-stream", _random),
    "docm": ("invoice.docm", A.DOCX_TYPE, macro_doc_of),
}


def build_analyzers(config: Config) -> dict[str, Analyzer]:
    classes = analyzer_classes()
    context = AnalyzerContext(config)
    return {name: classes[name](config.section(name), context) for name in ATTACHMENT_ANALYZERS if name in classes}


def cost(repeat: int, sizes: list[float]) -> dict[str, Any]:
    config = Config.default()
    analyzers = build_analyzers(config)
    compile_ms = median_ms(lambda: compile_rules(config.section("signatures"), config), repeat)
    rows = []
    for kind, (filename, ctype, build) in KINDS.items():
        for size_mb in sizes:
            data = build(int(size_mb * MB))
            raw = A.message([(filename, data, ctype)])
            parsed = parse(raw)
            scanned = sum(len(a.data) for a in parsed.attachments)
            for analyzer in analyzers.values():  # warm-up: lazy imports, caches
                list(analyzer.analyze(parsed))
            row: dict[str, Any] = {
                "kind": kind,
                "attachment_mb": round(len(data) / MB, 3),
                "bytes_examined_mb": round(scanned / MB, 3),
                "parse_ms": round(median_ms(lambda: parse(raw), repeat), 2),
            }
            total = 0.0
            for name, analyzer in analyzers.items():
                ms = median_ms(lambda a=analyzer: list(a.analyze(parsed)), repeat)
                total += ms
                row[f"{name}_ms"] = round(ms, 2)
                row[f"{name}_ms_per_mb"] = round(ms / (len(data) / MB), 2)
            row["attachment_analyzers_ms_per_mb"] = round(total / (len(data) / MB), 2)
            rows.append(row)
    # Macro documents are tiny: their cost is per document (olevba), not per MB, so they are
    # reported apart and left out of the per-MB medians.
    bulk = [r for r in rows if r["kind"] not in PER_DOCUMENT_KINDS]
    per_mb = {name: round(statistics.median(r[f"{name}_ms_per_mb"] for r in bulk), 2) for name in analyzers}
    per_mb["all_attachment_analyzers"] = round(statistics.median(r["attachment_analyzers_ms_per_mb"] for r in bulk), 2)
    per_kind = {
        kind: round(statistics.median(r["signatures_ms_per_mb"] for r in bulk if r["kind"] == kind), 2)
        for kind in KINDS if kind not in PER_DOCUMENT_KINDS
    }
    per_document = {
        f"{r['bytes_examined_mb'] * 1024:.0f}_kb_examined": {name: r[f"{name}_ms"] for name in analyzers}
        for r in rows if r["kind"] in PER_DOCUMENT_KINDS
    }
    signature_rules = len(compile_rules(config.section("signatures"), config))
    return {
        "benchmark": "attachments",
        "repeat": repeat,
        "analyzers": list(analyzers),
        "signature_rules": signature_rules,
        "compile_rules_ms": round(compile_ms, 2),
        "median_ms_per_mb": per_mb,
        "signatures_median_ms_per_mb_by_kind": per_kind,
        "signatures_to_parse_time_ratio": round(statistics.median(r["signatures_ms"] / r["parse_ms"] for r in bulk), 2),
        "macro_document_ms": per_document,
        "rows": rows,
    }


def corpus(folder: Path) -> dict[str, Any]:
    """Per label folder: messages each signature rule fires on, and how many messages the
    signatures alone would quarantine (a forced action or a signature score total >= the
    quarantine threshold)."""
    scanner = Scanner()
    quarantine_at = scanner.policy.quarantine_at
    result: dict[str, Any] = {"benchmark": "attachments-corpus", "folder": str(folder), "labels": {}}
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        fired: Counter[str] = Counter()
        quarantined_by_signatures = []
        messages = with_signature = 0
        t0 = time.perf_counter()
        for path in sorted(label_dir.rglob("*")):
            if not path.is_file():
                continue
            messages += 1
            verdict = scanner.scan(path.read_bytes())
            sig = [f for f in verdict.findings if f.analyzer == "signatures"]
            fired.update({f.rule for f in sig})
            with_signature += bool(sig)
            forced = any(f.min_action is not None and f.min_action >= Action.QUARANTINE for f in sig)
            if forced or sum(f.score for f in sig) >= quarantine_at:
                quarantined_by_signatures.append(path.name)
        result["labels"][label_dir.name] = {
            "messages": messages,
            "messages_with_signature": with_signature,
            "rule_messages": dict(fired.most_common()),
            "quarantined_by_signatures": len(quarantined_by_signatures),
            "quarantined_examples": quarantined_by_signatures[:10],
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", default="0.25,1,4", help="attachment sizes in MB, comma separated")
    parser.add_argument("--corpus", type=Path, help="a folder of label folders (ham/, phish/) to count rule hits on")
    args = parser.parse_args()
    if args.corpus:
        out = corpus(args.corpus)
    else:
        out = cost(args.repeat, [float(s) for s in args.sizes.split(",")])
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
