"""Macros in Office documents: VBA (Word, Excel, PowerPoint; 97-2003 and 2007+) and
Excel 4.0 (XLM) macro sheets.

A macro document asks the reader to "Enable content"; then the macro downloads and starts
ransomware. VBA source is stored compressed (MS-OVBA) inside an OLE storage, itself inside
a zip for .docm/.xlsm, so searching raw bytes sees little. oletools' olevba is the
reference tool for this: it finds the VBA project, decompresses every module and knows
the auto-execution triggers and suspicious calls; it is used here as a library. XLM macro
sheets are found directly (a BIFF8 BOUNDSHEET record of type "macro sheet", or an OOXML
xl/macrosheets part), because olevba only looks for them in files it has typed as Excel.

Why each finding matters is said in plain words; the keywords olevba matched are in the
details for the person who investigates.
"""
from __future__ import annotations

import io
import logging
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import olefile

from mailguard.analyzers.base import Analyzer, AnalyzerContext
from mailguard.analyzers.hidden_content import VBA_PROJECT_RE, olevba, shared_vba
from mailguard.options import Option
from mailguard.message import Attachment, ParsedMessage
from mailguard.model import Action, Finding

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
# Word 2003 XML and Flat OPC documents, MHT ("single file web page") and SYLK files
# can also carry macros; olevba reads them.
_TEXT_CONTAINERS = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*<\?mso-application|MIME-Version:|ID;P)", re.IGNORECASE
)
_OOXML_PARTS = re.compile(r"^(?:word|xl|ppt)/", re.IGNORECASE)
_OOXML_NAME_BYTES = re.compile(rb"(?i)(?:word|xl|ppt)/")
_XLM_AUTO_NAMES = re.compile(rb"(?i)auto_open|auto_close|_xlnm\.auto_")

# olevba's keyword groups, put in words for the front desk (first match wins).
PLAIN_WORDS = (
    (re.compile(r"(?i)download|urldownloadtofile|xmlhttp|winhttp|net\.webclient|internet"), "download files from the internet"),
    (re.compile(r"(?i)powershell"), "run PowerShell commands"),
    (re.compile(r"(?i)executable|system command|shell|run|exec|dll"), "start other programs"),
    (re.compile(r"(?i)write|file|save|kill|copy|create a text file"), "write files on the computer"),
    (re.compile(r"(?i)registry|regwrite|environment"), "change Windows settings"),
    (re.compile(r"(?i)obfuscat|hex|base64|chr|strreverse|decod"), "hide what they do"),
    (re.compile(r"(?i)ole object|createobject|getobject|callbyname"), "control other programs"),
)


