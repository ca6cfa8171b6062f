"""Identifiers that mark patient data, each validated and not merely shaped.

A nine-digit number is not a Social Security number, and a letter with two digits is not a
diagnosis: every candidate found by its shape is checked by the rules of its issuer before
it counts (SSN area/group/serial rules and the SSA's never-issued list, NPI's Luhn check
over the 80840 prefix, DEA's check digit, Medicare's MBI alphabet, the ICD-10-CM code
set). What cannot be validated (insurance member IDs, dates of birth) counts only next to
the words that name it. Every function returns spans, never keeps the text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
import importlib.util
from pathlib import Path
from typing import Iterable, Iterator

# Plain-English names, used in findings and notices (never the values themselves).
KIND_NAMES = {
    "ssn": "Social Security number",
    "mbi": "Medicare beneficiary identifier",
    "member_id": "insurance member ID",
    "mrn": "medical record number",
    "dob": "date of birth",
    "icd10": "ICD-10-CM diagnosis code",
    "diagnosis": "behavioural-health diagnosis",
    "medication": "psychiatric or addiction medication",
    "npi": "provider NPI",
    "dea": "provider DEA number",
}
KIND_PLURALS = {
    "dob": "dates of birth",
    "diagnosis": "behavioural-health diagnoses",
    "medication": "psychiatric or addiction medications",
    "icd10": "ICD-10-CM diagnosis codes",
}
PATIENT_KINDS = frozenset({"ssn", "mbi", "member_id", "mrn", "dob"})
HEALTH_KINDS = frozenset({"icd10", "diagnosis", "medication"})
PROVIDER_KINDS = frozenset({"npi", "dea"})


# Words whose presence lets the keyword-bound searches run at all (found in the same
# Aho-Corasick pass as the term lists, so text without them costs nothing more).
ANCHORS: dict[str, tuple[str, ...]] = {
    "ssn": ("ssn", "ss#", "social security", "soc sec", "soc. sec.", "social sec", "seguro social",
            "número de seguro", "numero de seguro", "sozialversicherungsnummer", "sécurité sociale",
            "securite sociale"),
    "icd": ("icd", "icd-10", "icd10", "icd-10-cm", "dx", "diagnosis", "diagnoses", "diagnosed", "diagnóstico",
            "diagnostico", "diagnose", "diagnostic", "code", "codes"),
    "dob": ("dob", "d.o.b", "d.o.b.", "date of birth", "birth date", "birthdate", "born", "born on", "b-day",
            "bday", "fecha de nacimiento", "f. nac", "f.nac", "geburtsdatum", "geb.", "geboren",
            "date de naissance", "né le", "née le", "ne le", "nee le"),
    "dob_heading": ("dob", "d.o.b", "d.o.b.", "date of birth", "birth date", "birthdate", "fecha de nacimiento",
                    "geburtsdatum", "date de naissance"),
    "member": ("member", "subscriber", "insured", "enrollee", "beneficiary", "insurance", "policy", "medicaid",
               "plan", "mitglieds", "mitgliedsnummer", "versicherten", "versichertennummer", "afiliado",
               "asegurado", "adhérent", "adherent"),
    "mrn": ("mrn", "mr#", "medical record", "medical records", "med rec", "med. rec.", "chart", "patient",
            "patienten", "patienten-id", "patientennummer", "expediente", "historia clínica", "historia clinica"),
}


@dataclass(frozen=True)
class Hit:
    """One validated identifier: its kind and where it is (offsets into the text)."""

    kind: str
    start: int
    end: int


# ---------------------------------------------------------------- SSN

_SSN_FORMATTED = re.compile(r"(?<![\w-])(?<!\d\.)(\d{3})([- .])(\d{2})\2(\d{4})(?![\w-]|\.\d)")
_SSN_BARE = re.compile(r"(?<![\w-])\d{9}(?![\w-])")
# An unformatted nine-digit number counts only right after words that name it.
_SSN_KEYWORD = re.compile(
    r"(?i)\b(?:ssn|ss#|soc(?:ial)?\.?\s*sec(?:urity)?(?:\s*(?:no|number|#))?|seguro\s+social|"
    r"n[uú]mero\s+de\s+seguro|sozialversicherungsnummer|s[eé]curit[eé]\s+sociale)\b[^\d\n]{0,20}$"
)


def ssn_hits(text: str, keyword: bool = True) -> Iterator[Hit]:
    """Formatted SSNs anywhere; bare nine digits only after an SSN word (``keyword``: one
    occurs somewhere in the text). python-stdnum is imported here, at the first text looked
    at, not with the module: 20 ms of every start, for checks only outbound mail needs."""
    from stdnum.us import ssn as us_ssn

    for m in _SSN_FORMATTED.finditer(text):
        if us_ssn.is_valid(m.group(1) + m.group(3) + m.group(4)):
            yield Hit("ssn", m.start(), m.end())
    if not keyword:
        return
    for m in _SSN_BARE.finditer(text):
        if _SSN_KEYWORD.search(text[max(0, m.start() - 40):m.start()]) and us_ssn.is_valid(m.group(0)):
            yield Hit("ssn", m.start(), m.end())


# ---------------------------------------------------------------- NPI and DEA (providers)

_NPI = re.compile(r"(?<![\w-])[12]\d{9}(?![\w-])")
_NPI_KEYWORD = re.compile(r"(?i)\bnpi\b")
_DEA = re.compile(r"(?<![\w-])([ABCDEFGHJKLMPRSTUX][A-Z9])(\d{7})(?![\w-])")


def npi_valid(number: str) -> bool:
    """The NPI check digit: Luhn over the number with the card-issuer prefix 80840."""
    from stdnum import luhn  # (imported here: see ssn_hits)

    return len(number) == 10 and number.isdigit() and number[0] in "12" and luhn.is_valid("80840" + number)


def dea_valid(letters: str, digits: str) -> bool:
    """DEA check digit: (d1+d3+d5) + 2*(d2+d4+d6), last digit equals d7."""
    d = [int(c) for c in digits]
    total = d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])
    return total % 10 == d[6]


def provider_hits(text: str) -> Iterator[Hit]:
    """NPIs count only near the word NPI (ten digits are also phone numbers); DEA numbers
    by their registrant letter and check digit."""
    for m in _NPI.finditer(text):
        if npi_valid(m.group(0)) and _NPI_KEYWORD.search(text[max(0, m.start() - 40):m.end() + 20]):
            yield Hit("npi", m.start(), m.end())
    for m in _DEA.finditer(text):
        if dea_valid(m.group(1), m.group(2)):
            yield Hit("dea", m.start(), m.end())


# ---------------------------------------------------------------- Medicare MBI

# CMS's MBI: 11 characters, C A AN N A AN N A A N N; letters exclude S L O I B Z; the
# dashes after the 4th and 7th character are optional in print.
_A = "ACDEFGHJKMNPQRTUVWXY"
_MBI = re.compile(
    rf"(?<![\w-])[1-9][{_A}][{_A}0-9]\d-?[{_A}][{_A}0-9]\d-?[{_A}]{{2}}\d{{2}}(?![\w-])"
)


def mbi_hits(text: str) -> Iterator[Hit]:
    for m in _MBI.finditer(text):
        yield Hit("mbi", m.start(), m.end())


# ---------------------------------------------------------------- insurance member IDs

# No check digit exists across payers: a member ID is an ID-like token right after the
# words that name it. Shapes: optional 1-4 letter prefix, then 6-14 digits or mixed.
_MEMBER_KEYWORD = re.compile(
    r"(?i)\b(?:member|subscriber|insured|enrollee|beneficiary|insurance|policy|medicaid|plan|"
    r"mitglieds|versicherten|afiliado|asegurado|adh[eé]rent)"
    r"[\s-]*(?:id(?:entification)?|no\.?|number|num|nr\.?|#|nummer|n[uú]mero|numéro)(?:\s*(?:no\.?|number|#))?"
    r"\s*[:#=]?\s*"
)
_MEMBER_VALUE = re.compile(r"(?=[A-Z0-9-]{6,20}\b)(?=(?:[^0-9\s]*\d){5})[A-Z]{0,4}[- ]?[A-Z0-9]{1,4}[- ]?\d[\dA-Z-]{3,16}\b")


def member_id_hits(text: str, anchors: Iterable[int] | None = None) -> Iterator[Hit]:
    """``anchors``: where member words start (from the term pass); None searches all."""
    return _named_hits("member_id", _MEMBER_KEYWORD, _MEMBER_VALUE, text, anchors)


def _named_hits(kind: str, keyword: re.Pattern[str], value: re.Pattern[str], text: str,
                anchors: Iterable[int] | None) -> Iterator[Hit]:
    """An identifier with no check digit: a ``value`` right after a ``keyword`` that names
    it, the keywords searched for or matched at ``anchors`` (where the term pass found them)."""
    keywords = keyword.finditer(text) if anchors is None else (k for k in (keyword.match(text, a) for a in anchors) if k)
    for k in keywords:
        m = value.match(text, k.end())
        if m:
            yield Hit(kind, m.start(), m.end())


# ---------------------------------------------------------------- medical record numbers

# Each practice numbers its own charts: no issuer, no check digit. As for member IDs, an
# ID-like token (5+ digits, an optional short letter prefix) counts only right after the
# words that name it: "MRN", "medical record #", "chart no.", "patient ID". "Chart" and
# "patient" need the number word after them ("patient 2 of 3" is not a record number).
_MRN_KEYWORD = re.compile(
    r"(?i)\b(?:mrn|mr\s?#|med(?:ical)?\.?\s*rec(?:ord)?s?\.?(?:\s*(?:number|no\.?|nr\.?|#|id))?"
    r"|expediente|historia\s+cl[ií]nica|patientennummer"
    r"|(?:chart|patient|patienten)[\s-]*(?:id|no\.?|number|num|nr\.?|#|nummer))"
    r"(?:\s*(?:no\.?|number|#))?\s*[:#=]?\s*"
)
_MRN_VALUE = re.compile(r"(?=[A-Z0-9-]{5,20}\b)(?=(?:[^0-9\s]*\d){5})[A-Z]{0,3}-?\d[\d-]{3,18}\b")


def mrn_hits(text: str, anchors: Iterable[int] | None = None) -> Iterator[Hit]:
    """``anchors``: where record-number words start (from the term pass); None searches all."""
    return _named_hits("mrn", _MRN_KEYWORD, _MRN_VALUE, text, anchors)


# ---------------------------------------------------------------- ICD-10-CM codes

_ICD_DOTTED = re.compile(r"(?<![\w.-])([A-TV-Z]\d[0-9A-Z])\.([0-9A-Z]{1,4})(?![\w-]|\.\d)")
_ICD_BARE = re.compile(r"(?<![\w.-])[A-TV-Z]\d[0-9A-Z]{1,5}(?![\w.-])")
_ICD_KEYWORD = re.compile(r"(?i)\b(?:icd(?:-?10)?(?:-cm)?|dx|diagnos[ie]s|diagn[oó]stico|diagnose|diagnostic|code)s?\b")


def icd10_code_list() -> Path:
    """The ICD-10-CM code list that the simple-icd-10-cm package ships (offline, a few MB).
    Found without importing the package: importing it parses its whole XML classification
    (150 MB of memory); the plain code list is all that is needed."""
    spec = importlib.util.find_spec("simple_icd_10_cm")
    locations = list(spec.submodule_search_locations or ()) if spec else []
    files = sorted(Path(loc, "data").glob("code-list*.txt") for loc in locations)
    names = sorted(p for group in files for p in group)
    if not names:
        raise FileNotFoundError("the simple-icd-10-cm package (its data/code-list*.txt) is missing; "
                                "reinstall mailguard's dependencies")
    return names[-1]


@lru_cache(maxsize=1)
def icd10_codes() -> frozenset[str]:
    """The ICD-10-CM code set (billable codes and categories, without dots), read once."""
    text = icd10_code_list().read_text(encoding="utf-8")
    if " " in text or "\t" in text:  # not one code a line: line by line
        return frozenset(line.strip() for line in text.splitlines() if line.strip() and "-" not in line)
    # one code a line (ranges such as A00-A09 left out): the same set, split in C (a
    # hundredth of a cold start less than a loop over 98,000 lines)
    return frozenset(text.split()).difference(re.findall(r"\S*-\S*", text))


def icd10_hits(text: str, codes: frozenset[str], keyword: bool = True) -> Iterator[Hit]:
    """Dotted codes (F32.9) that exist in the code set; undotted ones (F329) only near the
    words ICD, diagnosis, dx or code (product and model numbers look the same)."""
    for m in _ICD_DOTTED.finditer(text):
        if m.group(1) + m.group(2) in codes:
            yield Hit("icd10", m.start(), m.end())
    if not keyword:
        return
    for m in _ICD_BARE.finditer(text):
        if m.group(0) in codes and _ICD_KEYWORD.search(text[max(0, m.start() - 60):m.end() + 10]):
            yield Hit("icd10", m.start(), m.end())


# ---------------------------------------------------------------- dates of birth

_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|enero|febrero|marzo|abril|mayo|junio|julio|"
    "agosto|septiembre|octubre|noviembre|diciembre|januar|februar|m[aä]rz|juni|juli|oktober|dezember|"
    "janvier|f[eé]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|octobre|novembre|d[eé]cembre"
)
_DATE = re.compile(
    r"(?i)(?<![\w/.-])(?:"
    r"(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<y>(?:19|20)\d{2}|\d{2})"
    r"|(?P<y2>(?:19|20)\d{2})-(?P<m2>\d{1,2})-(?P<d2>\d{1,2})"
    rf"|(?:(?P<d3>\d{{1,2}})\.?\s+(?:de\s+)?)?(?P<mon>{_MONTHS})\.?\s+(?:(?P<d4>\d{{1,2}}),?\s+)?(?:de\s+)?(?P<y3>(?:19|20)\d{{2}})"
    r")(?![\w/-]|\.\d)"
)
_DOB_KEYWORD = re.compile(
    r"(?i)\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthdate|born(?:\s+on)?|b-?day|"
    r"fecha\s+de\s+nacimiento|f\.?\s*nac\.?|geburtsdatum|geb\.|geboren(?:\s+am)?|date\s+de\s+naissance|"
    r"n[ée]e?\s+le)\b"
)
# The words that head a date-of-birth column (not "born", which stories use).
_DOB_HEADING = re.compile(
    r"(?i)\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|fecha\s+de\s+nacimiento|geburtsdatum|date\s+de\s+naissance)\b"
)
# "Jane Q. Roe" or "ROE, Jane": a name a date of birth belongs to.
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z]\.?)?\s+[A-Z][a-z]+(?:-[A-Z][a-z]+)?\b|\b[A-Z][A-Za-z'-]+,\s*[A-Z][a-z]+\b")


def _plausible_birth_year(match: re.Match[str], today: date) -> bool:
    year_text = match.group("y") or match.group("y2") or match.group("y3") or ""
    year = int(year_text)
    if len(year_text) == 2:
        return True  # 03/14/62: a two-digit year is a birth date's usual form
    return 1900 <= year <= today.year


def dob_hits(text: str, today: date | None = None, keyword: bool = True, heading: bool | None = None) -> Iterator[Hit]:
    """A date with a plausible birth year right after a date-of-birth word (any of the
    languages the practice's patients write in), or right after a person's name when a
    date-of-birth word heads the text (a table with a DOB column)."""
    if not keyword:
        return
    today = today or date.today()
    keyword_anywhere = heading
    for m in _DATE.finditer(text):
        if not _plausible_birth_year(m, today):
            continue
        before = text[max(0, m.start() - 40):m.start()]
        if _DOB_KEYWORD.search(before):
            yield Hit("dob", m.start(), m.end())
            continue
        if keyword_anywhere is None:
            keyword_anywhere = bool(_DOB_HEADING.search(text))
        if keyword_anywhere and _NAME.search(text[max(0, m.start() - 60):m.start()]):
            yield Hit("dob", m.start(), m.end())
