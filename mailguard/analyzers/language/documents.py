"""The words of an attached document, for a message whose body says next to nothing.

Lures move into attachments when the body is empty or one line ("see attached"): a PDF
"invoice" with a support number to call, a sextortion letter, a fake tax refund, an HTML
page of a bank. People read those documents as part of the message, so the language
analyzer reads them too, but only then: a message that already has a body is judged by
its body, and ordinary mail with an attached report is not read twice.

Reading is bounded because pypdf is pure Python (5-400 ms a PDF, more for big ones):
only the first few attachments, PDFs up to ``max_bytes`` and their first ``pages``
pages, and at most ``max_chars`` characters in all. Encrypted or broken files give no
text. HTML attachments are rendered like HTML bodies (visible text only).
"""
from __future__ import annotations

from mailguard.htmltext import html_to_text
from mailguard.message import Attachment, ParsedMessage
from mailguard.analyzers.pdf import pdf_pages_text

MAX_ATTACHMENTS = 3  # attachments looked at, in order


def _is_html(attachment: Attachment) -> bool:
    name = attachment.filename.lower()
    return attachment.content_type.lower().startswith("text/html") or name.endswith((".html", ".htm", ".shtml"))


def _html_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", "replace")
    return html_to_text(text).visible


def document_text(message: ParsedMessage, *, max_bytes: int, pages: int, max_chars: int) -> str:
    """The visible text of the message's first PDF and HTML attachments, bounded as the
    module says; cached on the message, since only the bounds' owner asks."""

    def compute() -> str:
        texts: list[str] = []
        budget = max_chars
        for attachment in message.attachments[:MAX_ATTACHMENTS]:
            if budget <= 0:
                break
            data = attachment.data
            if attachment.encrypted or not data or len(data) > max_bytes:
                continue
            if data[:5] == b"%PDF-":
                text = pdf_pages_text(data, pages)
            elif _is_html(attachment):
                text = _html_text(data)
            else:
                continue
            text = text.strip()[:budget]
            if text:
                texts.append(text)
                budget -= len(text)
        return "\n".join(texts)

    return message.derived(("language.document_text", max_bytes, pages, max_chars), compute)
