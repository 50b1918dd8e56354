"""PDF input: open (decrypting with the empty password), count pages, and merge parts into one fax-ready PDF.

Every page that leaves ``Merger`` is a portrait page of exactly the fax paper (A4 or Letter) with
``/Rotate 0``, showing what a PDF viewer showed for the source page: its ``/Rotate`` honoured, only its
visible area (the CropBox) kept, landscape pages turned a quarter to fit portrait paper, scaled to fit
while keeping the aspect ratio, centred. The provider's fax encoder then has no page geometry left to
guess, and every page is rasterised at the same scale.

All of that is done without decoding any content stream, which is where the cost of a PDF is: the page's
existing ``/Contents`` is wrapped between a small new stream ``q <matrix> cm <clip>`` and one ``Q``
(a content array is one concatenated stream), and the page boxes are replaced. Annotations are flattened
the same cheap way: a fax has no interactive parts, but a filled-in form field, a stamp or an ink
signature *is* visible content, so the appearance stream of each annotation a printer would print (the
Print flag set, not Hidden, not a popup) is drawn as a form XObject after the page content, and the
``/Annots`` array is dropped. An annotation without an appearance stream has nothing to draw and is
dropped with it: links, and the highlights and notes of tools that leave appearances to the viewer.
Forms saved with ``NeedAppearances`` (LibreOffice's export) are drawn with the appearances they carry,
which may be empty or stale where a viewer would build new ones from the field values; building them
means laying out text, which is not cheap, so it is not done here.

pypdf never shells out here: ``jbig2dec_binary`` is switched off in pypdf's per-context configuration
(``pdf_configuration``). The old module constant ``pypdf.filters.JBIG2DEC_BINARY`` must NOT be assigned:
pypdf 7 compares it with its default on every ``PdfReader()`` and raises ``DeprecationError`` when it
differs, so on a machine where jbig2dec is installed, assigning ``None`` would make every PDF unreadable.

Known limits, all rare in mail: optional-content layers that the source hides by default are shown (the
document catalogue's ``/OCProperties`` is not carried over from several documents into one); a content
stream with more ``Q`` than ``q`` can pop the wrapper's transformation early, as it would corrupt the
source page's own state in a viewer.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

import pypdf
from pypdf import PageObject, PasswordType, PdfReader, PdfWriter
from pypdf.errors import (
    DependencyError,
    DeprecationError,
    FileNotDecryptedError,
    LimitReachedError,
    PyPdfError,
)
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    FloatObject,
    IndirectObject,
    NameObject,
    NumberObject,
    PdfObject,
    StreamObject,
)

Paper = Literal["a4", "letter"]

# ISO 216 A4 and ANSI Letter, portrait, in millimetres and in PDF points (1/72 inch).
PAPER_SIZES_MM: Final[dict[str, tuple[float, float]]] = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
PAPER_SIZES_PT: Final[dict[str, tuple[float, float]]] = {
    name: (w / 25.4 * 72, h / 25.4 * 72) for name, (w, h) in PAPER_SIZES_MM.items()
}

# A page smaller than the paper is enlarged at most this much. 2x covers the small formats people really
# send (A5 and A6, half-letter, 4x6 inch labels, till receipts), whose small print gains legibility at fax
# resolution; a page smaller still (a business card, an image saved at a wrong resolution) is shown at
# 2x in the middle of the paper rather than blown up to fill it.
MAX_UPSCALE: Final = 2.0
# A page within this much of the paper size (in points, per side) counts as the paper: "A4" PDFs say
# 595x842, 595.28x841.89 or 596x842 depending on the generator. 1 pt is a third of a millimetre.
SAME_SIZE_TOLERANCE_PT: Final = 1.0
# What a PDF viewer assumes when a page has no usable MediaBox (PDFium and Acrobat: US Letter).
_DEFAULT_MEDIABOX: Final = (0.0, 0.0, 612.0, 792.0)

# The only page entries carried into the fax; everything else is interactive (/Annots, /AA), structural
# (/StructParents, /B beads), private to an application (/PieceInfo), or weight that a fax never shows
# (/Thumb, /Metadata, /AF associated files). The boxes and /Rotate are written anew.
_KEPT_PAGE_KEYS: Final = frozenset({"/Type", "/Resources", "/Contents", "/Group"})

# Annotation flags (PDF 32000-1:2008, 12.5.3): a fax is a print, so an annotation is drawn when it is
# printable and not hidden, as a viewer prints it. Popups are the notes' windows, never printed.
_ANNOT_HIDDEN: Final = 1 << 1
_ANNOT_PRINT: Final = 1 << 2


class PasswordProtected(Exception):
    """The PDF needs a password other than the empty one."""


class EmptyDocument(Exception):
    """The PDF has no pages."""


# (exception class, plain-words reason), first match wins; the table ends with a catch-all.
_PDF_REASONS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (PasswordProtected, "the PDF is password-protected"),
    (FileNotDecryptedError, "the PDF is password-protected"),
    (EmptyDocument, "the PDF has no pages"),
    (DependencyError, "the PDF uses a feature this server cannot read"),
    (LimitReachedError, "the PDF is too large or too complex to process"),
    (DeprecationError, "the PDF uses an obsolete feature that cannot be read"),
    (PyPdfError, "the PDF file is damaged"),
    (RecursionError, "the PDF file is damaged (its structure loops or is nested too deeply)"),
    (MemoryError, "the PDF needs too much memory to process"),
    (BaseException, "the PDF file is damaged"),
)


def pdf_refusal_reason(exc: BaseException) -> str:
    """Say in plain words why a PDF could not be faxed, from what ``open_pdf``/``count_pages``/``Merger`` raised.

    Parsers of untrusted files fail in many ways (ValueError, KeyError, struct.error…); anything not
    recognised is a damaged file as far as the sender is concerned.
    """
    return next(text for kind, text in _PDF_REASONS if isinstance(exc, kind))


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

    Raises:
        PasswordProtected: the document needs a real password.
        EmptyDocument: the page tree has no pages.
        pypdf.errors.PyPdfError, pypdf.errors.DependencyError and others: the file cannot be read.
    """
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise PasswordProtected
    if count_pages(reader) == 0:
        raise EmptyDocument
    return reader


