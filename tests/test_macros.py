"""Macros: real VBA projects (MS-OVBA compressed, in OLE and in OOXML) and Excel 4.0 macro
sheets, built in code, scanned as whole messages. The macro "payload" is text, never run."""
from __future__ import annotations

import olefile
import pytest

import filetype_samples as S
import mailguard
from mailguard import Action, Config
from mailguard.analyzers.base import AnalyzerContext
from oletools.olevba import VBA_Parser

from mailguard.analyzers.macros import MacrosAnalyzer, describe, inspect, is_candidate
from oletools.thirdparty.oledump.plugin_biff import cBIFF  # after olevba, whose import quiets pyparsing

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def build(config: Config | None = None) -> mailguard.Scanner:
    config = config or Config.default()
    # Until the coordinator registers "macros" as a built-in analyzer.
    from mailguard.analyzers import analyzer_classes

    if "macros" in analyzer_classes():
        return mailguard.Scanner(config)
    section = {k: o.default for k, o in MacrosAnalyzer.full_schema().items()}
    return mailguard.Scanner(config, extra_analyzers=[MacrosAnalyzer(section, AnalyzerContext(config))])


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return build()


def macro_rules(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings if f.analyzer == "macros"}


def scan(scanner: mailguard.Scanner, *attachments: tuple[str, bytes, str]) -> mailguard.Verdict:
    verdict = scanner.scan(S.message(attachments))
    assert not verdict.errors, verdict.errors
    return verdict


def test_samples_are_real_vba_projects() -> None:
    """The built samples are what oletools (the reference tool) reads as macro documents."""
    for name, data in (("a.doc", S.word97_with_macro()), ("a.docm", S.real_docx(macro_source=S.AUTOOPEN_MACRO))):
        parser = VBA_Parser(name, data=data)
        assert parser.detect_vba_macros()
        (code,) = [c for *_, c in parser.extract_all_macros()]
        assert "Sub AutoOpen()" in code
        parser.close()
    with olefile.OleFileIO(S.xls_with_xlm_macro_sheet()) as ole:
        workbook = ole.openstream("Workbook").read()
    assert "Excel 4.0 macro sheet" in "\n".join(cBIFF(name=["Workbook"], stream=workbook, options="-o BOUNDSHEET").Analyze())


@pytest.mark.parametrize("name, data, ctype", [
    ("invoice.doc", S.word97_with_macro(), "application/msword"),
    ("invoice.docm", S.real_docx(macro_source=S.AUTOOPEN_MACRO), DOCX),
    ("invoice.docx", S.real_docx(macro_source=S.AUTOOPEN_MACRO), DOCX),  # a .docm renamed
    ("invoice.zip", S.zip_with({"invoice.doc": S.word97_with_macro()}), "application/zip"),
])
def test_auto_running_suspicious_macros_are_quarantined(scanner: mailguard.Scanner, name: str, data: bytes,
                                                        ctype: str) -> None:
    verdict = scan(scanner, (name, data, ctype))
    assert macro_rules(verdict) == {"MACROS_VBA", "MACROS_AUTOEXEC", "MACROS_SUSPICIOUS", "MACROS_AUTOEXEC_SUSPICIOUS"}
    assert verdict.action >= Action.QUARANTINE
    dropper = next(f for f in verdict.findings if f.rule == "MACROS_AUTOEXEC_SUSPICIOUS")
    assert dropper.min_action == Action.QUARANTINE
    assert "start by themselves" in dropper.summary and "download files from the internet" in dropper.summary
    suspicious = next(f for f in verdict.findings if f.rule == "MACROS_SUSPICIOUS")
    assert "Shell" in suspicious.details["keywords"]
    autoexec = next(f for f in verdict.findings if f.rule == "MACROS_AUTOEXEC")
    assert autoexec.details["triggers"] == ["AutoOpen"]


def test_one_report_per_document_not_per_part(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("invoice.docm", S.real_docx(macro_source=S.AUTOOPEN_MACRO), DOCX))
    assert [f.rule for f in verdict.findings if f.analyzer == "macros"].count("MACROS_VBA") == 1
    assert all(f.details["attachment"] == "invoice.docm" for f in verdict.findings if f.analyzer == "macros")


def test_harmless_macro_is_reported_but_not_held(scanner: mailguard.Scanner) -> None:
    """A macro document is flagged (at most tagged, with the YARA rules' own VBA finding)
    so staff are warned, but never held when the code does nothing suspicious."""
    verdict = scan(scanner, ("table.docm", S.real_docx(macro_source=S.HARMLESS_MACRO), DOCX))
    assert macro_rules(verdict) == {"MACROS_VBA"}
    assert verdict.action <= Action.TAG
    finding = next(f for f in verdict.findings if f.analyzer == "macros")
    assert "Enable content" in finding.summary


@pytest.mark.parametrize("name, data, ctype", [
    ("budget.xls", S.xls_with_xlm_macro_sheet(), "application/vnd.ms-excel"),
    ("budget.xlsm", S.xlsm_with_macro_sheet(), "application/vnd.ms-excel.sheet.macroEnabled.12"),
])
def test_excel4_macro_sheets_with_auto_open_are_quarantined(scanner: mailguard.Scanner, name: str, data: bytes,
                                                            ctype: str) -> None:
    verdict = scan(scanner, (name, data, ctype))
    assert macro_rules(verdict) == {"MACROS_XLM"}
    assert verdict.action >= Action.QUARANTINE
    finding = next(f for f in verdict.findings if f.analyzer == "macros")
    assert finding.details["autoexec"] and "Excel 4.0 macro sheet" in finding.summary


