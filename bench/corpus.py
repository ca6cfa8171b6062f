"""Labelled corpora for the detection benches (bench/eval.py, bench/fit.py).

A corpus is a folder with ``phish/`` and ``ham/`` (labels by folder), or a folder of
``*.eml`` that are all ham (``--ham-dir``, e.g. the notifications corpus). Each message
gets a *source group*: the corpus a dev message came from (by the manifest; mirrors of one
corpus grouped under one name) or the application of a notification (its MANIFEST.tsv),
so folds can leave a whole source out. Scanning is done once, in parallel; a row keeps
the rule ids, their scores and forced actions, which is all the policy needs to decide
again under other score tables.
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailguard import Action, Config, Scanner  # noqa: E402
from mailguard.model import Finding  # noqa: E402
from mailguard.policy import Policy  # noqa: E402

_SCANNER: Scanner | None = None


@dataclass(frozen=True)
class Row:
    path: str
    label: str  # phish | ham
    source: str  # source group
    fold: str  # the finer group a fold leaves out (sub-collection or period of a source)
    findings: tuple[tuple[str, float, str], ...]  # (rule, score, min_action or "")
    summary: str
    errors: int

    @property
    def rules(self) -> frozenset[str]:
        return frozenset(r for r, _, _ in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "source": self.source, "fold": self.fold,
                "findings": [list(f) for f in self.findings], "summary": self.summary, "errors": self.errors}


def source_group(repo: str) -> str:
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


PERIODS = 5  # phishing_pot (one honeypot, numbered in order of capture) splits into this many periods
_SAMPLE = re.compile(r"(\d+)")


def fold_group(source: str, path: str, numbers: Sequence[int]) -> str:
    """The finer group of a message inside its source: a sub-collection (SpamAssassin's
    easy_ham / easy_ham_2 / hard_ham, one mbox of Nazario's), or a period of capture of
    the honeypot. A fold leaves one out, so it is judged on mail its weights never saw."""
    if source == "phishing_pot":
        found = _SAMPLE.findall(path.rsplit("/", 1)[-1])
        if found and numbers:
            rank = sorted(numbers).index(int(found[-1]))
            return f"phishing_pot/period{rank * PERIODS // len(numbers) + 1}"
        return source
    if source in ("spamassassin", "nazario"):
        head = path.split("/")[-2] if "/" in path else path
        return f"{source}/{head.split('#')[0]}"
    return source


def load_manifest(path: Path | None) -> dict[str, tuple[str, str]]:
    """filename -> (source group, fold group) from a dev manifest."""
    if path is None or not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    numbers = [int(_SAMPLE.findall(r["source_path"])[-1]) for r in rows
               if source_group(r["source_repo"]) == "phishing_pot" and _SAMPLE.findall(r["source_path"])]
    out = {}
    for row in rows:
        source = source_group(row["source_repo"])
        out[row["filename"]] = (source, fold_group(source, row["source_path"], numbers))
    return out


def load_apps(path: Path, prefix: str) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {row["filename"]: prefix + row["app"] for row in csv.DictReader(handle, delimiter="\t")}


def corpus_items(corpus: Path | None, ham_dirs: Sequence[Path]) -> list[tuple[str, str, str, str]]:
    """(label, source, fold group, path) for every message of the corpus and the ham-only folders."""
    items: list[tuple[str, str, str, str]] = []
    if corpus is not None:
        sources = load_manifest(corpus.parent / f"MANIFEST-{corpus.name}.tsv")
        for label in ("phish", "ham"):
            folder = corpus / label
            if not folder.is_dir():
                raise SystemExit(f"bench: {folder} is missing (expected phish/ and ham/ subfolders)")
            for p in sorted(folder.iterdir()):
                if p.is_file():
                    source, fold = sources.get(p.name, ("unknown", "unknown"))
                    items.append((label, source, fold, str(p)))
    for folder in ham_dirs:
        apps = load_apps(folder / "MANIFEST.tsv", f"{folder.name}/")
        for p in sorted(folder.glob("*.eml")):
            app = apps.get(p.name, folder.name)
            items.append(("ham", app, app, str(p)))
    return items


def _init(config: Config) -> None:
    global _SCANNER  # one Scanner per worker process
    _SCANNER = Scanner(config)


def _scan(item: tuple[str, str, str, str]) -> Row:
    label, source, fold, path = item
    assert _SCANNER is not None
    verdict = _SCANNER.scan(Path(path).read_bytes())
    return Row(path, label, source, fold,
               tuple((f.rule, f.score, str(f.min_action) if f.min_action is not None else "") for f in verdict.findings),
               verdict.summary, len(verdict.errors))


def read_rows(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        rows.append(Row(d["path"], d["label"], d["source"], d.get("fold", d["source"]),
                        tuple(tuple(f) for f in d["findings"]), d["summary"], d["errors"]))
    return rows


def write_rows(path: Path, rows: Sequence[Row]) -> None:
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))


def scan_all(items: Sequence[tuple[str, str, str, str]], config: Config, jobs: int | None = None) -> list[Row]:
    with ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1, initializer=_init, initargs=(config,)) as pool:
        return list(pool.map(_scan, items, chunksize=16))


def decide(row: Row, policy: Policy, scores: Mapping[str, float] | None = None) -> tuple[float, Action]:
    """The policy's decision on a scanned row, with ``scores`` (rule -> score) replacing the
    shipped table: how a message fares under weights fitted without its source."""
    findings = []
    for rule, score, min_action in row.findings:
        if scores is not None and rule in scores:
            score = scores[rule]
        findings.append(Finding("", rule, score, "", {}, Action.parse(min_action) if min_action else None))
    decision = policy.decide(findings, ())
    return decision.score, decision.action
