"""The document part type: the conformance suite, and what it does with PDFs and text files at its limits."""

from __future__ import annotations

import io

import assistant_document_parts
import pytest
from assistant_document_parts import DocumentFields, DocumentPart, DocumentSettings
from pdf_samples import make_pdf

from assistant import PartError, PartLimits
from assistant.testing.part_conformance import PartTypeConformance, Sample

LIMITS = PartLimits(max_bytes=10 * 1024 * 1024, max_decoded_bytes=200 * 1024 * 1024, max_pixels=24_000_000, max_audio_seconds=120)


class TestDocumentConformance(PartTypeConformance):
    """The suite every part type passes, run on `document`."""

    @pytest.fixture
    def plugin(self):
        return assistant_document_parts

    @pytest.fixture
    def samples(self):
        return [
            Sample(make_pdf(["The treasure is buried under the old oak tree."]), "application/pdf", expect="old oak tree"),
            Sample(b"Meeting notes: buy more coffee.\n", "text/plain", {"name": "notes.txt"}, expect="notes.txt"),
        ]

    @pytest.fixture
    def bad_samples(self):
        return [Sample(b"%PDF-1.4\n garbage that is no PDF at all", "application/pdf"), Sample(b"\xff\xfe\xfa", "text/plain")]


def part(**settings) -> DocumentPart:
    """A document part type with these `[plugins.document_parts]` settings."""
    document = DocumentPart()
    document.settings = DocumentSettings(**settings)
    return document


def test_a_pdfs_text_is_extracted_page_by_page():
    """Every page's text comes out, in order, with the page count."""
    decoded = part().decode(make_pdf(["First page.", "Second (and last) page."]), "application/pdf", None, LIMITS)
    assert decoded.text == "PDF, 2 pages: First page.\nSecond (and last) page."
    assert decoded.value.pages == 2 and decoded.mime == "application/pdf"


def test_a_pdf_is_recognized_without_a_mime():
    """With no mime the bytes decide: %PDF- is read as a PDF, anything else as UTF-8 text."""
    assert part().decode(make_pdf(["Hi."]), None, None, LIMITS).mime == "application/pdf"
    assert part().decode(b"plain words", None, DocumentFields(name="a.md"), LIMITS).text == "a.md, text: plain words"


def test_a_pdf_past_max_pages_is_too_large():
    """More pages than `max_pages` is refused as too_large, naming both numbers."""
    with pytest.raises(PartError, match="the PDF has 3 pages; at most 2 are read") as raised:
        part(max_pages=2).decode(make_pdf(["a", "b", "c"]), "application/pdf", None, LIMITS)
    assert raised.value.code == "too_large"


def test_text_past_max_chars_is_cut_and_says_so():
    """Text longer than `max_chars` is cut there and the description says `(cut)`."""
    decoded = part(max_chars=100).decode(("word " * 100).encode(), "text/plain", None, LIMITS)
    assert len(decoded.value.text) == 100 and decoded.text.endswith("(cut)")


def test_an_encrypted_pdf_is_unsupported():
    """A password-protected PDF is refused as unsupported, not as garbage."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["secret"]))))
    writer.encrypt("pw", algorithm="RC4-40")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(PartError, match="encrypted") as raised:
        part().decode(buffer.getvalue(), "application/pdf", None, LIMITS)
    assert raised.value.code == "unsupported"


def test_a_pdf_mime_on_other_bytes_is_a_bad_request():
    """Bytes that are not a PDF sent as application/pdf are refused."""
    with pytest.raises(PartError, match="not a PDF"):
        part().decode(b"hello", "application/pdf", None, LIMITS)
