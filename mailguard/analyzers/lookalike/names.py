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
# A word (a run of letters) with a capital I and small letters ("WaIIet", "Iive"): the I is
# drawn for an l. Tried only where a word begins, each lookahead reading the word once (the
# form with the I and the small letter in either order backtracked over every word of a
# long text, at every position in it).
_CAPITAL_I_WORD = re.compile(r"(?<![^\W\d_])(?=[^\W\d_]*I)(?=[^\W\d_]*[a-z])[^\W\d_]+", re.UNICODE)
# For ASCII text, what _WORDS finds, faster: every byte but a letter or digit made a space,
# then str.split (the Unicode classes of the expression are looked up character by character).
_ASCII_NON_WORD = bytes.maketrans(
    bytes(range(128)), bytes(c if chr(c).isalnum() else 0x20 for c in range(128)))
# Characters a reader never sees (zero-width space and joiners, soft hyphen, bidi controls,
# word joiner, BOM, variation selectors, Hangul fillers): removed before a name is read, or
# each one splits the brand it was put into ("Micro\u200bsoft").
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
GLUED_MIN = 3  # letters on each side of a brand glued to a generic word ("binance" + "mail")
# Display names longer than this are cut before matching: real ones are short, and a
# hostile 60,000-character name must not cost seconds.
MAX_NAME_CHARS = 256


def name_tokens(text: str, glyphs: GlyphTable) -> tuple[str, ...]:
    """Display-name words as look-alike skeletons (case-folded, accents off, Cyrillic and
    digit look-alikes read as the letters they imitate)."""
    text = text[:MAX_NAME_CHARS]
    if not text.isascii() and _INVISIBLE.search(text):  # "Micro\u200bsoft" is "Microsoft" on the screen
        text = _INVISIBLE.sub("", text)
    if text.isascii():  # NFKC leaves ASCII as it is; _WORDS's runs found by translate and split
        return glyphs.skeletons(text.lower().encode("ascii").translate(_ASCII_NON_WORD).decode("ascii").split())
    return glyphs.skeletons(_WORDS.findall(unicodedata.normalize("NFKC", text).casefold()))


def _capital_i_read_as_l(text: str) -> str:
    """``text`` with every capital I read as l in the words (runs of letters) that hold a
    capital I and a small letter a-z: for ASCII text by looking at the words around each I
    (``_CAPITAL_I_WORD`` tries every position, and its Unicode letter class costs a lookup
    per character)."""
    if "I" not in text:
        return text
    if not text.isascii():
        return _CAPITAL_I_WORD.sub(lambda m: m.group(0).replace("I", "l"), text)
    out: list[str] = []
    last = 0
    n = len(text)
    position = text.find("I")
    while position >= 0:
        start = position
        while start > 0 and text[start - 1].isalpha():
            start -= 1
        end = position + 1
        while end < n and text[end].isalpha():
            end += 1
        word = text[start:end]
        if not word.isupper():  # ASCII letters, one of them small
            out.append(text[last:start])
            out.append(word.replace("I", "l"))
            last = end
        position = text.find("I", end)
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


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
    _glue_set: frozenset[str] = field(init=False, repr=False)
    # The first and last GLUED_MIN letters of every glue word and brand first word: a token
    # that neither begins nor ends so cannot be split (one set lookup instead of a loop).
    _glue_heads: frozenset[str] = field(init=False, repr=False)
    _glue_tails: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g = self.glyphs
        self._generic = frozenset(g.skeleton(w) for w in self.generic_words)
        # Longest first, in a fixed order (a frozenset's order changes with hash randomisation).
        self._glue = tuple(sorted((w for w in self._generic if len(w) >= GLUED_MIN), key=lambda w: (-len(w), w)))
        self._glue_set = frozenset(self._glue)
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
        ends = [w for w in (*self._glue, *self._by_first) if len(w) >= GLUED_MIN]
        self._glue_heads = frozenset(w[:GLUED_MIN] for w in ends)
        self._glue_tails = frozenset(w[-GLUED_MIN:] for w in ends)
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
        undisguised = self._undisguised(display_name, tokens)
        return self._brand_of(undisguised) if undisguised != tokens else None

    def _undisguised(self, display_name: str, plain: tuple[str, ...]) -> tuple[str, ...]:
        """The name's words with a capital I read as l in words that have small letters,
        runs of three or more single letters joined ("c o i n b a s e"), and a word that
        ends or begins with a generic word of at least three letters split from it.
        ``plain``: the name's tokens as read, reused when no capital I changes them."""
        cut = display_name[:MAX_NAME_CHARS]
        text = _capital_i_read_as_l(cut)
        tokens = list(plain if text == cut else name_tokens(text, self.glyphs))
        joined: list[str] = tokens
        if list(map(len, tokens)).count(1) >= 3:  # else no run of three single letters
            joined = []
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
        heads, tails = self._glue_heads, self._glue_tails
        for token in joined:
            # Only a word whose first and last letters can begin and end a glue word or a
            # brand's first word can be split (tested here, not per call: most words cannot).
            if len(token) >= 2 * GLUED_MIN and token[:GLUED_MIN] in heads and token[-GLUED_MIN:] in tails:
                out.extend(self._unglued(token))
            else:
                out.append(token)
        return tuple(out)

    def _unglued(self, token: str) -> tuple[str, ...]:
        """``token`` split into a brand's first word and a generic word glued to it, the
        longest generic word winning (then the first in alphabetical order, then a generic
        word at the end before one at the start): each split point is looked up in two
        sets, rather than every generic word tried against the token."""
        if token in self._by_first:  # (the caller has checked its length, first and last letters)
            return (token,)
        best: tuple[int, str, int, tuple[str, str]] | None = None
        glue, brands = self._glue_set, self._by_first
        for cut in range(GLUED_MIN, len(token) - GLUED_MIN + 1):
            head, tail = token[:cut], token[cut:]
            if tail in glue and head in brands:  # "binance" + "mail"
                candidate = (-len(tail), tail, 0, (head, tail))
                if best is None or candidate < best:
                    best = candidate
            if head in glue and tail in brands:  # "mail" + "binance"
                candidate = (-len(head), head, 1, (head, tail))
                if best is None or candidate < best:
                    best = candidate
        return best[3] if best is not None else (token,)

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
