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
_INVISIBLE_CHARS = (r"\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                    r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0")
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Apostrophes join ("don't" -> "dont"), so phrases are written without them; other
# punctuation separates words. The elided articles and pronouns of French and Italian
# ("l'accès", "d'identité", "qu'il", "dell'account") are words of their own: joined, they
# would hide the word after them from every phrase ("lacces"), so they are split first
# (``_ELISION``). "@$|!" stay inside words for now: they stand for letters in "p@ssword",
# "$ecurity", "|ogin" and are dealt with per word.
_JOINERS = "'`\u2018\u2019\u02bc\u00b4"
_PUNCTUATION = (
    "\"#%&()*+,-./:;<=>?[\\]^_{}~\t\r\n\x0b\x0c"
    + "".join(chr(c) for c in range(0xA0, 0xC0) if chr(c) not in _JOINERS)
    + "\u00d7\u00f7"
    + "".join(chr(c) for c in range(0x2010, 0x2060) if chr(c) not in _JOINERS)
    + "".join(chr(c) for c in range(0x3000, 0x3020))
)
_ELISION = re.compile(r"(?<![\w'`\u2018\u2019\u02bc\u00b4])(c|d|j|l|m|n|s|t|qu|jusqu|lorsqu|puisqu|dell|dall|nell|sull|all|un)"
                      r"['`\u2018\u2019\u02bc\u00b4](?=\w)", re.IGNORECASE)
_LONGEST_ELIDED = 6  # letters of the longest elided word ("lorsqu", "puisqu"), see _split_elisions
_SPLIT_TABLE = str.maketrans({**{c: " " for c in _PUNCTUATION}, **{c: None for c in _JOINERS}})
# The same for ASCII text as a bytes table: bytes.translate is many times faster than
# str.translate, which looks every character up in a dict.
_SPLIT_BYTES = bytes.maketrans(
    bytes(ord(c) for c in _PUNCTUATION if ord(c) < 128), b" " * sum(1 for c in _PUNCTUATION if ord(c) < 128)
)
# _SPLIT_BYTES with A-Z made a-z as well, for ASCII text (str.lower would be one more pass).
_SPLIT_LOWER_BYTES = bytes(
    c + 32 if 0x41 <= c <= 0x5A else _SPLIT_BYTES[c] for c in range(256)
)
_JOINER_BYTES = bytes(ord(c) for c in _JOINERS if ord(c) < 128)
# Inside a word that still holds other symbols (emoji, arrows): everything that is not a
# letter, digit or one of the letter-like symbols separates.
_OTHER_SYMBOLS = re.compile(r"[^\w@$|!]+|_+")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "|": "l", "!": "i"})
_LEET_ALT = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                           "|": "l", "!": "i"})
_LETTERS = re.compile(r"[a-z]")
_SYMBOLS = frozenset("0134579@$|!")
_WORD_CHARS = re.compile(r"[\w@$|!]")  # the characters of a word for _capital_i, which tests them with str methods
# Spaced letters: "u r g e n t" is four or more one-character words in a row.
MIN_SPACED = 4
# Japanese and Chinese write no spaces between words: each kana or ideograph is read as a
# word of its own (and never joined as spaced letters), so a phrase rule written
# "アカウント" matches the same characters anywhere in a sentence.
_CJK_CHARS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK = re.compile(f"([{_CJK_CHARS}])")
# A character that makes a word worth a closer look: anything but a-z and the space.
_ODD_CHAR = re.compile(r"[^a-z ]")
# ASCII text with every odd character marked "#" (a-z and the space kept): their places
# are then found by one str.find loop over one character, not one loop per character.
_MARK_ODD = bytes.maketrans(bytes(range(256)), bytes(c if c == 0x20 or 0x61 <= c <= 0x7A else 0x23 for c in range(256)))
# What _SPLIT_TABLE does, as two passes for text that is not all ASCII.
_JOINER_CHARS = re.compile("[" + "".join(re.escape(c) for c in _JOINERS) + "]")
_SEPARATORS = re.compile("[" + "".join(re.escape(c) for c in _PUNCTUATION) + "]")
# One character class (an alternation of the two would be tried at every position).
_INVISIBLE_OR_CJK = re.compile(f"[{_INVISIBLE_CHARS}{_CJK_CHARS}]")
# Four or more one-character words in a row, each one space from the next (in text
# that begins and ends with a space); the fixed-length pattern finds them faster.
_FOUR_SINGLE = re.compile(" " + "[^ ] " * MIN_SPACED)
_SPACED = re.compile(r" [^ ](?: [^ ]){%d,}(?= )" % (MIN_SPACED - 1))
# Stands for a space inside one word while spaced-out letters are joined ("\x00" never
# survives ``_word``: it is neither a letter nor one of the letter-like symbols).
_INNER = "\x00"


