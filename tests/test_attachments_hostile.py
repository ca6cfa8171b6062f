"""Booby-trapped attachments as they are mailed today, built in code, against a full scan.

Each case asserts what the front desk would see: the verdict and the rule that explains it.
The cost cases count work (members read, bytes inflated) or assert the held verdict; none
is timed.
"""
from __future__ import annotations

import base64
import io
import struct
import zipfile
import zlib

import pytest

import attachment_samples as A
from filetype_samples import (
    AUTOOPEN_MACRO,
    SCRIPTS,
    encrypted_zip,
    iso_image,
    lnk_shortcut,
    message,
    pe_exe,
    rar_archive,
    real_docx,
    seven_zip,
    vhd_image,
    word97_with_macro,
    xls_with_xlm_macro_sheet,
    xlsm_with_macro_sheet,
    zip_with,
)

import mailguard
from mailguard.analyzers.hidden_content import pdf_object_streams_view
from mailguard.model import Action


@pytest.fixture(scope="module")
def scanner() -> mailguard.Scanner:
    return mailguard.Scanner()


def rules(verdict: mailguard.Verdict) -> set[str]:
    return {f.rule for f in verdict.findings}


def attach(name: str, data: bytes, ctype: str = "application/octet-stream", body: str | None = None) -> bytes:
    kwargs = {} if body is None else {"body": body}
    return message([(name, data, ctype)], **kwargs)


def raw_part(headers: str, data: bytes) -> bytes:
    """A message whose attachment headers are written by hand (encoded or disagreeing names)."""
    b64 = base64.encodebytes(data).decode()
    return ("From: Pat <pat@sender.example>\r\nTo: fd@practice.example\r\nSubject: Docs\r\n"
            "Message-ID: <1@sender.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n"
            "--BB\r\nContent-Type: text/plain\r\n\r\nPlease see the file.\r\n"
            f"--BB\r\n{headers}Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--BB--\r\n").encode()


def nested_zip(payload_name: str, payload: bytes, levels: int) -> bytes:
    data = zip_with({payload_name: payload})
    for level in range(levels - 1):
        data = zip_with({f"part{level}.zip": data})
    return data


# --------------------------------------------------------------------------- delivery forms

