"""PDF normalisation: every page of the fax is portrait paper, and shows what a viewer showed for the source.

The source pages are built at test time (fpdf2 draws, pypdf sets boxes, /Rotate, annotations and broken page
trees). Marker squares sit flush in the four corners of the visible area of each page, the one a person
sees at the top left being large, so the rendered output (PDFium, through pypdfium2) tells at once whether
the page was cropped (the dark area is smaller than the fitted page), distorted (wrong aspect ratio),
off-centre, or the wrong way round (the large marker in another corner). The corpus tests at the end feed
real PDFs nobody on this project wrote.
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import pypdfium2
import pytest
from fpdf import FPDF
from PIL import Image, ImageChops, ImageFilter, ImageOps, ImageStat
from pypdf import PdfReader, PdfWriter
from pypdf.errors import LimitReachedError, PdfReadError
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    FloatObject,
    IndirectObject,
    NameObject,
    NullObject,
    NumberObject,
    PdfObject,
    TextStringObject,
)

from bridge.converters.pdf import (
    MAX_UPSCALE,
    PAPER_SIZES_PT,
    EmptyDocument,
    Merger,
    Paper,
    PasswordProtected,
    count_pages,
    open_pdf,
    pdf_configuration,
    pdf_refusal_reason,
    place_page,
)
from tests.corpus import corpus_dir, corpus_file

T = TypeVar("T")
Corner = Literal["tl", "tr", "br", "bl"]
CORNERS: tuple[Corner, ...] = ("tl", "tr", "br", "bl")  # clockwise, so a quarter turn is one step
RENDER_SCALE = 0.5  # pixels per point
A4 = PAPER_SIZES_PT["a4"]
LETTER = PAPER_SIZES_PT["letter"]
A3 = (841.89, 1190.55)
A5 = (419.53, 595.28)


# --- building sources -------------------------------------------------------------------------------------


def to_bytes(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def resolved(obj: object) -> object:
    return obj.get_object() if isinstance(obj, PdfObject) else obj


def dictionary(obj: object) -> DictionaryObject:
    value = resolved(obj)
    assert isinstance(value, DictionaryObject)
    return value


def turned(corner: Corner, quarter_turns_cw: int) -> Corner:
    """Where ``corner`` of a page ends up after the page is turned clockwise that many quarter turns."""
    return CORNERS[(CORNERS.index(corner) + quarter_turns_cw) % 4]


def marked_page(
    size: tuple[float, float],
    *,
    big: Corner | None = "tl",
    visible: tuple[float, float, float, float] | None = None,
    label: str = "Marker page",
) -> bytes:
    """A one-page PDF of ``size`` points with corner markers flush in the corners of ``visible``.

    The marker in corner ``big`` is large, the others small (all small when ``big`` is None).

    ``visible`` (left, bottom, right, top in PDF coordinates; default the whole page) is where a CropBox
    will go: everything outside it is painted black, so a missing clip shows up as a dark margin.
    """
    width, height = size
    x0, y0, x1, y1 = visible or (0.0, 0.0, width, height)
    pdf = FPDF(unit="pt", format=(width, height))
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_fill_color(0)
    # fpdf2 measures y from the top of the page.
    top, bottom = height - y1, height - y0
    if visible is not None:
        pdf.rect(0, 0, width, top, style="F")
        pdf.rect(0, bottom, width, height - bottom, style="F")
        pdf.rect(0, 0, x0, height, style="F")
        pdf.rect(x1, 0, width - x1, height, style="F")
    side = min(x1 - x0, y1 - y0)
    big_side, small_side = 0.16 * side, 0.06 * side
    origins = {"tl": (x0, top), "tr": (x1, top), "br": (x1, bottom), "bl": (x0, bottom)}
    for corner, (cx, cy) in origins.items():
        s = big_side if corner == big else small_side
        left = cx if corner in ("tl", "bl") else cx - s
        upper = cy if corner in ("tl", "tr") else cy - s
        pdf.rect(left, upper, s, s, style="F")
    pdf.set_font("helvetica", size=max(4.0, side / 30))
    pdf.text(x0 + side * 0.25, top + side * 0.3, label)
    return bytes(pdf.output())


def with_page_entries(data: bytes, **entries: PdfObject) -> bytes:
    """Set entries (``Rotate=NumberObject(90)``…) on every page of ``data``."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    for page in writer.pages:
        for key, value in entries.items():
            page[NameObject(f"/{key}")] = value
    return to_bytes(writer)


def box(*values: float) -> ArrayObject:
    return ArrayObject(FloatObject(v) for v in values)


