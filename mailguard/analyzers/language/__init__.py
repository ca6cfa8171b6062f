"""The language of the request: the ``[language]`` analyzer.

``analyzer`` reports the findings; ``rules`` reads the phrase lists in ``rules/language/``,
``text`` normalises what a person reads, and ``match`` finds every phrase in one pass.
"""
from __future__ import annotations

from mailguard.analyzers.language.analyzer import LanguageAnalyzer

__all__ = ["LanguageAnalyzer"]