def _silence_library_logs() -> None:
    """olevba and olefile log stream names and fragments of macro code at debug level; a
    mail gateway must not put message content into its logs, so only their errors pass."""
    for name in ("olevba", "olefile", "oletools", "ftguess", "crypto"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass
class MacroReport:
    """What was found in one document."""

    vba: bool = False
    modules: int = 0
    autoexec: list[str] = field(default_factory=list)
    suspicious: list[tuple[str, str]] = field(default_factory=list)
    iocs: list[str] = field(default_factory=list)
    xlm: bool = False
    xlm_autoexec: bool = False
    xlm_hidden: bool = False
    code_chars: int = 0
    oversized: bool = False
    unchecked: str = ""  # why the macros could not be examined, if so
    error: str = ""
    unreadable: bool = False  # a macro project is there but oletools could not read it


class MacrosAnalyzer(Analyzer):
    name = "macros"
    config_schema = {
        "max_document_bytes": Option(
            32 * 1024 * 1024, "int",
            "Largest document examined for macros; larger ones are skipped (and reported as unchecked).",
            minimum=1024,
        ),
        "vba_score": Option(3.0, "float", "Score when a document carries VBA macros at all."),
        "autoexec_score": Option(3.0, "float", "Extra score when the macros start by themselves on open/close."),
        "suspicious_score": Option(4.0, "float", "Extra score when the macros can run programs, download, etc."),
        "autoexec_suspicious_action": Option(
            "quarantine", "str",
            "Action forced when macros both start by themselves and do something suspicious (the classic "
            "malware dropper); \"none\" forces nothing.",
            choices=("none", "tag", "quarantine", "reject"),
        ),
        "max_vba_chars": Option(
            100_000, "int",
            "Most characters of macro source analysed per document (olevba's keyword scan costs about 3 ms per "
            "KB). Beyond it the beginning and the end are analysed and MACROS_OVERSIZED is reported.",
            minimum=10_000,
        ),
        "xlm_score": Option(8.0, "float", "Score for an Excel 4.0 (XLM) macro sheet, a format now used almost "
                                          "only by malware."),
    }

    def __init__(self, settings: Mapping[str, Any], context: AnalyzerContext) -> None:
        super().__init__(settings, context)
        _silence_library_logs()
        self.max_bytes = int(settings.get("max_document_bytes", 32 * 1024 * 1024))
        self.vba_score = float(settings.get("vba_score", 3.0))
        self.autoexec_score = float(settings.get("autoexec_score", 3.0))
        self.suspicious_score = float(settings.get("suspicious_score", 4.0))
        self.xlm_score = float(settings.get("xlm_score", 8.0))
        self.max_chars = int(settings.get("max_vba_chars", 100_000))
        forced = str(settings.get("autoexec_suspicious_action", "quarantine"))
        self.forced_action = None if forced == "none" else Action.parse(forced)

    def analyze(self, message: ParsedMessage) -> Iterable[Finding]:
        findings: list[Finding] = []
        documents: set[tuple[str, ...]] = set()
        for attachment in message.attachments:
            if any(attachment.location[:i] in documents for i in range(1, len(attachment.location))):
                continue  # a part of a document already examined (word/vbaProject.bin)
            if not is_candidate(attachment.data):
                continue
            documents.add(attachment.location)
            if len(attachment.data) > self.max_bytes:
                findings.append(self.finding(
                    "MACROS_UNCHECKED", 1.0,
                    f"'{attachment.display_name}' is too large to be checked for macros.",
                    {"attachment": attachment.display_name, "bytes": len(attachment.data), "limit": self.max_bytes},
                ))
                continue
            report = inspect(attachment.filename or "document", attachment.data, self.max_chars,
                             self.max_bytes * 2, message)
            findings.extend(self._findings(attachment, report))
        return findings

    def _findings(self, attachment: Attachment, report: MacroReport) -> list[Finding]:
        name = attachment.display_name
        base = {"attachment": name}
        out: list[Finding] = []
        if report.vba:
            out.append(self.finding(
                "MACROS_VBA", self.vba_score,
                f"'{name}' contains macros (small programs inside the document). Never click \"Enable content\" "
                "on a document that arrived by email unless you asked the sender for it.",
                {**base, "modules": report.modules},
            ))
        if report.unreadable:
            out.append(self.finding(
                "MACROS_UNREADABLE", 3.0,
                f"'{name}' contains macros stored in a damaged or deliberately broken way, so they could not be "
                "checked; this is a trick to hide harmful macros. Do not open it.",
                {**base, "error": report.error},
                Action.QUARANTINE,
            ))
        if report.unchecked:
            out.append(self.finding(
                "MACROS_UNCHECKED", 1.0,
                f"'{name}' could not be checked for macros: {report.unchecked}.",
                {**base, "reason": report.unchecked},
            ))
        if report.oversized:
            out.append(self.finding(
                "MACROS_OVERSIZED", 2.0,
                f"The macros in '{name}' are unusually large ({report.code_chars // 1000} thousand characters), "
                "too large to check completely; padding macros is a trick to slip past checks.",
                {**base, "code_chars": report.code_chars},
            ))
        if report.autoexec:
            out.append(self.finding(
                "MACROS_AUTOEXEC", self.autoexec_score,
                f"The macros in '{name}' are set to start by themselves as soon as the document is opened or closed.",
                {**base, "triggers": report.autoexec[:10]},
            ))
        if report.suspicious:
            actions = describe(report.suspicious)
            out.append(self.finding(
                "MACROS_SUSPICIOUS", self.suspicious_score,
                f"The macros in '{name}' can {actions}, which is what malware does.",
                {**base, "keywords": [k for k, _ in report.suspicious][:20], "iocs": report.iocs[:10]},
            ))
        if report.autoexec and report.suspicious:
            out.append(self.finding(
                "MACROS_AUTOEXEC_SUSPICIOUS", 0.0,
                f"'{name}' is built like a malware dropper: its macros start by themselves and then "
                f"{describe(report.suspicious)}. Do not open it.",
                base, self.forced_action,
            ))
        if report.xlm:
            extra = " that starts by itself when the workbook opens" if report.xlm_autoexec else ""
            hidden = " The macro sheet is hidden." if report.xlm_hidden else ""
            out.append(self.finding(
                "MACROS_XLM", self.xlm_score,
                f"'{name}' contains an old-style Excel 4.0 macro sheet{extra}; today these are used almost only "
                f"by malware.{hidden} Do not open it.",
                {**base, "autoexec": report.xlm_autoexec, "hidden": report.xlm_hidden},
                self.forced_action if report.xlm_autoexec else None,
            ))
        return out


def is_candidate(data: bytes) -> bool:
    """Formats that may carry macros: OLE (97-2003 Office), zips with Office parts,
    Word 2003 XML / Flat OPC, MHT and SYLK."""
    if data.startswith(OLE_MAGIC):
        return True
    if data.startswith(ZIP_MAGIC):
        return _has_office_parts(data)
    return bool(_TEXT_CONTAINERS.match(data[:512]))


MAX_OFFICE_ENTRIES = 8000  # real documents have tens to hundreds of parts


def _has_office_parts(data: bytes) -> bool:
    """Whether a zip holds word/, xl/ or ppt/ parts. Part names are stored in clear, so
    a zip without those words is passed over without parsing; zipfile reads the whole
    central directory (12 us an entry), so one with more entries than any document has
    is not parsed either: the parser already holds it (ARCHIVE_TOO_MANY_MEMBERS)."""
    import zipfile  # here, not at the top: 9 ms of every start, and most mail carries no zip

    if _OOXML_NAME_BYTES.search(data) is None or data.count(b"PK\x01\x02") > MAX_OFFICE_ENTRIES:
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(_OOXML_PARTS.match(n) for n in zf.namelist()[:2000])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return False


MAX_VBA_STORAGE_BYTES = 4 * 1024 * 1024  # compressed VBA; real projects are far smaller


def inspect(filename: str, data: bytes, max_chars: int = 100_000, max_unpacked: int = 64 * 1024 * 1024,
            message: ParsedMessage | None = None) -> MacroReport:
    """Find and analyse VBA and XLM macros in one document. With ``message``, the
    decompressed code is shared with the signatures analyzer (decompressed once)."""
    report = MacroReport()
    if data.startswith(OLE_MAGIC):
        _xlm_in_ole(data, report)
    elif data.startswith(ZIP_MAGIC):
        _xlm_in_ooxml(data, report)
    report.unchecked, worth_parsing = _plan(data, max_unpacked)
    if report.unchecked or not worth_parsing:
        return report
    extracted = shared_vba(message, data, filename)
    report.error = extracted.error
    if not extracted.found:
        report.unreadable = has_vba_project_marker(data)
        return report
    report.vba = True
    report.modules = len(extracted.modules)
    code = bounded_code("\n".join(extracted.modules), max_chars, report)
    VBA_Scanner = olevba().VBA_Scanner
    try:
        for kind, keyword, description in VBA_Scanner(code).scan(False, False):
            if kind == "AutoExec":
                report.autoexec.append(keyword)
            elif kind == "Suspicious":
                report.suspicious.append((keyword, description))
            elif kind == "IOC":
                report.iocs.append(keyword)
    except Exception as exc:  # olevba's scanner on hostile code: keep what was found so far
        report.error = f"{type(exc).__name__}: {exc}"[:200]
    return report


def has_vba_project_marker(data: bytes) -> bool:
    """Whether the file names a VBA project (the OLE stream "_VBA_PROJECT", or an OOXML
    part vbaProject.bin). When it does and oletools finds no macros, the structure was
    damaged on purpose (a FAT chain that loops, a broken directory) to hide them; Office is
    more forgiving than any parser, so such a document is held, not passed."""
    if data.startswith(OLE_MAGIC):
        return VBA_PROJECT_RE.search(data) is not None and _directory_names_macros(data)
    if data.startswith(ZIP_MAGIC):
        return re.search(rb"vbaProject\.bin", data, re.IGNORECASE) is not None
    return False


MACRO_STORAGES = frozenset({"macros", "_vba_project_cur", "vba"})


def _directory_names_macros(data: bytes) -> bool:
    """Whether the OLE directory itself (read with olefile) has a macro storage. A file
    cut short or overwritten has no readable directory and is merely broken; one whose
    directory lists "Macros" while its code cannot be read was broken where it matters."""
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
        try:
            return any(entry[0].lower() in MACRO_STORAGES for entry in ole.listdir(streams=True, storages=True))
        finally:
            ole.close()
    except Exception:  # olefile on hostile input raises many kinds
        return False


def _plan(data: bytes, max_unpacked: int) -> tuple[str, bool]:
    """(why olevba must not be run on this document or "", whether it is worth running).

    olevba unpacks every member of a .docm and decompresses every VBA module in pure
    Python, without limits, so a zip bomb or a huge compressed module would stall the
    scan: sizes are checked first. In a zip, VBA can only live in an OLE member
    (vbaProject.bin), so a DOCX or XLSX without one is not handed to olevba at all."""
    import zipfile

    too_large = "its macro storage is too large to examine"
    try:
        if not data.startswith(ZIP_MAGIC):
            return (too_large if _vba_storage_bytes(data) > MAX_VBA_STORAGE_BYTES else ""), True
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > max_unpacked:
                return "its parts unpack to more than can be examined", False
            has_ole = False
            for info in infos:
                with zf.open(info) as member:
                    if member.read(8) != OLE_MAGIC:
                        continue
                has_ole = True
                if _vba_storage_bytes(zf.read(info)) > MAX_VBA_STORAGE_BYTES:
                    return too_large, False
            return "", has_ole
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError, zlib.error):
        return "", False  # unreadable as a zip: olevba would find nothing either


