"""Patient data in the forms a front desk really sends it, and the privacy of what mailguard
says about it.

1. Accidents that must still be caught: identifiers with invisible characters, non-ASCII
   digits or Unicode dashes inside, in an attachment's file name, in a spreadsheet that
   keeps dates of birth as day counts and SSNs as numbers, in a Word table, in a Word
   header, a medical record number.
2. Findings say kinds and counts, never values: the SMTP replies (outbound listener and
   milter), the notice, log lines in text and JSON, the quarantine's files, its digest,
   the X-MailGuard headers and `mailguard check`.
Ordinary outbound mail (invoices, phone numbers, dates that are not births) stays clean.
All data is synthetic and built here.
"""
from __future__ import annotations

import json
import logging
import smtplib
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

import phi_samples as P
from dns_server import loopback_dns, loopback_dns_toml
from mailguard import Scanner
from mailguard.config import Config
from mailguard.logsetup import _JsonFormatter, _TextFormatter
from mailguard.milter import protocol as mp
from mailguard.model import Envelope
from mailguard.quarantine.notify import build_digests
from test_outbound import STAFF, OUTSIDE, entries, messages_to, send, start_outbound, text_of  # noqa: F401
from test_relay_support import LoopThread, Sink, loop_thread, scanner, sink  # noqa: F401 (fixtures)

OUT = Envelope(STAFF, (OUTSIDE,), direction="outbound")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

# Invented patients; every value below must never appear in what mailguard writes.
NAME1, NAME2 = "Imogen Quarterfield", "Bartholomew Pinkney"
SSN1, SSN2 = "536-22-7319", "078-41-4456"  # the second starts with 0: a number cell loses it
DOB1, DOB2 = "03/14/1962", "07/02/1958"
SERIAL1, SERIAL2 = "22719", "21368"  # the same dates as Excel keeps them (days since 1899-12-30)
MRN1 = "00482913"
FILENAME = "Quarterfield_Imogen_SSN_536-22-7319.xlsx"
VALUES = (NAME1, NAME2, "Quarterfield", "Pinkney", SSN1, SSN2, "536227319", "78414456", DOB1, DOB2, MRN1,
          "7319", "4456", "2913", FILENAME)

_scanner = Scanner(Config.from_dict({"auth": {"enabled": False}, "dns": loopback_dns()}))


def phi_of(raw: bytes) -> dict[str, Any]:
    """The PHI finding of an outbound scan as check --json shows it ({} when none)."""
    found = [f for f in _scanner.scan(raw, OUT).to_dict()["findings"] if f["analyzer"] == "phi"]
    assert len(found) <= 1
    return found[0] if found else {}


def html_message(html: str, subject: str = "Referral") -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = STAFF, OUTSIDE, subject
    msg.set_content("See the HTML part.")
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def styled_xlsx(rows: list[list[tuple[str, str, int | None]]]) -> bytes:
    """A workbook as Excel writes it: text in shared strings, dates and SSNs as numbers
    with a cell style (style 1: date format 14, style 2: Excel's SSN format 000-00-0000)."""
    strings: list[str] = []
    sheet = []
    for i, row in enumerate(rows, 1):
        cells = []
        for j, (value, kind, style) in enumerate(row):
            s = f' s="{style}"' if style is not None else ""
            if kind == "s":
                strings.append(value)
                cells.append(f'<c r="{chr(65 + j)}{i}" t="s"{s}><v>{len(strings) - 1}</v></c>')
            else:
                cells.append(f'<c r="{chr(65 + j)}{i}"{s}><v>{value}</v></c>')
        sheet.append(f'<row r="{i}">{"".join(cells)}</row>')
    styles = ('<styleSheet><numFmts count="1"><numFmt numFmtId="164" formatCode="000\\-00\\-0000"/></numFmts>'
              '<cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/>'
              '<xf numFmtId="164" applyNumberFormat="1"/></cellXfs></styleSheet>')
    return P._zip({
        "[Content_Types].xml": "<Types/>",
        "xl/styles.xml": styles,
        "xl/sharedStrings.xml": "<sst>" + "".join(f"<si><t>{P._xml(s)}</t></si>" for s in strings) + "</sst>",
        "xl/worksheets/sheet1.xml": f"<worksheet><sheetData>{''.join(sheet)}</sheetData></worksheet>",
    })


