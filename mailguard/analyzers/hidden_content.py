"""What attachments hide from a plain byte scan, made visible for the YARA rules.

Each function returns a derived "view" of an attachment's bytes, or b"" when there is
nothing to show: the decompressed VBA code of an Office file (VBA is stored compressed),
a PDF's decompressed object streams (PDF 1.5 packs actions and JavaScript there), and the
text a web page's script decodes before writing it (phishing pages hide their login form
so). Every view is bounded, so a small hostile file cannot become a huge one.
"""
from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from mailguard.message import ParsedMessage

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
VBA_PROJECT_RE = re.compile(re.escape("_VBA_PROJECT".encode("utf-16-le")), re.IGNORECASE)
VIEW_LIMIT = 8 * 1024 * 1024  # most bytes one derived view (decompressed, decoded) may hold
MAX_PDF_OBJECT_STREAMS = 1024  # large reports have a few hundred; more is padding
MAX_SCRIPT_CALLS = 64  # unescape()/atob() calls looked at per attachment
MIN_SCRIPT_LITERAL = 40  # shorter literals are ordinary code, not a hidden page
MAX_SCRIPT_LITERAL = 4 * 1024 * 1024
PDF_OBJSTM_RE = re.compile(rb"/Type\s*/ObjStm[^>]{0,300}>>\s*stream\r?\n")
SCRIPT_CALL_RE = re.compile(rb"(?P<func>unescape|decodeURIComponent|atob)\s*\(\s*(?P<quote>[\"'`])")


def _joined(pieces: Iterable[bytes | None], most: int, limit: int) -> bytes:
    """Join at most ``most`` decoded pieces (None: undecodable, skipped) and at most
    ``limit`` bytes: a hostile file must not turn a small attachment into a huge view."""
    out: list[bytes] = []
    room = limit
    for count, piece in enumerate(pieces):
        if count >= most or room <= 0:
            break
        if piece is not None:
            out.append(piece[:room])
            room -= len(piece)
    return b"\n".join(out)


def pdf_object_streams(data: bytes, limit: int = VIEW_LIMIT) -> bytes:
    """The decompressed object streams (/Type /ObjStm) of a PDF, joined: PDF 1.5 packs
    dictionaries (actions, JavaScript, embedded files) into compressed streams where no
    byte scanner sees their names. Other streams (pictures, page text) are left alone."""
    return pdf_object_streams_view(data, limit)[0]


def pdf_object_streams_view(data: bytes, limit: int = VIEW_LIMIT) -> tuple[bytes, bool]:
    """``pdf_object_streams`` and whether it is complete. It is not when the streams
    inflate past ``limit`` or there are more than MAX_PDF_OBJECT_STREAMS of them: a small
    hostile PDF can hide its JavaScript behind megabytes of padding, so the caller must
    treat what was not read as unknown, not as harmless. Inflating never produces more than
    the room left, and input is sliced through a memoryview, so the work is bounded by
    ``limit`` plus the file's size however many streams it declares."""
    if b"%PDF-" not in data[:1024] or b"/ObjStm" not in data:
        return b"", True
    view = memoryview(data)
    out: list[bytes] = []
    room = limit
    for count, match in enumerate(PDF_OBJSTM_RE.finditer(data)):
        if count >= MAX_PDF_OBJECT_STREAMS or room <= 0:
            return b"\n".join(out), False
        inflater = zlib.decompressobj()
        try:
            piece = inflater.decompress(view[match.end():match.end() + limit], room)
        except zlib.error:
            continue
        out.append(piece)
        room -= len(piece)
        if inflater.unconsumed_tail:  # stopped by the room left, not by the stream's end
            return b"\n".join(out), False
    return b"\n".join(out), True


def decoded_script_literals(data: bytes, limit: int = VIEW_LIMIT) -> bytes:
    """What a page's script would write out: the long string literals it passes to
    unescape(), decodeURIComponent() or atob(), decoded. Phishing pages hide their login
    form this way so that nothing readable is left in the file. Literals are found with
    bytes.find, never a backtracking pattern, and both calls and literal length are capped,
    so a page full of unclosed quotes costs a bounded, small time."""
    if b"unescape" not in data and b"atob" not in data and b"decodeURIComponent" not in data:
        return b""

    def decode(match: re.Match[bytes]) -> bytes | None:
        start = match.end()
        end = data.find(match.group("quote"), start, start + MAX_SCRIPT_LITERAL)
        if end - start < MIN_SCRIPT_LITERAL:
            return None
        literal = data[start:end]
        try:
            if match.group("func") == b"atob":
                compact = re.sub(rb"\s+", b"", literal).rstrip(b"=")
                return base64.b64decode(compact + b"=" * (-len(compact) % 4))
            return urllib.parse.unquote_to_bytes(literal)
        except (ValueError, binascii.Error):
            return None

    return _joined((decode(m) for m in SCRIPT_CALL_RE.finditer(data)), MAX_SCRIPT_CALLS, limit)


@dataclass(frozen=True)
class VBACode:
    """What olevba found in one document: whether it has a VBA project, each module's
    decompressed code, and the error that stopped it (hostile files stop it often)."""

    found: bool = False
    modules: tuple[str, ...] = ()
    error: str = ""


def olevba() -> Any:
    """oletools.olevba, imported on the first document that needs it: importing it costs
    about 0.1 s (it builds a pyparsing grammar), which a ``mailguard check`` of mail
    without Office files should not pay; the daemon imports it before forking workers."""
    with warnings.catch_warnings():
        # olevba builds its pyparsing grammar with names pyparsing 3 calls deprecated.
        warnings.simplefilter("ignore")
        from oletools import olevba as module
    return module


def extract_vba(data: bytes, filename: str = "document") -> VBACode:
    """Decompress every VBA module of a document (OLE, or an OOXML zip holding
    vbaProject.bin). Decompression is pure Python and the costliest step of an Office file,
    so the macros and signatures analyzers share one result per message through
    ``ParsedMessage.derived`` (see ``shared_vba``)."""
    VBA_Parser = olevba().VBA_Parser
    parser = None
    modules: list[str] = []
    found = False
    try:
        parser = VBA_Parser(filename, data=data, relaxed=True)
        if parser.detect_vba_macros():
            found = True
            modules = [code for _f, _s, _n, code in parser.extract_all_macros() if isinstance(code, str)]
        return VBACode(found, tuple(modules))
    except Exception as exc:  # olevba on hostile input raises many kinds: keep what was found
        return VBACode(found, tuple(modules), f"{type(exc).__name__}: {exc}"[:200])
    finally:
        if parser is not None:
            try:
                parser.close()
            except Exception:
                pass


def shared_vba(message: ParsedMessage | None, data: bytes, filename: str = "document") -> VBACode:
    """``extract_vba`` once per attachment and message, whichever analyzer asks first."""
    if message is None:
        return extract_vba(data, filename)
    return message.derived(("vba", id(data)), lambda: extract_vba(data, filename))


def vba_source(data: bytes, message: ParsedMessage | None = None, filename: str = "document") -> str:
    """The decompressed VBA code of an OLE file (a .doc/.xls or an OOXML vbaProject.bin),
    or "" when it has none or oletools cannot read it."""
    if not data.startswith(OLE_MAGIC) or not VBA_PROJECT_RE.search(data):
        return ""
    return "\n".join(shared_vba(message, data, filename).modules)
