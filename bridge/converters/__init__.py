"""Turn an accepted email into one fax-ready PDF, or refuse it with a reason the sender understands.

``convert_message`` is the first document step of the outbound pipeline (product brief, outbound step 5;
architecture D10). It is synchronous and CPU-bound: the worker runs it with ``asyncio.to_thread`` (later in
a sandboxed child process, D8).

What goes into the fax, in order:

1. the message text (plain text, or the HTML body reduced to text), when it has any content;
2. each attachment as it appears: PDFs pass through as vector pages, JPEG/PNG images become one bilevel
   page each, ``text/plain`` attachments are typeset like the body;
3. everything else (archives, contact cards, signatures, other image formats…) is skipped with a note.

Errors, all from ``bridge.errors``:

* ``UnsupportedContent`` when nothing in the mail can be faxed;
* ``ConversionError`` when a part cannot be read (damaged, password-protected, too big to decode), naming
  the part; one bad attachment refuses the whole fax, because a fax with a document silently missing is
  worse than no fax;
* ``TooLarge`` when the fax would have more than ``max_pages`` pages.
"""

from __future__ import annotations

import email
import email.errors
import email.parser
import email.policy
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Final, TypeVar

from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import (
    DependencyError,
    DeprecationError,
    FileNotDecryptedError,
    LimitReachedError,
    PyPdfError,
)

from bridge.converters.image import MAX_PIXELS, ImageTooLarge, image_to_pdf
from bridge.converters.mime import (
    ImagePart,
    MimeStructureError,
    Part,
    PdfPart,
    SkippedPart,
    extract_parts,
    repair_boundary,
)
from bridge.converters.pdf import EmptyDocument, Merger, Paper, PasswordProtected, open_pdf, pdf_configuration
from bridge.converters.text import PageLimitExceeded, render_text
from bridge.errors import BridgeError, ConversionError, TooLarge, UnsupportedContent