FORMS = {
    "exe in zip in zip": (attach("docs.zip", nested_zip("invoice.exe", pe_exe(), 2), "application/zip"),
                          "FILETYPE_EXECUTABLE"),
    "zip, password in body": (attach("docs.zip", encrypted_zip({"invoice.exe": pe_exe()}), "application/zip",
                                     body="Hello, the password is 8842\n"), "FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"),
    "7z, password in body": (attach("docs.7z", seven_zip(True), "application/x-7z-compressed",
                                    body="Password: 8842\n"), "FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"),
    "rar, password in body": (attach("docs.rar", rar_archive(True), "application/x-rar", body="Password: 8842\n"),
                              "FILETYPE_ENCRYPTED_ARCHIVE_PASSWORD"),
    "iso": (attach("invoice.iso", iso_image()), "FILETYPE_DISK_IMAGE"),
    "img named pdf": (attach("invoice.pdf", iso_image(), "application/pdf"), "FILETYPE_DISK_IMAGE"),
    "vhd": (attach("scan.vhd", vhd_image()), "FILETYPE_DISK_IMAGE"),
    "lnk": (attach("invoice.lnk", lnk_shortcut()), "FILETYPE_SHORTCUT"),
    "lnk in zip": (attach("docs.zip", zip_with({"invoice.pdf.lnk": lnk_shortcut()}), "application/zip"),
                   "FILETYPE_SHORTCUT"),
    "onenote with file": (attach("invoice.one", A.onenote_with_file()), "SIGNATURE_ONENOTE_EMBEDDED_FILE"),
    "html smuggling": (attach("invoice.html", A.HTML_SMUGGLING.encode(), "text/html"), "SIGNATURE_HTML_SMUGGLING"),
    "shtml smuggling": (attach("invoice.shtml", A.HTML_SMUGGLING.encode(), "text/html"), "SIGNATURE_HTML_SMUGGLING"),
    "svg script": (attach("invoice.svg", A.SVG_SCRIPT.encode(), "image/svg+xml"), "SIGNATURE_SVG_SCRIPT"),
    "data: url download": (attach("invoice.htm", A.HTML_DATA_URI.encode(), "text/html"),
                           "SIGNATURE_HTML_DATA_URI_DOWNLOAD"),
    "credential form": (attach("voicemail.html", A.LOGIN_FORM.encode(), "text/html"),
                        "SIGNATURE_HTML_CREDENTIAL_FORM_OFFSITE"),
    ".url": (attach("invoice.url", A.URL_SHORTCUT.encode()), "FILETYPE_SHORTCUT"),
    ".website": (attach("invoice.website", A.URL_SHORTCUT.encode()), "FILETYPE_SHORTCUT"),
    ".scr": (attach("photo.scr", pe_exe()), "FILETYPE_EXECUTABLE"),
    ".cpl": (attach("photo.cpl", pe_exe()), "FILETYPE_EXECUTABLE"),
    ".cmd": (attach("run.cmd", b"@echo off\r\nstart calc.exe\r\n"), "FILETYPE_SCRIPT"),
    ".msix": (attach("setup.msix", A.msix_package()), "FILETYPE_INSTALLER"),
    ".appx": (attach("setup.appx", A.msix_package()), "FILETYPE_INSTALLER"),
    ".jar": (attach("invoice.jar", A.jar_archive()), "FILETYPE_EXECUTABLE"),
    "rlo name": (attach("invoice\u202efdp.exe", pe_exe()), "FILETYPE_NAME_BIDI"),
    "double extension": (attach("scan.pdf.exe", pe_exe()), "FILETYPE_DOUBLE_EXTENSION"),
    "padded name": (attach("scan.pdf          .exe", pe_exe()), "FILETYPE_NAME_PADDING"),
    "exe named pdf": (attach("scan.pdf", pe_exe(), "application/pdf"), "FILETYPE_EXECUTABLE"),
    "dotm auto macro": (attach("letter.dotm", real_docx(macro_source=AUTOOPEN_MACRO)), "MACROS_AUTOEXEC_SUSPICIOUS"),
    "doc auto macro": (attach("letter.doc", word97_with_macro()), "MACROS_AUTOEXEC_SUSPICIOUS"),
    "xls xlm": (attach("report.xls", xls_with_xlm_macro_sheet()), "MACROS_XLM"),
    "xlsm xlm": (attach("report.xlsm", xlsm_with_macro_sheet()), "MACROS_XLM"),
    "remote template": (attach("report.docx", A.remote_template_docx()), "SIGNATURE_OFFICE_REMOTE_TEMPLATE"),
    "rtf equation editor": (attach("report.rtf", A.rtf_equation_exploit()), "SIGNATURE_OFFICE_EQUATION_EDITOR_EXPLOIT"),
    "rtf named doc": (attach("report.doc", A.rtf_embedded_package(), "application/msword"),
                      "SIGNATURE_OFFICE_OLE_PACKAGE_EXECUTABLE"),
    "pdf javascript on open": (attach("scan.pdf", A.pdf_javascript_on_open(), "application/pdf"),
                               "SIGNATURE_PDF_JAVASCRIPT_ON_OPEN"),
    "pdf launch": (attach("scan.pdf", A.pdf_launch(), "application/pdf"), "SIGNATURE_PDF_LAUNCH_ACTION"),
    "pdf embedded program": (attach("scan.pdf", A.pdf_embedded_program(), "application/pdf"),
                             "SIGNATURE_PDF_EMBEDDED_EXECUTABLE_NAME"),
}
FORMS.update({f"script {name}": (attach(name, data), "FILETYPE_SCRIPT") for name, data in SCRIPTS.items()})