def _odd_positions(padded: str) -> list[int]:
    """Where ``padded`` holds something other than a-z and spaces, in order. In ASCII text
    ``bytes.translate`` and ``bytes.find`` do it faster than a regular expression scan."""
    if not padded.isascii():
        return [m.start() for m in _ODD_CHAR.finditer(padded)]
    marked = padded.encode("ascii").translate(_MARK_ODD)
    positions: list[int] = []
    position = marked.find(b"#")
    while position >= 0:
        positions.append(position)
        position = marked.find(b"#", position + 1)
    return positions


def _split_elisions(text: str) -> str:
    """``_ELISION.sub(r"\\1 ", text)``: the apostrophe after an elided article or pronoun
    becomes a space. Tried at every position of the text (its lookbehind and
    case-insensitive alternatives at each one), the pattern cost more than the rest of
    ``normalise``; here it is tried once per apostrophe, where the only match that can
    end at it would begin: at the start of the run of word characters before it (a match
    begins where no word character or apostrophe precedes it). So the matches cannot
    overlap and are the ones ``re.sub`` finds."""
    positions: list[int] = []
    for char in _JOINERS:  # str.find is faster than a regular expression scan for them
        position = text.find(char)
        while position >= 0:
            positions.append(position)
            position = text.find(char, position + 1)
    positions.sort()
    out: list[str] = []
    last = 0
    for position in positions:
        start = position
        while start > 0 and position - start <= _LONGEST_ELIDED and _is_word_char(text[start - 1]):
            start -= 1
        if start == position or position - start > _LONGEST_ELIDED:
            continue
        match = _ELISION.match(text, start)
        if match is not None and match.end() == position + 1:
            out.append(text[last:position])
            out.append(" ")
            last = position + 1
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _is_word_char(char: str) -> bool:
    """What ``\\w`` matches (checked over every code point), without a regex call."""
    return char.isalnum() or char == "_"


def _join_spaced(match: re.Match[str]) -> str:
    return " " + match.group(0).replace(" ", "")


