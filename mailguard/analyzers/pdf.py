"""Reading a stranger's PDF with pypdf, bounded: for its words (language, patient data
outbound), its links and whether it is locked.

pypdf's own limits are meant for documents a user chose to open (75 MB a stream, 300 MB
of decoding work): with them, 2 MB of compressed blanks cost seconds of a scanner's
time. Here every read runs under tighter ones (``PDF_LIMITS``, for that read only: pypdf
keeps its configuration per context, so threads and other callers are not affected). A
file over any limit is treated as a broken one: no text, no links, not locked.
"""
from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from pypdf import PdfReader

MAX_STREAM_BYTES = 4_000_000  # decoded bytes of one stream, per filter
PDF_LIMITS = {
    "maximum_declared_stream_length": MAX_STREAM_BYTES,
    "array_based_stream_maximum_output_length": MAX_STREAM_BYTES,
    "lzw_maximum_output_length": MAX_STREAM_BYTES,
    "run_length_maximum_output_length": MAX_STREAM_BYTES,
    "zlib_maximum_output_length": MAX_STREAM_BYTES,
    "brotli_maximum_output_length": MAX_STREAM_BYTES,
    "jbig2_maximum_output_length": MAX_STREAM_BYTES,
    "image_maximum_buffer_size": MAX_STREAM_BYTES,
    "stream_decoding_work_maximum_length": 4 * MAX_STREAM_BYTES,  # all streams of the file together
    "stream_parsing_work_maximum_count": 200_000,
    "xform_maximum_invocations_per_extraction": 200,
    "page_tree_maximum_entries": 10_000,
}


def pdf_errors() -> tuple[type[BaseException], ...]:
    """What a broken, hostile or over-limit PDF raises from pypdf (LimitReachedError is a
    PyPdfError): caught by every reader here, which then gives what it has."""
    from pypdf.errors import PyPdfError

    return (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError,
            AssertionError, ZeroDivisionError, NotImplementedError, UnicodeError)


@contextmanager
def bounded_pdf(data: bytes) -> Iterator["PdfReader"]:
    """A PdfReader over ``data`` whose reads inside the ``with`` block (pypdf decodes
    lazily: keep page access inside it) run under PDF_LIMITS."""
    from pypdf import PdfReader, apply_configuration

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # broken files are the sender's business
    with apply_configuration(**PDF_LIMITS):
        yield PdfReader(io.BytesIO(data), strict=False)


def pdf_pages_text(data: bytes, pages: int) -> str:
    """The text of a PDF's first ``pages`` pages, read under PDF_LIMITS; "" for an
    encrypted, broken or over-limit file (the reader's words are not guessed at)."""
    try:
        with bounded_pdf(data) as reader:
            if reader.is_encrypted:
                return ""
            out = []
            for number, page in enumerate(reader.pages):
                if number >= pages:
                    break
                out.append(page.extract_text() or "")
            return "\n".join(out)
    except pdf_errors():
        return ""