@pytest.mark.parametrize("case", sorted(FORMS))
def test_delivery_forms_are_held_and_explained(scanner: mailguard.Scanner, case: str) -> None:
    raw, rule = FORMS[case]
    verdict = scanner.scan(raw)
    assert verdict.action >= Action.QUARANTINE, (case, rules(verdict))
    finding = next(f for f in verdict.findings if f.rule == rule)
    assert len(finding.summary) > 30


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("headers", [
    "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=UTF-8''invoice%2Ejs\r\n",
    "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*0*=UTF-8''inv; "
    "filename*1=oice.js\r\n",
    "Content-Type: application/octet-stream; name=\"=?utf-8?b?aW52b2ljZS5qcw==?=\"\r\nContent-Disposition: attachment\r\n",
])
def test_encoded_names_are_judged_decoded(scanner: mailguard.Scanner, headers: str) -> None:
    verdict = scanner.scan(raw_part(headers, SCRIPTS["payment.js"]))
    assert "FILETYPE_SCRIPT" in rules(verdict) and verdict.action >= Action.QUARANTINE


def test_encoded_name_with_right_to_left_override(scanner: mailguard.Scanner) -> None:
    headers = ("Content-Type: application/octet-stream\r\n"
               "Content-Disposition: attachment; filename=\"=?utf-8?q?invoice=E2=80=AEfdp.js?=\"\r\n")
    assert {"FILETYPE_NAME_BIDI", "FILETYPE_SCRIPT"} <= rules(scanner.scan(raw_part(headers, SCRIPTS["payment.js"])))


def test_disagreeing_names_are_both_judged(scanner: mailguard.Scanner) -> None:
    """filename= says text, name= says VBScript: some mail programs save it as the script.
    Before: accepted with no finding."""
    headers = ("Content-Type: text/plain; name=\"invoice.vbs\"\r\n"
               "Content-Disposition: attachment; filename=\"invoice.txt\"\r\n")
    verdict = scanner.scan(raw_part(headers, b'MsgBox "hello"\r\n'))
    assert verdict.action >= Action.QUARANTINE
    finding = next(f for f in verdict.findings if f.rule == "FILETYPE_SCRIPT")
    assert "also named 'invoice.vbs'" in finding.summary


def test_agreeing_names_add_nothing(scanner: mailguard.Scanner) -> None:
    headers = ("Content-Type: text/plain; name=\"notes.txt\"\r\n"
               "Content-Disposition: attachment; filename=\"notes.txt\"\r\n")
    verdict = scanner.scan(raw_part(headers, b"Parking is behind the building.\r\n"))
    assert not {r for r in rules(verdict) if r.startswith("FILETYPE_")}


# --------------------------------------------------------------------------- limits lean to holding


@pytest.mark.parametrize("levels", [4, 5, 30])
def test_a_program_buried_past_the_archive_depth_is_held(scanner: mailguard.Scanner, levels: int) -> None:
    """Before: four zips deep, the program was never seen and the message was accepted."""
    verdict = scanner.scan(attach("docs.zip", nested_zip("invoice.exe", pe_exe(), levels), "application/zip"))
    assert "ARCHIVE_TOO_DEEP" in rules(verdict)
    assert verdict.action >= Action.QUARANTINE


