"""Placeholder for the lookalike analyzer (its issue builds it)."""
from __future__ import annotations

from typing import Iterable

from mailguard.analyzers.base import Analyzer
from mailguard.message import ParsedMessage
from mailguard.model import Finding


class LookalikeAnalyzer(Analyzer):
    name = "lookalike"
    config_schema = {}

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        return ()
