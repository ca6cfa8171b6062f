"""Every reader of attached PDFs runs under mailguard.analyzers.pdf's limits: a decompression bomb
(50 MB of page content in ~50 KB) gives what a broken file gives, at once, instead of
holding a scanner for seconds (pypdf's own limits let it decode 75 MB a stream)."""
from __future__ import annotations

import pytest

from mailguard.analyzers.phi.extract import pdf_text
from mailguard.analyzers.pdf import MAX_STREAM_BYTES, bounded_pdf, pdf_errors, pdf_pages_text
from tests.filetype_samples import real_pdf

WORDS = "BT /F1 12 Tf 72 720 Td (Patient statement enclosed) Tj ET\n"


@pytest.fixture(scope="module")
def bomb() -> bytes:
    content = WORDS.encode() + b" " * 50_000_000
    data = real_pdf(content=content, flate=True)
    assert len(data) < 100_000 < MAX_STREAM_BYTES < len(content)
    return data


def test_the_same_pdf_small_is_read_by_both_text_readers() -> None:
    small = real_pdf(content=WORDS.encode(), flate=True)
    assert "Patient statement" in pdf_pages_text(small, 2)
    assert "Patient statement" in pdf_text(small)


def test_a_bomb_gives_no_text_to_the_language_or_patient_data_reader(bomb: bytes) -> None:
    assert pdf_pages_text(bomb, 2) == ""
    assert pdf_text(bomb) == ""


def test_reading_a_bomb_raises_pypdfs_limit_error_inside_the_bounds(bomb: bytes) -> None:
    from pypdf.errors import LimitReachedError

    with pytest.raises(LimitReachedError):
        with bounded_pdf(bomb) as reader:
            reader.pages[0].extract_text()
    assert issubclass(LimitReachedError, pdf_errors())


def test_the_bounds_do_not_outlive_the_read(bomb: bytes) -> None:
    from pypdf import get_configuration

    before = get_configuration().zlib_maximum_output_length
    with bounded_pdf(bomb):
        assert get_configuration().zlib_maximum_output_length == MAX_STREAM_BYTES
    assert get_configuration().zlib_maximum_output_length == before
