"""PDF pass-through (open, decrypt with the empty password, count pages) and merging parts into one PDF.

pypdf never shells out here: ``jbig2dec_binary`` is switched off in pypdf's per-context configuration
(``pdf_configuration``). The old module constant ``pypdf.filters.JBIG2DEC_BINARY`` must NOT be assigned:
pypdf 7 compares it with its default on every ``PdfReader()`` and raises ``DeprecationError`` when it
differs, so on a machine where jbig2dec is installed, assigning ``None`` would make every PDF unreadable.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Literal

import pypdf
from pypdf import PasswordType, PdfReader, PdfWriter

Paper = Literal["a4", "letter"]

# ISO 216 A4 and ANSI Letter, portrait, in millimetres and in PDF points (1/72 inch).
PAPER_SIZES_MM: Final[dict[str, tuple[float, float]]] = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
PAPER_SIZES_PT: Final[dict[str, tuple[float, float]]] = {
    name: (w / 25.4 * 72, h / 25.4 * 72) for name, (w, h) in PAPER_SIZES_MM.items()
}


class PasswordProtected(Exception):
    """The PDF needs a password other than the empty one."""


class EmptyDocument(Exception):
    """The PDF has no pages."""


@contextmanager
def pdf_configuration() -> Iterator[None]:
    """Run the block with pypdf forbidden to start the external ``jbig2dec`` program.

    pypdf's configuration lives in a context variable, so this affects only the current thread (and tasks
    started from it), never a conversion running concurrently elsewhere.
    """
    with pypdf.apply_configuration(jbig2dec_binary=None):
        yield


def open_pdf(data: bytes) -> PdfReader:
    """Open a PDF from bytes, decrypting it with the empty password when it is encrypted.

    The page count is taken from walking the page tree (``len(reader.pages)`` flattens ``/Kids`` in
    pypdf; ``/Count`` is only consulted for a document that is still encrypted, which never gets past
    this function).

    Raises:
        PasswordProtected: the document needs a real password.
        EmptyDocument: the page tree has no pages.
        pypdf.errors.PyPdfError, pypdf.errors.DependencyError and others: the file cannot be read.
    """
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise PasswordProtected
    if len(reader.pages) == 0:
        raise EmptyDocument
    return reader


class Merger:
    """Collects pages from several PDFs into one unencrypted PDF.

    Pages are copied as they are (vector content, their own size and rotation); fitting them to the fax
    paper is a later step. Parts are added one by one so that the caller can tell which part failed.
    """

    def __init__(self) -> None:
        self._writer = PdfWriter()

    def add(self, reader: PdfReader) -> None:
        """Append every page of ``reader``."""
        for page in reader.pages:
            self._writer.add_page(page)

    @property
    def pages(self) -> int:
        """Number of pages added so far."""
        return len(self._writer.pages)

    def finish(self) -> bytes:
        """Write the merged document and return its bytes."""
        out = io.BytesIO()
        self._writer.write(out)
        return out.getvalue()
