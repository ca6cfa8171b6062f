"""Find many phrases in one pass.

Phrases are already-normalised word sequences with a space at each end (" verify your
account "), and the text is normalised the same way, so a plain substring search finds
whole-word matches. Every phrase rule is compiled once into one automaton:
ahocorasick-rs (Aho-Corasick in Rust, linear in the text, reports overlapping matches) is
the default. Without it a pure-Python word trie is used; the stdlib ``re`` engine (one
alternation) is kept for the comparison in bench/language.py, where it is thousands of
times slower.
"""
from __future__ import annotations

import re
from typing import Any, Protocol, Sequence

try:  # pragma: no cover - exercised by whichever is installed
    import ahocorasick_rs
except ImportError:  # pragma: no cover
    ahocorasick_rs = None

ENGINES = ("auto", "ahocorasick", "python", "re")


class PhraseMatcher(Protocol):
    def find(self, text: str) -> frozenset[int]:
        """Indices of the phrases that occur in ``text``."""


WILDCARD = "*"


def _segments(phrase: str) -> tuple[str, ...]:
    """" dear * customer " -> (" dear ", " customer "): literal parts around one-word
    wildcards, each with its spaces. A phrase without a wildcard is one segment."""
    words = phrase.split()
    parts: list[list[str]] = [[]]
    for word in words:
        if word == WILDCARD:
            parts.append([])
        else:
            parts[-1].append(word)
    return tuple(" " + " ".join(p) + " " for p in parts)


def _is_spaced(phrase: str) -> bool:
    """Whether ``phrase`` is already as ``_segments`` writes a part: words between single
    spaces, a space at each end (what the normaliser makes; checked without splitting:
    every white-space character but the space is unprintable)."""
    return phrase[:1] == " " and phrase[-1:] == " " and len(phrase) > 2 and "  " not in phrase \
        and phrase.isprintable()