def test_ordinary_nested_zip_is_not_held(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(attach("docs.zip", nested_zip("notes.txt", b"Parking is behind the building.\n", 3),
                                  "application/zip"))
    assert verdict.action == Action.ACCEPT


def test_many_members_are_held_and_the_directory_is_not_read(scanner: mailguard.Scanner) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for i in range(5000):
            zf.writestr(f"f{i}.txt", b"x")
        zf.writestr("invoice.exe", pe_exe())
    parsed = mailguard.message.parse(attach("photos.zip", buffer.getvalue(), "application/zip"))
    assert len(parsed.attachments) == 1  # the zip itself: none of its 5001 entries was read
    verdict = scanner.scan(attach("photos.zip", buffer.getvalue(), "application/zip"))
    assert "ARCHIVE_TOO_MANY_MEMBERS" in rules(verdict) and verdict.action >= Action.QUARANTINE


def test_fan_out_stops_at_the_member_limit(scanner: mailguard.Scanner) -> None:
    inner = zip_with({f"m{i}.txt": b"hello" for i in range(100)})
    outer = zip_with({f"i{i}.zip": inner for i in range(100)})
    parsed = mailguard.message.parse(attach("a.zip", outer, "application/zip"))
    assert len(parsed.attachments) <= 501 + 1
    assert scanner.scan(attach("a.zip", outer, "application/zip")).action >= Action.QUARANTINE


def test_a_zip_that_cannot_be_opened_is_reported(scanner: mailguard.Scanner) -> None:
    """Archive programs repair what zipfile refuses; an attacker breaks the directory on
    purpose. Before: nothing was said at all."""
    data = bytearray(zip_with({"invoice.exe": pe_exe()}))
    central = data.rfind(b"PK\x01\x02")
    data[central:central + 4] = b"PK\x01\x09"  # the directory entry's signature broken
    verdict = scanner.scan(attach("docs.zip", bytes(data), "application/zip"))
    finding = next(f for f in verdict.findings if f.rule == "ARCHIVE_UNREADABLE")
    assert "not checked" in finding.summary and finding.score > 0


def test_pdf_object_streams_past_the_bound_are_held(scanner: mailguard.Scanner) -> None:
    """Padding a PDF's object stream past the 8 MB view hid whatever came after. Before: accepted."""
    packed = zlib.compress(b"7 0 " + b"<< /A 1 >> " * 1_000_000, 9)
    pdf = A.pdf(b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %d >>\nstream\n" % len(packed)
                + packed + b"\nendstream")
    view, complete = pdf_object_streams_view(pdf, limit=1024 * 1024)
    assert not complete and len(view) == 1024 * 1024  # inflating stopped at the bound
    verdict = scanner.scan(attach("scan.pdf", pdf, "application/pdf"))
    assert "SIGNATURE_HIDDEN_CONTENT_UNREAD" in rules(verdict) and verdict.action >= Action.QUARANTINE


def test_ordinary_object_streams_are_complete() -> None:
    view, complete = pdf_object_streams_view(A.pdf_compressed_page_text())
    assert complete and b"FontDescriptor" in view


def test_a_macro_document_with_a_looping_fat_is_held(scanner: mailguard.Scanner) -> None:
    """Every FAT entry points at itself: olevba reads no macro and raised nothing. Before:
    tagged at most (4.0)."""
    doc = bytearray(word97_with_macro())
    fat_sector = struct.unpack_from("<I", doc, 0x4C)[0]
    offset = (fat_sector + 1) * 512
    for i in range(128):
        struct.pack_into("<I", doc, offset + 4 * i, i if i != fat_sector else 0xFFFFFFFD)
    verdict = scanner.scan(attach("letter.doc", bytes(doc), "application/msword"))
    assert "MACROS_UNREADABLE" in rules(verdict) and verdict.action >= Action.QUARANTINE


def test_a_plain_document_is_not_unreadable(scanner: mailguard.Scanner) -> None:
    verdict = scanner.scan(attach("letter.doc", A.word97_document(), "application/msword"))
    assert "MACROS_UNREADABLE" not in rules(verdict) and verdict.action == Action.ACCEPT


def test_giant_rtf_of_nested_groups_gets_a_verdict(scanner: mailguard.Scanner) -> None:
    rtf = b"{\\rtf1" + b"{" * 200_000 + b"x" + b"}" * 200_000 + b"}"
    assert scanner.scan(attach("letter.rtf", rtf, "application/rtf")).action == Action.ACCEPT
