"""The brand table (``rules/brands.toml``) and the free-mail list (``rules/freemail.toml``).

Both are plain TOML an operator can read and replace. Loading checks every entry and
raises ``ConfigError`` naming the file, the entry and what to fix, because a silently
ignored brand is a protection the practice believes it has and does not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from mailguard.options import ConfigError, read_data_toml

if TYPE_CHECKING:
    from mailguard.analyzers.lookalike.suffixes import DomainSplitter

# A domain's labels: a-z, 0-9 (and "-" inside) or any character from U+00A1 to U+FFFF, each
# class written as the characters it leaves out: a range of 65,000 characters costs the
# regular expression compiler 4 ms per class at every start (22 ms for this one), the same
# class as its complement 0.3 ms (pinned character by character in tests/test_lookalike.py).
_LABEL_CHAR = r"[^\x00-\x2f\x3a-\x60\x7b-\xa0\U00010000-\U0010ffff]"  # [a-z0-9\u00a1-\uffff]
_LABEL_CHAR_OR_HYPHEN = r"[^\x00-\x2c\x2e\x2f\x3a-\x60\x7b-\xa0\U00010000-\U0010ffff]"  # [a-z0-9\u00a1-\uffff-]
_TLD_FIRST = r"[^\x00-\x60\x7b-\xa0\U00010000-\U0010ffff]"  # [a-z\u00a1-\uffff]
_DOMAIN = re.compile(
    rf"^(?=.{{3,253}}$)({_LABEL_CHAR}({_LABEL_CHAR_OR_HYPHEN}{{0,61}}{_LABEL_CHAR})?\.)+"
    rf"{_TLD_FIRST}{_LABEL_CHAR_OR_HYPHEN}{{1,62}}$")


@dataclass(frozen=True)
class Brand:
    """A brand practices are phished with: its name, the domains it really sends from
    (never flagged), and the names that identify it in a display name.

    ``names`` count wherever they appear in a display name ("PayPal", "DocuSign").
    ``word_names`` are ordinary words or first names ("Chase", "Box", "Square") and count
    only when the display name is that name plus generic words ("Chase Bank Alerts").
    ``also_owns`` are owned but not protected (content networks, tracking domains):
    never flagged, and names resembling them are not imitations. ``other_endings_owned``
    says the brand holds its name under most endings (google.com.br).
    ``loose`` domains are ordinary words (live.com): protected against exact-form tricks
    (look-alike letters, other endings, added words) but not typing slips, which would
    hit many unrelated real names.
    """

    name: str
    domains: tuple[str, ...]
    names: tuple[str, ...] = ()
    word_names: tuple[str, ...] = ()
    loose: tuple[str, ...] = ()
    category: str = ""
    also_owns: tuple[str, ...] = ()
    other_endings_owned: bool = False


@dataclass(frozen=True)
class BrandTable:
    brands: tuple[Brand, ...]
    combo_words: tuple[str, ...]
    generic_words: tuple[str, ...]
    source: str


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def check_domain(domain: str, where: str) -> str:
    value = domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(value):
        raise ConfigError(
            f"{where}: {domain!r} is not a domain name; write it as example.com (no @, no http://, no path)"
        )
    return value


def load_brands(path: Path) -> BrandTable:
    """Read and check a brand table. Each [[brand]] needs a name and at least one domain."""
    data = read_data_toml(path, "brand table")
    known = {"brand", "combosquat"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown top-level key '{key}'; expected [[brand]] entries and [combosquat]")
    entries = data.get("brand", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[brand]] entries; each needs name = \"...\" and domains = [\"...\"]")
    brands = []
    seen: dict[str, str] = {}
    fields = {"name", "domains", "names", "word_names", "loose", "category", "also_owns", "other_endings_owned"}
    for number, entry in enumerate(entries, 1):
        where = f"{path}: brand #{number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a [[brand]] table")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: missing name = \"...\"")
        where = f"{path}: brand #{number} ({name})"
        for key in entry:
            if key not in fields:
                raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(sorted(fields))}")
        if "domains" not in entry:
            raise ConfigError(f"{where}: missing domains = [\"...\"] (the domains this brand really sends from)")
        domains = tuple(check_domain(d, f"{where} domains") for d in _str_list(entry["domains"], f"{where} domains"))
        if not domains:
            raise ConfigError(f"{where}: domains is empty; list the domains this brand really sends from")
        also = tuple(
            check_domain(d, f"{where} also_owns") for d in _str_list(entry.get("also_owns", []), f"{where} also_owns")
        )
        for d in domains + also:
            if d in seen and seen[d] != name:
                raise ConfigError(f"{where}: domain {d} is already listed under brand {seen[d]}")
            seen[d] = name
        loose = tuple(check_domain(d, f"{where} loose") for d in _str_list(entry.get("loose", []), f"{where} loose"))
        for d in loose:
            if d not in domains:
                raise ConfigError(f"{where}: loose domain {d} must also be in domains")
        category = entry.get("category", "")
        if not isinstance(category, str):
            raise ConfigError(f"{where} category: expected a string")
        everywhere = entry.get("other_endings_owned", False)
        if not isinstance(everywhere, bool):
            raise ConfigError(f"{where} other_endings_owned: expected true or false")
        brands.append(Brand(
            name.strip(), domains,
            _str_list(entry.get("names", [name]), f"{where} names"),
            _str_list(entry.get("word_names", []), f"{where} word_names"),
            loose, category, also, everywhere,
        ))
    combo = data.get("combosquat", {})
    if not isinstance(combo, dict):
        raise ConfigError(f"{path}: [combosquat] must be a table with words = [...] and generic_words = [...]")
    for key in combo:
        if key not in ("words", "generic_words"):
            raise ConfigError(f"{path}: unknown key '{key}' in [combosquat]; known keys: generic_words, words")
    words = tuple(w.lower() for w in _str_list(combo.get("words", []), f"{path}: [combosquat] words"))
    generic = tuple(w.lower() for w in _str_list(combo.get("generic_words", []), f"{path}: [combosquat] generic_words"))
    return BrandTable(tuple(brands), words, generic, str(path))


def load_freemail(path: Path) -> frozenset[str]:
    """Free-mail provider domains (anyone can get an address there)."""
    data = read_data_toml(path, "free-mail list")
    for key in data:
        if key != "domains":
            raise ConfigError(f"{path}: unknown key '{key}'; expected domains = [\"gmail.com\", ...]")
    if "domains" not in data:
        raise ConfigError(f"{path}: missing domains = [\"gmail.com\", ...]")
    values = _str_list(data["domains"], f"{path}: domains")
    return frozenset(check_domain(d, f"{path}: domains") for d in values)


@dataclass(frozen=True)
class Ownership:
    """Who owns a domain: a brand of the table, the practice, a free-mail provider.
    Built once by the analyzer; every method only reads."""

    brand_of: Mapping[str, Brand]
    own_domains: frozenset[str]
    freemail: frozenset[str]
    splitter: "DomainSplitter"

    def registrable(self, domain: str) -> str:
        parts = self.splitter.parts(domain)
        return parts.registrable if parts is not None else domain

    def owned_by(self, domain: str, brand: Brand) -> bool:
        return self.brand_of.get(self.registrable(domain)) is brand

    def is_own(self, domain: str) -> bool:
        """One of the practice's domains (protected_domains, relay_domains)."""
        return self.registrable(domain) in self.own_domains

    def is_freemail(self, domain: str) -> bool:
        return self.registrable(domain) in self.freemail

    def is_protected(self, domain: str) -> bool:
        """The practice's or a brand's domain, and not free mail (a Gmail sender is a
        person, not Google)."""
        registrable = self.registrable(domain)
        if registrable in self.freemail:
            return False
        return registrable in self.own_domains or registrable in self.brand_of

    def same_owner(self, a: str, b: str) -> bool:
        ra, rb = self.registrable(a), self.registrable(b)
        if ra == rb:
            return True
        brand = self.brand_of.get(ra)
        return brand is not None and self.brand_of.get(rb) is brand