def test_shared_between_threads(scanner: mailguard.Scanner) -> None:
    from concurrent.futures import ThreadPoolExecutor

    samples = [S.message([("a.doc", S.word97_with_macro(), "application/msword")]),
               S.message([("b.docx", S.real_docx(), DOCX)])] * 8
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda raw: macro_rules(scanner.scan(raw)), samples))
    assert results == [{"MACROS_VBA", "MACROS_AUTOEXEC", "MACROS_SUSPICIOUS", "MACROS_AUTOEXEC_SUSPICIOUS"}, set()] * 8


def test_hidden_macro_sheet_without_auto_open() -> None:
    report = inspect("a.xls", S.xls_workbook(macro_sheet=True, auto_open=False, hidden=True))
    assert report.xlm and report.xlm_hidden and not report.xlm_autoexec


BENIGN = {
    "docx": ("intake.docx", S.real_docx(), DOCX),
    "xls without macros": ("budget.xls", S.xls_workbook(macro_sheet=False, auto_open=False), "application/vnd.ms-excel"),
    "pdf": ("statement.pdf", S.real_pdf(), "application/pdf"),
    "zip of documents": ("records.zip", S.zip_of_documents(), "application/zip"),
    "csv": ("list.csv", S.CSV_TEXT, "text/csv"),
}


@pytest.mark.parametrize("case", sorted(BENIGN))
def test_documents_without_macros_are_accepted(scanner: mailguard.Scanner, case: str) -> None:
    verdict = scan(scanner, BENIGN[case])
    assert not macro_rules(verdict)
    assert verdict.action == Action.ACCEPT


def test_forced_action_is_configurable() -> None:
    strict = build(Config.from_dict({"policy": {"actions": {"MACROS_AUTOEXEC_SUSPICIOUS": "reject"}}}))
    verdict = strict.scan(S.message([("a.doc", S.word97_with_macro(), "application/msword")]))
    assert verdict.action == Action.REJECT


def test_broken_documents_never_raise(scanner: mailguard.Scanner) -> None:
    doc = S.word97_with_macro()
    for data in (doc[:1500], doc[:600] + b"\xff" * (len(doc) - 600), doc[:512], b"PK\x03\x04word/" + b"\0" * 100):
        verdict = scan(scanner, ("broken.doc", data, "application/msword"))
        assert verdict.action in (Action.ACCEPT, Action.TAG)


def test_candidates_and_plain_words() -> None:
    assert is_candidate(S.word97_with_macro()) and is_candidate(S.real_docx())
    assert not is_candidate(S.zip_of_documents()) and not is_candidate(S.real_pdf())
    assert is_candidate(b'<?xml version="1.0"?>\n<?mso-application progid="Word.Document"?><w:wordDocument/>')
    assert describe([("Shell", "May run an executable file or a system command")]) == "start other programs"
    assert describe([]) == "do things ordinary documents never do"


def test_huge_macro_is_bounded_and_reported(scanner: mailguard.Scanner) -> None:
    """Padding a macro with junk must neither hide a trigger at its end nor blow the time
    budget (olevba's keyword scan is linear in code size times keyword count)."""
    junk = "".join(f"' filler line {i} {'x' * 40}\n" for i in range(12_000))  # ~600 KB, all distinct
    source = 'Attribute VB_Name = "Module1"\n' + junk + S.AUTOOPEN_MACRO.split("\n", 1)[1]
    verdict = scan(scanner, ("padded.docm", S.real_docx(macro_source=source), DOCX))
    assert {"MACROS_OVERSIZED", "MACROS_AUTOEXEC_SUSPICIOUS"} <= macro_rules(verdict)
    assert verdict.action >= Action.QUARANTINE
    repeated = 'Attribute VB_Name = "Module1"\n' + "' same line\n" * 60_000 + S.AUTOOPEN_MACRO.split("\n", 1)[1]
    report = inspect("a.docm", S.real_docx(macro_source=repeated))
    assert not report.oversized and report.autoexec == ["AutoOpen"]


def test_documents_over_the_size_limit_are_reported_unchecked() -> None:
    small = build(Config.from_dict({"macros": {"max_document_bytes": 1024}}))
    verdict = small.scan(S.message([("a.doc", S.word97_with_macro(), "application/msword")]))
    assert "MACROS_UNCHECKED" in macro_rules(verdict) and "MACROS_VBA" not in macro_rules(verdict)


def test_documents_that_would_stall_olevba_are_not_handed_to_it() -> None:
    """A .docm whose parts unpack to gigabytes, or whose VBA storage is huge, is reported
    unchecked instead of being unpacked without limit."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", b"<Types/>")
        zf.writestr("word/document.xml", b"<w:document/>")
        zf.writestr("word/vbaProject.bin", b"\0" * (3 * 1024 * 1024))
    report = inspect("bomb.docm", buffer.getvalue(), max_unpacked=1024 * 1024)
    assert report.unchecked and not report.vba
    huge = S.ole_file({"VBA/Module1": b"\x01" + b"\0" * (5 * 1024 * 1024), "VBA/dir": b"\x01", "PROJECT": b""})
    assert inspect("huge.doc", huge).unchecked == "its macro storage is too large to examine"
    small = build(Config.from_dict({"macros": {"max_document_bytes": 1024 * 1024}}))
    verdict = small.scan(S.message([("bomb.docm", buffer.getvalue(), DOCX)]))
    assert "MACROS_UNCHECKED" in macro_rules(verdict) and not verdict.errors
