"""Who a display name claims to be: a brand ("PayPal Billing") or a protected person
("Dr. Jane Roe"), compared as look-alike skeletons so "PayPaI" and "Jаne R0e" still match.

Names that are ordinary words or first names ("Chase", "Box") count only when the rest of
the display name is generic words ("Chase Online Banking"), never in "Chase Miller".

A name the plain reading misses is read again undisguised, as a person reads it: a capital
I drawn for a small l ("Trust WaIIet", "Ledger Iive"), letters spaced out ("C o i n b a s
e"), a brand glued to a generic word ("MetaMaskTeam", "BinanceMail"). Only a brand found
that way counts: the second reading never changes what an undisguised name matches.
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
# A capital I inside a word that has small letters ("WaIIet", "Iive"): drawn for an l.
_CAPITAL_I_WORD = re.compile(r"[^\W\d_]*[a-z][^\W\d_]*", re.UNICODE)
GLUED_MIN = 3  # letters on each side of a brand glued to a generic word ("binance" + "mail")
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
    _glue: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g = self.glyphs
        self._generic = frozenset(g.skeleton(w) for w in self.generic_words)
        # Longest first, in a fixed order (a frozenset's order changes with hash randomisation).
        self._glue = tuple(sorted((w for w in self._generic if len(w) >= GLUED_MIN), key=lambda w: (-len(w), w)))
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
        """The brand a display name claims to be, if any: as written, else undisguised
        (see the module's docstring)."""
        tokens = name_tokens(display_name, self.glyphs)
        found = self._brand_of(tokens)
        if found is not None or not tokens:
            return found
        undisguised = self._undisguised(display_name)
        return self._brand_of(undisguised) if undisguised != tokens else None

    def _undisguised(self, display_name: str) -> tuple[str, ...]:
        """The name's words with a capital I read as l in words that have small letters,
        runs of three or more single letters joined ("c o i n b a s e"), and a word that
        ends or begins with a generic word of at least three letters split from it."""
        text = _CAPITAL_I_WORD.sub(lambda m: m.group(0).replace("I", "l"), display_name[:MAX_NAME_CHARS])
        tokens = list(name_tokens(text, self.glyphs))
        joined: list[str] = []
        run: list[str] = []
        for token in tokens + [""]:
            if len(token) == 1:
                run.append(token)
                continue
            joined.extend(["".join(run)] if len(run) >= 3 else run)
            run = []
            if token:
                joined.append(token)
        out: list[str] = []
        for token in joined:
            out.extend(self._unglued(token))
        return tuple(out)

    def _unglued(self, token: str) -> tuple[str, ...]:
        if token in self._by_first:
            return (token,)
        for generic in self._glue:
            if len(token) < len(generic) + GLUED_MIN:
                continue
            if token.endswith(generic) and token[:-len(generic)] in self._by_first:
                return (token[:-len(generic)], generic)
            if token.startswith(generic) and token[len(generic):] in self._by_first:
                return (generic, token[len(generic):])
        return (token,)

    def _brand_of(self, tokens: tuple[str, ...]) -> Brand | None:
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
