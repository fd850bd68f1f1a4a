"""An example part-type plugin: `{"type": "document", "data": <base64>, "mime": "application/pdf"}`.

Installed as its own package, it is found through its `assistant` entry point and adds the
`document` part type: a PDF (text extracted with pypdf) or a plain-text / Markdown file (UTF-8).
The file is stored with the turn; a dialogue model that reads only text sees
`[Document 1: report.pdf, PDF, 2 pages: <its text>]` in its context. Configured by
`[plugins.document_parts]`: `max_bytes`, `max_pages` and `max_chars`; the core validates that table
with `DocumentSettings` at startup. A PDF past `max_pages` is refused as `too_large` before any
page is read; an encrypted one as `unsupported`; anything pypdf cannot read as `bad_request`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from assistant import DecodedPart, PartError, PartLimits, PartTools, PartType, hookimpl

PLUGIN_NAME = "document_parts"  # the entry-point name in pyproject.toml, hence the `[plugins.document_parts]` table

PDF = "application/pdf"
TEXT_TYPES = ("text/plain", "text/markdown")

logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns about every odd PDF; refusals say what matters


class DocumentSettings(BaseModel):
    """`[plugins.document_parts]`: the limits of a document part. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest file accepted")
    max_pages: int = Field(50, ge=1, description="PDFs with more pages are refused")
    max_chars: int = Field(20_000, ge=100, description="text past this is cut (and the cut is said)")


class DocumentFields(BaseModel):
    """The part's own wire field besides type, data and mime: an optional file name shown to the model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, min_length=1, max_length=200)


@dataclass(frozen=True)
class Document:
    """A decoded document: its kind, its page count (PDFs) and its text (cut at `max_chars`)."""

    kind: str  # "PDF" or "text"
    pages: int | None
    text: str
    cut: bool
    name: str | None


class DocumentPart(PartType):
    """PDFs and text files; their text reaches the model."""

    name = "document"
    label = "Document"
    mimes = (PDF, *TEXT_TYPES)
    fields = DocumentFields

    def __init__(self) -> None:
        self.settings = DocumentSettings()
        self.max_bytes = self.settings.max_bytes

    def load(self, app) -> bool:
        """Take the validated `[plugins.document_parts]` settings; there is nothing to load."""
        self.settings = app.plugin_settings(PLUGIN_NAME)
        self.max_bytes = self.settings.max_bytes
        return True

    def decode_cost(self, size: int) -> int:
        """pypdf holds the file, its parsed objects and decompressed content streams: budget generously."""
        return 16 * size + 4 * self.settings.max_chars + 1024 * 1024

    def decode(self, data: bytes, mime: str | None, options: BaseModel | None, limits: PartLimits) -> DecodedPart:
        """Extract the text of a PDF (page by page, within `max_pages` and `max_chars`) or of a UTF-8 text file."""
        if len(data) > limits.max_bytes:
            raise PartError(f"the document is {len(data)} bytes; at most {limits.max_bytes} are accepted", "too_large")
        name = options.name if isinstance(options, DocumentFields) else None
        is_pdf = data[:1024].lstrip().startswith(b"%PDF-")
        if mime == PDF and not is_pdf:
            raise PartError("not a PDF: the data does not start with %PDF-")
        if is_pdf and mime in (None, PDF):
            document = self._pdf(data, name)
            found = PDF
        else:
            document = self._text(data, name)
            found = mime if mime in TEXT_TYPES else "text/plain"
        return DecodedPart(value=document, text=describe_document(document), nbytes=len(document.text.encode()), mime=found)

    def _pdf(self, data: bytes, name: str | None) -> Document:
        from pypdf import PdfReader
        from pypdf.errors import FileNotDecryptedError

        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                raise PartError("the PDF is encrypted; send it without a password", "unsupported")
            pages = len(reader.pages)
            if pages > self.settings.max_pages:
                raise PartError(f"the PDF has {pages} pages; at most {self.settings.max_pages} are read", "too_large")
            texts, chars, cut = [], 0, False
            for page in reader.pages:
                text = " ".join((page.extract_text() or "").split())
                if chars + len(text) > self.settings.max_chars:
                    texts.append(text[: self.settings.max_chars - chars])
                    cut = True
                    break
                texts.append(text)
                chars += len(text) + 1
        except PartError:
            raise
        except FileNotDecryptedError:
            raise PartError("the PDF is encrypted; send it without a password", "unsupported") from None
        except Exception as exc:  # pypdf raises many kinds of error on a broken file: all mean "not readable"
            raise PartError(f"not a readable PDF ({type(exc).__name__}: {exc})"[:300]) from None
        if pages == 0:
            raise PartError("the PDF has no pages")
        return Document("PDF", pages, "\n".join(t for t in texts if t), cut, name)

    def _text(self, data: bytes, name: str | None) -> Document:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PartError(f"not UTF-8 text (byte {exc.start} is invalid)") from None
        if "\x00" in text:
            raise PartError("not text: it holds NUL characters")
        if not text.strip():
            raise PartError("the document is empty")
        cut = len(text) > self.settings.max_chars
        return Document("text", None, text[: self.settings.max_chars], cut, name)

    async def describe(self, part: DecodedPart, tools: PartTools) -> str | None:
        """What decoding found: the document's name, kind and size, then its text."""
        return part.text


def describe_document(document: Document) -> str:
    """`report.pdf, PDF, 2 pages: <text>` (and `(cut)` when the text was longer than max_chars)."""
    head = ", ".join(x for x in (document.name, document.kind, f"{document.pages} page{'s' * (document.pages != 1)}" if document.pages else None) if x)
    body = document.text.strip() or "(no text could be extracted; it may be scanned images)"
    return f"{head}: {body}{' (cut)' if document.cut else ''}"


@hookimpl
def register_part_types(register):
    """Register the `document` part type and its settings model."""
    register(DocumentPart(), settings=DocumentSettings)
