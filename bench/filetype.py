"""Cost of the file-type and macro checks per MB of attachment, and where it grows.

bench/attachments.py measures every attachment analyzer on common files; this adds the
cases that drive these two analyzers' cost: a DOCX with many pictures (libmagic runs once
per zip member), macro documents with growing VBA source (olevba decompresses in Python and
scans its keyword list over the source, bounded by [macros] max_vba_chars), a Windows
program, a PDF and a zip of PDFs. Each message is parsed once, then ``analyze`` is timed
alone (median of --repeat runs). Prints one JSON object. The machine is shared, so read
medians and ratios, not single runs.

    /tmp/venv/bin/python bench/filetype.py [--repeat 7] [--sizes 0.25,1,4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import filetype_samples as S  # noqa: E402
from timing import median_ms  # noqa: E402

from mailguard import Config  # noqa: E402
from mailguard.analyzers.base import AnalyzerContext  # noqa: E402
from mailguard.analyzers.filetype import FiletypeAnalyzer  # noqa: E402
from mailguard.analyzers.macros import MacrosAnalyzer, inspect  # noqa: E402
from mailguard.message import parse  # noqa: E402


def pdf_of(size: int) -> bytes:
    blob = os.urandom(size)
    head = S.real_pdf()
    return head.replace(b"%%EOF\n", b"") + b"6 0 obj\n<< /Length %d >>\nstream\n" % size + blob + b"\nendstream\nendobj\n%%EOF\n"


def docx_of(size: int) -> bytes:
    members = {f"word/media/image{i}.png": os.urandom(64 * 1024) for i in range(max(1, size // (64 * 1024)))}
    import io
    import zipfile

    buffer = io.BytesIO(S.real_docx())
    with zipfile.ZipFile(buffer, "a") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def zip_of(size: int) -> bytes:
    return S.zip_with({f"statement{i}.pdf": pdf_of(256 * 1024) for i in range(max(1, size // (256 * 1024)))})


def docm_of(size: int) -> bytes:
    line = 'Sub Fill{n}()\n    Range("A{n}").Value = "row {n}"\nEnd Sub\n'
    source = 'Attribute VB_Name = "Module1"\n'
    n = 0
    while len(source) < size // 8:  # 0.25 MB -> 32 KB of source, under [macros] max_vba_chars
        source += line.format(n=n)
        n += 1
    return S.real_docx(macro_source=source)


def exe_of(size: int) -> bytes:
    return S.pe_exe() + os.urandom(size)


KINDS = {
    "pdf": ("statement.pdf", pdf_of, "application/pdf"),
    "docx": ("intake.docx", docx_of, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "zip_of_pdfs": ("records.zip", zip_of, "application/zip"),
    "docm_macro": ("table.docm", docm_of, "application/vnd.ms-word.document.macroEnabled.12"),
    "exe_named_pdf": ("invoice.pdf", exe_of, "application/pdf"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sizes", default="0.25,1,4", help="attachment sizes in MB")
    args = ap.parse_args()
    config = Config.default()
    context = AnalyzerContext(config)
    analyzers = {
        "filetype": FiletypeAnalyzer(config.section("filetype"), context),
        "macros": MacrosAnalyzer({k: o.default for k, o in MacrosAnalyzer.full_schema().items()}, context),
    }
    rows = []
    for kind, (name, builder, ctype) in KINDS.items():
        for size_mb in (float(s) for s in args.sizes.split(",")):
            data = builder(int(size_mb * 1024 * 1024))
            message = parse(S.message([(name, data, ctype)]))
            attachment_bytes = sum(len(a.data) for a in message.attachments if a.archive_depth == 0)
            row = {"kind": kind, "size_mb": round(attachment_bytes / 1e6, 3),
                   "members": len(message.attachments)}
            source_chars = inspect(name, data).code_chars
            if source_chars:
                row["vba_source_kb"] = round(source_chars / 1000, 1)
            for label, analyzer in analyzers.items():
                list(analyzer.analyze(message))  # warm up (libmagic handles per thread)
                ms = median_ms(lambda: list(analyzer.analyze(message)), args.repeat)
                row[f"{label}_ms"] = round(ms, 3)
                row[f"{label}_ms_per_mb"] = round(ms / (attachment_bytes / 1e6), 3)
            rows.append(row)
    per_mb = {label: round(statistics.median(r[f"{label}_ms_per_mb"] for r in rows if r["size_mb"] >= 0.9), 3)
              for label in analyzers}
    limit_kb = config.section("macros")["max_vba_chars"] / 1000
    vba = [r["macros_ms"] / r["vba_source_kb"] for r in rows if 0 < r.get("vba_source_kb", 0) <= limit_kb]
    print(json.dumps({"bench": "filetype", "repeat": args.repeat, "median_ms_per_mb_at_1mb_and_up": per_mb,
                      "macros_ms_per_kb_of_vba_source_under_limit": round(statistics.median(vba), 3) if vba else None,
                      "macros_ms_at_limit": max((r["macros_ms"] for r in rows if r.get("vba_source_kb")), default=None),
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
