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

from mailguard.analyzers.lookalike.glyphs import GlyphTable

# Format characters (zero-width space/joiners, bidi controls, soft hyphen, word joiner,
# BOM, variation selectors, Hangul fillers) vanish; a reader never sees them.
_INVISIBLE = re.compile(r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Apostrophes join ("don't" -> "dont"), so phrases are written without them; other
# punctuation separates words. "@$|!" stay inside words for now: they stand for letters
# in "p@ssword", "$ecurity", "|ogin" and are dealt with per word.
_JOINERS = "'`\u2018\u2019\u02bc\u00b4"
_PUNCTUATION = (
    "\"#%&()*+,-./:;<=>?[\\]^_{}~\t\r\n\x0b\x0c"
    + "".join(chr(c) for c in range(0xA0, 0xC0) if chr(c) not in _JOINERS)
    + "\u00d7\u00f7"
    + "".join(chr(c) for c in range(0x2010, 0x2060) if chr(c) not in _JOINERS)
    + "".join(chr(c) for c in range(0x3000, 0x3020))
)
_SPLIT_TABLE = str.maketrans({**{c: " " for c in _PUNCTUATION}, **{c: None for c in _JOINERS}})
# Inside a word that still holds other symbols (emoji, arrows): everything that is not a
# letter, digit or one of the letter-like symbols separates.
_OTHER_SYMBOLS = re.compile(r"[^\w@$|!]+|_+")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "|": "l", "!": "i"})
_LEET_ALT = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                           "|": "l", "!": "i"})
_LETTERS = re.compile(r"[a-z]")
_SYMBOLS = frozenset("0134579@$|!")
_WORD_CHARS = re.compile(r"[\w@$|!]")
# Spaced letters: "u r g e n t" is four or more one-character words in a row.
MIN_SPACED = 4
# Japanese and Chinese write no spaces between words: each kana or ideograph is read as a
# word of its own (and never joined as spaced letters), so a phrase rule written
# "アカウント" matches the same characters anywhere in a sentence.
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f])")


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
        """Plain lower-case words separated by single spaces, with a space at each end.

        Written as one pass over whitespace-separated words with ``str.translate`` for
        punctuation (regular-expression passes over the whole text cost several times
        more); the rare words with digits, symbols or other scripts get the slow path."""
        if not text:
            return " "
        if "&" in text and ";" in text:
            text = _ENTITY.sub(_unescape, text)
        cjk = False
        if not text.isascii():
            text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
            if _CJK.search(text):
                text, cjk = _CJK.sub(r" \1 ", text), True
        if "I" in text:
            text = self._capital_i(text)
        words: list[str] = []
        run: list[str] = []  # a run of one-character words: "u r g e n t"
        for token in text.lower().translate(_SPLIT_TABLE).split(" "):
            if not token:
                _flush_run(run, words)  # two spaces end a spaced-out word
                continue
            if not token.isascii():
                token = _fold_word(self, token)
            if not token.isalpha():
                pieces = [_deobfuscate(self, t) for t in (
                    _OTHER_SYMBOLS.split(token) if not token.isalnum() and _needs_split(token) else (token,))]
                token = " ".join(p for p in pieces if p)
                if not token:
                    continue
            if len(token) == 1:
                if cjk and _CJK.match(token):
                    _flush_run(run, words)
                    words.append(token)
                    continue
                run.append(token)
                continue
            _flush_run(run, words)
            words.append(token)
        _flush_run(run, words)
        return " " + " ".join(words) + " "

    def _capital_i(self, text: str) -> str:
        """A capital I drawn for a small l ("PayPaI", "Iimited", "CouId") is read as l
        when that makes a word of the phrase rules and the word as written is not one.
        Only words with an I next to a small letter or digit are looked at."""
        out: list[str] = []
        last = 0
        pos = text.find("I")
        n = len(text)
        while pos != -1:
            before = text[pos - 1] if pos else " "
            after = text[pos + 1] if pos + 1 < n else " "
            if before.islower() or before.isdigit() or after.islower() or after.isdigit():
                start = pos
                while start > 0 and _WORD_CHARS.match(text[start - 1]):
                    start -= 1
                end = pos + 1
                while end < n and _WORD_CHARS.match(text[end]):
                    end += 1
                if start >= last:
                    replaced = self._read_capital_i(text[start:end])
                    if replaced is not None:
                        out.append(text[last:start])
                        out.append(replaced)
                        last = end
                pos = text.find("I", max(end, pos + 1))
            else:
                pos = text.find("I", pos + 1)
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _read_capital_i(self, word: str) -> str | None:
        lower = word.lower()
        if lower in self.vocabulary:
            return None
        candidate = word.replace("I", "l").lower()
        if candidate in self.vocabulary or candidate.translate(_LEET) in self.vocabulary:
            return candidate
        return None

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
    # Only words that are at least two-thirds letters: "acc0unt" and "p4ssw0rd" yes,
    # "a1b2c3" or "x86" (ids, part numbers) no.
    letters = sum(1 for c in word if c.isalpha())
    if letters < 2 or letters * 3 < len(word) * 2:
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


def _flush_run(run: list[str], words: list[str]) -> None:
    """Join a run of one-character words ("u r g e n t" -> "urgent") when it is long
    enough to be a spaced-out word; shorter runs ("a", "i") stay words."""
    if not run:
        return
    if len(run) >= MIN_SPACED:
        words.append("".join(run))
    else:
        words.extend(run)
    run.clear()


def _needs_split(token: str) -> bool:
    """True when the word holds symbols other than the letter-like @$|! (emoji, marks)."""
    return any(not (c.isalnum() or c in "@$|!") for c in token)