def patient_workbook() -> bytes:
    return styled_xlsx([
        [("Name", "s", None), ("DOB", "s", None), ("SSN", "s", None)],
        [(NAME1, "s", None), (SERIAL1, "n", 1), (SSN1.replace("-", ""), "n", 2)],
        [(NAME2, "s", None), (SERIAL2, "n", 1), (SSN2.replace("-", "").lstrip("0"), "n", 2)],
    ])


def word(body_xml: str, **parts: str) -> bytes:
    doc = f'<w:document><w:body>{body_xml}</w:body></w:document>'
    return P._zip({"[Content_Types].xml": "<Types/>", "word/document.xml": doc, **parts})


def word_paragraph(text: str) -> str:
    return f"<w:p><w:r><w:t>{P._xml(text)}</w:t></w:r></w:p>"


def word_table(rows: list[list[str]]) -> str:
    return "<w:tbl>" + "".join(
        "<w:tr>" + "".join(f"<w:tc>{word_paragraph(c)}</w:tc>" for c in row) + "</w:tr>" for row in rows
    ) + "</w:tbl>"


# ------------------------------------------------------------------ 1. forms that must be caught

@pytest.mark.parametrize("written", [
    "536-22\u200b-7319",        # zero-width space
    "536\u00ad-22-7319",        # soft hyphen (an editor's line breaking)
    "536-22-\u20607319",        # word joiner
    "\u0665\u0663\u0666-\u0662\u0662-\u0667\u0663\u0661\u0669",  # Arabic-Indic digits
    "\u06f5\u06f3\u06f6-\u06f2\u06f2-\u06f7\u06f3\u06f1\u06f9",  # Persian digits
    "\uff15\uff13\uff16\uff0d\uff12\uff12\uff0d\uff17\uff13\uff11\uff19",  # full-width digits and hyphen
    "536\u201122\u20117319",    # non-breaking hyphen (Word's Ctrl+Shift+-)
    "536\u201322\u20137319",    # en dash
    "536\u221222\u22127319",    # minus sign
    "536\u00a022\u00a07319",    # no-break spaces
])
def test_an_ssn_with_invisible_or_foreign_characters_is_still_an_ssn(written: str) -> None:
    found = phi_of(P.message(f"Patient {NAME1}, SSN {written}, see you Tuesday."))
    assert found.get("details", {}).get("kinds", {}).get("ssn") == 1
    assert found["rule"] in ("PHI_MEDIUM_CONFIDENCE", "PHI_HIGH_CONFIDENCE")


def test_a_date_of_birth_in_arabic_indic_digits_and_an_mrn_with_a_zero_width_space() -> None:
    found = phi_of(P.message("Patient DOB \u0660\u0663/\u0661\u0664/\u0661\u0669\u0666\u0662, "
                             "MRN 0048\u200b2913, diagnosis F32.9"))
    assert found["details"]["kinds"] == {"dob": 1, "mrn": 1, "icd10": 1}
    assert found["rule"] == "PHI_HIGH_CONFIDENCE"


def test_html_entities_and_tags_inside_the_values() -> None:
    found = phi_of(html_message("<p>Patient SSN 536&#45;22&#x2D;7319, 078<wbr>-41&shy;-4456, "
                                "DOB 03<span>/</span>14/1962</p>"))
    assert found["details"]["kinds"] == {"ssn": 2, "dob": 1}


@pytest.mark.parametrize("label", [
    "MRN: 00482913", "Medical record #: 00482913", "Chart no. 482913", "Patient ID 482913-01",
    "Número de expediente: 482913", "Patientennummer 00482913",
])
def test_medical_record_numbers_are_patient_identifiers(label: str) -> None:
    """An identifier with the words that name it: medium confidence (held by default)."""
    found = phi_of(P.message(f"Hi, {label} was rescheduled to Friday."))
    assert found["details"]["kinds"] == {"mrn": 1}
    assert found["details"]["confidence"] == "medium"
    assert "1 medical record number" in found["summary"]