def source_page(
    size: tuple[float, float],
    *,
    rotate: int = 0,
    visible: tuple[float, float, float, float] | None = None,
) -> bytes:
    """A marked page whose *displayed* top-left (after /Rotate) holds the big marker."""
    # /Rotate turns the page clockwise for display, so the displayed top left is drawn in the corner that
    # the turn brings there.
    big = CORNERS[(-(rotate // 90)) % 4]
    data = marked_page(size, big=big, visible=visible)
    entries: dict[str, PdfObject] = {}
    if rotate:
        entries["Rotate"] = NumberObject(rotate)
    if visible is not None:
        entries["CropBox"] = box(*visible)
    return with_page_entries(data, **entries) if entries else data


# --- running and looking at the output -------------------------------------------------------------------


def normalise(*sources: bytes, paper: Paper = "a4") -> bytes:
    with pdf_configuration():
        merger = Merger(paper)
        for data in sources:
            merger.add(open_pdf(data))
        return merger.finish()


def render(data: bytes, index: int = 0, scale: float = RENDER_SCALE) -> Image.Image:
    document = pypdfium2.PdfDocument(data)
    try:
        image: Image.Image = document[index].render(scale=scale).to_pil().convert("L")
        return image
    finally:
        document.close()


def dark_bbox(image: Image.Image) -> tuple[int, int, int, int]:
    bbox = ImageOps.invert(image.point(lambda v: 0 if v < 128 else 255)).getbbox()
    assert bbox is not None, "the page is blank"
    return bbox


def dark_fraction(image: Image.Image, region: tuple[int, int, int, int]) -> float:
    crop = image.crop(region).point(lambda v: 1 if v < 128 else 0)
    histogram = crop.histogram()
    return histogram[1] / max(1, crop.width * crop.height)


def big_marker_corner(image: Image.Image) -> Corner:
    """The corner of the dark area holding the large marker (the darkest corner region)."""
    left, top, right, bottom = dark_bbox(image)
    side = round(0.12 * min(right - left, bottom - top))
    regions: dict[Corner, tuple[int, int, int, int]] = {
        "tl": (left, top, left + side, top + side),
        "tr": (right - side, top, right, top + side),
        "br": (right - side, bottom - side, right, bottom),
        "bl": (left, bottom - side, left + side, bottom),
    }
    fractions = {corner: dark_fraction(image, region) for corner, region in regions.items()}
    best = max(fractions, key=fractions.__getitem__)
    # Every corner has a marker (nothing was cut off) and the large one is unmistakable.
    assert all(f > 0.1 for f in fractions.values()), fractions
    assert sorted(fractions.values())[-2] < 0.6 * fractions[best], fractions
    return best


def page_size(data: bytes, index: int = 0) -> tuple[float, float]:
    page = PdfReader(io.BytesIO(data)).pages[index]
    return float(page.mediabox.width), float(page.mediabox.height)


def assert_paper(data: bytes, paper: Paper = "a4") -> None:
    reader = PdfReader(io.BytesIO(data))
    for page in reader.pages:
        assert (float(page.mediabox.left), float(page.mediabox.bottom)) == (0, 0)
        assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(
            PAPER_SIZES_PT[paper], abs=0.01
        )
        assert page.cropbox == page.mediabox
        assert page.get("/Rotate", 0) == 0
        assert "/Annots" not in page


def expected_area(shown: tuple[float, float], paper: Paper = "a4") -> tuple[float, float, float, float]:
    """Where a page shown ``shown`` points big lands on portrait paper, in output pixels (l, t, r, b)."""
    width, height = shown
    if width > height:
        width, height = height, width
    paper_w, paper_h = PAPER_SIZES_PT[paper]
    scale = min(paper_w / width, paper_h / height, MAX_UPSCALE)
    w, h = width * scale, height * scale
    left, top = (paper_w - w) / 2, (paper_h - h) / 2
    return tuple(v * RENDER_SCALE for v in (left, top, left + w, top + h))  # type: ignore[return-value]


def assert_area(image: Image.Image, area: tuple[float, float, float, float]) -> None:
    # One or two pixels of anti-aliasing at each edge.
    assert dark_bbox(image) == pytest.approx(area, abs=2.0)


def landscape_turn(rotate: int) -> int:
    """The extra clockwise quarter turns the bridge gives a page shown landscape (see place_page)."""
    return (-(rotate // 90)) % 4 if rotate % 180 else 3


# --- geometry: sizes, rotation, crop ---------------------------------------------------------------------

SIZES = {
    "a4": A4,
    "letter": LETTER,
    "a3": A3,
    "a5": A5,
    "a4-landscape": (A4[1], A4[0]),
    "letter-landscape": (LETTER[1], LETTER[0]),
    "receipt": (226.0, 800.0),
    "card": (252.0, 144.0),
}


@pytest.mark.parametrize("paper", ["a4", "letter"])
@pytest.mark.parametrize("name", list(SIZES))
def test_every_size_lands_upright_whole_and_centred_on_portrait_paper(name: str, paper: Paper) -> None:
    size = SIZES[name]
    output = normalise(source_page(size), paper=paper)

    assert_paper(output, paper)
    image = render(output)
    assert_area(image, expected_area(size, paper))
    # A portrait page reads as it did; a landscape one is turned counter-clockwise (its top to the left).
    assert big_marker_corner(image) == ("tl" if size[0] <= size[1] else "bl")


def test_upright_text_stays_text_in_reading_order() -> None:
    source = marked_page(LETTER, label="Dear customer, your invoice is attached")
    reader = PdfReader(io.BytesIO(normalise(source)))
    assert "Dear customer, your invoice is attached" in reader.pages[0].extract_text()
    assert not reader.pages[0].images  # still vector, nothing was rasterised


def test_scaling_keeps_the_aspect_ratio() -> None:
    # A tall narrow page: fitted by height, the width follows in proportion.
    size = (300.0, 900.0)
    image = render(normalise(source_page(size)))
    left, top, right, bottom = dark_bbox(image)
    assert (right - left) / (bottom - top) == pytest.approx(300 / 900, rel=0.02)
    assert (bottom - top) == pytest.approx(A4[1] * RENDER_SCALE, abs=2)


def test_letter_on_a4_is_scaled_to_fit_not_cropped() -> None:
    with pdf_configuration():
        placement = place_page(PdfReader(io.BytesIO(source_page(LETTER))).pages[0], "a4")
    assert placement.scale == pytest.approx(A4[0] / LETTER[0])
    assert placement.turns == 0


def test_small_pages_are_enlarged_at_most_twice() -> None:
    # A5 fills A4 (a factor of about 1.41); a business-card-sized portrait page stops at 2x.
    a5 = render(normalise(source_page(A5)))
    assert_area(a5, expected_area(A5))
    assert dark_bbox(a5)[2] - dark_bbox(a5)[0] == pytest.approx(A4[0] * RENDER_SCALE, abs=2)

    card = (144.0, 252.0)
    image = render(normalise(source_page(card)))
    left, top, right, bottom = dark_bbox(image)
    assert (right - left, bottom - top) == pytest.approx((288 * RENDER_SCALE, 504 * RENDER_SCALE), abs=2)


def test_a4_page_is_left_untouched() -> None:
    source = marked_page(A4)
    output = normalise(source)

    before = PdfReader(io.BytesIO(source)).pages[0]
    after = PdfReader(io.BytesIO(output)).pages[0]
    contents = resolved(after["/Contents"])
    # One stream, the source's own: no wrapper, no transformation.
    assert not isinstance(contents, ArrayObject)
    assert after.get_contents().get_data() == before.get_contents().get_data()  # type: ignore[union-attr]
    assert_paper(output)


def test_near_a4_page_counts_as_a4() -> None:
    # Generators write A4 as 595x842, 595.28x841.89 or 596x842.
    source = with_page_entries(marked_page((595.0, 842.0)), MediaBox=box(0, 0, 595, 842))
    output = normalise(source)
    assert_paper(output)
    assert not isinstance(resolved(PdfReader(io.BytesIO(output)).pages[0]["/Contents"]), ArrayObject)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270, -90, -180, 360, 450])
@pytest.mark.parametrize("shape", ["portrait", "landscape"])
def test_rotate_is_honoured(rotate: int, shape: str) -> None:
    size = A4 if shape == "portrait" else (A4[1], A4[0])
    source = source_page(size, rotate=rotate)
    # The test's own construction, checked against a viewer: the big marker is shown at the top left.
    assert big_marker_corner(render(source)) == "tl"

    output = normalise(source)
    assert_paper(output)
    image = render(output)
    shown = size if rotate % 180 == 0 else (size[1], size[0])
    assert_area(image, expected_area(shown))
    if shown[0] <= shown[1]:
        assert big_marker_corner(image) == "tl"
    else:
        assert big_marker_corner(image) == turned("tl", landscape_turn(rotate % 360))


def test_portrait_page_turned_by_rotate_comes_out_as_drawn() -> None:
    # /Rotate 90 or 270 on a portrait page shows it landscape; of the two quarter turns that put it back on
    # portrait paper, the bridge takes the one that undoes /Rotate, so the page reads as it was drawn: the
    # big marker is in the corner source_page drew it in, and the content is copied untouched.
    for rotate in (90, 270):
        source = source_page(A4, rotate=rotate)
        output = normalise(source)
        assert big_marker_corner(render(output)) == CORNERS[(-(rotate // 90)) % 4]
        with pdf_configuration():
            assert place_page(PdfReader(io.BytesIO(source)).pages[0], "a4").identity
        after = PdfReader(io.BytesIO(output)).pages[0]
        assert not isinstance(resolved(after["/Contents"]), ArrayObject)


@pytest.mark.parametrize(
    ("value", "turns"),
    [
        (NumberObject(90), 1),
        (FloatObject(90.0), 1),
        (FloatObject(91.5), 1),
        (NumberObject(100), 1),
        (NumberObject(44), 0),
        (NumberObject(45), 1),  # half way rounds up, as pypdf's own setter and MuPDF do
        (NumberObject(-90), 3),
        (NumberObject(-450), 3),
        (NumberObject(720), 0),
        (NumberObject(10**12 * 360 + 180), 2),
        (TextStringObject("90"), 0),
        (NullObject(), 0),
    ],
)
def test_odd_rotate_values_are_rounded_to_quarter_turns(value: PdfObject, turns: int) -> None:
    # A portrait page so that no landscape turn is added on top: the page turns exactly /Rotate.
    page = DictionaryObject({NameObject("/MediaBox"): box(0, 0, 400, 400), NameObject("/Rotate"): value})
    assert place_page(page, "a4").turns == turns


def test_odd_rotate_renders_like_the_nearest_quarter_turn() -> None:
    odd = normalise(with_page_entries(marked_page(A4), Rotate=NumberObject(185)))
    even = normalise(with_page_entries(marked_page(A4), Rotate=NumberObject(180)))
    assert ImageStat.Stat(ImageChops.difference(render(odd), render(even))).mean[0] < 0.5


def test_indirect_rotate_is_honoured() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(source_page(A4, rotate=180))))
    writer.pages[0][NameObject("/Rotate")] = writer._add_object(NumberObject(180))
    source = to_bytes(writer)
    assert isinstance(PdfReader(io.BytesIO(source)).pages[0].get("/Rotate"), IndirectObject)

    image = render(normalise(source))
    assert big_marker_corner(image) == "tl"


@pytest.mark.parametrize("level", ["root", "middle"])
def test_rotate_inherited_from_the_page_tree_is_honoured(level: str) -> None:
    # Two pages under an intermediate /Pages node; /Rotate 180 on the root or on that node, not on the pages.
    writer = PdfWriter()
    for data in (source_page(A4, rotate=180), source_page(A5, rotate=180)):
        page = PdfReader(io.BytesIO(data)).pages[0]
        added = writer.add_page(page)
        del added["/Rotate"]
    root = dictionary(writer.root_object["/Pages"])
    kids = root["/Kids"]
    assert isinstance(kids, ArrayObject)
    middle = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Pages"),
            NameObject("/Kids"): ArrayObject(kids),
            NameObject("/Count"): NumberObject(2),
            NameObject("/Parent"): root.indirect_reference,
        }
    )
    middle_ref = writer._add_object(middle)
    for kid in kids:
        dictionary(kid)[NameObject("/Parent")] = middle_ref
    root[NameObject("/Kids")] = ArrayObject([middle_ref])
    holder = root if level == "root" else middle
    holder[NameObject("/Rotate")] = NumberObject(180)
    source = to_bytes(writer)
    raw_root = dictionary(PdfReader(io.BytesIO(source)).trailer["/Root"])
    raw_kids = dictionary(raw_root["/Pages"])["/Kids"]
    assert isinstance(raw_kids, ArrayObject)
    raw_middle = dictionary(raw_kids[0])
    middle_kids = raw_middle["/Kids"]
    assert isinstance(middle_kids, ArrayObject)
    assert "/Rotate" not in dictionary(middle_kids[0])
    assert big_marker_corner(render(source, 1)) == "tl"  # a viewer turns both pages

    output = normalise(source)
    assert_paper(output)
    for index in (0, 1):
        assert big_marker_corner(render(output, index)) == "tl"


@pytest.mark.parametrize("rotate", [0, 90, 270])
def test_only_the_crop_box_is_shown(rotate: int) -> None:
    # MediaBox A3, CropBox a 300x500 area off-centre; the rest of the media is painted black. Its shape is
    # not the paper's, so the output has white margins where the painted media would show if not clipped.
    crop = (300.0, 500.0)
    visible = (100.0, 150.0, 100.0 + crop[0], 150.0 + crop[1])
    source = source_page(A3, rotate=rotate, visible=visible)
    assert big_marker_corner(render(source)) == "tl"

    output = normalise(source)
    assert_paper(output)
    image = render(output)
    shown = crop if rotate % 180 == 0 else (crop[1], crop[0])
    assert_area(image, expected_area(shown))  # no black margins: what lay outside the CropBox is clipped
    expected = "tl" if rotate % 180 == 0 else turned("tl", landscape_turn(rotate))
    assert big_marker_corner(image) == expected


def test_crop_box_outside_the_media_box_falls_back_to_the_media_box() -> None:
    source = with_page_entries(marked_page(A5), CropBox=box(2000, 2000, 2100, 2100))
    assert_area(render(normalise(source)), expected_area(A5))


def test_crop_box_is_clipped_to_the_media_box_and_corners_may_be_in_any_order() -> None:
    source = with_page_entries(
        marked_page(A5), MediaBox=box(A5[0], A5[1], 0, 0), CropBox=box(-50, -50, A5[0] + 50, A5[1] + 50)
    )
    image = render(normalise(source))
    assert_area(image, expected_area(A5))
    assert big_marker_corner(image) == "tl"


def test_user_unit_scales_the_page() -> None:
    # 300x420 units of 2 points each: an A4-sized page in all but name (and UserUnit is dropped).
    size = (A4[0] / 2, A4[1] / 2)
    source = with_page_entries(marked_page(size), UserUnit=FloatObject(2.0))
    output = normalise(source)
    assert "/UserUnit" not in PdfReader(io.BytesIO(output)).pages[0]
    image = render(output)
    assert_area(image, expected_area(A4))
    assert big_marker_corner(image) == "tl"


def test_missing_media_box_is_us_letter_as_in_viewers() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(LETTER))))
    del writer.pages[0]["/MediaBox"]
    dictionary(writer.root_object["/Pages"]).pop("/MediaBox", None)
    image = render(normalise(to_bytes(writer)))
    assert_area(image, expected_area(LETTER))


