"""Who a display name claims to be: a brand ("PayPal Billing") or a protected person
("Dr. Jane Roe"), compared as look-alike skeletons so "PayPaI" and "Jаne R0e" still match.

Names that are ordinary words or first names ("Chase", "Box") count only when the rest of
the display name is generic words ("Chase Online Banking"), never in "Chase Miller".
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

from mailguard.analyzers.lookalike.brands import Brand
from mailguard.analyzers.lookalike.glyphs import GlyphTable

# Titles and credentials dropped before comparing a display name with protected names.
TITLES = frozenset(
    "dr doctor mr mrs ms miss mx prof professor phd psyd md do lcsw lmft lpc lpcc lmhc ma msw np pa rn "
    "jr sr ii iii".split()
)
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
# Display names longer than this are cut before matching: real ones are short, and a
# hostile 60,000-character name must not cost seconds.
MAX_NAME_CHARS = 256


def name_tokens(text: str, glyphs: GlyphTable) -> tuple[str, ...]:
    """Display-name words as look-alike skeletons (case-folded, accents off, Cyrillic and
    digit look-alikes read as the letters they imitate)."""
    text = unicodedata.normalize("NFKC", text[:MAX_NAME_CHARS]).casefold()
    return glyphs.skeletons(_WORDS.findall(text))


@dataclass
class NameMatcher:
    """Brand and person names, compiled once; lookups only read."""

    brands: Iterable[Brand]
    people: Iterable[str]
    generic_words: Iterable[str]
    glyphs: GlyphTable
    _brand_patterns: list[tuple[tuple[str, ...], Brand, bool]] = field(init=False, repr=False)
    # The patterns by their first word, each with its place in _brand_patterns (earlier wins).
    _by_first: dict[str, list[tuple[int, tuple[str, ...], Brand, bool]]] = field(init=False, repr=False)
    _people: list[tuple[str, frozenset[str]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g = self.glyphs
        self._generic = frozenset(g.skeleton(w) for w in self.generic_words)
        self._titles = frozenset(g.skeleton(w) for w in TITLES)
        self._brand_patterns = []
        for brand in self.brands:
            for name in brand.names:
                tokens = name_tokens(name, g)
                if tokens:
                    self._brand_patterns.append((tokens, brand, False))
                if len(tokens) > 1:  # "Pay Pal" also as "paypal"
                    self._brand_patterns.append((("".join(tokens),), brand, False))
            for name in brand.word_names:
                tokens = name_tokens(name, g)
                if tokens:
                    self._brand_patterns.append((tokens, brand, True))
        self._by_first = {}
        for order, (pattern, brand, word_only) in enumerate(self._brand_patterns):
            self._by_first.setdefault(pattern[0], []).append((order, pattern, brand, word_only))
        self._people = []
        for person in self.people:
            needed = frozenset(t for t in name_tokens(person, g) if t not in self._titles)
            if needed:
                self._people.append((person.strip(), needed))

    def brand_in(self, display_name: str) -> Brand | None:
        """The brand a display name claims to be, if any."""
        tokens = name_tokens(display_name, self.glyphs)
        best: tuple[int, Brand] | None = None  # the first pattern in table order that matches
        for i, token in enumerate(tokens):
            for order, pattern, brand, word_only in self._by_first.get(token, ()):
                if best is not None and order >= best[0]:
                    break
                n = len(pattern)
                if tokens[i:i + n] != pattern:
                    continue
                if not word_only or all(t in self._generic for t in tokens[:i] + tokens[i + n:]):
                    best = (order, brand)
                    break
        return best[1] if best is not None else None

    def person_in(self, display_name: str) -> str | None:
        """The protected name (as the operator wrote it) a display name carries, if any:
        every word of it present, titles such as Dr. or PsyD ignored."""
        present = frozenset(t for t in name_tokens(display_name, self.glyphs) if t not in self._titles)
        for person, needed in self._people:
            if needed <= present:
                return person
        return None
