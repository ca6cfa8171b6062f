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
from typing import Iterable, Iterator, Sequence

from mailguard.message import Attachment

MAX_PDF_PAGES = 50  # pages read from one PDF
MAX_TABLE_ROWS = 5000  # rows read from one CSV or worksheet

_TAG = re.compile(r"<[^>]{0,2000}>")
_PARAGRAPH_END = re.compile(r"</w:p>|<w:br\s*/?>|<w:tab\s*/?>|</a:p>")
_SHARED_ITEM = re.compile(r"<si>(.*?)</si>", re.S)
_TEXT_RUN = re.compile(r"<t(?:\s[^>]*)?>(.*?)</t>", re.S)
_ROW = re.compile(r"<row[^>]*>(.*?)</row>", re.S)
_CELL = re.compile(r"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_CELL_VALUE = re.compile(r"<v>(.*?)</v>", re.S)
_TEXT_TYPES = ("text/plain", "text/csv", "text/tab-separated-values", "text/html", "text/rtf", "application/csv")
_TEXT_NAMES = (".txt", ".csv", ".tsv", ".text", ".log", ".rtf", ".html", ".htm", ".xml", ".json", ".md")


@dataclass(frozen=True)
class Document:
    """One piece of text to search: where it came from (for the finding) and the text."""

    where: str
    text: str


def _xml_text(xml: str) -> str:
    return html.unescape(_TAG.sub("", xml))


def docx_text(xml: bytes) -> str:
    """word/document.xml (or a PowerPoint slide): paragraphs on their own lines."""
    return _xml_text(_PARAGRAPH_END.sub("\n", xml.decode("utf-8", "replace")))


def _shared_strings(xml: bytes) -> list[str]:
    text = xml.decode("utf-8", "replace")
    return [html.unescape("".join(_TEXT_RUN.findall(item))) for item in _SHARED_ITEM.findall(text)]


def _sheet_rows(xml: bytes, shared: Sequence[str]) -> Iterator[list[str]]:
    for count, row in enumerate(_ROW.finditer(xml.decode("utf-8", "replace"))):
        if count >= MAX_TABLE_ROWS:
            return
        cells = []
        for cell in _CELL.finditer(row.group(1)):
            attrs, body = cell.group(1), cell.group(2) or ""
            value_match = _CELL_VALUE.search(body)
            value = html.unescape(value_match.group(1)) if value_match else _xml_text(body)
            if 't="s"' in attrs and value.strip().isdigit():
                index = int(value)
                value = shared[index] if index < len(shared) else ""
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
        elif member in ("word/document.xml",) or re.fullmatch(r"ppt/slides/slide\d+\.xml", member):
            text = docx_text(att.data)
        elif member == "xl/sharedStrings.xml":
            shared[att.location[:-1]] = _shared_strings(att.data)
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
        text = table_text(_sheet_rows(sheet.data, shared.get(sheet.location[:-1], [])))
        if text.strip():
            docs.append(Document(sheet.display_name, text[:budget]))
            budget -= len(text)
    return docs