def test_patient_data_in_an_attachment_name_counts_and_the_name_is_never_told() -> None:
    pdf = P.pdf("Scanned intake form")
    found = phi_of(P.message("Attached.", attachments=(("Quarterfield_Imogen_SSN_536-22-7319.pdf",
                                                          "application/pdf", pdf),)))
    assert found["details"]["kinds"] == {"ssn": 1} and found["details"]["places"] == ["attachment name"]
    assert found["summary"].endswith("in the attachment names")
    assert not any(v in json.dumps(found) for v in VALUES)
    # ... also inside a zip (a member's name)
    inner = P._zip({"Roe, Jane - DOB 03-14-1962 - MRN 00482913.pdf": pdf})
    found = phi_of(P.message("Attached.", attachments=(("records.zip", "application/zip", inner),)))
    assert found["details"]["kinds"] == {"dob": 1, "mrn": 1}


def test_a_spreadsheet_with_dates_of_birth_as_day_counts_and_ssns_as_numbers() -> None:
    """Excel keeps 03/14/1962 as 22719 and 078-41-4456 as 78414456 (format 000-00-0000):
    the export of a patient list as a real spreadsheet program writes it."""
    found = phi_of(P.message("The list.", attachments=((FILENAME, XLSX, patient_workbook()),)))
    assert found["details"]["kinds"]["dob"] == 2 and found["details"]["kinds"]["ssn"] >= 2
    assert found["rule"] == "PHI_HIGH_CONFIDENCE"


def test_a_word_table_reads_its_columns_and_headers_are_read() -> None:
    table = word_table([["Name", "DOB", "SSN"], [NAME1, DOB1, "536227319"], [NAME2, DOB2, "078414456"]])
    found = phi_of(P.message("Attached.", attachments=(("list.docx", DOCX, word(table)),)))
    assert found["details"]["kinds"] == {"ssn": 2, "dob": 2}  # bare SSNs under their "SSN" heading
    header = '<w:hdr><w:p><w:r><w:t>Patient: Jane Roe  DOB 03/14/1962  MRN 00482913</w:t></w:r></w:p></w:hdr>'
    found = phi_of(P.message("Attached.", attachments=(
        ("letter.docx", DOCX, word(word_paragraph("Dear colleague, see below."), **{"word/header1.xml": header})),)))
    assert found["details"]["kinds"] == {"dob": 1, "mrn": 1}


class _CountingText(str):
    """A text that adds up how many characters its ``find`` calls read."""

    tally = 0

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        begin = 0 if start is None else start
        found = super().find(sub, begin) if end is None else super().find(sub, begin, end)
        _CountingText.tally += (found if found >= 0 else len(self)) - begin + 1
        return found


def characters_read(xml: str, name: str) -> int:
    from mailguard.analyzers.phi.extract import _elements

    _CountingText.tally = 0
    list(_elements(_CountingText(xml), name))
    return _CountingText.tally


@pytest.mark.parametrize("unit, name", [("<row>", "row"), ("<row><c>", "row"), ("<c ", "c"), ("<si><t>", "si"),
                                        ("<w:tbl><w:tr>", "w:tr"), ("<xf", "xf"), ("<row/><row ", "row")])
def test_office_xml_of_unclosed_elements_costs_linear_work(unit: str, name: str) -> None:
    """The worksheet, shared-string, style and Word-table readers were lazy regular
    expressions that read the rest of the part again from every opening tag without an end
    tag: 100 KB of "<row>" in a sheet held the outbound scan for 10 s, 1 MB for some
    fifteen minutes. Four times the XML is now at most about four times the characters read."""
    small, large = characters_read(unit * 2_000, name), characters_read(unit * 8_000, name)
    assert large <= 4 * small + 64