class AhoCorasickMatcher:
    """All phrases in one Aho-Corasick automaton (read-only after build: thread-safe).

    A phrase with one-word wildcards ("dear * customer") is matched as its literal parts,
    then checked that each part starts exactly one word after the previous one ends.
    Parts are shared between phrases (" your " begins many), so positions are kept per
    part and a phrase is only checked when its last part occurs."""

    def __init__(self, phrases: Sequence[str]) -> None:
        plain: dict[str, list[int]] = {}
        segment_ids: dict[str, int] = {}
        chains_by_last: dict[int, list[tuple[int, tuple[int, ...], tuple[int, ...], frozenset[int]]]] = {}
        for index, phrase in enumerate(phrases):
            if WILDCARD not in phrase and _is_spaced(phrase):  # its one segment is itself (nearly every phrase)
                plain.setdefault(phrase, []).append(index)
                continue
            segments = _segments(phrase)
            if len(segments) == 1:
                plain.setdefault(segments[0], []).append(index)
                continue
            ids = tuple(segment_ids.setdefault(seg, len(segment_ids)) for seg in segments)
            lengths = tuple(len(seg.encode("utf-8")) for seg in segments)  # the text is searched as UTF-8
            chains_by_last.setdefault(ids[-1], []).append((index, ids, lengths, frozenset(ids)))
        self._chains_by_last = chains_by_last
        self._keys = tuple(sorted(plain.keys() | segment_ids.keys()))
        # per key: the phrases it completes, and its id as a part of wildcard phrases (-1: none)
        self._values = tuple((tuple(plain.get(key, ())), segment_ids.get(key, -1)) for key in self._keys)
        self._automaton = _compile(self._keys)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (the language build cache) without the compiled automaton, which cannot
        be: it is compiled again from the keys on loading (~0.1 s for 35,000 keys)."""
        return {**self.__dict__, "_automaton": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._automaton = _compile(self._keys)

    def find(self, text: str) -> frozenset[int]:
        if self._automaton is None:
            return frozenset()
        found: set[int] = set()
        starts: dict[int, set[int]] = {}
        values = self._values
        # As UTF-8 bytes: for a str the library maps every byte offset back to a character
        # offset, which costs more than the encoding (a copy, for ASCII text).
        encoded = text.encode("utf-8", "surrogatepass")
        for key, start, _ in self._automaton.find_matches_as_indexes(encoded, overlapping=True):
            ids, segment = values[key]
            if ids:
                found.update(ids)
            if segment >= 0:
                at = starts.get(segment)  # (setdefault would make a set for every match)
                if at is None:
                    starts[segment] = {start}
                else:
                    at.add(start)
        if not starts:
            return frozenset(found)
        present = starts.keys()  # a handful of parts: looked up, not intersected with every chain's
        chains = self._chains_by_last
        for last in starts:
            for index, ids, lengths, parts in chains.get(last, ()):
                if index not in found and parts <= present and _chained(encoded, ids, lengths, starts):
                    found.add(index)
        return frozenset(found)


def _compile(keys: Sequence[str]) -> Any:
    """One automaton reporting every occurrence of every key, overlapping ones too. The
    contiguous NFA: compact and built in about 0.1 s; the DFA walks a 10 KB text in about
    60 % of the instructions but takes 0.7 s to build, at every start (it cannot be
    pickled into the build cache), which a cold ``mailguard check`` cannot afford."""
    if not keys:
        return None
    return ahocorasick_rs.BytesAhoCorasick(
        [key.encode("utf-8", "surrogatepass") for key in keys], matchkind=ahocorasick_rs.MatchKind.Standard,
        implementation=ahocorasick_rs.Implementation.ContiguousNFA)


def _chained(text: bytes, ids: tuple[int, ...], lengths: tuple[int, ...], starts: dict[int, set[int]]) -> bool:
    """Whether the parts occur in order, each one word after the previous one (offsets
    and lengths in bytes of the UTF-8 text)."""
    for begin in starts[ids[0]]:
        position = begin
        for n in range(len(ids) - 1):
            # The wildcard word starts right after this part; the next part begins at the
            # space that ends it.
            position = text.find(b" ", position + lengths[n])
            if position < 0 or position not in starts[ids[n + 1]]:
                break
        else:
            return True
    return False


class RegexMatcher:
    """All phrases in one stdlib regular expression. A lookahead at every word start
    finds phrases that overlap; alternatives sharing a start are tried longest first,
    each start position contributes its longest phrase plus any shorter phrases that are
    also complete words of it (found by a second pass over the match)."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self._ids: dict[str, list[int]] = {}
        self._wild: list[tuple[re.Pattern[str], int]] = []
        for index, phrase in enumerate(phrases):
            if WILDCARD in phrase.split():
                body = " ".join("[^ ]+" if w == WILDCARD else re.escape(w) for w in phrase.split())
                self._wild.append((re.compile(f" {body} "), index))
            else:
                self._ids.setdefault(phrase.strip(), []).append(index)
        words = sorted(self._ids, key=len, reverse=True)
        body = "|".join(re.escape(w) for w in words)
        self._pattern = re.compile(f" (?=({body}) )") if words else None

    def find(self, text: str) -> frozenset[int]:
        found: set[int] = {index for pattern, index in self._wild if pattern.search(text)}
        if self._pattern is None:
            return frozenset(found)
        for match in self._pattern.finditer(text):
            hit = match.group(1)
            found.update(self._ids.get(hit, ()))
            # Shorter phrases that are a prefix of this one start here too.
            words = hit.split(" ")
            for n in range(1, len(words)):
                ids = self._ids.get(" ".join(words[:n]))
                if ids:
                    found.update(ids)
        return frozenset(found)


class WordTrieMatcher:
    """Pure-Python fallback: the phrases as a trie of words, walked from every word of
    the text. Slower than Aho-Corasick but thousands of times faster than one big regular
    expression, so mailguard stays usable without ahocorasick-rs."""

    _END = ""  # key under which a trie node lists the phrases that end there

    def __init__(self, phrases: Sequence[str]) -> None:
        self._root: dict[str, Any] = {}
        for index, phrase in enumerate(phrases):
            node = self._root
            for word in phrase.split():
                node = node.setdefault(word, {})
            node.setdefault(self._END, []).append(index)

    def find(self, text: str) -> frozenset[int]:
        words = text.split()
        found: set[int] = set()
        root = self._root
        for start in range(len(words)):
            if words[start] in root:
                self._walk(root[words[start]], words, start + 1, found)
        return frozenset(found)

    def _walk(self, node: dict[str, Any], words: list[str], position: int, found: set[int]) -> None:
        ids = node.get(self._END)
        if ids:
            found.update(ids)
        if position >= len(words):
            return
        child = node.get(words[position])
        if child is not None:
            self._walk(child, words, position + 1, found)
        wild = node.get(WILDCARD)
        if wild is not None:
            self._walk(wild, words, position + 1, found)


def build_matcher(phrases: Sequence[str], engine: str = "auto") -> PhraseMatcher:
    """The fastest available engine unless one is asked for."""
    if engine not in ENGINES:
        raise ValueError(f"unknown phrase engine {engine!r}")
    if engine == "re":
        return RegexMatcher(phrases)
    if engine == "python" or (engine == "auto" and ahocorasick_rs is None):
        return WordTrieMatcher(phrases)
    if ahocorasick_rs is None:
        raise RuntimeError("the ahocorasick engine needs the ahocorasick-rs package")
    return AhoCorasickMatcher(phrases)