def count_pages(reader: PdfReader) -> int:
    """The number of pages found by walking the page tree's ``/Kids``; ``/Count`` is never trusted.

    This is ``len(reader.pages)``, because pypdf 7's page-tree walk (``PdfDocCommon._flatten``) is already
    the walk a hostile file needs, and using it means the count is by construction the number of pages
    ``Merger.add`` copies: it follows ``/Kids`` with an explicit stack (no recursion), refuses a node that
    is its own ancestor (``PdfReadError: Detected cyclic page references``), stops at depth
    ``page_tree_maximum_depth`` (100) and after ``page_tree_maximum_entries`` (100,000) visited nodes
    (``LimitReachedError``), which also bounds a tree that shares one subtree many times over. The tests in
    ``tests/converters/test_pdf_normalise.py`` hold pypdf to that: a lying ``/Count``, cycles, a deep chain
    and a shared-subtree bomb.

    The one case where pypdf reads ``/Count`` is a document that is still encrypted: it cannot walk the
    tree then. That is refused here instead of counted.

    Raises:
        PasswordProtected: the document is encrypted and was not decrypted.
        pypdf.errors.PdfReadError: the page tree loops or is broken.
        pypdf.errors.LimitReachedError: the page tree is too deep or too large.
    """
    encryption = getattr(reader, "_encryption", None)
    if reader.is_encrypted and (encryption is None or not encryption.is_decrypted()):
        raise PasswordProtected
    return len(reader.pages)


# -- page geometry ---------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]  # left, bottom, right, top with left < right and bottom < top
Matrix = tuple[float, float, float, float, float, float]  # a b c d e f, as the PDF operator ``cm`` takes


def _number(value: object) -> float | None:
    """A finite number from a PDF object (maybe an indirect reference), or None."""
    resolved = value.get_object() if isinstance(value, PdfObject) else value
    if isinstance(resolved, bool) or not isinstance(resolved, int | float):
        return None
    number = float(resolved)
    return number if math.isfinite(number) else None


def _numbers(value: object, count: int) -> list[float] | None:
    """The first ``count`` entries of a PDF array as finite numbers, or None when any is missing or bad."""
    resolved = value.get_object() if isinstance(value, PdfObject) else value
    if not isinstance(resolved, ArrayObject) or len(resolved) < count:
        return None
    numbers = [_number(item) for item in resolved[:count]]
    if any(number is None for number in numbers):
        return None
    return [number for number in numbers if number is not None]


def _box(value: object) -> Box | None:
    """A rectangle with its corners put in order (PDF allows any two opposite corners), or None if empty."""
    numbers = _numbers(value, 4)
    if numbers is None:
        return None
    x0, y0, x1, y1 = numbers
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    width, height = box[2] - box[0], box[3] - box[1]
    # Corners near the float limits can give an infinite width, which no page has.
    return box if 0 < width < math.inf and 0 < height < math.inf else None