def test_a_workbook_padded_with_unclosed_tags_still_shows_its_patient_data() -> None:
    padding = "<row><c>" * 50_000
    book = P._zip({"xl/sharedStrings.xml": "<sst>" + "<si>" * 20_000 + "</sst>",
                   "xl/styles.xml": "<styleSheet>" + "<numFmt " * 20_000 + "<cellXfs>" * 20_000 + "</styleSheet>",
                   "xl/worksheets/sheet1.xml": "<worksheet><sheetData>" + padding + "</sheetData></worksheet>"})
    letter = word("<w:tbl>" * 20_000 + word_table([["Name", "SSN"], [NAME1, "536227319"]]) + "<w:tbl><w:tr>" * 20_000)
    found = phi_of(P.message("Attached.", attachments=(("a.xlsx", XLSX, book), ("list.docx", DOCX, letter))))
    assert found["details"]["kinds"] == {"ssn": 1}


def test_a_cell_index_that_is_not_an_ascii_number_does_not_fail_the_scan() -> None:
    book = P._zip({"xl/sharedStrings.xml": "<sst><si><t>a</t></si></sst>",
                   "xl/worksheets/sheet1.xml": '<worksheet><sheetData><row><c t="s"><v>\u00b2</v></c></row>'
                                               '</sheetData></worksheet>'})
    verdict = _scanner.scan(P.message("x", attachments=(("a.xlsx", XLSX, book),)), OUT)
    assert verdict.errors == ()


# ------------------------------------------------------------------ ordinary mail stays clean

@pytest.mark.parametrize("body", [
    P.business_mail(OUTSIDE).decode(),
    "Call 555\u2011201\u20114477 or 555\u2013201\u20134478; invoice 2026\u201312\u2011001, PO 88231, "
    "delivered 12\u200b/01/2026, chart of accounts updated, 3 patients seen today (no names).",
    "Invoice\u00a0No. 536221234 of 03/14/2026: total $1\u202f250.00, account 4471\u00a02234\u00a088.",
    "Our practice was founded on 03/14/1962 and moved on 07/02/1988. Patient portal: 2 of 3 steps done.",
    "Order #48291300, tracking 1Z999AA10123456784, ref MR-2026-0042, chart 2026 results attached.",
])
def test_ordinary_outbound_mail_has_no_patient_data(body: str) -> None:
    assert phi_of(P.message(body, subject="Order and invoice")) == {}


def test_ordinary_spreadsheets_and_file_names_have_no_patient_data() -> None:
    book = styled_xlsx([
        [("Invoice", "s", None), ("Date", "s", None), ("Amount", "s", None)],
        [("INV-2026-001", "s", None), ("46357", "n", 1), ("1250", "n", None)],
        [("INV-2026-002", "s", None), ("22719", "n", 1), ("536227319", "n", None)],
    ])
    raw = P.message("Invoices attached.", attachments=(
        ("invoices_2026-12_536221234.xlsx", XLSX, book), ("scan_20261201_123456789.pdf", "application/pdf",
                                                          P.pdf("Invoice 88231 dated 11/28/2026")),))
    assert phi_of(raw) == {}


# ------------------------------------------------------------------ 2. privacy of the findings

@pytest.fixture()
def formatted_logs() -> Iterator[list[str]]:
    """mailguard's log lines as both formats write them ([logging] format text and json)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s").format(record))
            lines.append(_JsonFormatter().format(record))

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger("mailguard")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def accident() -> bytes:
    """Everything at once: values in the subject, the body (with a zero-width space), the
    attachment's name and the spreadsheet."""
    return P.message(f"Hi, here is the list. Patient {NAME1}, SSN 536-22\u200b-7319, MRN {MRN1}.\n",
                     subject=f"Patients {NAME1} SSN {SSN1}",
                     attachments=((FILENAME, XLSX, patient_workbook()),))


def assert_no_values(where: str, text: str | bytes, shortest: int = 0) -> None:
    """``shortest``: only values at least this long (a database file is full of random hex
    and base64, where a 4-digit tail such as "7319" turns up by chance)."""
    found = [v for v in VALUES if len(v) >= shortest and (v.encode() if isinstance(text, bytes) else v) in text]
    assert not found, f"{where} carries {found}"


