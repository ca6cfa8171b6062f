"""The one place where findings become an action (as rspamd's actions and
SpamAssassin's required_score): scores are summed, operator overrides applied, the total
mapped to an action by thresholds, and forced minimum actions applied on top."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mailguard.options import ConfigError, Option, read_data_toml
from mailguard.resources import rules_file

if TYPE_CHECKING:
    from mailguard.config import Config
from mailguard.model import Action, AnalyzerError, Finding

ON_ERROR_CHOICES = ("tempfail", "accept", "tag", "quarantine", "reject")

CONFIG_SCHEMA: Mapping[str, Option] = {
    "tag_at": Option(
        4.5, "float",
        "Total score from which a message is tagged (headers, subject prefix). The fitted scores "
        "(bench/fit.py) are scaled so that 4.5 is the out-of-fold threshold where at most 0.4 % of held-out "
        "ham and 1.5 % of held-out notifications are tagged.",
    ),
    "quarantine_at": Option(
        10.0, "float",
        "Total score from which a message is held in quarantine. Kept at 10 although the fitted scores "
        "(bench/fit.py) would allow less: the rules too rare to fit (macros, attachments) keep hand-set "
        "scores made for 10; out of fold, 10 holds no notification and under 0.1 % of ham.",
    ),
    "reject_at": Option(
        0.0, "float", "Total score from which a message is refused outright; 0 turns rejection by score off.",
        minimum=0,
    ),
    "subject_tag": Option("[SUSPICIOUS]", "str", "Prefix added to the subject of tagged mail; empty for none."),
    "banner": Option(False, "bool", "Add a short warning at the top of tagged messages' text, saying why."),
    "on_error": Option(
        "tempfail", "str",
        "What to do when an analyzer fails or overruns its time budget: tempfail (the sending server "
        "retries later; nothing is lost), or at least accept, tag, quarantine or reject.",
        choices=ON_ERROR_CHOICES,
    ),
    "analyzer_time_budget_ms": Option(
        5000, "int", "Time one analyzer may take on one message before it counts as an error.", minimum=1
    ),
    "scores": Option(
        {}, "dict[str,float]",
        "Score overrides by rule id, e.g. { LANGUAGE_URGENCY = 1.0 }; they win over the fitted scores.",
    ),
    "fitted_scores": Option(
        True, "bool",
        "Use the rule scores fitted on labelled mail (rules/scores.toml, written by bench/fit.py); false "
        "falls back to each analyzer's hand-set scores. Rules that force an action keep hand-set scores.",
    ),
    "scores_file": Option(
        "", "path",
        "A fitted score table ([scores] RULE = number) that replaces the built-in rules/scores.toml; "
        "empty for the built-in one.",
    ),
    "actions": Option(
        {}, "dict[str,str]",
        "Minimum action forced by a rule id, e.g. { SIGNATURE_EXECUTABLE_WINDOWS_PE = \"reject\" }; \"none\" lifts a built-in one.",
    ),
}


@dataclass(frozen=True)
class Decision:
    score: float
    action: Action
    findings: tuple[Finding, ...]
    tempfail: bool


@dataclass(frozen=True)
class FittedScores:
    """Scores fitted on labelled mail (bench/fit.py): ``scores`` replace a rule's score,
    ``scales`` multiply the score of a graded rule (a language category's grows with its
    phrases up to its cap)."""

    scores: Mapping[str, float]
    scales: Mapping[str, float]


def load_scores(path: Path) -> FittedScores:
    """A fitted score table: ``[scores] RULE_ID = number`` and ``[scales] RULE_ID = factor``."""
    data = read_data_toml(path, "score table")
    unknown = set(data) - {"scores", "scales"}
    if unknown or not isinstance(data.get("scores", {}), dict) or not isinstance(data.get("scales", {}), dict):
        raise ConfigError(f"{path}: a score table has only [scores] (RULE_ID = number) and [scales] "
                          "(RULE_ID = factor), as bench/fit.py writes it")
    tables: list[dict[str, float]] = []
    for name in ("scores", "scales"):
        out: dict[str, float] = {}
        for rule, value in data.get(name, {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}: [{name}] {rule}: expected a number, got {value!r}")
            out[str(rule)] = float(value)
        tables.append(out)
    return FittedScores(tables[0], tables[1])


def fitted_table(config: "Config") -> FittedScores | None:
    """The fitted score table the configuration asks for: [policy] scores_file, else the
    built-in rules/scores.toml (none yet: no fitted scores); None when fitted_scores is off."""
    settings = config.section("policy")
    if not settings["fitted_scores"]:
        return None
    if settings["scores_file"]:
        return load_scores(config.resolve_path(settings["scores_file"]))
    path = rules_file("scores.toml")
    return load_scores(path) if path.exists() else None


class Policy:
    def __init__(self, settings: Mapping[str, Any], fitted: FittedScores | None = None) -> None:
        """``fitted``: the fitted score table (rules/scores.toml), applied under the
        operator's ``scores``; None when fitted scores are off."""
        self.tag_at = float(settings["tag_at"])
        self.quarantine_at = float(settings["quarantine_at"])
        self.reject_at = float(settings["reject_at"])
        self.on_error = str(settings["on_error"])
        self.score_overrides = {**(fitted.scores if fitted else {}), **settings["scores"]}
        self.scales = {r: f for r, f in (fitted.scales if fitted else {}).items() if r not in settings["scores"]}
        self.action_overrides: dict[str, Action | None] = {}
        for rule, name in settings["actions"].items():
            self.action_overrides[rule] = None if name.lower() == "none" else Action.parse(name)
        self.subject_tag = str(settings["subject_tag"])
        self.banner = bool(settings["banner"])

    @classmethod
    def from_config(cls, config: "Config") -> "Policy":
        return cls(config.section("policy"), fitted_table(config))

    def adjust(self, finding: Finding) -> Finding:
        """Apply the operator's score and forced-action overrides to one finding."""
        score = self.score_overrides.get(finding.rule, finding.score)
        if finding.rule in self.scales:
            score = round(finding.score * self.scales[finding.rule], 3)
        min_action = self.action_overrides.get(finding.rule, finding.min_action)
        if score == finding.score and min_action == finding.min_action:
            return finding
        return Finding(finding.analyzer, finding.rule, score, finding.summary, finding.details, min_action)

    def action_for_score(self, score: float) -> Action:
        if self.reject_at > 0 and score >= self.reject_at:
            return Action.REJECT
        if score >= self.quarantine_at:
            return Action.QUARANTINE
        if score >= self.tag_at:
            return Action.TAG
        return Action.ACCEPT

    def decide(self, findings: Sequence[Finding], errors: Sequence[AnalyzerError]) -> Decision:
        adjusted = tuple(self.adjust(f) for f in findings)
        score = sum(f.score for f in adjusted)
        action = self.action_for_score(score)
        for finding in adjusted:
            if finding.min_action is not None and finding.min_action > action:
                action = finding.min_action
        tempfail = False
        if errors:
            if self.on_error == "tempfail":
                tempfail = True
            else:
                action = max(action, Action.parse(self.on_error))
        return Decision(round(score, 3), action, adjusted, tempfail)


def check_section(values: Mapping[str, Any], where: str) -> list[str]:
    """Cross-key checks of [policy], run when the file is loaded (config check, check,
    serve, milter and every SIGHUP reload see the same errors)."""
    errors: list[str] = []
    names = ", ".join(str(a) for a in Action)
    for rule, name in values["actions"].items():
        if name.strip().lower() == "none":
            continue
        try:
            Action.parse(name)
        except ValueError:
            errors.append(f"{where} actions: {rule} = {name!r} is not an action; use one of {names} or none")
    tag_at, quarantine_at, reject_at = values["tag_at"], values["quarantine_at"], values["reject_at"]
    if tag_at > quarantine_at:
        errors.append(f"{where} tag_at: {tag_at:g} is above quarantine_at {quarantine_at:g}; "
                      "set tag_at <= quarantine_at <= reject_at")
    if reject_at > 0 and quarantine_at > reject_at:
        errors.append(f"{where} quarantine_at: {quarantine_at:g} is above reject_at {reject_at:g}; "
                      "set tag_at <= quarantine_at <= reject_at (reject_at = 0 turns rejection by score off)")
    return errors