def test_pages_of_several_documents_keep_their_order() -> None:
    parts = [source_page(A4), source_page((A4[1], A4[0])), source_page(LETTER, rotate=180)]
    output = normalise(*parts)
    assert len(PdfReader(io.BytesIO(output)).pages) == 3
    assert_paper(output)
    assert [big_marker_corner(render(output, i)) for i in range(3)] == ["tl", "bl", "tl"]


def test_letter_paper() -> None:
    output = normalise(source_page(A4), source_page(A3), paper="letter")
    assert_paper(output, "letter")
    assert page_size(output) == pytest.approx((612, 792), abs=0.01)


def test_unknown_paper_is_refused() -> None:
    with pytest.raises(ValueError, match="legal"):
        Merger("legal")  # type: ignore[arg-type]


def test_content_array_with_junk_entries_and_missing_contents() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A5))))
    page = writer.pages[0]
    stream = page.raw_get("/Contents")
    page[NameObject("/Contents")] = ArrayObject([NullObject(), stream, NumberObject(3)])
    blank = writer.add_blank_page(300, 300)
    blank.pop("/Contents", None)
    output = normalise(to_bytes(writer))
    assert_paper(output)
    assert big_marker_corner(render(output, 0)) == "tl"
    assert ImageOps.invert(render(output, 1)).getbbox() is None  # blank stays blank