def test_outbound_refusal_tells_kinds_never_values(start_outbound: Any, sink: Sink,
                                                  formatted_logs: list[str]) -> None:
    relay = start_outbound(phi_high="refuse", phi_medium="refuse")
    host, port = relay.outbound
    with pytest.raises(smtplib.SMTPDataError) as refused, smtplib.SMTP(host, port, timeout=30) as client:
        client.sendmail(STAFF, [OUTSIDE], accident())
    reply = refused.value.smtp_error.decode()
    assert refused.value.smtp_code == 550 and "Social Security numbers" in reply and "medical record number" in reply
    assert_no_values("the 550 reply", reply)
    assert sink.handler.messages == []
    logged = "\n".join(formatted_logs)
    assert "PHI_HIGH_CONFIDENCE" in logged and '"phi_kinds"' in logged
    assert_no_values("the log", logged)


def test_held_outbound_mail_notice_quarantine_and_digest_carry_no_values(start_outbound: Any, sink: Sink,
                                                                         tmp_path: Path,
                                                                         formatted_logs: list[str]) -> None:
    relay = start_outbound()  # the next hop has no TLS: require_tls holds
    code, text = send(relay, accident(), (OUTSIDE,))
    assert code == 250 and b"Held for review" in text
    assert_no_values("the 250 reply", text)
    notice = sink.handler.wait_for(1)[0]
    assert notice.rcpt_tos == [STAFF] and messages_to(sink, OUTSIDE) == []
    assert "Social Security number" in text_of(notice.data)
    assert_no_values("the notice", notice.data)
    held = entries(tmp_path, sink)
    assert len(held) == 1
    assert_no_values("the quarantine's reasons", " ".join(held[0].reasons))
    assert_no_values("the quarantine's files", b"".join(p.read_bytes() for p in (tmp_path / "q").rglob("*")
                                                         if p.is_file()), shortest=8)
    # The digest (off by default) shows subjects, which the operator chose; its "Why" must not.
    digest = build_digests(held, ("it@practice.example",), "mailguard@practice.example",
                           datetime.now(timezone.utc))[0].as_bytes().decode()
    assert "medical record number" in digest
    assert_no_values("the digest", "\n".join(line for line in digest.splitlines() if "Subject:" not in line))
    assert_no_values("the log", "\n".join(formatted_logs))


def test_audited_delivery_adds_no_values_in_the_headers(start_outbound: Any, sink: Sink) -> None:
    relay = start_outbound(phi_high="audit", phi_medium="audit")
    assert send(relay, accident(), (OUTSIDE,))[0] == 250
    delivered = sink.handler.wait_for(1)[0].data
    added = b"\n".join(line for line in delivered.split(b"\r\n") if line.startswith(b"X-MailGuard"))
    assert b"PHI_HIGH_CONFIDENCE" in added
    assert_no_values("the X-MailGuard headers", added)


def test_milter_refusal_tells_kinds_never_values(tmp_path: Path) -> None:
    from test_milter_outbound import send as milter_send

    raw = accident().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    replies, held = milter_send(tmp_path, raw, OUTSIDE, b"{daemon_name}\0submission\0",
                                outbound={"phi_high": "refuse"}, outbound_daemon_names=["submission"],
                                outbound_authenticated=False)
    assert replies[0][0] == mp.SMFIR_REPLYCODE and replies[0][1].startswith(b"550") and held == []
    assert_no_values("the milter's 550", replies[0][1])


def test_check_text_and_json_carry_kinds_not_values(tmp_path: Path) -> None:
    (tmp_path / "mailguard.toml").write_text('[phi]\ninbound = true\n[auth]\nenabled = false\n' + loopback_dns_toml())
    (tmp_path / "message.eml").write_bytes(accident())
    outputs = []
    for extra in ([], ["--json"]):
        done = subprocess.run([sys.executable, "-m", "mailguard", "check", "--config", str(tmp_path / "mailguard.toml"),
                               *extra, str(tmp_path / "message.eml")], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[1])
        assert "PHI_HIGH_CONFIDENCE" in done.stdout, done.stderr
        outputs.append(done.stdout + done.stderr)
    assert_no_values("check's output", "\n".join(outputs))
