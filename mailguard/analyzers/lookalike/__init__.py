"""Lookalike domains and names: the ``[lookalike]`` analyzer.

``analyzer`` reports the findings; ``domains`` matches hosts against protected domains,
``names`` display names against brands and protected names, ``links`` the links' hosts;
``brands`` reads the brand table, ``glyphs`` the confusable characters, ``suffixes`` the
public suffix list, and ``explain`` words each finding for a person.
"""
from __future__ import annotations

from mailguard.analyzers.lookalike.analyzer import LookalikeAnalyzer

__all__ = ["LookalikeAnalyzer"]