__all__ = ["ConversionResult", "convert_message"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# (exception class, plain-words reason), first match wins; each table ends with a catch-all.
_Reasons = tuple[tuple[type[Exception], str], ...]

_PDF_REASONS: Final[_Reasons] = (
    (PasswordProtected, "the PDF is password-protected"),
    (FileNotDecryptedError, "the PDF is password-protected"),
    (EmptyDocument, "the PDF has no pages"),
    (DependencyError, "the PDF uses a feature this server cannot read"),
    (LimitReachedError, "the PDF is too large or too complex to process"),
    (DeprecationError, "the PDF uses an obsolete feature that cannot be read"),
    (PyPdfError, "the PDF file is damaged"),
    (RecursionError, "the PDF file is damaged (its structure loops or is nested too deeply)"),
    (MemoryError, "the PDF needs too much memory to process"),
    (Exception, "the PDF file is damaged"),
)
_IMAGE_REASONS: Final[_Reasons] = (
    (Image.DecompressionBombError, "the image is too large to fax"),
    (Image.DecompressionBombWarning, "the image is too large to fax"),
    (UnidentifiedImageError, "the file is damaged or is not a JPEG or PNG image"),
    (OSError, "the image file is damaged or truncated"),
    (MemoryError, "the image needs too much memory to process"),
    (Exception, "the image file is damaged"),
)
_TEXT_REASONS: Final[_Reasons] = (
    (MemoryError, "the text is too long to process"),
    (Exception, "the text could not be typeset"),
)


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """The fax-ready PDF, its page count, and one user-facing line per part of the mail.

    ``notes`` read like ``"report.pdf: 3 pages"``, ``"message text: 1 page"`` or
    ``"archive.zip: skipped, zip archives cannot be faxed"``, in the order of the parts.
    """

    document: bytes
    pages: int
    notes: tuple[str, ...]


@dataclass(slots=True)
class _Prepared:
    """A part after the cheap first pass: its pages are counted, images are not decoded yet."""

    name: str
    pages: int
    reader: PdfReader | None = None  # an attached PDF, opened
    image: bytes | None = None  # an image still to rasterise
    generated: bytes | None = None  # a PDF made here (typeset text, rasterised image)


def convert_message(raw: bytes, *, paper: Paper = "a4", max_pages: int = 50) -> ConversionResult:
    """Convert a raw RFC 5322 message into one fax-ready PDF.

    Args:
        raw: the message as received, headers and body.
        paper: ``"a4"`` or ``"letter"``; text and image pages are made in this size, PDF pages keep theirs.
        max_pages: the largest fax allowed.

    Returns:
        The merged PDF, its page count and the notes for the sender.

    Raises:
        UnsupportedContent: nothing in the message can be faxed.
        ConversionError: a part could not be converted; the message names it and says why.
        TooLarge: the fax would have more than ``max_pages`` pages.
    """
    if paper not in ("a4", "letter"):
        raise ValueError(f"unknown paper size {paper!r}")
    if max_pages < 1:
        raise ValueError("max_pages must be at least 1")
    parts = _parse(raw)
    with pdf_configuration():
        return _convert_parts(parts, paper=paper, max_pages=max_pages)


_FEED_CHUNK = 64 * 1024


def _message_from_bytes(raw: bytes) -> EmailMessage:
    # Fed in chunks: message_from_bytes decodes the whole mail into one str first, which holds several
    # copies of a 25 MB mail in memory at once (measured 7.7x its size, 2.7x when fed in 64 KiB chunks).
    parser = email.parser.BytesFeedParser(policy=email.policy.default)
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    message = parser.close()
    assert isinstance(message, EmailMessage)
    return message


def _parse(raw: bytes) -> list[Part]:
    try:
        msg = _message_from_bytes(raw)
        if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
            repaired = repair_boundary(raw)
            if repaired is not None:
                second = _message_from_bytes(repaired)
                if second.is_multipart():
                    msg = second
        return extract_parts(msg)
    except MimeStructureError as exc:
        raise ConversionError(f"the mail could not be read: {exc}") from exc
    # The standard library's parser records most damage as defects, but its header and content-manager
    # code still raises on some malformed input; none of that may escape as a crash.
    except (
        email.errors.MessageError,
        ValueError,
        TypeError,
        LookupError,
        AttributeError,
        RecursionError,
    ) as exc:
        log.info("unreadable MIME structure: %r", exc)
        raise ConversionError("the mail could not be read: its MIME structure is damaged") from exc


def _convert_parts(parts: list[Part], *, paper: Paper, max_pages: int) -> ConversionResult:
    notes: list[str] = []
    skipped: list[SkippedPart] = []
    prepared: list[_Prepared] = []
    total = 0
    at_least = False  # True once a text was cut short: ``total`` is then only a lower bound

    # Pass 1: everything that is cheap to count (PDF page trees, text layout, one page per image), so that
    # an oversized fax is refused before any image is decoded.
    for part in parts:
        if isinstance(part, SkippedPart):
            skipped.append(part)
            notes.append(f"{part.name}: skipped, {part.reason}")
            continue
        if isinstance(part, PdfPart):
            reader = _guarded(part.name, _PDF_REASONS, functools.partial(open_pdf, part.data))
            prepared.append(_Prepared(part.name, len(reader.pages), reader=reader))
        elif isinstance(part, ImagePart):
            prepared.append(_Prepared(part.name, 1, image=part.data))
        else:
            budget = max(1, max_pages - total)
            try:
                rendered = _guarded(
                    part.name,
                    _TEXT_REASONS,
                    functools.partial(render_text, part.text, paper=paper, max_pages=budget),
                )
            except PageLimitExceeded as exc:
                total += exc.at_least
                at_least = True
                break
            prepared.append(_Prepared(part.name, rendered.pages, generated=rendered.pdf))
        total += prepared[-1].pages
        notes.append(_pages_note(prepared[-1].name, prepared[-1].pages))

    if total > max_pages:
        count = f"at least {total}" if at_least else str(total)
        raise TooLarge(f"the fax would have {count} pages; the limit is {max_pages}")
    if not prepared:
        raise UnsupportedContent(_nothing_to_fax(skipped))

    # Pass 2: decode images and put every page into one document.
    for item in prepared:
        if item.image is not None:
            item.generated = _guarded(
                item.name, _IMAGE_REASONS, functools.partial(image_to_pdf, item.image, paper=paper)
            )
    only = prepared[0].generated if len(prepared) == 1 else None
    if only is not None:
        # A single page set we typeset or rasterised ourselves is already the finished document.
        return ConversionResult(document=only, pages=prepared[0].pages, notes=tuple(notes))
    merger = Merger()
    for item in prepared:
        source = item.reader
        if source is None and item.generated is not None:
            source = _guarded(item.name, _PDF_REASONS, functools.partial(open_pdf, item.generated))
        if source is None:  # pragma: no cover - every prepared part has a reader or a generated PDF
            raise AssertionError(item.name)
        _guarded(item.name, _PDF_REASONS, functools.partial(merger.add, source))
    document = _guarded("the fax document", _PDF_REASONS, merger.finish)
    return ConversionResult(document=document, pages=merger.pages, notes=tuple(notes))


def _pages_note(name: str, pages: int) -> str:
    return f"{name}: {pages} page" if pages == 1 else f"{name}: {pages} pages"


def _nothing_to_fax(skipped: list[SkippedPart]) -> str:
    if not skipped:
        return "nothing in this mail can be faxed: the message is empty"
    listed = ", ".join(f"{part.name} ({part.reason})" for part in skipped)
    return f"nothing in this mail can be faxed: {listed}"


def _guarded(name: str, reasons: _Reasons, call: Callable[[], _T]) -> _T:
    """Run ``call``; turn any failure into a ``ConversionError`` that names the part and says why."""
    try:
        return call()
    except (BridgeError, PageLimitExceeded):
        raise
    except ImageTooLarge as exc:
        limit = MAX_PIXELS // 1_000_000
        raise ConversionError(
            f"{name}: the image is too large ({exc.pixels / 1e6:.0f} megapixels; the limit is {limit})"
        ) from exc
    except Exception as exc:
        # Parsers of untrusted files fail in many ways (the corpus shows ValueError, TypeError,
        # SyntaxError, KeyError, struct.error, ZeroDivisionError…). Whatever the library, the sender's
        # answer is the same: this attachment cannot be converted. The log keeps the detail.
        reason = next(text for kind, text in reasons if isinstance(exc, kind))
        log.info("cannot convert %s: %r", name, exc)
        raise ConversionError(f"{name}: {reason}") from exc
