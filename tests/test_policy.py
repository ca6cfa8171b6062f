"""The policy: scores to actions, forced actions, operator overrides, analyzer failures."""
from __future__ import annotations

from typing import Iterable

import mailguard
from mailguard import Action, Config, Finding
from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.message import ParsedMessage

RAW = b"From: a@example.com\nSubject: hi\nMessage-ID: <m1@example.com>\n\nhello\n"


class Fixed(Analyzer):
    """Reports the findings it was given: lets a test pick the evidence exactly."""

    name = "fixed"

    def __init__(self, findings: Iterable[Finding], config: Config) -> None:
        super().__init__({}, AnalyzerContext(config))
        self.findings = tuple(findings)

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        return self.findings


class Broken(Analyzer):
    name = "broken"

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        raise RuntimeError("bug in analyzer")


def only_policy(policy: dict | None = None) -> Config:
    """A configuration where the built-in analyzers are off, so the test's own findings
    are the only evidence."""
    from mailguard.analyzers import analyzer_classes

    sections: dict = {name: {"enabled": False} for name in analyzer_classes()}
    sections["policy"] = policy or {}
    return Config.from_dict(sections)


def scan(findings: Iterable[Finding], policy: dict | None = None) -> mailguard.Verdict:
    config = only_policy(policy)
    return mailguard.Scanner(config, extra_analyzers=[Fixed(findings, config)]).scan(RAW)


def f(rule: str, score: float, min_action: Action | None = None) -> Finding:
    return Finding("fixed", rule, score, f"{rule} fired", {}, min_action)


def test_thresholds() -> None:
    assert scan([f("A", 4.4)]).action == Action.ACCEPT
    assert scan([f("A", 2.5), f("B", 2)]).action == Action.TAG
    assert scan([f("A", 10)]).action == Action.QUARANTINE
    assert scan([f("A", 50)]).action == Action.QUARANTINE  # reject by score is off by default
    assert scan([f("A", 50)], {"reject_at": 30}).action == Action.REJECT


def test_forced_minimum_action_whatever_the_score() -> None:
    verdict = scan([f("MALWARE", 0.5, Action.QUARANTINE)])
    assert verdict.action == Action.QUARANTINE and verdict.score == 0.5


def test_operator_overrides_score_and_forced_action() -> None:
    verdict = scan([f("NOISY", 6)], {"scores": {"NOISY": 0.5}})  # 6 would tag
    assert verdict.action == Action.ACCEPT and verdict.findings[0].score == 0.5
    assert scan([f("MALWARE", 1, Action.QUARANTINE)], {"actions": {"MALWARE": "reject"}}).action == Action.REJECT
    assert scan([f("MALWARE", 1, Action.QUARANTINE)], {"actions": {"MALWARE": "none"}}).action == Action.ACCEPT


def test_analyzer_failure_tempfails_by_default_and_is_reported() -> None:
    config = Config.default()
    verdict = mailguard.Scanner(config, extra_analyzers=[Broken({}, AnalyzerContext(config))]).scan(RAW)
    assert verdict.tempfail
    assert verdict.errors[0].analyzer == "broken" and "bug in analyzer" in verdict.errors[0].error
    assert verdict.to_dict()["errors"] == [{"analyzer": "broken", "error": "RuntimeError: bug in analyzer"}]


def test_analyzer_failure_with_on_error_quarantine() -> None:
    config = Config.from_dict({"policy": {"on_error": "quarantine"}})
    verdict = mailguard.Scanner(config, extra_analyzers=[Broken({}, AnalyzerContext(config))]).scan(RAW)
    assert not verdict.tempfail and verdict.action == Action.QUARANTINE


def test_verdict_json_has_every_design_field() -> None:
    verdict = scan([f("A", 6)])
    data = verdict.to_dict()
    assert {"message_id", "action", "score", "findings", "errors", "elapsed_ms"} <= set(data)
    assert data["message_id"] == "<m1@example.com>" and data["action"] == "tag"
    assert set(data["findings"][0]) >= {"analyzer", "rule", "score", "summary", "details"}


def test_scanner_is_shared_between_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    scanner = mailguard.Scanner()
    raws = [RAW.replace(b"hello", b"hello %d" % i) for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(scanner.scan, raws))
    assert len(verdicts) == 200 and all(v.message_id == "<m1@example.com>" for v in verdicts)