def _visible_box(page: DictionaryObject) -> Box:
    """The area a viewer shows: the CropBox clipped to the MediaBox (PDF 32000-1, 14.11.2)."""
    media = _box(page.get("/MediaBox")) or _DEFAULT_MEDIABOX
    crop = _box(page.get("/CropBox"))
    if crop is None:
        return media
    visible = (max(crop[0], media[0]), max(crop[1], media[1]), min(crop[2], media[2]), min(crop[3], media[3]))
    # A CropBox entirely outside the MediaBox is nonsense; a viewer then shows the MediaBox.
    return visible if visible[2] > visible[0] and visible[3] > visible[1] else media


def _quarter_turns(value: object) -> int:
    """``/Rotate`` as clockwise quarter turns 0..3.

    The value must be a multiple of 90; it may be negative, indirect, above 360 or a real number. Anything
    else is rounded to the nearest quarter turn (as MuPDF and pypdf's own setter do; 45 rounds up), and a
    value that is not a number counts as 0.
    """
    number = _number(value)
    if number is None:
        return 0
    return math.floor(number / 90 + 0.5) % 4


def _multiply(first: Matrix, then: Matrix) -> Matrix:
    """The matrix applying ``first`` and then ``then`` (PDF row-vector convention: ``first × then``)."""
    a1, b1, c1, d1, e1, f1 = first
    a2, b2, c2, d2, e2, f2 = then
    return (
        a1 * a2 + b1 * c2,
        a1 * b2 + b1 * d2,
        c1 * a2 + d1 * c2,
        c1 * b2 + d1 * d2,
        e1 * a2 + f1 * c2 + e2,
        e1 * b2 + f1 * d2 + f2,
    )


@dataclass(frozen=True, slots=True)
class Placement:
    """How one source page lands on the paper.

    ``matrix`` maps the source page's user space onto the fax page; ``clip`` is the source's visible area
    in its own user space (content outside the CropBox must stay invisible in the margins). ``turns`` is
    the total clockwise rotation applied, in quarter turns, and ``scale`` the size change in points.
    ``identity`` is True for a page that is already the paper, upright: it is copied untouched.
    """

    matrix: Matrix
    clip: Box
    turns: int
    scale: float
    identity: bool


def place_page(page: DictionaryObject, paper: Paper) -> Placement:
    """Work out where ``page`` goes on portrait ``paper``; the page's inherited entries must be on it.

    ``PdfReader.pages`` copies the inheritable entries (/MediaBox, /CropBox, /Rotate, /Resources) from the
    ``/Pages`` ancestors onto each page, so ``/Rotate`` set on a parent node is seen here.
    """
    paper_w, paper_h = PAPER_SIZES_PT[paper]
    box = _visible_box(page)
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    rotate = _quarter_turns(page.get("/Rotate", 0))
    # /UserUnit (PDF 1.6) makes one unit of user space that many points; it is dropped from the output.
    unit = _number(page.get("/UserUnit", 1)) or 1.0
    if unit <= 0:
        unit = 1.0

    shown_landscape = (height if rotate % 2 else width) > (width if rotate % 2 else height)
    if not shown_landscape:
        turns = rotate
    elif rotate % 2:
        # Shown landscape because /Rotate turned a portrait page. Either quarter turn puts it on portrait
        # paper; turning it back to how it is drawn changes the least (no rotation in the matrix at all).
        turns = 0
    else:
        # A landscape page: a quarter turn counter-clockwise, the way printers put landscape on portrait
        # paper (the top of the page goes to the left edge).
        turns = (rotate + 3) % 4

    # Clockwise quarter turns of the visible box, moved back so that its lower-left corner is at 0,0.
    rotation: Matrix
    if turns == 0:
        rotation, turned_w, turned_h = (1, 0, 0, 1, 0, 0), width, height
    elif turns == 1:
        rotation, turned_w, turned_h = (0, -1, 1, 0, 0, width), height, width
    elif turns == 2:
        rotation, turned_w, turned_h = (-1, 0, 0, -1, width, height), width, height
    else:
        rotation, turned_w, turned_h = (0, 1, -1, 0, height, 0), height, width

    if (
        turns == 0
        and unit == 1.0
        and abs(x0) <= SAME_SIZE_TOLERANCE_PT
        and abs(y0) <= SAME_SIZE_TOLERANCE_PT
        and abs(width - paper_w) <= SAME_SIZE_TOLERANCE_PT
        and abs(height - paper_h) <= SAME_SIZE_TOLERANCE_PT
    ):
        return Placement((1, 0, 0, 1, 0, 0), box, 0, 1.0, identity=True)

    scale = min(paper_w / (turned_w * unit), paper_h / (turned_h * unit), MAX_UPSCALE)
    factor = scale * unit  # user-space units to points
    centre: Matrix = (
        factor,
        0,
        0,
        factor,
        (paper_w - turned_w * factor) / 2,
        (paper_h - turned_h * factor) / 2,
    )
    matrix = _multiply(_multiply((1, 0, 0, 1, -x0, -y0), rotation), centre)
    if not 0 < factor < math.inf or not all(math.isfinite(value) for value in matrix):
        # Only absurd boxes or /UserUnit values get here; "nan" in a content stream would break the page.
        raise ValueError(f"page geometry out of range: box {box}, /UserUnit {unit}")
    return Placement(matrix, box, turns, scale, identity=False)


