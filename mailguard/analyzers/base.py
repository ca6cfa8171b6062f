"""The analyzer plug-in protocol.

An analyzer looks at one ``ParsedMessage`` and reports ``Finding``s; it never decides the
action (the policy does) and never re-parses MIME. It is built once per ``Scanner`` (compile
patterns and load data in ``__init__``) and then called from many threads at once, so
``analyze`` must not change shared state except through thread-safe caches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

from mailguard.options import Option

if TYPE_CHECKING:  # the loader imports the analyzers, never the other way round
    from mailguard.config import Config
from mailguard.message import ParsedMessage
from mailguard.model import Action, Finding

COMMON_OPTIONS: Mapping[str, Option] = {
    "enabled": Option(True, "bool", "Run this analyzer."),
}


@dataclass(frozen=True)
class AnalyzerContext:
    """What an analyzer may know besides its own section: the whole configuration (the
    lookalike analyzer also protects the relay's own domains, for instance)."""

    config: Config


class Analyzer:
    """Base class for analyzers. Subclasses set ``name`` and ``config_schema`` and
    implement ``analyze``."""

    name: ClassVar[str] = ""
    config_schema: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def full_schema(cls) -> dict[str, Option]:
        return {**COMMON_OPTIONS, **cls.config_schema}

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        raise NotImplementedError

    def finding(
        self,
        rule: str,
        score: float,
        summary: str,
        details: Mapping[str, Any] | None = None,
        min_action: Action | None = None,
    ) -> Finding:
        return Finding(self.name, rule, float(score), summary, dict(details or {}), min_action)
