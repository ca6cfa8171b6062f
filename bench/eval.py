"""Detection rates on labelled mail, per source, in fold and out of fold side by side.

    python bench/eval.py ../shared/corpus/dev [--ham-dir ../shared/corpus/notifications]
                         [--folds FOLDS.json] [--config mailguard.toml] [--jobs N]
                         [--results out.jsonl] [--rows cache.jsonl]

Every message is scanned once (built-in defaults unless --config) with the analyzers'
hand-set scores; the policy then decides it twice: *in fold* with the shipped fitted
scores (rules/scores.toml, fitted on all of this mail), and *out of fold* with the score
table fitted without the message's fold group (a sub-collection or period of its source,
or a whole source: ``--folds`` as written by ``bench/fit.py --folds``). Prints one JSON
object: per label and per source, the share flagged (tag or worse) and held (quarantine or
worse) both ways, the rules that fire most on flagged ham and on missed phish, how many
flagged verdicts lack a summary naming claim, request and destination, and the commonest
reasons for misses and false positives (out of fold).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import Row, corpus_items, decide, read_rows, scan_all, write_rows  # noqa: E402
from mailguard import Action, Config, load_config  # noqa: E402
from mailguard.model import Finding  # noqa: E402
from mailguard.policy import FittedScores, Policy  # noqa: E402


def _rates(outcomes: list[Action]) -> dict[str, Any]:
    n = len(outcomes)
    flagged = sum(1 for a in outcomes if a >= Action.TAG)
    held = sum(1 for a in outcomes if a >= Action.QUARANTINE)
    return {"messages": n, "flagged_pct": round(100.0 * flagged / n, 2) if n else 0.0,
            "held_pct": round(100.0 * held / n, 2) if n else 0.0, "flagged": flagged, "held": held}


def _reason(row: Row, policy: Policy) -> str:
    """The strongest evidence of a row, as a reason: its two highest-scoring rules under
    ``policy`` (the scores that decided it), or "(no rule fired)"."""
    scored = [(policy.adjust(Finding("", r, s, "", {})).score, r) for r, s, _ in row.findings]
    top = sorted(((s, r) for s, r in scored if s > 0), reverse=True)[:2]
    if not top:
        return "(no rule fired)" if not row.findings else "(only rules of no weight)"
    return " + ".join(r for _, r in top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder with phish/ and ham/ subfolders")
    parser.add_argument("--ham-dir", type=Path, action="append", default=[], help="a folder of legitimate .eml")
    parser.add_argument("--folds", type=Path, help="per-fold score tables from bench/fit.py --folds")
    parser.add_argument("--config", type=Path, help="configuration file (default: built-in defaults)")
    parser.add_argument("--jobs", "-j", type=int)
    parser.add_argument("--results", type=Path, help="also write one JSON line per message here")
    parser.add_argument("--rows", type=Path, help="cache of scanned rows (JSON lines): read if present, else written")
    parser.add_argument("--top", type=int, default=10, help="how many top rules and reasons to list")
    args = parser.parse_args()

    base = load_config(args.config) if args.config else Config.default()
    if args.rows and args.rows.exists():
        rows = read_rows(args.rows)
    else:
        data = base.to_dict()
        data["policy"]["fitted_scores"] = False  # hand-set scores in the rows; the tables are applied below
        rows = scan_all(corpus_items(args.corpus, args.ham_dir), Config.from_dict(data, base.source), args.jobs)
        if args.rows:
            write_rows(args.rows, rows)

    shipped = Policy.from_config(base)
    folds: dict[str, Any] = json.loads(args.folds.read_text())["folds"] if args.folds else {}
    fold_policies = {}
    for group, table in folds.items():
        fold_policies[group] = Policy(base.section("policy"), FittedScores(table["scores"], table["scales"]))

    in_fold: list[Action] = []
    out_fold: list[Action] = []
    deciding: list[Policy] = []  # the policy that decided each row out of fold
    for row in rows:
        in_fold.append(decide(row, shipped)[1])
        policy = fold_policies.get(row.fold) or fold_policies.get(row.source)
        out_fold.append(decide(row, policy)[1] if policy is not None else in_fold[-1])
        deciding.append(policy or shipped)

    if args.results:
        with args.results.open("w") as out:
            for row, a, b in zip(rows, in_fold, out_fold):
                out.write(json.dumps({**row.to_dict(), "in_fold": str(a), "out_of_fold": str(b)}) + "\n")

    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        kind = "notifications" if "/" in row.source else "dev"
        groups[f"{row.label} ({kind}) ALL"].append(i)
        groups[f"{row.label}/{row.source}"].append(i)
    table = {name: {"in_fold": _rates([in_fold[i] for i in idx]), "out_of_fold": _rates([out_fold[i] for i in idx])}
             for name, idx in sorted(groups.items())}

    flagged_ham = [rows[i] for i, a in enumerate(out_fold) if a >= Action.TAG and rows[i].label == "ham"]
    missed = [rows[i] for i, a in enumerate(out_fold) if a < Action.TAG and rows[i].label == "phish"]
    fp_reasons = Counter(_reason(rows[i], deciding[i]) for i, a in enumerate(out_fold)
                         if a >= Action.TAG and rows[i].label == "ham")
    miss_reasons = Counter(_reason(rows[i], deciding[i]) for i, a in enumerate(out_fold)
                           if a < Action.TAG and rows[i].label == "phish")
    flagged = [rows[i] for i, a in enumerate(in_fold) if a >= Action.TAG]
    unexplained = [r for r in flagged if not r.summary]
    report = {
        "corpus": str(args.corpus), "ham_dirs": [str(h) for h in args.ham_dir],
        "config": str(args.config) if args.config else "built-in defaults",
        "out_of_fold": "per fold group from " + str(args.folds) if args.folds else "(no --folds: same as in fold)",
        "table": table,
        "errors": sum(r.errors for r in rows),
        "flagged_without_summary": len(unexplained),
        "false_positive_reasons_oof": fp_reasons.most_common(args.top),
        "miss_reasons_oof": miss_reasons.most_common(args.top),
        "missed_with_no_rule_oof": sum(1 for r in missed if not any(s > 0 for _, s, _ in r.findings)),
        "rules_on_flagged_ham_oof": Counter(x for r in flagged_ham for x in r.rules).most_common(args.top),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