def _vba_storage_bytes(data: bytes) -> int:
    """Total size of the streams under VBA storages of an OLE file (0 if not OLE)."""
    if not data.startswith(OLE_MAGIC):
        return 0
    try:
        with olefile.OleFileIO(data) as ole:
            return sum(ole.get_size(path) for path in ole.listdir(streams=True, storages=False)
                       if any(part.upper() == "VBA" for part in path[:-1]))
    except Exception:  # damaged: olevba copes or finds nothing
        return 0


def bounded_code(code: str, max_chars: int, report: MacroReport) -> str:
    """The macro source to scan, within ``max_chars``. Keywords count by presence, so
    repeated lines (a common padding trick) are dropped first; what is still too long is
    cut to its beginning and end, where triggers and payloads usually sit."""
    report.code_chars = len(code)
    if len(code) <= max_chars:
        return code
    code = "\n".join(dict.fromkeys(code.splitlines()))
    if len(code) <= max_chars:
        return code
    report.oversized = True
    head = max_chars * 2 // 3
    return code[:head] + "\n" + code[-(max_chars - head):]


def describe(suspicious: Iterable[tuple[str, str]]) -> str:
    """olevba's keyword descriptions as a short list of plain verbs."""
    said: list[str] = []
    for keyword, description in suspicious:
        for pattern, words in PLAIN_WORDS:
            if pattern.search(description) or pattern.search(keyword):
                if words not in said:
                    said.append(words)
                break
    if not said:
        return "do things ordinary documents never do"
    return said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]


