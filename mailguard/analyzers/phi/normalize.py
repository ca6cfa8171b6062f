"""Text as a person reads it, for the identifier and term searches.

What a mail client shows as "536-22-1234" may be stored as Arabic-Indic or full-width
digits, with a zero-width space or a soft hyphen inside (pasted from a web form or a
spreadsheet, or added by an editor's line breaking), with a non-breaking hyphen or an en
dash between the groups, or with no-break spaces. The patterns (and python-stdnum's checks)
read ASCII digits, ASCII hyphens and spaces; one translation pass makes them so:

- every decimal digit (Unicode category Nd) becomes its ASCII digit;
- invisible format characters (category Cf: zero-width space and joiners, word joiner,
  soft hyphen, byte-order mark, direction marks) are removed;
- every dash (category Pd) and the minus sign become "-", every space (Zs) a " ";
- full-width ASCII forms (U+FF01-U+FF5E) become ASCII.

Characters are only mapped one to one or removed, so the text never grows (no Unicode
normalization form, which can expand one character to eighteen), and the pass is linear.
Offsets of hits refer to the folded text; nothing keeps them beyond the assessment.
"""
from __future__ import annotations

import re
import unicodedata


class _Fold(dict[int, "str | None"]):
    """The translation table of one text, filled in as its characters are met (str.translate
    asks the mapping one code point at a time; a table of all 1.1 million would cost a
    start). One per call, not one for the process: a message of every code point would
    otherwise leave a million entries in each long-running worker."""

    def __missing__(self, code: int) -> str | None:
        value = _fold_char(chr(code))
        self[code] = value
        return value


def _fold_char(char: str) -> str | None:
    category = unicodedata.category(char)
    if category == "Nd":
        return str(unicodedata.decimal(char))
    if category == "Cf":
        return None
    if category == "Pd" or char == "\u2212":
        return "-"
    if category == "Zs":
        return " "
    if 0xFF01 <= ord(char) <= 0xFF5E:
        return chr(ord(char) - 0xFEE0)
    return char


# Is there anything to fold? A search in C is ten times cheaper than the translation of a
# long non-ASCII text (Cyrillic, Greek, CJK) that has none of these characters.
_FOLDABLE = re.compile(
    "[^\\D0-9]|[\u00a0\u00ad\u061c\u1680\u180e\u2000-\u200f\u2010-\u2015\u2028-\u202f\u205f-\u2064"
    "\u2066-\u206f\u2212\u3000\ufe58\ufe63\ufeff\uff01-\uff5e\U000e0000-\U000e007f]"
)


def fold(text: str) -> str:
    """``text`` with digits, dashes, spaces and invisible characters as described above
    (text with none of them is returned as it is, at the cost of one search)."""
    if text.isascii() or not _FOLDABLE.search(text):
        return text
    return text.translate(_Fold())


def name_text(filename: str) -> str:
    """A file name as words: "Jane_Roe_SSN_536-22-1234.pdf" is read as "Jane Roe SSN
    536-22-1234.pdf" (underscores and plus signs stand for spaces in file names)."""
    return fold(filename).replace("_", " ").replace("+", " ")
