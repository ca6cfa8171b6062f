"""The readable text of attachments, for the PHI analyzer: PDF pages, Word documents,
spreadsheets, CSV and plain text.

The parser has already decoded every attachment and unpacked zip files (a .docx or .xlsx
is a zip, so its ``word/document.xml`` or ``xl/sharedStrings.xml`` arrive as members), all
within its limits. This module only turns bytes into text, bounded again here: a page
count for PDFs, a character budget for everything. Tables (CSV, spreadsheets) are written
out a row at a time as "header: value" pairs, so that "DOB: 03/14/1962" stands next to its
column name as it would in a letter, and the proximity rules work the same on both.
"""
from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Iterable, Iterator, Sequence

from mailguard.message import Attachment

MAX_PDF_PAGES = 50  # pages read from one PDF
MAX_TABLE_ROWS = 5000  # rows read from one CSV or worksheet

_TAG = re.compile(r"<[^<>]{0,2000}>")  # no "<" inside: XML forbids it in attribute values, and a run of "<" is then read once
_PARAGRAPH_END = re.compile(r"</w:p>|<w:br\s*/?>|<w:tab\s*/?>|</a:p>")
_CELL_STYLE = re.compile(r'\bs="(\d{1,6})"')
_CELL_TYPE = re.compile(r'\bt="(\w+)"')
_FORMAT_ID = re.compile(r'\bnumFmtId="(\d{1,9})"')
_FORMAT_CODE = re.compile(r'\bformatCode="([^"]*)"')
MAX_FORMAT_CODE = 255  # Excel's own limit on a number format's length
# Word parts with text a reader sees: the body, headers and footers (where a letterhead or
# a "Patient: ... DOB: ..." running head sits), foot- and endnotes, comments, slides.
_WORD_PARTS = re.compile(r"word/(?:document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml|"
                         r"ppt/slides/slide\d+\.xml")
# Excel's built-in number formats that show a date (ECMA-376 18.8.30): 14-17 and 22, and
# the East Asian date formats 27-36 and 50-58.
_DATE_FORMAT_IDS = frozenset({14, 15, 16, 17, 22, *range(27, 37), *range(50, 59)})
_EXCEL_EPOCH = date(1899, 12, 30)  # serial 1 is 1900-01-01 (serials after 60 count from here)
_TEXT_TYPES = ("text/plain", "text/csv", "text/tab-separated-values", "text/html", "text/rtf", "application/csv")
_TEXT_NAMES = (".txt", ".csv", ".tsv", ".text", ".log", ".rtf", ".html", ".htm", ".xml", ".json", ".md")


@dataclass(frozen=True)
class Document:
    """One piece of text to search: where it came from (for the finding) and the text."""

    where: str
    text: str


def _xml_text(xml: str) -> str:
    return html.unescape(_TAG.sub("", xml))


def _elements(xml: str, name: str) -> Iterator[tuple[str, str]]:
    """(attributes, content) of each ``<name ...>...</name>`` (or ``<name .../>``) in
    ``xml``, in order, in one pass with str.find. The lazy regular expressions this
    replaces (``<row[^>]*>(.*?)</row>``) read the rest of the text again from every opening
    tag that had no end tag: a worksheet of "<row>" repeated took 10 s for 100 KB. Here an
    opening tag without its ``>`` or end tag ends the search (no later element can be
    complete either), so each character is read a bounded number of times."""
    opening, closing = "<" + name, "</" + name + ">"
    position = 0
    while True:
        start = xml.find(opening, position)
        if start < 0:
            return
        after = start + len(opening)
        if xml[after:after + 1] not in (" ", "\t", "\r", "\n", "/", ">"):  # <rowBreaks>, <w:tcPr>
            position = after
            continue
        close = xml.find(">", after)
        if close < 0:
            return
        attributes = xml[after:close]
        if attributes.endswith("/"):
            yield attributes[:-1], ""
            position = close + 1
            continue
        end = xml.find(closing, close + 1)
        if end < 0:
            return
        yield attributes, xml[close + 1:end]
        position = end + len(closing)


def _first(xml: str, name: str) -> str:
    """The content of the first ``<name>`` element, "" without one."""
    return next((content for _, content in _elements(xml, name)), "")


