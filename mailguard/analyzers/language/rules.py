"""Phrase rules as data: rules/language/*.toml, readable and overridable by an operator.

One file per category (urgency, account threats, credential requests, ...) plus
``scoring.toml`` with how categories combine. A category file::

    [category]
    name = "urgency"                 # referred to by combinations
    rule = "LANGUAGE_URGENCY"        # rule id in verdicts; operators override its score
    summary = "It pushes you to act fast"
    cap = 2.0                        # the most this category adds on its own

    [[phrases]]
    weight = 1.0
    match = ["within 24 hours", "{act|respond} {now|immediately}", "[your] account expires"]

A phrase is a sequence of words: ``{a|b|c}`` is one of several words or word groups and
``[x]`` or ``[x|y]`` is optional, and ``*`` is any one word ("dear * customer"). Case, accents, punctuation and the obfuscations undone by
``text`` do not matter. ``scoring.toml``::

    [scoring]
    subject_weight = 1.5             # a phrase in the subject counts this much more
    decay = 0.5                      # each further phrase of a category counts half the one before
    present_at = 1.0                 # a category joins combinations from this score on

    [[combination]]
    rule = "LANGUAGE_URGENT_CREDENTIAL_REQUEST"
    categories = ["urgency", "credential"]   # all of these must be present,
    # any_of = [...]  at_least = 1           # and at least that many of these
    bonus = 3.0
    summary = "It asks you to sign in or confirm details, under time pressure"
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Iterable

from mailguard.options import ConfigError, read_data_toml

MAX_EXPANSIONS = 5000
_RULE_ID = re.compile(r"^LANGUAGE_[A-Z0-9_]+$")
_NOT_WORDS = re.compile(r"[^\w\s'\-{}\[\]|*]|_")
_COMBINATION_KEYS = frozenset({"rule", "categories", "any_of", "at_least", "bonus", "summary"})
_TOKEN = re.compile(r"\{[^{}\[\]]*\}|\[[^{}\[\]]*\]|[^\s{}\[\]]+")


@dataclass(frozen=True)
class Phrase:
    """One written phrase rule and the literal word sequences it expands to."""

    text: str
    weight: float
    category: str
    variants: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    rule: str
    summary: str
    cap: float
    source: str


@dataclass(frozen=True)
class Combination:
    """Adds ``bonus`` when every category of ``categories`` is present and at least
    ``at_least`` of ``any_of``."""

    rule: str
    categories: tuple[str, ...]
    any_of: tuple[str, ...]
    at_least: int
    bonus: float
    summary: str
    source: str = ""

    def applies(self, present: set[str]) -> bool:
        if not all(c in present for c in self.categories):
            return False
        return not self.any_of or sum(1 for c in self.any_of if c in present) >= self.at_least

    def names(self) -> tuple[str, ...]:
        return self.categories + self.any_of


@dataclass(frozen=True)
class Scoring:
    """How phrase weights become category scores (see scoring.toml)."""

    subject_weight: float = 1.5   # a phrase in the subject counts this many times
    decay: float = 0.5            # each further phrase of a category counts this share of the one before
    present_at: float = 1.0       # a category takes part in combinations from this score on
    short_body_words: float = 0   # a body shorter than this many words leaves the subject to carry the message ...
    short_subject_weight: float = 2.0  # ... so subject phrases then count this many times


@dataclass(frozen=True)
class RuleSet:
    categories: dict[str, Category]
    phrases: tuple[Phrase, ...]
    combinations: tuple[Combination, ...]
    scoring: Scoring
    sources: tuple[str, ...]

    def words(self) -> frozenset[str]:
        """Every word that appears in a phrase (lower case)."""
        return frozenset(w for p in self.phrases for v in p.variants for w in v.lower().split())


def expand(pattern: str, where: str) -> tuple[str, ...]:
    """``"{act|respond} [now]"`` -> ("act now", "act", "respond now", "respond")."""
    if pattern.count("{") != pattern.count("}") or pattern.count("[") != pattern.count("]"):
        raise ConfigError(f"{where}: unbalanced braces or brackets in phrase {pattern!r}")
    bad = _NOT_WORDS.findall(pattern)
    if bad:
        raise ConfigError(
            f"{where}: phrase {pattern!r} contains {''.join(sorted(set(bad)))!r}: phrases are words only "
            "(letters, digits, spaces, hyphens, apostrophes; {a|b} for choices, [x] for optional words)"
        )
    choices: list[list[str]] = []
    for token in _TOKEN.findall(pattern):
        if token.startswith("{"):
            choices.append([alt.strip() for alt in token[1:-1].split("|")])
        elif token.startswith("["):
            choices.append([alt.strip() for alt in token[1:-1].split("|")] + [""])
        else:
            choices.append([token])
    total = 1
    for options in choices:
        total *= len(options)
    if total > MAX_EXPANSIONS:
        raise ConfigError(
            f"{where}: phrase {pattern!r} expands to {total} variants (at most {MAX_EXPANSIONS}); "
            "split it into several phrases"
        )
    out = []
    for combo in product(*choices):
        words = " ".join(part for part in combo if part).split()
        if words:
            out.append(" ".join(words))
    if not out:
        raise ConfigError(f"{where}: phrase {pattern!r} has no words")
    if "*" in pattern:  # only then is there a wildcard to check (over all ~36,000 variants it cost 60 ms)
        for variant in out:
            words = variant.split()
            doubled = any(a == b == "*" for a, b in zip(words, words[1:]))
            if words[0] == "*" or words[-1] == "*" or doubled or any("*" in w and w != "*" for w in words):
                raise ConfigError(f"{where}: phrase {pattern!r}: * stands for one whole word between two others "
                                  "(\"dear * customer\"), never at the start or end nor twice in a row")
    return tuple(dict.fromkeys(out))


def _number(value: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"{where}: expected a number of at least {minimum:g}, got {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected non-empty text, got {value!r}")
    return value.strip()


def _category_file(path: Path, data: dict[str, Any]) -> tuple[Category, list[Phrase]]:
    where = str(path)
    head = data.get("category")
    if not isinstance(head, dict):
        raise ConfigError(f"{where}: missing [category] table (name, rule, summary, cap)")
    name = _text(head.get("name"), f"{where}: [category] name")
    rule = _text(head.get("rule"), f"{where}: [category] rule")
    if not _RULE_ID.match(rule):
        raise ConfigError(f"{where}: [category] rule {rule!r} must look like LANGUAGE_SOMETHING (upper case)")
    category = Category(
        name, rule, _text(head.get("summary"), f"{where}: [category] summary"),
        _number(head.get("cap"), f"{where}: [category] cap"), where,
    )
    unknown = set(head) - {"name", "rule", "summary", "cap"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [category]: {', '.join(sorted(unknown))}")
    phrases: list[Phrase] = []
    groups = data.get("phrases", [])
    if not isinstance(groups, list):
        raise ConfigError(f"{where}: [[phrases]] must be an array of tables with weight and match")
    for n, group in enumerate(groups, 1):
        gwhere = f"{where}: [[phrases]] #{n}"
        if not isinstance(group, dict) or set(group) - {"weight", "match"}:
            raise ConfigError(f"{gwhere}: expected only the keys weight and match")
        weight = _number(group.get("weight"), f"{gwhere} weight")
        matches = group.get("match")
        if not isinstance(matches, list) or not all(isinstance(m, str) for m in matches):
            raise ConfigError(f"{gwhere}: match must be a list of phrases (strings)")
        for text in matches:
            phrases.append(Phrase(text, weight, name, expand(text, gwhere)))
    return category, phrases


def _scoring_file(path: Path, data: dict[str, Any]) -> tuple[dict[str, float], list[Combination]]:
    where = str(path)
    scoring = data.get("scoring", {})
    known = set(Scoring.__dataclass_fields__)
    if not isinstance(scoring, dict) or set(scoring) - known:
        raise ConfigError(f"{where}: [scoring] takes only {', '.join(sorted(known))}")
    values = {key: _number(value, f"{where}: [scoring] {key}") for key, value in scoring.items()}
    combos = []
    entries = data.get("combination", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: [[combination]] must be an array of tables")
    for n, entry in enumerate(entries, 1):
        cwhere = f"{where}: [[combination]] #{n}"
        if not isinstance(entry, dict) or set(entry) - _COMBINATION_KEYS:
            raise ConfigError(f"{cwhere}: expected the keys {', '.join(sorted(_COMBINATION_KEYS))}")
        rule = _text(entry.get("rule"), f"{cwhere} rule")
        if not _RULE_ID.match(rule):
            raise ConfigError(f"{cwhere}: rule {rule!r} must look like LANGUAGE_SOMETHING (upper case)")
        cats = _names(entry.get("categories", []), f"{cwhere} categories")
        any_of = _names(entry.get("any_of", []), f"{cwhere} any_of")
        at_least = entry.get("at_least", 1)
        if isinstance(at_least, bool) or not isinstance(at_least, int) or not 1 <= at_least <= max(1, len(any_of)):
            raise ConfigError(f"{cwhere}: at_least must be a whole number from 1 to the length of any_of")
        if len(cats) + (at_least if any_of else 0) < 2:
            raise ConfigError(f"{cwhere}: a combination needs at least two categories (categories plus at_least of any_of)")
        combos.append(Combination(rule, cats, any_of, at_least, _number(entry.get("bonus"), f"{cwhere} bonus"),
                                  _text(entry.get("summary"), f"{cwhere} summary"), where))
    return values, combos


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of category names")
    return tuple(value)


def rule_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: the language rules folder does not exist; point [language] rules_dir "
                          "at a folder of *.toml phrase files, or leave it empty for the built-in rules")
    return sorted(folder.glob("*.toml"))


def load_rules(files: Iterable[Path]) -> RuleSet:
    """Read category and scoring files; later files add phrases to a category of the same
    name and later scoring values win."""
    categories: dict[str, Category] = {}
    phrases: list[Phrase] = []
    combos: dict[str, Combination] = {}
    scoring: dict[str, float] = {}
    sources = []
    for path in files:
        data = read_data_toml(path, "language phrase rules")
        sources.append(str(path))
        if "category" in data:
            category, found = _category_file(path, data)
            categories.setdefault(category.name, category)
            phrases.extend(found)
        if "scoring" in data or "combination" in data:
            values, found_combos = _scoring_file(path, data)
            scoring.update(values)
            combos.update((c.rule, c) for c in found_combos)
        if not {"category", "scoring", "combination"} & set(data):
            raise ConfigError(f"{path}: not a language rules file (expected [category] with [[phrases]], "
                              "or [scoring] / [[combination]])")
    for combo in combos.values():
        for name in combo.names():
            if name not in categories:
                raise ConfigError(f"{combo.source}: combination {combo.rule}: unknown category {name!r} "
                                  f"(known: {', '.join(sorted(categories))}); fix the name or add that category's file")
    return RuleSet(categories, tuple(phrases), tuple(combos.values()), Scoring(**scoring), tuple(sources))