def test_shared_resources_are_not_changed_for_other_pages() -> None:
    # Two pages share one /Resources; the first carries an annotation whose appearance becomes a resource.
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A5))))
    writer.add_page(PdfReader(io.BytesIO(marked_page(A5))).pages[0])
    shared = writer._add_object(DictionaryObject(dictionary(writer.pages[0]["/Resources"])))
    for page in writer.pages:
        page[NameObject("/Resources")] = shared
    add_annotation(writer, 0, rect=(10, 10, 60, 60))
    output = PdfReader(io.BytesIO(normalise(to_bytes(writer))))
    first = dictionary(dictionary(output.pages[0]["/Resources"]).get("/XObject", DictionaryObject()))
    second = dictionary(dictionary(output.pages[1]["/Resources"]).get("/XObject", DictionaryObject()))
    assert any(name.startswith("/FaxAnnot") for name in first)
    assert not any(name.startswith("/FaxAnnot") for name in second)


# --- annotations ----------------------------------------------------------------------------------------


def appearance(writer: PdfWriter, width: float, height: float, *, bbox_origin: float = 0.0) -> IndirectObject:
    """A form XObject painting its whole BBox black."""
    stream = DecodedStreamObject()
    stream.set_data(f"0 g {bbox_origin} {bbox_origin} {width} {height} re f".encode())
    stream[NameObject("/Type")] = NameObject("/XObject")
    stream[NameObject("/Subtype")] = NameObject("/Form")
    stream[NameObject("/BBox")] = box(bbox_origin, bbox_origin, bbox_origin + width, bbox_origin + height)
    return writer._add_object(stream)


