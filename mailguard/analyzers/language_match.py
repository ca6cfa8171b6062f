"""Find many phrases in one pass.

Phrases are already-normalised word sequences with a space at each end (" verify your
account "), and the text is normalised the same way, so a plain substring search finds
whole-word matches. Every phrase rule is compiled once into one automaton:
pyahocorasick (Aho-Corasick, linear in the text, reports overlapping matches) is the
default; the stdlib ``re`` engine (one alternation) is kept for environments without it and
for the comparison in bench/language.py.
"""
from __future__ import annotations

import re
from typing import Protocol, Sequence

try:  # pragma: no cover - exercised by whichever is installed
    import ahocorasick
except ImportError:  # pragma: no cover
    ahocorasick = None

ENGINES = ("auto", "ahocorasick", "re")


class PhraseMatcher(Protocol):
    def find(self, text: str) -> frozenset[int]:
        """Indices of the phrases that occur in ``text``."""


class AhoCorasickMatcher:
    """All phrases in one Aho-Corasick automaton (read-only after build: thread-safe)."""

    def __init__(self, phrases: Sequence[str]) -> None:
        owners: dict[str, list[int]] = {}
        for index, phrase in enumerate(phrases):
            owners.setdefault(phrase, []).append(index)
        self._automaton = ahocorasick.Automaton()
        for phrase, ids in owners.items():
            self._automaton.add_word(phrase, tuple(ids))
        if owners:
            self._automaton.make_automaton()
        self._empty = not owners

    def find(self, text: str) -> frozenset[int]:
        if self._empty:
            return frozenset()
        found: set[int] = set()
        for _end, ids in self._automaton.iter(text):
            found.update(ids)
        return frozenset(found)


class RegexMatcher:
    """All phrases in one stdlib regular expression. A lookahead at every word start
    finds phrases that overlap; alternatives sharing a start are tried longest first,
    each start position contributes its longest phrase plus any shorter phrases that are
    also complete words of it (found by a second pass over the match)."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self._ids: dict[str, list[int]] = {}
        for index, phrase in enumerate(phrases):
            self._ids.setdefault(phrase.strip(), []).append(index)
        words = sorted(self._ids, key=len, reverse=True)
        body = "|".join(re.escape(w) for w in words)
        self._pattern = re.compile(f" (?=({body}) )") if words else None

    def find(self, text: str) -> frozenset[int]:
        if self._pattern is None:
            return frozenset()
        found: set[int] = set()
        for match in self._pattern.finditer(text):
            hit = match.group(1)
            found.update(self._ids[hit])
            # Shorter phrases that are a prefix of this one start here too.
            words = hit.split(" ")
            for n in range(1, len(words)):
                ids = self._ids.get(" ".join(words[:n]))
                if ids:
                    found.update(ids)
        return frozenset(found)


def build_matcher(phrases: Sequence[str], engine: str = "auto") -> PhraseMatcher:
    """The fastest available engine unless one is asked for."""
    if engine not in ENGINES:
        raise ValueError(f"unknown phrase engine {engine!r}")
    if engine == "re" or (engine == "auto" and ahocorasick is None):
        return RegexMatcher(phrases)
    if ahocorasick is None:
        raise RuntimeError("the ahocorasick engine needs the pyahocorasick package")
    return AhoCorasickMatcher(phrases)