@dataclass(frozen=True)
class Normaliser:
    """Built once per analyzer: the confusables table and the vocabulary of words that
    appear in phrase rules (to choose "l" or "i" for a "1", for instance)."""

    glyphs: GlyphTable
    vocabulary: frozenset[str] = frozenset()

    # Identity, as before, but object's own C slots: the lru caches below hash the
    # normaliser with every word they look up, and a Python __hash__ cost more than the lookup.
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def normalise(self, text: str) -> str:
        """Plain lower-case words separated by single spaces, with a space at each end.

        Runs in C for all but a few words: ``str.translate`` turns punctuation into spaces,
        the words made only of letters a-z (nearly all of them) are left as they are, and
        only the rare words with digits, symbols or other scripts are looked at one by one
        (``_odd_words``); spaced-out letters are joined by one regular expression
        (``_join_spaced``). A per-word Python loop cost several times more."""
        if not text:
            return " "
        if "&" in text and ";" in text:
            text = _ENTITY.sub(_unescape, text)
        cjk = False
        if not text.isascii():
            if "\xa0" in text:  # what NFKC makes of it, without NFKC's pass over the whole text
                text = text.replace("\xa0", " ")
            if not unicodedata.is_normalized("NFKC", text):
                text = unicodedata.normalize("NFKC", text)
            if "\u202e" in text:  # before the controls vanish: they say in which order it is read
                text = _unoverride(text)
            if _INVISIBLE_OR_CJK.search(text):
                text = _INVISIBLE.sub("", text)
                if _CJK.search(text):
                    text, cjk = _CJK.sub(r" \1 ", text), True
        if "I" in text:
            text = self._capital_i(text)
        if "'" in text or "\u2019" in text:
            text = _split_elisions(text)
        if text.isascii():  # lower-cased by the same table (without a joiner to delete, translate is faster)
            joiners = "'" in text or "`" in text
            split = text.encode("ascii").translate(_SPLIT_LOWER_BYTES, _JOINER_BYTES if joiners else b"").decode("ascii")
        else:  # str.translate looks every character up one by one once one is not ASCII
            lower = _JOINER_CHARS.sub("", text.lower())  # curly apostrophes, often all there is
            split = (lower.encode("ascii").translate(_SPLIT_BYTES, _JOINER_BYTES).decode("ascii") if lower.isascii()
                     else _SEPARATORS.sub(" ", lower))
        if cjk:
            return self._normalise_words(split)
        padded = " " + split + " "
        odd = _odd_positions(padded)
        if odd:
            padded = self._odd_words(padded, odd)
        if _FOUR_SINGLE.search(padded):
            padded = _SPACED.sub(_join_spaced, padded)
        while "  " in padded:  # runs of spaces made one (str.replace beats a regular expression's scan)
            padded = padded.replace("  ", " ")
        if _INNER in padded:
            padded = padded.replace(_INNER, " ")
        return padded if padded != " " else "  "

    def _odd_words(self, padded: str, odd: list[int]) -> str:
        """Each word holding something other than a-z (at the positions ``odd``) read as
        ``_word`` reads it. A word that reads as nothing (a lone symbol) goes with the space
        after it, so the words around it stay neighbours ("u @ r g e n t" is still
        spaced-out letters); a word that reads as several (split at an emoji) keeps them
        together as one word. ``padded`` begins and ends with a space."""
        out: list[str] = []
        last = 0
        end = 0
        for position in odd:
            if position < end:
                continue  # in the word just read
            start = padded.rfind(" ", 0, position) + 1
            end = padded.find(" ", position)
            word = padded[start:end]
            if word.isdigit() and word.isascii():
                continue  # a number stays as it is
            word = self._word(word)
            out.append(padded[last:start])
            if word:
                out.append(word.replace(" ", _INNER))
                last = end
            else:
                last = end + 1
        out.append(padded[last:])
        return "".join(out)

    def _word(self, token: str) -> str:
        """One word read: look-alike letters folded, digits and symbols read as letters,
        other symbols splitting it (into words joined by spaces); "" if nothing is left."""
        return _read_word(self, token)

    def _normalise_words(self, split: str) -> str:
        """The word-by-word form, for text with Japanese or Chinese characters (each is a
        word of its own and never joins spaced-out letters)."""
        words: list[str] = []
        run: list[str] = []  # a run of one-character words: "u r g e n t"
        for token in split.split(" "):
            if not token:
                _flush_run(run, words)  # two spaces end a spaced-out word
                continue
            if not token.isalpha() or not token.isascii():
                token = self._word(token)
                if not token:
                    continue
            if len(token) == 1:
                if _CJK.match(token):
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
                start = pos  # the word around it (_WORD_CHARS, without a regex call per character)
                while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_@$|!"):
                    start -= 1
                end = pos + 1
                while end < n and (text[end].isalnum() or text[end] in "_@$|!"):
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
def _read_word(norm: Normaliser, token: str) -> str:
    """``Normaliser._word``, cached: the same odd words ("|", "$1", "you!", "name@example")
    come back in message after message and within one."""
    if not token.isascii():
        token = _fold_word(norm, token)
    if not token.isalpha():
        pieces = [_deobfuscate(norm, t) for t in (
            _OTHER_SYMBOLS.split(token) if not token.isalnum() and _needs_split(token) else (token,))]
        token = " ".join(p for p in pieces if p)
    return token


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
    """Accents removed and look-alike letters of other scripts read as Latin. Combining
    marks that NFKC could not join to the Latin letter before them ("t\u0301", "v\u0323":
    no such precomposed letters exist) are dropped as accents are: left in, each one split
    the word it was scattered over ("p̣ạṣṣẉọṛḍ")."""
    out: list[str] = []
    for ch in word:
        if out and unicodedata.combining(ch) and out[-1].isascii() and out[-1].isalpha():
            continue
        out.append(_fold_char(norm, ch))
    return "".join(out)


def _unoverride(text: str) -> str:
    """Text after a right-to-left override (U+202E), up to its end (U+202C) or the end of
    the line, in the order a person sees it: the override draws it back to front, so a
    word written "drowssap" behind it reads "password" on the screen."""
    out: list[str] = []
    position = 0
    while True:
        start = text.find("\u202e", position)
        if start < 0:
            break
        ends = [e for e in (text.find("\u202c", start + 1), text.find("\n", start + 1)) if e >= 0]
        end = min(ends) if ends else len(text)
        out.append(text[position:start])
        out.append(text[start + 1:end][::-1])
        position = end + 1 if end < len(text) and text[end] == "\u202c" else end
    out.append(text[position:])
    return "".join(out)


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
