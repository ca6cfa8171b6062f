"""Reduce what a person reads to one plain form that phrase rules can be matched against.

Phishers dodge keyword filters by writing words a person still reads the same way:
full-width or mathematical letters (NFKC folds them), zero-width and bidi characters
inside words, Cyrillic letters that look Latin ("pаssword"), digits for letters
("acc0unt", "p4ssw0rd"), symbols for letters ("P@ssword", "$ecurity"), spaced letters
("u r g e n t", "U-R-G-E-N-T") and HTML entities left in plain text. ``normalise`` undoes
all of these and returns lower-case words separated by single spaces, with a space at
each end, so a phrase " verify your account " matches on whole words only.

Accents are removed too ("contraseña" -> "contrasena"), so Spanish and other phrase rules
are written without them.
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from mailguard.analyzers.lookalike_glyphs import GlyphTable

# Format characters (Unicode category Cf: zero-width space/joiners, bidi controls, soft
# hyphen, word joiner, BOM) and combining marks vanish; a reader never sees them.
_INVISIBLE = re.compile(r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Apostrophes join ("don't" -> "dont"), so phrases are written without them.
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc\u0060\u00b4]")
# Anything that is not a letter, digit or one of the symbols used for letters separates
# words. Spaces inside words are handled by _SPACED before this.
_SEPARATORS = re.compile(r"[^\w@$|!]+|_+")
# "u r g e n t", "u-r-g-e-n-t", "u.r.g.e.n.t": four or more single characters, each
# followed by the same one separator. Words in spaced text are separated by more space.
_SPACED = re.compile(r"(?<![^\W_])(?:[^\W_]([ .\-*_])){3,}[^\W_](?![^\W_])")
# A word that mixes letters with digits or symbols standing for letters.
_TOKEN = re.compile(r"\S+")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "|": "l", "!": "i"})
_LEET_ALT = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                           "|": "l", "!": "i"})
# Words where a capital I sits next to small letters or digits: "PayPaI", "Iimited".
_CAPITAL_I = re.compile(r"[\w@$|!]*(?:[a-z0-9]I|I[a-z0-9])[\w@$|!]*")
_LETTERS = re.compile(r"[a-z]")
_SYMBOLS = frozenset("0134579@$|!")


@dataclass(frozen=True)
class Normaliser:
    """Built once per analyzer: the confusables table and the vocabulary of words that
    appear in phrase rules (to choose "l" or "i" for a "1", for instance)."""

    glyphs: GlyphTable
    vocabulary: frozenset[str] = frozenset()

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def normalise(self, text: str) -> str:
        """Plain lower-case words separated by single spaces, with a space at each end."""
        if not text:
            return " "
        if "&" in text:
            text = _ENTITY.sub(_unescape, text)
        text = unicodedata.normalize("NFKC", text)
        text = _INVISIBLE.sub("", text)
        text = _APOSTROPHES.sub("", text)
        if not text.isascii():
            text = "".join(_fold_word(self, w) if not w.isascii() else w for w in re.split(r"(\s+)", text))
        if "I" in text:
            text = _CAPITAL_I.sub(self._capital_i, text)
        text = text.lower()
        text = _SPACED.sub(_join_spaced, text)
        text = _SEPARATORS.sub(" ", text)
        words = [self._deobfuscate(w) if not w.isalpha() else w for w in text.split()]
        return " " + " ".join(w for w in words if w) + " "

    def _capital_i(self, match: re.Match[str]) -> str:
        """A capital I drawn for a small l ("PayPaI", "Iimited", "CouId") is read as l
        when that makes a word of the phrase rules and the word as written is not one."""
        word = match.group(0)
        lower = word.lower()
        if lower in self.vocabulary:
            return word
        candidate = word.replace("I", "l").lower()
        if candidate in self.vocabulary or candidate.translate(_LEET) in self.vocabulary:
            return candidate
        return word

    def _deobfuscate(self, word: str) -> str:
        """Digits and symbols inside a word read as letters ("acc0unt", "p@ssword"); a
        plain number or a symbol on its own is left alone (and dropped if only symbols)."""
        return _deobfuscate(self, word)


@lru_cache(maxsize=65536)
def _deobfuscate(norm: Normaliser, word: str) -> str:
    if not _LETTERS.search(word):
        stripped = word.strip("@$|!")
        return stripped if stripped.isalnum() else ""
    if not any(c in _SYMBOLS for c in word):
        return word
    # Only words that are mostly letters: "acc0unt" yes, "2fa" or "a1b2c3" (ids) no.
    letters = sum(1 for c in word if c.isalpha())
    if letters < 2 or letters < len(word) / 2:
        return word.strip("@$|!")
    first = word.translate(_LEET)
    if first in norm.vocabulary:
        return first
    second = word.translate(_LEET_ALT)
    if second in norm.vocabulary:
        return second
    trimmed = word.strip("@$|!")
    if trimmed != word:
        return _deobfuscate(norm, trimmed) if trimmed else ""
    return first


@lru_cache(maxsize=65536)
def _fold_word(norm: Normaliser, word: str) -> str:
    """Accents removed and look-alike letters of other scripts read as Latin."""
    return "".join(_fold_char(norm, ch) for ch in word)


def _fold_char(norm: Normaliser, ch: str) -> str:
    if ch.isascii() or not ch.isalpha():
        return ch
    folded = norm.glyphs.char_to_ascii(ch)
    return folded if folded.isascii() else ch


def _unescape(match: re.Match[str]) -> str:
    return html.unescape(match.group(0))


def _join_spaced(match: re.Match[str]) -> str:
    return match.group(0).replace(match.group(1), "")
