"""The words of an attached PDF or HTML page count when the body says next to nothing
("see attached"), and only then; big files and ordinary mail with a long body are not read."""
from __future__ import annotations

from email.message import EmailMessage

from mailguard.analyzers.language import LanguageAnalyzer
from mailguard.analyzers.base import AnalyzerContext
from tests.filetype_samples import real_pdf
from tests.test_language import analyzer, language_only, rules  # noqa: F401  (analyzer: the shared fixture)

LURE = "Your computer is infected with a virus. Your device has been hacked. I have access to your device."


def with_attachment(body: str, data: bytes, maintype: str, subtype: str, filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Someone <someone@example.com>"
    msg["To"] = "frontdesk@example.org"
    msg["Subject"] = "Document"
    msg.set_content(body)
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def test_pdf_words_count_when_the_body_is_empty(analyzer: LanguageAnalyzer) -> None:
    raw = with_attachment("See attached.", real_pdf(LURE), "application", "pdf", "notice.pdf")
    assert rules(analyzer, raw).get("LANGUAGE_SCAM_STORY", 0) >= 2.0


def test_html_attachment_words_count_when_the_body_is_empty(analyzer: LanguageAnalyzer) -> None:
    page = f"<html><body><p>{LURE}</p><p style='display:none'>unseen</p></body></html>".encode()
    raw = with_attachment("", page, "text", "html", "page.html")
    assert rules(analyzer, raw).get("LANGUAGE_SCAM_STORY", 0) >= 2.0


def test_a_message_with_a_body_is_judged_by_its_body(analyzer: LanguageAnalyzer) -> None:
    body = ("Hello Dana, here is the report from Tuesday's meeting about the new scheduling system "
            "and the front desk rota for next month; let me know what you think of it.")
    raw = with_attachment(body, real_pdf(LURE), "application", "pdf", "report.pdf")
    assert "LANGUAGE_SCAM_STORY" not in rules(analyzer, raw)


def test_document_reading_is_bounded_and_can_be_turned_off() -> None:
    raw = with_attachment("See attached.", real_pdf(LURE), "application", "pdf", "notice.pdf")
    for settings in ({"document_body_words": 0}, {"document_max_bytes": 100}):
        config = language_only(**settings)
        off = LanguageAnalyzer(config.section("language"), AnalyzerContext(config))
        assert "LANGUAGE_SCAM_STORY" not in rules(off, raw), settings


def test_a_compressed_pdf_is_read() -> None:
    from mailguard.analyzers.pdf import pdf_pages_text

    assert "infected" in pdf_pages_text(real_pdf(LURE, flate=True), 2)


def test_a_decompression_bomb_gives_no_text_instead_of_tying_up_the_scanner(analyzer: LanguageAnalyzer) -> None:
    """50 MB of page content packed into ~50 KB: over the stream limit, so pypdf stops
    decoding it and the message is judged on its body, as for a broken file."""
    from mailguard.analyzers.pdf import pdf_pages_text
    from mailguard.analyzers.pdf import MAX_STREAM_BYTES

    content = f"BT /F1 12 Tf 72 720 Td ({LURE}) Tj ET\n".encode() + b" " * 50_000_000
    bomb = real_pdf(content=content, flate=True)
    assert len(bomb) < 100_000 < MAX_STREAM_BYTES < len(content)
    assert pdf_pages_text(bomb, 2) == ""
    raw = with_attachment("See attached.", bomb, "application", "pdf", "notice.pdf")
    assert "LANGUAGE_SCAM_STORY" not in rules(analyzer, raw)
