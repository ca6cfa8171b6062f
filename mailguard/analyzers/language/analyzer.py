"""Social-engineering language: what the words of a message push a person to do.

Reads what a person sees (the subject, counted more, and the visible body text; hidden
HTML text is ignored), normalised against obfuscation by ``text``, and matches
every phrase rule of ``rules/language/`` in one pass (``match``). Scoring is by
combination, not keyword counting: each category (urgency, account threat, credential
request, payment change, secrecy, healthcare lure, prize, scam story, delivery, spam offer,
impersonal greeting, bulk wording, misspelling) adds at most its cap with diminishing
weight per further phrase, so one "urgent" in an ordinary reply stays quiet, and categories
that reinforce each other (urgency with a credential request) add a combination bonus
(``rules/language/scoring.toml``). Findings quote the rule phrases that matched, never
other words of the message.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.language.documents import document_text
from mailguard.analyzers.language.match import ENGINES, build_matcher
from mailguard.analyzers.language.rules import Category, RuleSet, load_rules, rule_files
from mailguard.analyzers.language.text import Normaliser
from mailguard.analyzers.lookalike.glyphs import GlyphTable
from mailguard.options import Option
from mailguard.message import ParsedMessage
from mailguard.model import Finding
from mailguard.resources import cache_key, cached_build, data_dir, rules_file

MAX_QUOTED = 3


def _library_versions() -> str:
    """ahocorasick-rs as installed: its compiled module's path, size and modification time,
    so another version or build of it gets a build of its own. (Its version number would
    need importlib.metadata, 40 ms of a cold start to import.)"""
    from mailguard.analyzers.language import match

    library = match.ahocorasick_rs
    if library is None:
        return "ahocorasick-rs none"
    native = getattr(library, "ahocorasick_rs", library)
    path = getattr(native, "__file__", None) or getattr(library, "__file__", None) or ""
    try:
        status = os.stat(path)
    except OSError:
        return f"ahocorasick-rs {path}"
    return f"ahocorasick-rs {path} {status.st_size} {status.st_mtime_ns}"


def _fewer_words(normalised: str, limit: float) -> bool:
    """Whether normalised text (words between single spaces, a space at each end) has
    fewer than ``limit`` words: its first spaces found, not every space of a long body counted."""
    if not limit > 0:  # (not a number, or none: no text has fewer than no words)
        return False
    if limit > len(normalised):  # more words than characters cannot be (an infinite limit too)
        return True
    position = 0
    for _ in range(math.ceil(limit)):  # words: the spaces after the first one
        position = normalised.find(" ", position + 1)
        if position < 0:
            return True
    return False


def _builder_sources() -> list[Path]:
    """The source files of the modules whose objects the language cache holds."""
    from mailguard.analyzers.language import match, rules, text
    from mailguard.analyzers.lookalike import glyphs

    return [Path(module.__file__) for module in (match, rules, text, glyphs) if module.__file__]


def phrase_key(normaliser: Normaliser, variant: str) -> str:
    """A phrase normalised exactly like message text; a ``*`` wildcard is kept."""
    if "*" not in variant or "*" not in variant.split():
        return normaliser.normalise(variant)
    words = ("*" if w == "*" else normaliser.normalise(w).strip() for w in variant.split())
    return " " + " ".join(w for w in words if w) + " "


def _build(files: list[Any], confusables: Any, engine: str) -> tuple[RuleSet, Normaliser, tuple[tuple[int, str], ...], Any]:
    """The rules, the normaliser, which phrase each automaton key belongs to, and the
    matcher: everything the analyzer reads, built from the rule files."""
    rules = load_rules(files)
    normaliser = Normaliser(GlyphTable.load(confusables), rules.words())
    keys: list[str] = []
    owners: list[tuple[int, str]] = []
    for index, phrase in enumerate(rules.phrases):
        for variant in phrase.variants:
            key = phrase_key(normaliser, variant)
            if key.strip():
                keys.append(key)
                owners.append((index, key.strip()))
    return rules, normaliser, tuple(owners), build_matcher(keys, engine)


@dataclass(frozen=True)
class CategoryHit:
    category: Category
    score: float
    phrases: tuple[str, ...]
    in_subject: bool


class LanguageAnalyzer(Analyzer):
    name = "language"
    config_schema = {
        "rules_dir": Option(
            "", "path",
            "Folder of phrase rule files (*.toml: one per category plus scoring.toml) that replaces the "
            "built-in rules/language; empty for the built-in rules. Copy the built-in folder to start.",
        ),
        "extra_rules": Option(
            [], "list[path]",
            "More phrase rule files read after the built-in (or rules_dir) ones: add phrases to a category "
            "of the same name, new categories, or combinations.",
        ),
        "max_body_chars": Option(
            100_000, "int", "Only the first this many characters of the visible body text are read.", minimum=1000
        ),
        "engine": Option(
            "auto", "str", "Phrase matching engine: auto (Aho-Corasick when ahocorasick-rs is installed, else python), "
            "ahocorasick, python (a word trie, slower) or re (one regular expression, far slower; for comparison).",
            choices=ENGINES,
        ),
        "document_body_words": Option(
            20, "int", "When the visible body has fewer words than this, the text of the first PDF and HTML "
            "attachments is read as part of it (the lure is in the attached document); 0 never reads them.",
            minimum=0,
        ),
        "document_max_bytes": Option(
            2_000_000, "int", "Attached PDF or HTML files larger than this are not read for their words.", minimum=0
        ),
        "document_pages": Option(
            2, "int", "Pages read from an attached PDF (pypdf takes 5-400 ms a PDF; each page adds to that).",
            minimum=1,
        ),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        config = context.config
        folder = config.resolve_path(settings["rules_dir"]) if settings["rules_dir"] else data_dir("rules") / "language"
        files = rule_files(folder) + [config.resolve_path(p) for p in settings["extra_rules"]]
        confusables = rules_file("confusables.toml")
        engine = settings["engine"]
        # Expanding and normalising ~36,000 phrase variants and building the automaton is
        # most of a cold start: the result is cached, keyed by the rule files' contents.
        # The code of the pickled classes is part of the key: a matcher pickled by another
        # revision of mailguard (same version number, other fields) must be rebuilt, not loaded.
        key = cache_key("language", [*files, confusables, *_builder_sources()], [engine, _library_versions()])
        built = cached_build("language", key, lambda: _build(files, confusables, engine))
        self.rules, self.normaliser, self._owners, self._matcher = built
        self._max_chars = int(settings["max_body_chars"])
        self._document_words = int(settings["document_body_words"])
        self._document_bytes = int(settings["document_max_bytes"])
        self._document_pages = int(settings["document_pages"])

    def phrases_in(self, text: str) -> dict[int, str]:
        """Phrase rules found in ``text``: index into ``rules.phrases`` -> the words that
        matched (the longest variant, to quote to the reader)."""
        return self._phrases_in_normalised(self.normaliser.normalise(text))

    def _phrases_in_normalised(self, normalised: str) -> dict[int, str]:
        found: dict[int, str] = {}
        for key in self._matcher.find(normalised):
            index, words = self._owners[key]
            if len(words) > len(found.get(index, "")):
                found[index] = words
        return found

    def category_hits(self, message: ParsedMessage) -> list[CategoryHit]:
        subject = self.phrases_in(message.subject)
        body_text = visible = self.normaliser.normalise(message.body_text[: self._max_chars])
        if self._document_words and message.attachments and _fewer_words(visible, self._document_words):
            attached = document_text(message, max_bytes=self._document_bytes, pages=self._document_pages,
                                     max_chars=self._max_chars)
            if attached:
                body_text = self.normaliser.normalise(f"{message.body_text[: self._max_chars]}\n{attached}")
        body = self._phrases_in_normalised(body_text)
        scoring = self.rules.scoring
        subject_weight = scoring.subject_weight
        if scoring.short_body_words and _fewer_words(visible, scoring.short_body_words):  # the visible body's words
            subject_weight = max(subject_weight, scoring.short_subject_weight)
        per_category: dict[str, list[tuple[float, str, bool]]] = {}
        for index in subject.keys() | body.keys():
            phrase = self.rules.phrases[index]
            in_subject = index in subject
            weight = phrase.weight * (subject_weight if in_subject else 1.0)
            words = subject[index] if in_subject else body[index]
            per_category.setdefault(phrase.category, []).append((weight, words, in_subject))
        hits = []
        for name, found in per_category.items():
            category = self.rules.categories[name]
            found.sort(reverse=True)
            decay = self.rules.scoring.decay
            score = min(category.cap, sum(w * decay**n for n, (w, _, _) in enumerate(found)))
            if score > 0:
                hits.append(CategoryHit(category, round(score, 2), tuple(p for _, p, _ in found),
                                        any(s for _, _, s in found)))
        return hits

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        hits = self.category_hits(message)
        findings = []
        for hit in sorted(hits, key=lambda h: -h.score):
            quoted = ", ".join(f'"{p}"' for p in hit.phrases[:MAX_QUOTED])
            findings.append(self.finding(
                hit.category.rule, hit.score, f"{hit.category.summary} ({quoted})",
                {"category": hit.category.name, "phrases": list(hit.phrases[:10]), "in_subject": hit.in_subject},
            ))
        present = {h.category.name for h in hits if h.score >= self.rules.scoring.present_at}
        for combo in self.rules.combinations:
            if combo.bonus > 0 and combo.applies(present):
                findings.append(self.finding(combo.rule, combo.bonus, combo.summary,
                                             {"categories": sorted(present & set(combo.categories))}))
        return findings

