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
``[x]`` is optional. Case, accents, punctuation and the obfuscations undone by
``language_text`` do not matter. ``scoring.toml``::

    [scoring]
    subject_weight = 1.5             # a phrase in the subject counts this much more

    [[combination]]
    rule = "LANGUAGE_URGENT_CREDENTIAL_REQUEST"
    categories = ["urgency", "credential"]   # all must be present
    bonus = 3.0
    summary = "It asks you to sign in or confirm details, under time pressure"
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Iterable

from mailguard.config import ConfigError, read_data_toml

MAX_EXPANSIONS = 5000
_RULE_ID = re.compile(r"^LANGUAGE_[A-Z0-9_]+$")
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
    rule: str
    categories: tuple[str, ...]
    bonus: float
    summary: str


@dataclass(frozen=True)
class RuleSet:
    categories: dict[str, Category]
    phrases: tuple[Phrase, ...]
    combinations: tuple[Combination, ...]
    subject_weight: float
    sources: tuple[str, ...]

    def words(self) -> frozenset[str]:
        """Every word that appears in a phrase (lower case)."""
        return frozenset(w for p in self.phrases for v in p.variants for w in v.lower().split())


def expand(pattern: str, where: str) -> tuple[str, ...]:
    """``"{act|respond} [now]"`` -> ("act now", "act", "respond now", "respond")."""
    if pattern.count("{") != pattern.count("}") or pattern.count("[") != pattern.count("]"):
        raise ConfigError(f"{where}: unbalanced braces or brackets in phrase {pattern!r}")
    choices: list[list[str]] = []
    for token in _TOKEN.findall(pattern):
        if token.startswith("{"):
            choices.append([alt.strip() for alt in token[1:-1].split("|")])
        elif token.startswith("["):
            choices.append([token[1:-1].strip(), ""])
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


def _scoring_file(path: Path, data: dict[str, Any]) -> tuple[float | None, list[Combination]]:
    where = str(path)
    scoring = data.get("scoring", {})
    if not isinstance(scoring, dict) or set(scoring) - {"subject_weight"}:
        raise ConfigError(f"{where}: [scoring] takes only subject_weight")
    subject_weight = (
        _number(scoring["subject_weight"], f"{where}: [scoring] subject_weight") if "subject_weight" in scoring else None
    )
    combos = []
    entries = data.get("combination", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: [[combination]] must be an array of tables")
    for n, entry in enumerate(entries, 1):
        cwhere = f"{where}: [[combination]] #{n}"
        if not isinstance(entry, dict) or set(entry) - {"rule", "categories", "bonus", "summary"}:
            raise ConfigError(f"{cwhere}: expected the keys rule, categories, bonus and summary")
        rule = _text(entry.get("rule"), f"{cwhere} rule")
        if not _RULE_ID.match(rule):
            raise ConfigError(f"{cwhere}: rule {rule!r} must look like LANGUAGE_SOMETHING (upper case)")
        cats = entry.get("categories")
        if not isinstance(cats, list) or len(cats) < 2 or not all(isinstance(c, str) for c in cats):
            raise ConfigError(f"{cwhere}: categories must list at least two category names")
        combos.append(Combination(rule, tuple(cats), _number(entry.get("bonus"), f"{cwhere} bonus"),
                                  _text(entry.get("summary"), f"{cwhere} summary")))
    return subject_weight, combos


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
    subject_weight = 1.5
    sources = []
    for path in files:
        data = read_data_toml(path, "language phrase rules")
        sources.append(str(path))
        if "category" in data:
            category, found = _category_file(path, data)
            categories.setdefault(category.name, category)
            phrases.extend(found)
        if "scoring" in data or "combination" in data:
            weight, found_combos = _scoring_file(path, data)
            subject_weight = weight if weight is not None else subject_weight
            combos.update((c.rule, c) for c in found_combos)
        if not {"category", "scoring", "combination"} & set(data):
            raise ConfigError(f"{path}: not a language rules file (expected [category] with [[phrases]], "
                              "or [scoring] / [[combination]])")
    for combo in combos.values():
        for name in combo.categories:
            if name not in categories:
                raise ConfigError(f"combination {combo.rule}: unknown category {name!r} "
                                  f"(known: {', '.join(sorted(categories))})")
    return RuleSet(categories, tuple(phrases), tuple(combos.values()), subject_weight, tuple(sources))
