"""The one place where findings become an action (as rspamd's actions and
SpamAssassin's required_score): scores are summed, operator overrides applied, the total
mapped to an action by thresholds, and forced minimum actions applied on top."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mailguard.options import Option
from mailguard.model import Action, AnalyzerError, Finding

ON_ERROR_CHOICES = ("tempfail", "accept", "tag", "quarantine", "reject")

CONFIG_SCHEMA: Mapping[str, Option] = {
    "tag_at": Option(
        4.5, "float",
        "Total score from which a message is tagged (headers, subject prefix). 4.5 was set with all analyzers "
        "on the labelled corpus: every analyzer's evidence-only rules (score 4 or less) stay below it alone.",
    ),
    "quarantine_at": Option(10.0, "float", "Total score from which a message is held in quarantine."),
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
    "scores": Option({}, "dict[str,float]", "Score overrides by rule id, e.g. { LANGUAGE_URGENCY = 1.0 }."),
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


class Policy:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.tag_at = float(settings["tag_at"])
        self.quarantine_at = float(settings["quarantine_at"])
        self.reject_at = float(settings["reject_at"])
        self.on_error = str(settings["on_error"])
        self.score_overrides = dict(settings["scores"])
        self.action_overrides: dict[str, Action | None] = {}
        for rule, name in settings["actions"].items():
            self.action_overrides[rule] = None if name.lower() == "none" else Action.parse(name)
        self.subject_tag = str(settings["subject_tag"])
        self.banner = bool(settings["banner"])

    def adjust(self, finding: Finding) -> Finding:
        """Apply the operator's score and forced-action overrides to one finding."""
        score = self.score_overrides.get(finding.rule, finding.score)
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
