"""A small picture of page 1 of a fax, for the notice that tells the sender what was sent.

pypdfium2 (PDFium, the PDF engine of Chromium) renders the page; it runs inside the conversion sandbox like
every other reader of the sender's documents. The picture is greyscale, ``PREVIEW_WIDTH`` pixels wide and
stored as PNG: large enough to recognise the page, small enough (tens of kilobytes) to ride along with every
notice.
"""

from __future__ import annotations

import io
from typing import Final

import pypdfium2

PREVIEW_WIDTH: Final = 480


def render_preview(pdf: bytes, *, width: int = PREVIEW_WIDTH) -> bytes:
    """Render page 1 of ``pdf`` into a greyscale PNG ``width`` pixels wide.

    Raises:
        pypdfium2.PdfiumError: the document cannot be opened or rendered.
        ValueError: the document has no pages.
    """
    document = pypdfium2.PdfDocument(pdf)
    try:
        if len(document) == 0:
            raise ValueError("the document has no pages")
        page = document[0]
        try:
            page_width = page.get_width()
            scale = width / page_width if page_width > 0 else 1.0
            bitmap = page.render(scale=scale, grayscale=True, may_draw_forms=False)
            image = bitmap.to_pil().convert("L")
        finally:
            page.close()
    finally:
        document.close()
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