def add_annotation(
    writer: PdfWriter,
    index: int,
    *,
    rect: tuple[float, float, float, float],
    flags: int = 4,
    subtype: str = "/Square",
    normal: PdfObject | None = None,
    state: str | None = None,
) -> None:
    x0, y0, x1, y1 = rect
    annot = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Annot"),
            NameObject("/Subtype"): NameObject(subtype),
            NameObject("/Rect"): box(*rect),
            NameObject("/F"): NumberObject(flags),
            NameObject("/AP"): DictionaryObject(
                {NameObject("/N"): normal if normal is not None else appearance(writer, x1 - x0, y1 - y0)}
            ),
        }
    )
    if state is not None:
        annot[NameObject("/AS")] = NameObject(state)
    page = writer.pages[index]
    annots = page.get("/Annots")
    if annots is None:
        annots = ArrayObject()
        page[NameObject("/Annots")] = annots
    dictionary_list = resolved(annots)
    assert isinstance(dictionary_list, ArrayObject)
    dictionary_list.append(writer._add_object(annot))


@pytest.mark.parametrize("rotate", [0, 90, 180])
def test_printable_annotations_are_flattened_where_a_viewer_shows_them(rotate: int) -> None:
    # The page has four small markers; a printable annotation paints the big one, in the corner shown at
    # the top left. A hidden annotation, one without the print flag and a popup paint the centre, which
    # must stay white.
    width, height = A5
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A5, big=None))))
    side = 0.16 * min(width, height)
    spots = {"tl": (0, height - side), "tr": (width - side, height - side), "br": (width - side, 0), "bl": (0, 0)}
    x, y = spots[CORNERS[(-(rotate // 90)) % 4]]
    add_annotation(writer, 0, rect=(x, y, x + side, y + side))
    centre = (width / 2 - 20, height / 2 - 20, width / 2 + 20, height / 2 + 20)
    add_annotation(writer, 0, rect=centre, flags=4 | 2)  # hidden
    add_annotation(writer, 0, rect=centre, flags=0)  # shown on screen, not printed
    add_annotation(writer, 0, rect=centre, subtype="/Popup")
    if rotate:
        writer.pages[0][NameObject("/Rotate")] = NumberObject(rotate)
    source = to_bytes(writer)

    output = normalise(source)
    assert_paper(output)
    image = render(output)
    shown = A5 if rotate % 180 == 0 else (A5[1], A5[0])
    assert_area(image, expected_area(shown))
    assert big_marker_corner(image) == ("tl" if rotate % 180 == 0 else turned("tl", landscape_turn(rotate)))
    left, top, right, bottom = dark_bbox(image)
    cx, cy = (left + right) // 2, (top + bottom) // 2
    assert dark_fraction(image, (cx - 5, cy - 5, cx + 5, cy + 5)) == 0


def test_appearance_bbox_and_matrix_are_fitted_to_the_rect() -> None:
    # The appearance's BBox is at 1000,1000 and its /Matrix scales it down; the spec fits it to /Rect anyway.
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A4))))
    form = appearance(writer, 10, 10, bbox_origin=1000)
    dictionary(form)[NameObject("/Matrix")] = ArrayObject(FloatObject(v) for v in (0.5, 0, 0, 0.5, 3, 3))
    add_annotation(writer, 0, rect=(200, 300, 400, 500), normal=form)
    image = render(normalise(to_bytes(writer)))
    scale = RENDER_SCALE
    inside = (round(205 * scale), round((A4[1] - 495) * scale), round(395 * scale), round((A4[1] - 305) * scale))
    assert dark_fraction(image, inside) > 0.95
    around = (round(180 * scale), round((A4[1] - 299) * scale), round(198 * scale), round((A4[1] - 200) * scale))
    assert dark_fraction(image, around) == 0


