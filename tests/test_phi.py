"""The PHI analyzer: identifiers validated (not merely shaped), confidence levels, and
findings that name kinds and counts but never values."""
from __future__ import annotations

import random

import pytest

import phi_samples as P
from mailguard import Scanner
from mailguard.analyzers.phi import assess
from mailguard.analyzers.phi import identifiers as ids
from mailguard.analyzers.phi.extract import Document, attachment_documents, csv_text
from mailguard.message import parse
from mailguard.model import Envelope

OUT = Envelope("dr.roe@practice.example", ("someone@outside.example",), direction="outbound")


def kinds(text: str) -> dict[str, int]:
    return dict(assess([Document("body", text)]).counts)


def level(text: str) -> str:
    return assess([Document("body", text)]).confidence


@pytest.mark.parametrize("number,valid", [
    ("536-22-1234", True), ("000-12-3456", False), ("666-12-3456", False), ("912-34-5678", False),
    ("123-00-4567", False), ("123-45-0000", False), ("078-05-1120", False),  # the Woolworth wallet card
])
def test_ssn_rules(number: str, valid: bool) -> None:
    assert bool(list(ids.ssn_hits(f"SSN {number}"))) is valid


def test_ssn_shapes_that_are_not_ssns() -> None:
    assert list(ids.ssn_hits("call 555-201-4477, part 123-45-67890, version 1.536-22-1234")) == []
    assert list(ids.ssn_hits("order 536221234 shipped")) == []  # bare nine digits need the word
    assert len(list(ids.ssn_hits("SSN: 536221234"))) == 1
    assert len(list(ids.ssn_hits("536 22 1234 and 536.22.1234"))) == 2


def test_npi_luhn_with_the_80840_prefix_and_dea_check_digit() -> None:
    assert ids.npi_valid("1234567893") and not ids.npi_valid("1234567890")
    assert [h.kind for h in ids.provider_hits("NPI 1234567893")] == ["npi"]
    assert list(ids.provider_hits("call 1234567893")) == []  # ten digits are also phone numbers
    assert ids.dea_valid("AB", "1234563") and not ids.dea_valid("AB", "1234564")


def test_mbi_format() -> None:
    assert len(list(ids.mbi_hits("MBI 1EG4-TE5-MK73 and 1EG4TE5MK73"))) == 2
    assert list(ids.mbi_hits("1SG4TE5MK73 1EG4TE5MK7 0EG4TE5MK73")) == []  # S excluded, too short, leading 0


def test_member_ids_need_their_keyword() -> None:
    assert len(list(ids.member_id_hits("Member ID: XYZ123456789"))) == 1
    assert len(list(ids.member_id_hits("Subscriber #W123456789"))) == 1
    assert list(ids.member_id_hits("Order XYZ123456789")) == []


def test_icd10_codes_checked_against_the_code_set() -> None:
    codes = ids.icd10_codes()
    assert {"F329", "F411", "E119", "I10"} <= codes
    for code, _ in P.ICD:
        assert code.replace(".", "") in codes
    found = list(ids.icd10_hits("Dx F32.9, F15.0 and B12.5; model X12.3", codes))
    assert len(found) == 1  # F15.0 and B12.5 do not exist, X12.3 is not a code
    assert list(ids.icd10_hits("part F329 shipped", codes)) == []  # undotted needs ICD/dx words
    assert len(list(ids.icd10_hits("ICD-10 F329", codes))) == 1


def test_dates_of_birth_near_their_words_or_names() -> None:
    assert len(list(ids.dob_hits("DOB 03/14/1962"))) == 1
    assert len(list(ids.dob_hits("Fecha de nacimiento: 14 de marzo de 1962"))) == 1
    assert len(list(ids.dob_hits("Geburtsdatum 14.03.1962"))) == 1
    assert list(ids.dob_hits("Invoice dated 03/14/2026, due 04/14/2026")) == []
    table = "Name | DOB\nJane Roe 03/14/1962\nJohn Doe 07/02/1958"
    assert len(list(ids.dob_hits(table))) >= 2


def test_confidence_levels() -> None:
    assert level("ref 536-22-1234") == "low"
    assert level("Patient SSN 536-22-1234") == "medium"
    assert level("Patient SSN 536-22-1234, dx F32.9 Major depressive disorder") == "high"
    # Health words with patient context but no identifier: low (audited, not held by default).
    assert level("Patients with major depressive disorder respond to sertraline.") == "low"
    assert level("Major depressive disorder responds to sertraline.") == ""  # a health topic, no patient
    assert level("NPI 1234567893, DEA AB1234563") == ""  # a clinician's signature is not patient data
    assert level(P.business_mail("x@y.example").decode()) == ""


def test_summary_names_kinds_and_counts_never_values() -> None:
    verdict = Scanner().scan(P.done_when_body("someone@outside.example"), OUT)
    phi = [f for f in verdict.findings if f.analyzer == "phi"]
    assert [f.rule for f in phi] == ["PHI_HIGH_CONFIDENCE"] and phi[0].score == 0.0
    assert "2 Social Security numbers" in phi[0].summary and "2 dates of birth" in phi[0].summary
    dumped = str(verdict.to_dict())
    assert not any(v in dumped for v in P.SECRET_VALUES)


def test_only_outbound_mail_is_searched_unless_configured() -> None:
    raw = P.done_when_body("x@practice.example")
    assert not [f for f in Scanner().scan(raw).findings if f.analyzer == "phi"]
    from mailguard.config import Config

    inbound_too = Scanner(Config.from_dict({"phi": {"inbound": True}}))
    assert [f.rule for f in inbound_too.scan(raw).findings if f.analyzer == "phi"] == ["PHI_HIGH_CONFIDENCE"]


@pytest.mark.parametrize("container", P.CONTAINERS)
def test_every_container_is_read(container: str) -> None:
    sample = next(s for s in P.generated(len(P.CONTAINERS) * 2, seed=3) if s.container == container)
    verdict = Scanner().scan(sample.raw, OUT)
    assert any(f.details.get("confidence") in ("medium", "high") for f in verdict.findings if f.analyzer == "phi")


def test_tables_are_read_as_header_value_pairs() -> None:
    assert "DOB: 03/14/1962" in csv_text("Name,DOB\nJane Roe,03/14/1962\n")


def test_hostile_attachments_do_not_crash() -> None:
    rng = random.Random(5)
    junk = bytes(rng.randrange(256) for _ in range(4000))
    raw = P.message("see attached", attachments=(
        ("a.pdf", "application/pdf", b"%PDF-1.4\n" + junk), ("b.docx", "application/zip", b"PK\x03\x04" + junk),
        ("c.csv", "text/csv", junk), ("d.xlsx", "application/zip", P._zip({"xl/worksheets/sheet1.xml": "<row><c"})),
    ))
    message = parse(raw, OUT)
    attachment_documents(message.attachments, 100_000)
    assert Scanner().scan(raw, OUT).errors == ()