def _paragraphs(xml: str) -> str:
    return _xml_text(_PARAGRAPH_END.sub("\n", xml))


def _word_table(xml: str) -> str:
    """A Word table as table_text does a spreadsheet: "DOB: 03/14/1962" beside its
    column's heading, not three cells away on lines of their own."""
    rows = ([" ".join(_paragraphs(cell).split()) for _, cell in _elements(row, "w:tc")]
            for _, row in _elements(xml, "w:tr"))
    return table_text(rows)


def docx_text(xml: bytes) -> str:
    """A Word part (or a PowerPoint slide): paragraphs on their own lines, tables as rows of
    "heading: value" pairs."""
    text = xml.decode("utf-8", "replace")
    pieces: list[str] = []
    last = 0
    while True:  # each table in turn (a table inside a table's cell is read as its cells)
        start = text.find("<w:tbl>", last)
        end = text.find("</w:tbl>", start) if start >= 0 else -1
        if end < 0:
            break
        pieces.append(_paragraphs(text[last:start]))
        pieces.append("\n" + _word_table(text[start + len("<w:tbl>"):end]) + "\n")
        last = end + len("</w:tbl>")
    pieces.append(_paragraphs(text[last:]))
    return "".join(pieces)


def _shared_strings(xml: bytes) -> list[str]:
    text = xml.decode("utf-8", "replace")
    return [html.unescape("".join(run for _, run in _elements(item, "t"))) for _, item in _elements(text, "si")]


def cell_formats(xml: bytes) -> list[str]:
    """xl/styles.xml as one entry per cell style (a cell's ``s`` attribute): "date" for the
    date formats, a digit pattern such as "000-00-0000" (Excel's "Social Security Number"
    format), or "" for everything else. A spreadsheet keeps a date of birth as a day
    count (22719) and an SSN as a number (78051120, its leading zero gone): the text a
    person sees exists only after the format is applied."""
    text = xml.decode("utf-8", "replace")
    custom: dict[int, str] = {}
    for attributes, _ in _elements(text, "numFmt"):
        number, code = _FORMAT_ID.search(attributes), _FORMAT_CODE.search(attributes)
        shown = html.unescape(code.group(1)) if number and code else ""
        if shown and len(shown) <= MAX_FORMAT_CODE:  # longer is no format Excel wrote
            custom[int(number.group(1))] = _format_kind(shown)
    kinds = []
    for attributes, _ in _elements(_first(text, "cellXfs"), "xf"):
        found = _FORMAT_ID.search(attributes)
        number = int(found.group(1)) if found else 0
        kinds.append("date" if number in _DATE_FORMAT_IDS else custom.get(number, ""))
    return kinds


def _format_kind(code: str) -> str:
    """A custom number format as "date", a zero-filled digit pattern, or ""."""
    plain = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]', lambda m: m.group(0)[1:-1] if m.group(0)[0] == '"' else
                   (m.group(0)[1:] if m.group(0)[0] == "\\" else ""), code.split(";")[0])
    if re.fullmatch(r"[0\- .()/]+", plain) and "0" in plain:
        return plain
    bare = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]', "", code.split(";")[0]).lower()
    return "date" if re.search(r"[dy]", bare) and re.search(r"[dmy]{1,4}[^dmy]+[dmy]", bare) else ""


def _formatted(value: str, kind: str) -> str:
    """A numeric cell as Excel would show it in its format ``kind`` (see cell_formats)."""
    if not kind or not re.fullmatch(r"[0-9]{1,15}(?:\.[0-9]*)?", value):
        return value
    if kind == "date":
        days = int(value.split(".")[0])
        if not 1 <= days <= 2958465:  # 1900-01-01 .. 9999-12-31
            return value
        if days < 61:  # Excel's 1900 counts a 29 February that never was
            days += 1
        return (_EXCEL_EPOCH + timedelta(days=days)).strftime("%m/%d/%Y")
    digits = value.split(".")[0]
    slots = kind.count("0")
    if len(digits) > slots:
        return value
    fill = iter(digits.rjust(slots, "0"))
    return "".join(next(fill) if c == "0" else c for c in kind)