def test_check_box_appearance_follows_its_state() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A4))))
    states = DictionaryObject(
        {NameObject("/Yes"): appearance(writer, 40, 40), NameObject("/Off"): appearance(writer, 2, 2)}
    )
    add_annotation(writer, 0, rect=(200, 400, 240, 440), subtype="/Widget", normal=states, state="/Yes")
    add_annotation(writer, 0, rect=(300, 400, 340, 440), subtype="/Widget", normal=states, state="/Missing")
    image = render(normalise(to_bytes(writer)))
    checked = tuple(round(v * RENDER_SCALE) for v in (205, A4[1] - 435, 235, A4[1] - 405))
    unknown = tuple(round(v * RENDER_SCALE) for v in (300, A4[1] - 440, 340, A4[1] - 400))
    assert dark_fraction(image, checked) > 0.95  # type: ignore[arg-type]
    assert dark_fraction(image, unknown) == 0  # type: ignore[arg-type]


def test_annotations_without_appearance_are_dropped() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A4))))
    add_annotation(writer, 0, rect=(200, 400, 240, 440), normal=NullObject())
    output = normalise(to_bytes(writer))
    assert_paper(output)


# --- encryption and refusals ----------------------------------------------------------------------------


def test_encrypted_with_empty_password_comes_out_unencrypted_and_normalised() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(source_page(LETTER, rotate=90))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-256")
    output = normalise(to_bytes(writer))
    assert not PdfReader(io.BytesIO(output)).is_encrypted
    assert_paper(output)


def test_password_protected_is_refused_in_plain_words() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(marked_page(A4))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    data = to_bytes(writer)
    with pytest.raises(PasswordProtected) as caught:
        open_pdf(data)
    assert pdf_refusal_reason(caught.value) == "the PDF is password-protected"
    with pytest.raises(PasswordProtected):
        count_pages(PdfReader(io.BytesIO(data)))


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (PasswordProtected(), "the PDF is password-protected"),
        (EmptyDocument(), "the PDF has no pages"),
        (LimitReachedError("x"), "the PDF is too large or too complex to process"),
        (PdfReadError("x"), "the PDF file is damaged"),
        (RecursionError(), "the PDF file is damaged (its structure loops or is nested too deeply)"),
        (MemoryError(), "the PDF needs too much memory to process"),
        (KeyError("/Kids"), "the PDF file is damaged"),
        (ZeroDivisionError(), "the PDF file is damaged"),
    ],
)
def test_refusal_reasons_are_plain_words(exc: BaseException, reason: str) -> None:
    assert pdf_refusal_reason(exc) == reason


# --- counting pages -------------------------------------------------------------------------------------


