"""Whole-word term lists (rules/phi/terms.toml) found with their positions in one pass.

The language analyzer's matcher answers "which phrases occur"; proximity needs "where", so
this one reports every occurrence with its offset. One Aho-Corasick automaton over the
lower-cased text (ahocorasick-rs), whole words checked at both ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import ahocorasick_rs

from mailguard.options import ConfigError, read_data_toml

TERM_LISTS = ("diagnosis", "medication", "context")


@dataclass(frozen=True)
class TermHit:
    kind: str  # the list it came from
    term: str
    start: int
    end: int


def load_terms(path: Path) -> dict[str, tuple[str, ...]]:
    data = read_data_toml(path, "PHI term lists")
    out: dict[str, tuple[str, ...]] = {}
    for name in TERM_LISTS:
        values = data.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{path}: '{name}' must be a list of strings")
        out[name] = tuple(" ".join(v.lower().split()) for v in values if v.strip())
    unknown = sorted(set(data) - set(TERM_LISTS))
    if unknown:
        raise ConfigError(f"{path}: unknown list(s) {', '.join(unknown)}; known: {', '.join(TERM_LISTS)}")
    return out


class TermFinder:
    """Built once; ``find`` is read-only (safe from many threads)."""

    def __init__(self, lists: Mapping[str, Sequence[str]], anchors: Mapping[str, Sequence[str]] | None = None) -> None:
        """``anchors``: further word lists reported as kind "anchor:<name>" (one word may
        be in several lists: it is reported once per list)."""
        entries: dict[str, list[tuple[str, str]]] = {}
        for kind, terms in lists.items():
            for term in terms:
                entries.setdefault(term, []).append((kind, term))
        for name, words in (anchors or {}).items():
            for word in words:
                entries.setdefault(word, []).append((f"anchor:{name}", word))
        self._terms = tuple(entries)
        self._values = tuple(tuple(entries[term]) for term in self._terms)
        self._automaton = self._compile(self._terms)

    @staticmethod
    def _compile(terms: Sequence[str]) -> ahocorasick_rs.AhoCorasick | None:
        """Every occurrence of every term, overlapping ones too ("bipolar disorder" and
        "disorder"); offsets in characters of the text."""
        if not terms:
            return None
        return ahocorasick_rs.AhoCorasick(terms, matchkind=ahocorasick_rs.MatchKind.Standard)

    def find(self, text: str) -> Iterator[TermHit]:
        if self._automaton is None or not text:
            return
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters lower-case to two: keep offsets aligned
            lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        size = len(lowered)
        for index, start, after in self._automaton.find_matches_as_indexes(lowered, overlapping=True):
            values = self._values[index]
            term = values[0][1]
            if start > 0 and (lowered[start - 1].isalnum() or lowered[start - 1] == "_"):
                continue
            if after < size and (lowered[after].isalnum() or lowered[after] == "_"):
                continue
            for kind, _ in values:
                yield TermHit(kind, term, start, after)
