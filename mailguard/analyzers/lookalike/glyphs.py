"""Look-alike characters: reduce a domain label to a plain-ASCII "skeleton".

Two labels with the same skeleton look the same to a reader: "pаypal" (Cyrillic а),
"paypa1" and "paypal" all reduce to "paypal"-like skeletons. Unicode decomposition removes
accents, NFKC folds full-width and mathematical letters, the Unicode name of a Latin
letter with a stroke or hook gives its base letter, and ``rules/confusables.toml`` adds
letters of other scripts and ASCII spellings that read alike ("rn" for "m").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Iterable, Mapping

from mailguard.options import ConfigError, read_data_toml

_LATIN_NAME = re.compile(
    r"^LATIN (?:SMALL|CAPITAL) LETTER (?:SMALL CAPITAL |DOTLESS |TURNED |SCRIPT |CLOSED |REVERSED )?"
    r"([A-Z]{1,2})(?: WITH .*| BAR)?$"
)
_LATIN_SMALL_CAPITAL = re.compile(r"^LATIN LETTER SMALL CAPITAL ([A-Z])$")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def script_of(ch: str) -> str:
    """The script of a letter from its Unicode name ("CYRILLIC"), "" for other characters."""
    if ch.isascii():
        return "LATIN" if ch.isalpha() else ""
    name = unicodedata.name(ch, "")
    if not name or not unicodedata.category(ch).startswith("L"):
        return ""
    return name.split(" ", 1)[0]


@dataclass(frozen=True)
class GlyphTable:
    """The confusables table, loaded once. Thread-safe: immutable plus lru caches."""

    characters: Mapping[str, str]
    sequences: tuple[tuple[str, str], ...]
    script_names: Mapping[str, str]
    source: str = "built-in"
    similar: frozenset[frozenset[str]] = frozenset()

    @classmethod
    def load(cls, path: Path) -> "GlyphTable":
        where = str(path)
        data = read_data_toml(path, "confusables table")
        chars = data.get("characters", {})
        seqs = data.get("sequences", {})
        names = data.get("names", {})
        similar = data.get("similar", {})
        for table, label in ((chars, "characters"), (seqs, "sequences"), (names, "names"), (similar, "similar")):
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: [{label}] must be a table of \"text\" = \"text\" entries")
        for key, value in chars.items():
            if len(key) != 1 or not isinstance(value, str) or not value or not set(value) <= _PLAIN:
                raise ConfigError(
                    f"{where}: [characters] {key!r} = {value!r}: each key must be one character and each "
                    "value plain letters or digits (a-z, 0-9)"
                )
        for key, value in seqs.items():
            if not key or not set(key) <= _PLAIN or not isinstance(value, str) or not set(value) <= _PLAIN:
                raise ConfigError(
                    f"{where}: [sequences] {key!r} = {value!r}: both sides must be plain letters or digits"
                )
        pairs = similar.get("pairs", [])
        if not isinstance(pairs, list) or not all(
            isinstance(p, str) and len(p) == 2 and set(p) <= _PLAIN and p[0] != p[1] for p in pairs
        ):
            raise ConfigError(f"{where}: [similar] pairs must be a list of two-letter strings such as \"ce\"")
        ordered = tuple(sorted(seqs.items(), key=lambda kv: -len(kv[0])))
        return cls(
            dict(chars), ordered, {str(k): str(v) for k, v in names.items()}, where,
            frozenset(frozenset(p) for p in pairs),
        )

    def char_to_ascii(self, ch: str) -> str:
        """The ASCII letters ``ch`` is read as, or ``ch`` itself when nothing is known."""
        return _char_to_ascii(self, ch)

    def fold(self, label: str) -> str:
        """Unicode letters replaced by the ASCII letters they look like (no sequence
        rules): "pаypаl" -> "paypal", "ṗaypal" -> "paypal"."""
        return _fold(self, label)

    def skeleton(self, label: str) -> str:
        """``fold`` plus ASCII sequences that read alike ("rn" -> "m", "1" -> "l")."""
        return _skeleton(self, label)

    def skeletons(self, labels: Iterable[str]) -> tuple[str, ...]:
        """``skeleton`` of each label, without a Python call per label (names and texts are
        read as dozens of words)."""
        return tuple(map(partial(_skeleton, self), labels))

    def looks_similar(self, a: str, b: str) -> bool:
        """Two different plain letters that are easy to misread for each other (c and e)."""
        return frozenset((a, b)) in self.similar

    def visual_distance(self, a: str, b: str) -> float:
        """Substitutions between equal-length labels, a misreadable pair (c for e) counting
        half: "actma" is as close to "aetna" as one typing slip."""
        if len(a) != len(b):
            return float("inf")
        return sum(0.5 if self.looks_similar(x, y) else 1.0 for x, y in zip(a, b) if x != y)

    def script_name(self, script: str) -> str:
        return self.script_names.get(script, script.title())

    # Identity, with object's own C slots: the lru caches below hash the table with
    # every label they look up, and a Python __hash__ cost more than the lookup.
    __hash__ = object.__hash__
    __eq__ = object.__eq__


@lru_cache(maxsize=8192)
def _char_to_ascii(table: GlyphTable, ch: str) -> str:
    if ch in _PLAIN:
        return ch
    low = ch.lower()
    if low in _PLAIN:
        return low
    if low in table.characters:
        return table.characters[low]
    if ch in table.characters:
        return table.characters[ch]
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)).lower()
    if decomposed and all(c in _PLAIN for c in decomposed):
        return decomposed
    if len(decomposed) == 1 and decomposed in table.characters:
        return table.characters[decomposed]
    name = unicodedata.name(ch, "")
    match = _LATIN_NAME.match(name) or _LATIN_SMALL_CAPITAL.match(name)
    if match:
        return match.group(1).lower()
    return ch


@lru_cache(maxsize=65536)
def _fold(table: GlyphTable, label: str) -> str:
    if label.isascii():
        return label.lower()
    return "".join(_char_to_ascii(table, ch) for ch in label)


@lru_cache(maxsize=65536)
def _skeleton(table: GlyphTable, label: str) -> str:
    text = _fold(table, label)
    for seq, repl in table.sequences:
        if seq in text:
            text = text.replace(seq, repl)
    return text


def mixed_scripts(label: str) -> tuple[str, ...]:
    """Scripts of the letters in ``label`` when there is more than one (a Latin name
    with one Cyrillic letter is the classic homograph)."""
    scripts = {s for s in (script_of(ch) for ch in label) if s}
    return tuple(sorted(scripts)) if len(scripts) > 1 else ()