def _fmt(value: float) -> str:
    """A number for a content stream: plain decimal notation, no exponent, no ``-0``."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _cm(matrix: Matrix) -> str:
    return " ".join(_fmt(v) for v in matrix) + " cm"


def _clip(box: Box) -> str:
    x0, y0, x1, y1 = box
    return f"{_fmt(x0)} {_fmt(y0)} {_fmt(x1 - x0)} {_fmt(y1 - y0)} re W n"


# -- annotations -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Appearance:
    """One printable annotation: its appearance stream (in the source document) and where to draw it."""

    stream: IndirectObject
    matrix: Matrix  # maps the appearance's transformed BBox onto the annotation's /Rect


def _printable_appearances(page: DictionaryObject) -> list[_Appearance]:
    """The appearance streams a printer would draw for the page's annotations, in order."""
    annots = page.get("/Annots")
    annots = annots.get_object() if isinstance(annots, PdfObject) else annots
    if not isinstance(annots, ArrayObject):
        return []
    found = []
    for entry in annots:
        annot = entry.get_object() if isinstance(entry, PdfObject) else entry
        if isinstance(annot, DictionaryObject):
            appearance = _appearance(annot)
            if appearance is not None:
                found.append(appearance)
    return found


def _appearance(annot: DictionaryObject) -> _Appearance | None:
    flags = _number(annot.get("/F", 0)) or 0
    if annot.get("/Subtype") == "/Popup" or not int(flags) & _ANNOT_PRINT or int(flags) & _ANNOT_HIDDEN:
        return None
    rect = _box(annot.get("/Rect"))
    ap = annot.get("/AP")
    ap = ap.get_object() if isinstance(ap, PdfObject) else ap
    if rect is None or not isinstance(ap, DictionaryObject):
        return None
    normal = ap.get("/N")
    resolved = normal.get_object() if isinstance(normal, PdfObject) else normal
    if isinstance(resolved, DictionaryObject) and not isinstance(resolved, StreamObject):
        # Check boxes and radio buttons: one appearance per state, /AS names the current one.
        state = annot.get("/AS")
        normal = resolved.get(state) if isinstance(state, NameObject) else None
        resolved = normal.get_object() if isinstance(normal, PdfObject) else normal
    if not isinstance(normal, IndirectObject) or not isinstance(resolved, StreamObject):
        return None
    bbox = _box(resolved.get("/BBox"))
    form_matrix = _numbers(resolved.get("/Matrix"), 6) or [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    if bbox is None:
        return None
    # PDF 32000-1, 12.5.5: the BBox transformed by the form's /Matrix is fitted onto /Rect by scaling and
    # translating; "Do" applies the form's own /Matrix, so only that fitting goes into "cm".
    a, b, c, d, e, f = form_matrix
    xs, ys = [], []
    for x, y in ((bbox[0], bbox[1]), (bbox[0], bbox[3]), (bbox[2], bbox[1]), (bbox[2], bbox[3])):
        xs.append(a * x + c * y + e)
        ys.append(b * x + d * y + f)
    span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
    if span_x <= 0 or span_y <= 0:
        return None
    sx, sy = (rect[2] - rect[0]) / span_x, (rect[3] - rect[1]) / span_y
    fit: Matrix = (sx, 0, 0, sy, rect[0] - min(xs) * sx, rect[1] - min(ys) * sy)
    return _Appearance(normal, fit)


# -- merging ---------------------------------------------------------------------------------------------


class Merger:
    """Collects the pages of several PDFs into one unencrypted PDF of portrait ``paper`` pages.

    Parts are added one by one so that the caller can tell which part failed; limiting the number of
    pages is the caller's job (``count_pages`` before ``add``).
    """

    def __init__(self, paper: Paper = "a4") -> None:
        if paper not in PAPER_SIZES_PT:
            raise ValueError(f"unknown paper size {paper!r}")
        self._paper: Paper = paper
        self._writer = PdfWriter()

    def add(self, reader: PdfReader) -> None:
        """Append every page of ``reader``, each fitted onto the paper."""
        for page in reader.pages:
            self._add_page(page)

    @property
    def pages(self) -> int:
        """Number of pages added so far."""
        return len(self._writer.pages)

    def finish(self) -> bytes:
        """Write the merged document and return its bytes."""
        out = io.BytesIO()
        self._writer.write(out)
        return out.getvalue()

    def _add_page(self, page: PageObject) -> None:
        placement = place_page(page, self._paper)
        appearances = _printable_appearances(page)
        # A leaf the page tree reached without /Type (pypdf accepts those) is a page all the same.
        page[NameObject("/Type")] = NameObject("/Page")
        excluded = [str(key) for key in page if key not in _KEPT_PAGE_KEYS]
        added = self._writer.add_page(page, excluded_keys=excluded)

        paper_w, paper_h = PAPER_SIZES_PT[self._paper]
        paper_box = ArrayObject(FloatObject(round(v, 4)) for v in (0.0, 0.0, paper_w, paper_h))
        added[NameObject("/MediaBox")] = paper_box
        added[NameObject("/CropBox")] = ArrayObject(paper_box)
        added[NameObject("/Rotate")] = NumberObject(0)
        if placement.identity and not appearances:
            return  # already the paper, upright: content untouched

        header = f"q {_cm(placement.matrix)} {_clip(placement.clip)}\n"
        trailer = "\nQ\n"
        if appearances:
            names = self._register_appearances(added, appearances)
            draws = " ".join(f"q {_cm(item.matrix)} {name} Do Q" for item, name in zip(appearances, names, strict=True))
            trailer += f"q {_cm(placement.matrix)} {_clip(placement.clip)} {draws} Q\n"
        contents = ArrayObject(
            [self._stream(header.encode()), *_content_streams(added), self._stream(trailer.encode())]
        )
        added[NameObject("/Contents")] = contents

    def _stream(self, data: bytes) -> IndirectObject:
        stream = DecodedStreamObject()
        stream.set_data(data)
        return self._writer._add_object(stream)

    def _register_appearances(self, page: DictionaryObject, appearances: list[_Appearance]) -> list[str]:
        """Put the appearance streams into a copy of the page's XObject resources; return their names."""
        resources = page.get("/Resources")
        resources = resources.get_object() if isinstance(resources, PdfObject) else resources
        # Copies: resource dictionaries are often shared by many pages, which must not see these names.
        own = DictionaryObject(resources) if isinstance(resources, DictionaryObject) else DictionaryObject()
        xobjects = own.get("/XObject")
        xobjects = xobjects.get_object() if isinstance(xobjects, PdfObject) else xobjects
        own_x = DictionaryObject(xobjects) if isinstance(xobjects, DictionaryObject) else DictionaryObject()
        names = []
        for number, item in enumerate(appearances):
            name = f"/FaxAnnot{number}"
            while name in own_x:
                name += "x"
            form = item.stream.clone(self._writer)
            resolved = form.get_object()
            if isinstance(resolved, StreamObject) and "/Subtype" not in resolved:
                # Appearance streams are form XObjects even when they do not say so; "Do" needs it said.
                resolved[NameObject("/Subtype")] = NameObject("/Form")
            own_x[NameObject(name)] = form
            names.append(name)
        own[NameObject("/XObject")] = own_x
        page[NameObject("/Resources")] = own
        return names


def _content_streams(page: DictionaryObject) -> list[IndirectObject]:
    """The page's content streams in order, as references; entries that are not streams are left out."""
    contents = page.get("/Contents")
    resolved = contents.get_object() if isinstance(contents, PdfObject) else contents
    entries = list(resolved) if isinstance(resolved, ArrayObject) else [contents]
    return [
        entry for entry in entries if isinstance(entry, IndirectObject) and isinstance(entry.get_object(), StreamObject)
    ]