def _sheet_rows(xml: bytes, shared: Sequence[str], formats: Sequence[str] = ()) -> Iterator[list[str]]:
    for count, (_, row) in enumerate(_elements(xml.decode("utf-8", "replace"), "row")):
        if count >= MAX_TABLE_ROWS:
            return
        cells = []
        for attrs, body in _elements(row, "c"):
            stored = next((content for _, content in _elements(body, "v")), None)
            value = html.unescape(stored) if stored is not None else _xml_text(body)
            kind = _CELL_TYPE.search(attrs)
            if kind and kind.group(1) == "s":
                index = value.strip()
                # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
                value = shared[int(index)] if index.isascii() and index.isdigit() and int(index) < len(shared) else ""
            elif (kind is None or kind.group(1) == "n") and formats:
                style = _CELL_STYLE.search(attrs)
                if style and int(style.group(1)) < len(formats):
                    value = _formatted(value.strip(), formats[int(style.group(1))])
            cells.append(value.strip())
        yield cells


def table_text(rows: Iterable[Sequence[str]]) -> str:
    """Rows as lines of "header: value" pairs, the first row taken as the headers."""
    lines: list[str] = []
    headers: Sequence[str] | None = None
    for count, row in enumerate(rows):
        if count >= MAX_TABLE_ROWS:
            break
        if headers is None:
            headers = row
            lines.append(" | ".join(row))
            continue
        pairs = [f"{headers[i] if i < len(headers) else ''}: {v}" for i, v in enumerate(row) if v]
        lines.append("; ".join(pairs))
    return "\n".join(lines)


def csv_text(text: str) -> str:
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        return table_text(csv.reader(io.StringIO(text), dialect))
    except csv.Error:
        return text


def pdf_text(data: bytes) -> str:
    """Text of the first MAX_PDF_PAGES pages of a PDF (mailguard.analyzers.pdf's limits;
    encrypted, broken or oversized files give "")."""
    from mailguard.analyzers.pdf import pdf_pages_text

    return pdf_pages_text(data, MAX_PDF_PAGES)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _is_text(attachment: Attachment) -> bool:
    name = attachment.filename.lower()
    if attachment.content_type in _TEXT_TYPES or name.endswith(_TEXT_NAMES):
        return True
    head = attachment.data[:2048]
    return bool(head) and b"\0" not in head and attachment.content_type == "application/octet-stream" \
        and not name and head.isascii()


def attachment_documents(attachments: Sequence[Attachment], max_chars: int) -> list[Document]:
    """The text of every readable attachment, at most ``max_chars`` in all."""
    docs: list[Document] = []
    budget = max_chars
    shared: dict[tuple[str, ...], list[str]] = {}
    styles: dict[tuple[str, ...], list[str]] = {}
    sheets: list[Attachment] = []
    for att in attachments:
        if budget <= 0:
            break
        if att.encrypted or not att.data:
            continue
        member = att.location[-1] if att.location else ""
        text = ""
        if att.data[:5] == b"%PDF-" or (b"%PDF-" in att.data[:1024]):
            text = pdf_text(att.data)
        elif att.archive_depth and _WORD_PARTS.fullmatch(member):
            text = docx_text(att.data)
        elif member == "xl/sharedStrings.xml":
            shared[att.location[:-1]] = _shared_strings(att.data)
            continue
        elif member == "xl/styles.xml":
            styles[att.location[:-1]] = cell_formats(att.data)
            continue
        elif re.fullmatch(r"xl/worksheets/sheet\d+\.xml", member):
            sheets.append(att)
            continue
        elif att.archive_depth and member.startswith(("word/", "xl/", "ppt/", "docProps/", "_rels/", "[Content")):
            continue
        elif _is_text(att):
            text = _decode(att.data)
            if att.filename.lower().endswith((".csv", ".tsv")) or att.content_type in ("text/csv", "application/csv"):
                text = csv_text(text)
            elif att.content_type == "text/html" or att.filename.lower().endswith((".html", ".htm")):
                text = _xml_text(text)
        if text.strip():
            docs.append(Document(att.display_name, text[:budget]))
            budget -= len(text)
    for sheet in sheets:
        if budget <= 0:
            break
        workbook = sheet.location[:-1]
        text = table_text(_sheet_rows(sheet.data, shared.get(workbook, []), styles.get(workbook, [])))
        if text.strip():
            docs.append(Document(sheet.display_name, text[:budget]))
            budget -= len(text)
    return docs
