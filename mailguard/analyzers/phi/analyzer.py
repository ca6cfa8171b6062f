"""The [phi] analyzer: is there patient data in this message, and how sure are we?

Confidence follows Microsoft Purview's levels. An identifier found alone is *low*. It is
*medium* when patient context ("patient", "DOB", "member ID", a diagnosis word ...) stands
within ``proximity_chars`` of it, when it appears with health information (a valid ICD-10-CM
code, a behavioural-health diagnosis, a psychiatric medicine), or when there are several
(``bulk_count``). It is *high* when a corroborated identifier appears with health
information, when two kinds of patient identifier stand together, or for a list of many.
Provider numbers (NPI, DEA) alone are a clinician's signature, not patient data: they only
add to a finding that has patient identifiers.

The finding's score is 0: what happens to patient data is decided by the outbound policy
(per recipient and per next hop, see mailguard.relay.outbound), never by the fitted
weights. Summaries say which kinds and how many, never a value, nor attachment names
(a file may be named after a patient).
"""
from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.phi import identifiers as ids
from mailguard.analyzers.phi.extract import Document, attachment_documents
from mailguard.analyzers.phi.normalize import fold, name_text
from mailguard.analyzers.phi.terms import TermFinder, TermHit, load_terms
from mailguard.message import ParsedMessage, iter_all_messages
from mailguard.model import Finding
from mailguard.options import Option
from mailguard.resources import rules_file

LEVELS = ("low", "medium", "high")
RULES = {level: f"PHI_{level.upper()}_CONFIDENCE" for level in LEVELS}
# Words that anchor a date of birth: they do not also vouch for it as patient context.
_DOB_WORDS = frozenset({"dob", "d.o.b.", "date of birth", "fecha de nacimiento", "geburtsdatum", "date de naissance"})


@dataclass(frozen=True)
class PhiReport:
    """What was found: counts per kind, where (body, attachments), and the confidence."""

    counts: Mapping[str, int] = field(default_factory=dict)
    confidence: str = ""  # "" (nothing), low, medium, high
    places: tuple[str, ...] = ()  # "body", "subject", "attachment", "attachment name" (never the name)
    corroborated: int = 0

    def kinds_text(self) -> str:
        """'2 Social Security numbers, 1 insurance member ID': what, never which."""
        parts = []
        for kind in ids.KIND_NAMES:
            n = self.counts.get(kind, 0)
            if n:
                name = ids.KIND_NAMES[kind] if n == 1 else ids.KIND_PLURALS.get(kind, ids.KIND_NAMES[kind] + "s")
                parts.append(f"{n} {name}")
        return ", ".join(parts)


def _near(positions: Sequence[int], start: int, end: int, window: int) -> bool:
    i = bisect_left(positions, start - window)
    return i < len(positions) and positions[i] <= end + window


def assess(documents: Iterable[Document], *, proximity: int = 300, bulk_count: int = 3,
           bulk_high: int = 10, finder: TermFinder | None = None, codes: frozenset[str] | None = None) -> PhiReport:
    """Find and weigh patient data in ``documents`` (pure: no message, no configuration)."""
    finder = finder or _default_finder()
    codes = ids.icd10_codes() if codes is None else codes
    counts: Counter[str] = Counter()
    places: set[str] = set()
    corroborated = 0
    health_near_ids = 0
    for doc in documents:
        text = fold(doc.text)  # the digits, dashes and spaces a person sees (normalize.py)
        if not text or not _worth_looking(text):
            continue
        context: list[TermHit] = []
        health: list[ids.Hit | TermHit] = []
        anchors: dict[str, list[int]] = {}
        for term in finder.find(text):
            if term.kind.startswith("anchor:"):
                anchors.setdefault(term.kind[7:], []).append(term.start)
            else:
                (context if term.kind == "context" else health).append(term)
        patient: list[ids.Hit] = []
        if _DIGIT.search(text):  # every identifier has digits
            patient = [*ids.ssn_hits(text, "ssn" in anchors), *ids.mbi_hits(text),
                       *ids.member_id_hits(text, anchors.get("member", ())),
                       *ids.mrn_hits(text, anchors.get("mrn", ())),
                       *ids.dob_hits(text, keyword="dob" in anchors, heading="dob_heading" in anchors)]
            health.extend(ids.icd10_hits(text, codes, "icd" in anchors))
        provider = list(ids.provider_hits(text)) if patient else []
        if not (patient or health):
            continue
        ctx_all = sorted(h.start for h in context)
        ctx_other = sorted(h.start for h in context if h.term not in _DOB_WORDS)
        health_pos = sorted(h.start for h in health)
        found = False
        for hit in patient:
            near = ctx_other if hit.kind == "dob" else ctx_all
            if _near(near, hit.start, hit.end, proximity) or _near(health_pos, hit.start, hit.end, proximity):
                corroborated += 1
            counts[hit.kind] += 1
            found = True
        for hit in health:
            kind = hit.kind if isinstance(hit, TermHit) else "icd10"
            if patient or ctx_all:
                counts[kind] += 1
                found = True
            if patient and _near(sorted(h.start for h in patient), hit.start, hit.end, proximity):
                health_near_ids += 1
        for hit in provider:
            counts[hit.kind] += 1
        if found:
            places.add(doc.where)
    return PhiReport(dict(counts), _confidence(counts, corroborated, bulk_count, bulk_high),
                     tuple(sorted(places)), corroborated)