def _xlm_in_ole(data: bytes, report: MacroReport) -> None:
    """Excel 97-2003: BOUNDSHEET records of type 1 are macro sheets; a NAME record for
    Auto_Open (built-in name 1, or a name beginning "Auto_Open") runs one on opening."""
    try:
        with olefile.OleFileIO(data) as ole:
            stream = next((s for s in ("Workbook", "Book") if ole.exists(s)), None)
            if stream is None:
                return
            book = ole.openstream(stream).read()
    except Exception:
        return
    pos = 0
    # Sheet list and names live in the workbook globals, which end at the first EOF record.
    while pos + 4 <= min(len(book), 4 * 1024 * 1024):
        rtype, size = struct.unpack_from("<HH", book, pos)
        body = book[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if rtype == 0x000A:
            break
        if rtype == 0x0085 and len(body) >= 6 and body[5] == 0x01:
            report.xlm = True
            report.xlm_hidden = report.xlm_hidden or body[4] in (1, 2)
        elif rtype == 0x0018 and len(body) >= 16:
            builtin_auto_open = bool(struct.unpack_from("<H", body, 0)[0] & 0x0020) and body[15:16] == b"\x01"
            if builtin_auto_open or _XLM_AUTO_NAMES.search(body):
                report.xlm_autoexec = True
    if not report.xlm:
        report.xlm_autoexec = False


def _xlm_in_ooxml(data: bytes, report: MacroReport) -> None:
    """Excel 2007+: macro sheets are xl/macrosheets/ parts; Auto_Open is a defined name."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            report.xlm = any(n.lower().startswith("xl/macrosheets/") for n in names)
            if report.xlm:
                for part in ("xl/workbook.xml", "xl/workbook.bin"):
                    if part in names:
                        info = zf.getinfo(part)
                        if info.file_size <= 8 * 1024 * 1024:
                            workbook = zf.read(part)
                            report.xlm_autoexec = bool(_XLM_AUTO_NAMES.search(workbook))
                            report.xlm_hidden = b'state="veryHidden"' in workbook or b'state="hidden"' in workbook
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError, KeyError):
        return