def pdf_from_objects(objects: dict[int, bytes], root: int = 1) -> bytes:
    """A PDF file with exactly these objects (number → body) and a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    size = max(objects) + 1
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number] if number in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, root, xref)
    return bytes(out)


PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"


def test_count_ignores_a_count_that_lies_high() -> None:
    data = pdf_from_objects(
        {
            1: b"<< /Type /Catalog /Pages 2 0 R >>",
            2: b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 9999999999 >>",
            3: PAGE,
            4: PAGE,
        }
    )
    with pdf_configuration():
        reader = open_pdf(data)
        assert count_pages(reader) == 2
        merger = Merger()
        merger.add(reader)
        assert merger.pages == 2
        assert len(PdfReader(io.BytesIO(merger.finish())).pages) == 2


def test_count_ignores_a_count_that_lies_low() -> None:
    data = pdf_from_objects(
        {
            1: b"<< /Type /Catalog /Pages 2 0 R >>",
            2: b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 1 >>",
            3: PAGE,
            4: PAGE,
            5: PAGE,
        }
    )
    with pdf_configuration():
        assert count_pages(open_pdf(data)) == 3


def test_count_of_zero_pages_is_an_empty_document() -> None:
    data = pdf_from_objects({1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [] /Count 5 >>"})
    with pdf_configuration(), pytest.raises(EmptyDocument):
        open_pdf(data)


@pytest.mark.parametrize(
    "objects",
    [
        # /Kids holds its own node.
        {1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 1 >>", 3: PAGE},
        # A -> B -> A, with a page on the way.
        {
            1: b"<< /Type /Catalog /Pages 2 0 R >>",
            2: b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
            3: PAGE,
            4: b"<< /Type /Pages /Parent 2 0 R /Kids [5 0 R] /Count 1 >>",
            5: b"<< /Type /Pages /Parent 4 0 R /Kids [2 0 R] /Count 1 >>",
        },
    ],
    ids=["self", "three-hop"],
)
def test_cyclic_kids_terminate_as_a_damaged_file(objects: dict[int, bytes]) -> None:
    data = pdf_from_objects(objects)
    with pdf_configuration(), pytest.raises(PdfReadError, match="cyclic") as caught:
        open_pdf(data)
    assert pdf_refusal_reason(caught.value) == "the PDF file is damaged"


def test_deep_page_tree_is_refused() -> None:
    depth = 300
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    for level in range(depth):
        objects[2 + level] = b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (3 + level)
    objects[2 + depth] = b"<< /Type /Page /MediaBox [0 0 200 200] >>"
    with pdf_configuration(), pytest.raises(LimitReachedError) as caught:
        open_pdf(pdf_from_objects(objects))
    assert pdf_refusal_reason(caught.value) == "the PDF is too large or too complex to process"


def test_shared_subtree_bomb_stops_quickly() -> None:
    # Each level lists the next one twice: 2**40 pages by walking, a few hundred bytes of file.
    levels = 40
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    for level in range(levels):
        child = 3 + level
        objects[2 + level] = b"<< /Type /Pages /Kids [%d 0 R %d 0 R] /Count 2 >>" % (child, child)
    objects[2 + levels] = b"<< /Type /Page /MediaBox [0 0 200 200] >>"
    with pdf_configuration(), pytest.raises(LimitReachedError):
        open_pdf(pdf_from_objects(objects))


# --- corpus ---------------------------------------------------------------------------------------------

PER_FILE_TIMEOUT = 60.0


def run_with_timeout(call: Callable[[], T], label: str) -> T:
    """Run ``call`` in a daemon thread (with the jbig2dec-free configuration); fail the test if it hangs."""
    outcome: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with pdf_configuration():
                outcome.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True, name=f"normalise {label}")
    thread.start()
    thread.join(PER_FILE_TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"{label}: normalisation did not finish within {PER_FILE_TIMEOUT:.0f} s")
    if error:
        raise error[0]
    return outcome[0]


def open_and_normalise(data: bytes) -> tuple[int, bytes]:
    reader = open_pdf(data)
    pages = count_pages(reader)
    merger = Merger("a4")
    merger.add(reader)
    assert merger.pages == pages
    return pages, merger.finish()


def corpus_pdfs() -> list[Path]:
    return sorted(p for p in (corpus_dir() / "pdf").rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_corpus_pdfs_become_portrait_paper_pages_or_are_refused_in_words() -> None:
    paths = corpus_pdfs()
    assert len(paths) > 50
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for path in paths:
        label = str(path.relative_to(corpus_dir()))
        try:
            pages, output = run_with_timeout(functools.partial(open_and_normalise, path.read_bytes()), label)
        except Exception as exc:
            reason = pdf_refusal_reason(exc)
            assert reason.startswith("the PDF ")
            counts["refused"] += 1
            reasons[reason] += 1
            print(f"refused {label}: {reason} ({exc!r:.120})")
            continue
        counts["converted"] += 1
        counts["pages"] += pages
        reader = PdfReader(io.BytesIO(output))
        assert len(reader.pages) == pages, label
        assert count_pages(reader) == pages, label
        assert_paper(output)
        document = pypdfium2.PdfDocument(output)  # a second, independent reader agrees
        try:
            assert len(document) == pages, label
            for index in range(len(document)):
                assert document[index].get_size() == pytest.approx(A4, abs=0.01), label
        finally:
            document.close()
    print(f"corpus PDFs: {counts['converted']} normalised ({counts['pages']} pages), {counts['refused']} refused")
    print(f"refusals: {dict(reasons)}")
    assert counts["converted"] >= 0.8 * len(paths)


def dark_mask(image: Image.Image) -> Image.Image:
    """Dark pixels as a 0/255 mask, widened by a pixel: renders at different scales anti-alias differently."""
    return image.point(lambda v: 255 if v < 160 else 0).filter(ImageFilter.MaxFilter(3))


def overlap(first: Image.Image, second: Image.Image) -> float:
    """Intersection over union of the dark pixels of two images of the same size (1.0: the same marks)."""
    a, b = dark_mask(first), dark_mask(second)
    both = ImageChops.multiply(a, b).histogram()[255]
    either = ImageChops.lighter(a, b).histogram()[255]
    return both / either if either else 1.0


def displayed_like(source: bytes, output: bytes, index: int, extra_turns: int) -> float:
    """How well the output page matches the source page as a viewer shows it, turned and fitted as expected.

    The overlap of dark pixels between the output render and the source render turned ``extra_turns``
    clockwise quarter turns, scaled to the fitted size and centred on A4.
    """
    document = pypdfium2.PdfDocument(source)
    try:
        page = document[index]
        width, height = page.get_size()  # as shown: /Rotate and the CropBox applied
    finally:
        document.close()
    if extra_turns % 2:
        width, height = height, width
    scale = min(A4[0] / width, A4[1] / height, MAX_UPSCALE)
    shown = render(source, index, scale=RENDER_SCALE * scale)
    turned_image = shown.rotate(-90 * extra_turns, expand=True)
    out = render(output, index)
    canvas = Image.new("L", out.size, 255)
    canvas.paste(turned_image, ((out.width - turned_image.width) // 2, (out.height - turned_image.height) // 2))
    return overlap(canvas, out)


ROTATED_SAMPLES = [
    "pdf/py-pdf-sample-files/015-arabic/habibi-rotated.pdf",
    "pdf/pypdf-resources/AutoCad_Simple.pdf",
    "pdf/pypdf-resources/AutoCad_Diagram.pdf",
    "pdf/pypdf-resources/indirect-rotation.pdf",
    "pdf/pypdf-resources/Sample_Td-matrix.pdf",
]


@pytest.mark.parametrize("name", ROTATED_SAMPLES)
def test_corpus_rotated_pages_look_as_a_viewer_shows_them(name: str) -> None:
    source = corpus_file(name).read_bytes()
    with pdf_configuration():
        reader = PdfReader(io.BytesIO(source))
        rotations = [int(page.get("/Rotate", 0) or 0) % 360 for page in reader.pages]
        _, output = open_and_normalise(source)
    assert_paper(output)
    document = pypdfium2.PdfDocument(source)
    try:
        shown_landscape = [document[i].get_width() > document[i].get_height() for i in range(len(document))]
    finally:
        document.close()
    for index, (rotate, landscape) in enumerate(zip(rotations, shown_landscape, strict=True)):
        expected = landscape_turn(rotate) if landscape else 0
        overlaps = {turns: round(displayed_like(source, output, index, turns), 3) for turns in range(4)}
        print(f"{name} page {index + 1}: /Rotate {rotate}, overlap by extra quarter turns {overlaps}")
        assert overlaps[expected] > 0.7, (index, overlaps)
        others = [value for turns, value in overlaps.items() if turns != expected]
        assert max(others) < 0.8 * overlaps[expected], (index, overlaps)


def test_corpus_habibi_rotated_pages_read_upright() -> None:
    # The sample draws upright text and turns its pages with /Rotate 90, 180, 270 and 360. Shown landscape
    # (90, 270), a page is turned back to how it was drawn: upright. /Rotate 180 is honoured (a viewer
    # shows that page upside down, and so does the fax).
    source = corpus_file("pdf/py-pdf-sample-files/015-arabic/habibi-rotated.pdf").read_bytes()
    with pdf_configuration():
        _, output = open_and_normalise(source)
    document = pypdfium2.PdfDocument(source)
    try:
        for index, upright in enumerate([True, False, True, True]):
            # The page as drawn, without /Rotate: PDFium can render a page counter-turned.
            page = document[index]
            undo = (360 - page.get_rotation()) % 360
            drawn = page.render(scale=RENDER_SCALE, rotation=undo).to_pil().convert("L")
            out = render(output, index)
            assert drawn.size == out.size
            similarity = overlap(drawn, out)
            assert (similarity > 0.9) == upright, (index, similarity)
    finally:
        document.close()


@pytest.mark.parametrize(
    "entries",
    [
        {"MediaBox": box(-1e40, 0, 1e40, 100)},
        {"MediaBox": box(0, 0, 0, 0)},  # empty: a viewer's default, Letter
        {"MediaBox": ArrayObject([TextStringObject("a4")])},  # not a rectangle: the same
        {"UserUnit": FloatObject(0)},
        {"UserUnit": FloatObject(-3)},
        {"UserUnit": TextStringObject("big")},
        {"UserUnit": FloatObject(1e40)},
        {"Rotate": FloatObject(1e40)},
    ],
    ids=["huge-box", "empty", "junk-box", "unit-0", "unit-negative", "unit-junk", "unit-huge", "rotate-huge"],
)
def test_odd_geometry_in_a_file_gives_paper_pages(entries: dict[str, PdfObject]) -> None:
    output = normalise(with_page_entries(marked_page(A5), **entries))
    assert_paper(output)
    render(output)  # PDFium reads what was written


@pytest.mark.parametrize(
    "entries",
    [
        {"/MediaBox": box(-1e308, 0, 1e308, 100)},  # an infinite width: the box is ignored
        {"/MediaBox": box(0, 0, 1e-320, 1e-320)},
        {"/MediaBox": box(0, 0, 1e308, 1e308)},
        {"/UserUnit": FloatObject(1e308)},
        {"/UserUnit": FloatObject(1e-320)},
    ],
    ids=["infinite-width", "denormal", "huge", "unit-huge", "unit-tiny"],
)
def test_geometry_at_the_float_limits_is_placed_or_refused(entries: dict[str, PdfObject]) -> None:
    # Beyond what pypdf reads from a file (it stops at 64-character numbers), but place_page must still
    # never write "nan", "inf" or a zero scale into a content stream.
    page = DictionaryObject({NameObject("/MediaBox"): box(0, 0, 400, 600)})
    page.update({NameObject(key): value for key, value in entries.items()})
    try:
        placement = place_page(page, "a4")
    except ValueError as exc:
        refusal = pdf_refusal_reason(exc)
    else:
        refusal = ""
        assert all(math.isfinite(v) for v in placement.matrix)
        assert placement.matrix[:4] != (0, 0, 0, 0)
    assert refusal in ("", "the PDF file is damaged")