def _confidence(counts: Mapping[str, int], corroborated: int, bulk_count: int, bulk_high: int) -> str:
    patient = sum(counts.get(k, 0) for k in ids.PATIENT_KINDS)
    patient_kinds = sum(1 for k in ids.PATIENT_KINDS if counts.get(k))
    health = sum(counts.get(k, 0) for k in ids.HEALTH_KINDS)
    if patient >= bulk_high or (corroborated and health) or (corroborated and patient_kinds >= 2):
        return "high"
    if corroborated or (patient and health) or patient >= bulk_count:
        return "medium"
    if patient or health:
        return "low"
    return ""


_DIGIT = re.compile(r"\d")


def _worth_looking(text: str) -> bool:
    return bool(text) and not text.isspace()


_PLACE_NAMES = {"attachment": "attachments", "attachment name": "attachment names"}


class PhiScanError(RuntimeError):
    """The PHI search failed; the message says which kind of error, never its text."""


@lru_cache(maxsize=4)
def _finder_for(path: str) -> TermFinder:
    return TermFinder(load_terms(Path(path)), ids.ANCHORS)


def _default_finder() -> TermFinder:
    return _finder_for(str(rules_file("phi/terms.toml")))


class PhiAnalyzer(Analyzer):
    name = "phi"
    config_schema = {
        "inbound": Option(
            False, "bool",
            "Also look for patient data in mail coming in (reported as a finding with score 0; no action). "
            "Mail through the outbound listener, and milter mail judged outbound, is always looked at.",
        ),
        "terms_file": Option(
            "", "path",
            "Diagnosis, medication and patient-context word lists (TOML with lists diagnosis, medication, "
            "context); empty: the built-in rules/phi/terms.toml.",
        ),
        "proximity_chars": Option(
            300, "int", "How near (in characters) patient context must stand to an identifier to vouch for it.",
            minimum=10,
        ),
        "bulk_count": Option(
            3, "int", "This many patient identifiers count as medium confidence even without context (a list).",
            minimum=1,
        ),
        "bulk_high": Option(10, "int", "This many patient identifiers count as high confidence.", minimum=1),
        "attachments": Option(True, "bool", "Read attachments too: PDF, Word, Excel, CSV and text files, zip members."),
        "max_attachment_chars": Option(
            2_000_000, "int", "Most characters of attachment text read per message (the rest is not searched).",
            minimum=1000,
        ),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        path = context.config.resolve_path(settings["terms_file"]) if settings["terms_file"] else None
        self.finder = _finder_for(str(path)) if path else _default_finder()
        # Found now (a missing list stops the start with a clear error), read at the first
        # message looked at: 30-70 ms that inbound mail, which this analyzer skips, never needs.
        ids.icd10_code_list()

    @property
    def codes(self) -> frozenset[str]:
        return ids.icd10_codes()

    def wanted(self, message: ParsedMessage) -> bool:
        direction = message.envelope.direction if message.envelope else ""
        return direction == "outbound" or bool(self.settings["inbound"])

    def documents(self, message: ParsedMessage) -> list[Document]:
        docs: list[Document] = []
        for part in iter_all_messages(message):
            docs.append(Document("subject", part.subject))
            docs.append(Document("body", part.body_text))
        # File names too: a front desk names the export after the patient ("Roe_Jane_DOB_
        # 03-14-1962.xlsx"). The place is "attachment name", never the name itself.
        names = dict.fromkeys(a.filename for a in message.attachments if a.filename)
        docs.append(Document("attachment name", "\n".join(name_text(n) for n in names)))
        if self.settings["attachments"]:
            docs.extend(Document("attachment", d.text) for d in
                        attachment_documents(message.attachments, self.settings["max_attachment_chars"]))
        return docs

    def report(self, message: ParsedMessage) -> PhiReport:
        return assess(self.documents(message), proximity=self.settings["proximity_chars"],
                      bulk_count=self.settings["bulk_count"], bulk_high=self.settings["bulk_high"],
                      finder=self.finder, codes=self.codes)

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        if not self.wanted(message):
            return []
        try:
            report = self.report(message)
        except Exception as exc:
            # The scanner puts an analyzer's exception text in the verdict's errors (check's
            # output, the quarantine, logs of a failed scan), and exception texts quote the
            # input they failed on ("invalid literal for int(): '...'"): here that input is a
            # patient's record, so only the exception's type goes on.
            raise PhiScanError(f"{type(exc).__name__} while looking for patient data "
                               "(its text is withheld: it may quote the message)") from None
        if not report.confidence:
            return []
        where = " and ".join(_PLACE_NAMES.get(p, p) for p in report.places)
        summary = f"Patient data ({report.confidence} confidence): {report.kinds_text()}, in the {where}"
        return [self.finding(RULES[report.confidence], 0.0, summary, {
            "confidence": report.confidence, "kinds": dict(report.counts), "places": list(report.places),
        })]
