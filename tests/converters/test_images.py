"""Images to bilevel fax pages: every format, every page of a TIFF, photos dithered, everything else crisp.

Inputs are built at test time with Pillow, plus real files from the corpus (Pillow's own test images, used
in place). The checks look at the pages a fax machine would print: their size, where the ink is, whether
a grey area came out as dots (dithered) or as one tone (thresholded), and the reasons given for refusals.
"""

from __future__ import annotations

import io
import itertools
import random
import string
import struct
import zlib
from collections import Counter
from collections.abc import Callable

import pytest
from PIL import (
    Image,
    ImageChops,
    ImageDraw,
    ImageFile,
    ImageFilter,
    ImageFont,
    ImageStat,
    JpegImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
)
from pypdf import PdfReader
from pypdf.generic import DictionaryObject, PdfObject

import bridge.converters.image as image_module
from bridge.converters.image import (
    ALLOWED_FORMATS,
    FAX_FINE_LPI,
    FAX_WIDTH_PX,
    MAX_FRAMES,
    MAX_PIXELS,
    ImageTooLarge,
    ImageTooManyPages,
    RasterPages,
    count_image_pages,
    image_refusal_reason,
    image_to_pdf,
    looks_like_photo,
    sniff_image,
    unsupported_image_format,
)
from bridge.converters.pdf import PAPER_SIZES_MM, PAPER_SIZES_PT
from tests.corpus import corpus_dir, corpus_file

PAPERS = ("a4", "letter")
LINES = {"a4": round(297 / 25.4 * FAX_FINE_LPI), "letter": round(11 * FAX_FINE_LPI)}
X_DPI = {"a4": FAX_WIDTH_PX / (210 / 25.4), "letter": FAX_WIDTH_PX / 8.5}
TOP_MARGIN = round(5 / 25.4 * FAX_FINE_LPI)  # lines
BOX_W_PX = round((210 - 10) / 25.4 * X_DPI["a4"])  # printable width of A4 in fax pixels
BOMB_TYPES = (ImageTooLarge, Image.DecompressionBombError, Image.DecompressionBombWarning)
TOO_LARGE = r"^the image is too large to fax \([\d,.]+ megapixels; the limit is 50\)$"


# --- building inputs ---------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def drawing(size: tuple[int, int] = (600, 800), mode: str = "RGB") -> Image.Image:
    """White picture with a black rectangle over the left half of its top quarter."""
    img = Image.new(mode, size, "white")
    ImageDraw.Draw(img).rectangle((0, 0, size[0] // 2 - 1, size[1] // 4 - 1), fill="black")
    return img


def text_scan(size: tuple[int, int] = (1240, 1754), paper: int = 232, quality: int = 70) -> bytes:
    """An A4 page scanned at 150 dpi: lines of black words on off-white, noisy paper, as a JPEG."""
    rnd = random.Random(7)
    page = Image.new("L", size, paper)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    for y in range(120, size[1] - 120, 34):
        line = " ".join(
            "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9))) for _ in range(11)
        )
        draw.text((100, y), line, fill=30, font=font)
    noisy = ImageChops.add(page, Image.effect_noise(size, 6), offset=-128)
    return encode(noisy.convert("RGB"), "JPEG", quality=quality)


def gradient_photo(size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A photo-like picture: dark on the left to light on the right, with grain."""
    ramp = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)
    return ImageChops.add(ramp, Image.effect_noise(size, 20), offset=-128).convert("RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries no pixels: enough for Pillow to open and check the size."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def gif_with_large_second_frame(width: int, height: int) -> bytes:
    """A 100 x 100 GIF whose second frame claims ``width`` x ``height``: only seeking to it shows that."""
    first = encode(Image.new("P", (100, 100), 0), "GIF")
    assert first.endswith(b";")
    descriptor = b"," + struct.pack("<4H", 0, 0, width, height) + b"\x00"
    lzw = b"\x02\x01\x2c\x00"  # minimum code size 2, one sub-block holding a clear code and an end code
    return first[:-1] + descriptor + lzw + b";"


def tiff_pages(frames: list[Image.Image], *, tiffinfo: list[dict[int, object]] | None = None) -> bytes:
    buf = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(buf, new=True) as writer:
        for index, frame in enumerate(frames):
            info = tiffinfo[index] if tiffinfo else {}
            frame.save(writer, "TIFF", tiffinfo=info)
            writer.newFrame()
    return buf.getvalue()


def fax_tiff(height: int, dpi: tuple[int, int], *, text_until: int | None = None) -> tuple[Image.Image, bytes]:
    """A fax modem's page: 1-bit, 1728 wide, G4, with lines of words down to ``text_until``."""
    page = Image.new("1", (FAX_WIDTH_PX, height), 1)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=28)
    rnd = random.Random(3)
    for y in range(60, (text_until or height) - 60, 45):
        draw.text((80, y), "".join(rnd.choice(string.ascii_letters + " ") for _ in range(70)), fill=0, font=font)
    return page, encode(page, "TIFF", compression="group4", dpi=dpi)


# --- reading results -----------------------------------------------------------------------------------


def rasters(result: RasterPages, paper: str = "a4") -> list[Image.Image]:
    """Every page's raster, after checking each page is the paper size with one 1728-wide G4 image."""
    reader = PdfReader(io.BytesIO(result.pdf))
    assert len(reader.pages) == result.pages
    pages = []
    for page in reader.pages:
        box = (float(page.mediabox.width), float(page.mediabox.height))
        assert box == pytest.approx(PAPER_SIZES_PT[paper], abs=0.5)
        xobjects = dictionary(dictionary(page["/Resources"])["/XObject"])
        assert len(xobjects) == 1
        xobject = dictionary(next(iter(xobjects.values())))
        assert str(xobject["/BitsPerComponent"]) == "1"
        assert "/CCITTFaxDecode" in str(xobject["/Filter"])
        images = page.images
        assert len(images) == 1
        raster = images[0].image
        assert raster is not None
        assert raster.mode == "1"
        assert raster.size == (FAX_WIDTH_PX, LINES[paper])
        pages.append(raster)
    return pages


def only_page(result: RasterPages, paper: str = "a4") -> Image.Image:
    (page,) = rasters(result, paper)
    return page


def dictionary(obj: object) -> DictionaryObject:
    resolved = obj.get_object() if isinstance(obj, PdfObject) else obj
    assert isinstance(resolved, DictionaryObject)
    return resolved


def ink_layer(img: Image.Image) -> Image.Image:
    """255 where the picture is black, 0 elsewhere."""
    return img.convert("L").point(lambda v: 255 if v < 128 else 0)


def ink(img: Image.Image) -> int:
    return ink_layer(img).histogram()[255]


def ink_bbox(img: Image.Image) -> tuple[int, int, int, int]:
    bbox = ink_layer(img).getbbox()
    assert bbox is not None, "no ink on the page"
    return bbox


def ink_fraction(img: Image.Image, box: tuple[int, int, int, int] | None = None) -> float:
    region = img.crop(box) if box is not None else img
    return ink(region) / (region.width * region.height)


def isolated_ink(img: Image.Image) -> int:
    """Black pixels none of whose eight neighbours is black: the dots dithering scatters over grey."""
    layer = ink_layer(img)
    neighbours = layer.filter(ImageFilter.Kernel((3, 3), [1, 1, 1, 1, 0, 1, 1, 1, 1], scale=1))
    return ImageChops.subtract(layer, neighbours).histogram()[255]


# --- recognising files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_sniff_image_recognises_every_allowed_format(fmt: str) -> None:
    data = encode(drawing((40, 30)), fmt)
    assert sniff_image(data[:16]) == fmt
    assert unsupported_image_format(data[:64]) is None


def test_sniff_image_recognises_bigtiff_and_big_endian_tiff() -> None:
    assert sniff_image(b"MM\x00*\x00\x00\x00\x08") == "TIFF"
    assert sniff_image(corpus_file("images/pillow-tests/hopper_bigtiff.tif").read_bytes()[:16]) == "TIFF"


@pytest.mark.parametrize(
    "head",
    [b"%PDF-1.7\n", b"PK\x03\x04", b"hello world", b"", b"\x00\x00\x00\x18ftypheic", b"RIFF\x00\x00\x00\x00WAVE"],
)
def test_sniff_image_rejects_everything_else(head: bytes) -> None:
    assert sniff_image(head) is None


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1", "AVIF"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51\x00\x2f\x00\x00", "JPEG 2000"),
        (b"\xff\x0a\xfa\x7f", "JPEG XL"),
        (b"8BPS\x00\x01\x00\x00\x00\x00\x00\x00", "Photoshop (PSD)"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "PostScript (EPS)"),
        (b"P6\n640 480\n255\n", "Netpbm (PBM/PGM/PPM)"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg">', "SVG"),
    ],
)
def test_unsupported_image_formats_are_named(head: bytes, name: str) -> None:
    assert sniff_image(head) is None
    assert unsupported_image_format(head) == name


def test_icons_made_by_pillow_are_named_but_never_decoded() -> None:
    ico = encode(drawing((32, 32)), "ICO")
    assert unsupported_image_format(ico[:64]) == "ICO"
    with pytest.raises(UnidentifiedImageError):
        image_to_pdf(ico)


@pytest.mark.parametrize(
    "head",
    [
        b"P1 12 Main Street, Springfield\n",  # a text that starts like a Netpbm magic
        b"<!DOCTYPE html><html><body><svg width='10'></svg>",  # a web page with an inline drawing
        b"\x00\x00\x01\x00\x00\x00",  # an icon header that lists no icons
        b"Dear Sir or Madam,\n",
    ],
)
def test_text_is_not_mistaken_for_an_image_format(head: bytes) -> None:
    assert unsupported_image_format(head) is None


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX", "TGA", "SGI"])
def test_only_the_allowed_decoders_are_used(fmt: str) -> None:
    data = encode(drawing((48, 48)), fmt)
    assert Image.open(io.BytesIO(data)).size == (48, 48)  # Pillow itself could read it...
    with pytest.raises(UnidentifiedImageError) as caught:  # ...but the bridge never asks it to
        count_image_pages(data)
    assert image_refusal_reason(caught.value) == "the file is not an image this server can read"
    with pytest.raises(UnidentifiedImageError):
        image_to_pdf(data)


# --- pages of the right size -----------------------------------------------------------------------------


@pytest.mark.parametrize("paper", PAPERS)
@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_each_format_becomes_one_fax_page(fmt: str, paper: str) -> None:
    data = encode(drawing(), fmt)
    assert count_image_pages(data) == 1
    result = image_to_pdf(data, paper=paper)  # type: ignore[arg-type]
    assert (result.pages, result.dithered) == (1, 0)
    page = only_page(result, paper)
    # The 600 x 800 drawing is fitted into the printable box (5 mm margins); the black rectangle is the
    # left half of its top quarter, so it starts at the top margin.
    box_w_in, box_h_in = ((side - 10) / 25.4 for side in PAPER_SIZES_MM[paper])
    inches_per_px = min(box_w_in / 600, box_h_in / 800)
    left, top, right, bottom = ink_bbox(page)
    assert abs(top - TOP_MARGIN) <= 2
    assert (right - left) / X_DPI[paper] == pytest.approx(300 * inches_per_px, rel=0.01)
    assert (bottom - top) / FAX_FINE_LPI == pytest.approx(200 * inches_per_px, rel=0.01)
    assert left == pytest.approx((FAX_WIDTH_PX - 2 * (right - left)) / 2, abs=3)  # centred across the page


def test_unknown_paper_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown paper size"):
        image_to_pdf(encode(drawing(), "PNG"), paper="a3")  # type: ignore[arg-type]


def test_multipage_tiff_gives_one_page_per_frame_in_order() -> None:
    frames = []
    for index in range(3):
        frame = Image.new("L", (300, 400), 255)
        ImageDraw.Draw(frame).rectangle((0, index * 100, 299, index * 100 + 49), fill=0)
        frames.append(frame)
    data = tiff_pages(frames)
    assert count_image_pages(data) == 3
    result = image_to_pdf(data, paper="letter")
    assert (result.pages, result.dithered) == (3, 0)
    tops = [ink_bbox(page)[1] for page in rasters(result, "letter")]
    assert tops[0] < tops[1] < tops[2]


def test_corpus_multipage_g4_tiff_gives_every_page() -> None:
    data = corpus_file("images/pillow-tests/g4-multi.tiff").read_bytes()
    assert count_image_pages(data) == 3
    result = image_to_pdf(data)
    assert result.pages == 3
    assert all(ink(page) > 0 for page in rasters(result))


def test_reduced_resolution_copy_in_a_tiff_is_not_a_page() -> None:
    page, thumbnail = drawing((600, 800), "L"), drawing((60, 80), "L")
    data = tiff_pages([page, thumbnail], tiffinfo=[{}, {254: 1}])  # NewSubfileType 1: reduced resolution
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert count_image_pages(data) == 1
    assert image_to_pdf(data).pages == 1


# --- fax-native and other 1-bit images ------------------------------------------------------------------


def test_fine_resolution_fax_page_is_pasted_as_it_is() -> None:
    source, data = fax_tiff(2200, (204, 196))
    page = only_page(image_to_pdf(data))
    assert page.crop((0, 0, FAX_WIDTH_PX, 2200)).tobytes() == source.tobytes()
    assert ink(page) == ink(source)


def test_standard_resolution_fax_page_has_every_line_doubled() -> None:
    source, data = fax_tiff(1100, (204, 98))
    page = only_page(image_to_pdf(data))
    doubled = source.resize((FAX_WIDTH_PX, 2200), Image.Resampling.NEAREST)
    assert page.crop((0, 0, FAX_WIDTH_PX, 2200)).tobytes() == doubled.tobytes()
    assert ink(page) == 2 * ink(source)


def test_fax_page_longer_than_the_paper() -> None:
    # An A4 fax (2292 lines) on Letter (2156 lines): blank paper past the sheet is cut off...
    source, data = fax_tiff(2292, (204, 196), text_until=2000)
    assert ink_bbox(source)[3] <= LINES["letter"]
    page = only_page(image_to_pdf(data, paper="letter"), "letter")
    assert page.tobytes() == source.crop((0, 0, FAX_WIDTH_PX, LINES["letter"])).tobytes()
    # ...but a page inked to the bottom is shrunk to fit, still bilevel and without dither dots.
    inked = source.copy()
    ImageDraw.Draw(inked).rectangle((100, 2250, 1600, 2280), fill=0)
    inked_tiff = encode(inked, "TIFF", compression="group4", dpi=(204, 196))
    page = only_page(image_to_pdf(inked_tiff, paper="letter"), "letter")
    left, _, right, bottom = ink_bbox(page)
    assert bottom > LINES["letter"] - 20
    assert right - left < FAX_WIDTH_PX
    assert isolated_ink(page) < 0.01 * ink(page)


def test_corpus_g4_scan_stays_bilevel_and_crisp() -> None:
    source = Image.open(corpus_file("images/pillow-tests/pport_g4.tif"))  # 2548 x 3296 at 200 dpi: reduced
    source.load()
    data = corpus_file("images/pillow-tests/pport_g4.tif").read_bytes()
    result = image_to_pdf(data)
    assert result.dithered == 0
    page = only_page(result)
    # The same share of ink inside the printed area, and no scattered dots a grey resampling plus dither
    # would leave.
    source_share = ink_fraction(source, ink_bbox(source))
    page_share = ink_fraction(page, ink_bbox(page))
    assert page_share == pytest.approx(source_share, rel=0.1)
    assert isolated_ink(page) <= max(50, 2 * isolated_ink(source))


def test_corpus_small_g4_image_is_enlarged_pixel_for_pixel() -> None:
    source = Image.open(corpus_file("images/pillow-tests/hopper_g4.tif"))  # 128 x 128, itself dithered
    source.load()
    page = only_page(image_to_pdf(corpus_file("images/pillow-tests/hopper_g4.tif").read_bytes()))
    assert ink_fraction(page, ink_bbox(page)) == pytest.approx(ink_fraction(source, ink_bbox(source)), rel=0.02)
    # Enlarged by repeating pixels: no new lone dots appear (each source pixel became a block).
    assert isolated_ink(page) == 0


def test_1_bit_png_is_enlarged_pixel_for_pixel() -> None:
    # A black frame (so the ink's bounding box is the whole picture) around a checkerboard.
    source = Image.new("1", (40, 30), 0)
    for x in range(1, 39):
        for y in range(1, 29):
            source.putpixel((x, y), (x + y) % 2)
    page = only_page(image_to_pdf(encode(source, "PNG")))
    box = ink_bbox(page)
    printed = page.crop(box)
    assert printed.width == pytest.approx(BOX_W_PX, abs=2)
    # Exactly the source with each pixel repeated: no pixel blurred to grey and cut back, none invented.
    assert printed.tobytes() == source.resize(printed.size, Image.Resampling.NEAREST).tobytes()


# --- photos dithered, everything else thresholded ----------------------------------------------------------


SCREEN_PERIOD = 8  # the halftone's threshold tile, in fax pixels: 8 x 8 with two dots, 45 degrees


def photo_like(size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A photograph as bench/convert.py makes one: colour gradients, soft discs, sensor noise, a little blur."""
    width, height = size
    rnd = random.Random(12)
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
            Image.radial_gradient("L").resize(size),
        ),
    )
    draw = ImageDraw.Draw(base)
    for _ in range(30):
        x, y, r = rnd.randrange(width), rnd.randrange(height), rnd.randrange(width // 60, width // 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    noise = Image.effect_noise(size, 24).convert("RGB")
    return Image.blend(base, noise, 0.18).filter(ImageFilter.GaussianBlur(1.2))


def picture_box(source: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Where ``box`` of a source picture as wide as the A4 printable area lands on the page, in fax pixels."""
    left = (FAX_WIDTH_PX - BOX_W_PX) // 2
    x_scale = BOX_W_PX / source[0]
    y_scale = x_scale * FAX_FINE_LPI / X_DPI["a4"]
    x0, y0, x1, y1 = box
    return (
        left + round(x0 * x_scale),
        TOP_MARGIN + round(y0 * y_scale),
        left + round(x1 * x_scale),
        TOP_MARGIN + round(y1 * y_scale),
    )


def shifted(img: Image.Image, box: tuple[int, int, int, int], dx: int, dy: int) -> Image.Image:
    x0, y0, x1, y1 = box
    return img.crop((x0 + dx, y0 + dy, x1 + dx, y1 + dy))


def test_gradient_photo_is_dithered() -> None:
    photo = gradient_photo()
    assert looks_like_photo(photo.convert("L"))
    result = image_to_pdf(encode(photo, "JPEG", quality=85))
    assert result.dithered == 1
    page = only_page(result)
    left, top, right, bottom = ink_bbox(page)
    width = right - left

    def band(at: float) -> tuple[int, int, int, int]:
        x = left + round(width * at)
        return (x - 40, top + 100, x + 40, bottom - 100)

    # Three-quarters of the way to white the picture is light grey: the halftone draws it as small dots
    # (a threshold would leave it blank), and at a quarter, dark grey, as black with small white holes.
    light, dark = band(0.75), band(0.25)
    assert 0.2 < ink_fraction(page, light) < 0.3
    assert 0.7 < ink_fraction(page, dark) < 0.8
    # Clustered dots: grain and all, hardly a lone black pixel (error diffusion scatters them by the
    # thousand over light grey).
    assert isolated_ink(page.crop(light)) < 0.01 * ink(page.crop(light))


def test_gradient_ink_follows_the_grey_level() -> None:
    size = (1200, 900)
    ramp = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)  # black to white
    assert looks_like_photo(ramp)
    result = image_to_pdf(encode(ramp, "PNG"))
    assert result.dithered == 1
    page = only_page(result)
    bands = 16
    inks = []
    for index in range(bands):
        source_band = (index * size[0] // bands, 100, (index + 1) * size[0] // bands, size[1] - 100)
        on_page = ink_fraction(page, picture_box(size, source_band))
        expected = 1 - ImageStat.Stat(ramp.crop(source_band)).mean[0] / 255
        assert on_page == pytest.approx(expected, abs=0.03), index
        inks.append(on_page)
    # Darker grey, more ink, band after band: from nearly all black to nearly all white.
    assert all(darker > lighter for darker, lighter in itertools.pairwise(inks))
    assert inks[0] > 0.9
    assert inks[-1] < 0.1


def test_mid_grey_in_a_photo_is_half_inked_by_a_repeating_clustered_dot_screen() -> None:
    size = (1200, 900)
    photo = gradient_photo(size)
    patch = (400, 300, 800, 600)
    ImageDraw.Draw(photo).rectangle((patch[0], patch[1], patch[2] - 1, patch[3] - 1), fill=(128, 128, 128))
    assert looks_like_photo(photo.convert("L"))
    result = image_to_pdf(encode(photo, "PNG"))
    assert result.dithered == 1
    page = only_page(result)
    x0, y0, x1, y1 = picture_box(size, patch)
    inside = (x0 + 24, y0 + 24, x1 - 24, y1 - 24)  # clear of the resampled edges of the patch
    # 50 % grey (128 of 255) gets half its pixels inked.
    assert ink_fraction(page, inside) == pytest.approx(0.5, abs=0.02)
    # An ordered dither: over flat grey the pattern repeats exactly every tile period, across and down...
    area = page.crop(inside)
    for dx, dy in ((SCREEN_PERIOD, 0), (0, SCREEN_PERIOD), (SCREEN_PERIOD, SCREEN_PERIOD)):
        assert ImageChops.difference(area, shifted(page, inside, dx, dy)).getbbox() is None, (dx, dy)
    # ...but not at any shorter step along a row, and its ink is in clustered dots, not lone pixels (a
    # dispersed Bayer pattern or error diffusion draws 50 % grey as a near chequerboard of single pixels).
    for dx in range(1, SCREEN_PERIOD):
        assert ImageChops.difference(area, shifted(page, inside, dx, 0)).getbbox() is not None, dx
    assert isolated_ink(area) == 0


def test_photo_page_is_far_smaller_than_error_diffusion(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(photo_like(), "JPEG", quality=90)
    pictures: list[Image.Image] = []
    halftone = image_module._halftone

    def recording(gray: Image.Image, *args: tuple[int, int]) -> Image.Image:
        pictures.append(gray.copy())
        return halftone(gray, *args)

    monkeypatch.setattr(image_module, "_halftone", recording)
    result = image_to_pdf(data)
    assert result.dithered == 1
    page = only_page(result)
    # The same grey picture, Floyd-Steinberg dithered by Pillow, on the same page at the same place.
    (gray,) = pictures
    diffused = Image.new("1", page.size, 1)
    diffused.paste(
        gray.convert("1", dither=Image.Dither.FLOYDSTEINBERG), ((FAX_WIDTH_PX - gray.width) // 2, TOP_MARGIN)
    )
    ordered_g4 = len(encode(page, "TIFF", compression="group4"))
    diffused_g4 = len(encode(diffused, "TIFF", compression="group4"))
    print(f"photo page G4: {ordered_g4:,} bytes halftoned, {diffused_g4:,} bytes Floyd-Steinberg")
    assert ordered_g4 * 2.5 < diffused_g4  # measured 3.7 times smaller
    # The same tone overall, without the thousands of lone dots a fax machine would smear.
    assert ink(page) == pytest.approx(ink(diffused), rel=0.01)
    assert isolated_ink(page) * 100 < isolated_ink(diffused)


def test_corpus_photo_is_dithered() -> None:
    hopper = Image.open(corpus_file("images/pillow-tests/hopper.jpg")).convert("RGB")
    assert looks_like_photo(hopper.convert("L"))
    enlarged = encode(hopper.resize((1024, 1024), Image.Resampling.BICUBIC), "JPEG", quality=90)
    result = image_to_pdf(enlarged)
    assert result.dithered == 1
    page = only_page(result)
    # Seen one screen tile at a time, a third of the page is grey (20-80 % ink; a threshold gives 3 %),
    # drawn in dots: hardly a lone black pixel.
    tiles = page.convert("L").reduce(SCREEN_PERIOD).histogram()
    assert sum(tiles[51:205]) > 0.2 * sum(tiles)
    assert isolated_ink(page) < 0.002 * ink(page)


def test_text_scan_is_thresholded_and_far_smaller_than_dithered(monkeypatch: pytest.MonkeyPatch) -> None:
    data = text_scan()
    assert not looks_like_photo(Image.open(io.BytesIO(data)).convert("L"))
    result = image_to_pdf(data)
    assert result.dithered == 0
    page = only_page(result)
    # Off-white, noisy paper comes out clean white: hardly any lone black dots.
    assert ink(page) > 50_000
    assert isolated_ink(page) < 0.002 * ink(page)

    monkeypatch.setattr(image_module, "looks_like_photo", lambda gray: True)
    dithered = image_to_pdf(data)
    assert dithered.dithered == 1
    print(f"scan page: {len(result.pdf):,} bytes thresholded, {len(dithered.pdf):,} bytes dithered")
    assert len(result.pdf) * 4 < len(dithered.pdf)


def test_grey_tinted_low_quality_scan_is_thresholded() -> None:
    data = text_scan(paper=200, quality=35)
    assert not looks_like_photo(Image.open(io.BytesIO(data)).convert("L"))
    page = only_page(image_to_pdf(data))
    assert isolated_ink(page) < 0.005 * ink(page)


def screenshot() -> Image.Image:
    img = Image.new("RGB", (1400, 900), (240, 240, 240))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=16)
    draw.rectangle((0, 0, 1400, 50), fill=(60, 90, 160))
    draw.rectangle((0, 50, 250, 900), fill=(200, 200, 205))
    for row in range(30):
        draw.text((270, 70 + row * 26), f"Line {row}: the quick brown fox jumps over the lazy dog", fill=(30, 30, 30))
        draw.text((10, 70 + row * 26), f"Menu item {row}", fill=(20, 20, 20), font=font)
    return img


@pytest.mark.parametrize(
    ("make", "photo"),
    [
        (lambda: Image.new("L", (400, 300), 150), False),  # flat grey
        (lambda: Image.open(io.BytesIO(text_scan())), False),
        (screenshot, False),
        (lambda: Image.open(io.BytesIO(encode(screenshot(), "JPEG", quality=80))), False),
        (lambda: drawing(), False),
        (lambda: Image.linear_gradient("L"), True),
        (lambda: Image.radial_gradient("L"), True),
        (gradient_photo, True),
    ],
    ids=["flat", "scan", "screenshot", "screenshot-jpeg", "line-art", "linear", "radial", "grainy-gradient"],
)
def test_looks_like_photo(make: Callable[[], Image.Image], photo: bool) -> None:
    assert looks_like_photo(make().convert("L")) is photo


def test_flat_grey_is_thresholded_at_mid_grey() -> None:
    def page_ink(grey: int) -> int:
        result = image_to_pdf(encode(Image.new("L", (400, 400), grey), "PNG"))
        assert result.dithered == 0
        return ink(only_page(result))

    assert page_ink(150) == 0
    assert page_ink(100) > BOX_W_PX * BOX_W_PX * 0.9


def test_two_tone_picture_on_one_side_of_mid_grey_stays_readable() -> None:
    # Red letters on black are both darker than mid-grey; a fixed threshold would give a black page.
    img = Image.new("RGB", (600, 300), "black")
    ImageDraw.Draw(img).text((40, 100), "RED", fill=(230, 20, 20), font=ImageFont.load_default(size=120))
    page = only_page(image_to_pdf(encode(img, "PNG")))
    left, top, right, bottom = ink_bbox(page)  # the black background
    assert (right - left) * (bottom - top) - ink(page) > 20_000  # white letters on it


# --- orientation and turning -----------------------------------------------------------------------------


def coarse(page: Image.Image) -> Image.Image:
    return page.convert("L").reduce(16)


def difference(a: Image.Image, b: Image.Image) -> float:
    return float(ImageStat.Stat(ImageChops.difference(a, b)).mean[0])


@pytest.mark.parametrize("ext", ["jpg", "webp"])
@pytest.mark.parametrize("orientation", range(2, 9))
def test_corpus_exif_orientations_are_applied(orientation: int, ext: str) -> None:
    upright = coarse(only_page(image_to_pdf(corpus_file("images/pillow-tests/hopper.jpg").read_bytes())))
    path = corpus_file(f"images/pillow-tests/hopper_orientation_{orientation}.{ext}")
    page = coarse(only_page(image_to_pdf(path.read_bytes())))
    assert difference(page, upright) < 6
    assert difference(page, upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) > 20


def test_exif_orientation_of_a_sideways_photo() -> None:
    # Stored landscape with its left quarter black; EXIF 6 means "turn 90 degrees clockwise to view", so
    # upright it is portrait with a black band across the top.
    stored = Image.new("L", (400, 200), 255)
    ImageDraw.Draw(stored).rectangle((0, 0, 99, 199), fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    page = only_page(image_to_pdf(encode(stored, "JPEG", exif=exif)))
    left, top, right, bottom = ink_bbox(page)
    assert abs(top - TOP_MARGIN) <= 2
    assert (right - left) / X_DPI["a4"] > 1.5 * (bottom - top) / FAX_FINE_LPI


def test_tiff_orientation_tag_is_applied_once() -> None:
    stored = Image.new("L", (400, 200), 255)
    ImageDraw.Draw(stored).rectangle((0, 0, 99, 199), fill=0)
    page = only_page(image_to_pdf(encode(stored, "TIFF", tiffinfo={274: 6})))
    left, top, right, bottom = ink_bbox(page)
    assert abs(top - TOP_MARGIN) <= 2
    assert (right - left) / X_DPI["a4"] > 1.5 * (bottom - top) / FAX_FINE_LPI


def test_large_landscape_picture_is_turned_to_fill_the_page() -> None:
    # A landscape A4 page scanned at 300 dpi, with a black bar along its top edge.
    scan = Image.new("L", (3508, 2480), 255)
    ImageDraw.Draw(scan).rectangle((0, 0, 3507, 99), fill=0)
    page = only_page(image_to_pdf(encode(scan, "PNG")))
    left, top, right, bottom = ink_bbox(page)
    # Turned counter-clockwise: the top edge is now along the left, and runs nearly the page's length.
    assert (bottom - top) / FAX_FINE_LPI > 10
    assert (right - left) / X_DPI["a4"] < 0.5
    assert left < FAX_WIDTH_PX / 2


@pytest.mark.parametrize("size", [(400, 200), (2200, 2000)], ids=["small", "nearly-square"])
def test_landscape_picture_that_gains_little_stays_as_it_is(size: tuple[int, int]) -> None:
    picture = Image.new("L", size, 255)
    ImageDraw.Draw(picture).rectangle((0, 0, size[0] - 1, size[1] // 10), fill=0)
    page = only_page(image_to_pdf(encode(picture, "PNG")))
    left, top, right, bottom = ink_bbox(page)
    assert right - left == pytest.approx(BOX_W_PX, abs=3)  # the top bar still runs across the page
    assert bottom - top < 300


# --- colour modes, transparency, depth -------------------------------------------------------------------


def assert_black_top_left_quarter(page: Image.Image, *, picture_w: int = BOX_W_PX) -> None:
    left, top, right, bottom = ink_bbox(page)
    assert abs(top - TOP_MARGIN) <= 2
    assert right - left == pytest.approx(picture_w / 2, rel=0.03)
    assert ink_fraction(page, (left, top, right, bottom)) > 0.97


def test_cmyk_jpeg_with_adobe_inverted_data() -> None:
    img = Image.new("CMYK", (400, 400), (0, 0, 0, 0))  # white
    ImageDraw.Draw(img).rectangle((0, 0, 199, 199), fill=(0, 0, 0, 255))  # black ink
    data = encode(img, "JPEG", quality=90)
    assert b"Adobe" in data  # Pillow writes CMYK JPEGs the Adobe way, inverted
    assert_black_top_left_quarter(only_page(image_to_pdf(data)))


def test_corpus_cmyk_jpeg_converts() -> None:
    page = only_page(image_to_pdf(corpus_file("images/pillow-tests/pil_sample_cmyk.jpg").read_bytes()))
    assert 0 < ink(page) < page.width * page.height


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_white_paper(fmt: str) -> None:
    img = Image.new("P", (300, 300), 0)
    img.putpalette([0, 0, 0, 0, 0, 0] + [255, 255, 255] * 254)  # entries 0 and 1 both black
    ImageDraw.Draw(img).rectangle((0, 0, 149, 149), fill=1)
    data = encode(img, fmt, transparency=0)  # entry 0, the background, is transparent
    assert_black_top_left_quarter(only_page(image_to_pdf(data)))


@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "PNG"), ("LA", "PNG"), ("RGBA", "WEBP"), ("RGBA", "TIFF")])
def test_alpha_is_flattened_onto_white(mode: str, fmt: str) -> None:
    img = Image.new(mode, (300, 300), (0,) * len(mode))  # transparent black: the usual way to store nothing
    ImageDraw.Draw(img).rectangle((0, 0, 149, 149), fill=(0,) * (len(mode) - 1) + (255,))
    assert_black_top_left_quarter(only_page(image_to_pdf(encode(img, fmt, lossless=True))))


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF")])
def test_16_bit_grey_is_scaled_not_clipped(mode: str, fmt: str) -> None:
    img = Image.new(mode, (300, 300), 50_000)  # light grey in 16 bits
    ImageDraw.Draw(img).rectangle((0, 0, 149, 149), fill=10_000)  # dark grey; clipped to 8 bits: white
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    assert_black_top_left_quarter(only_page(image_to_pdf(data)))


@pytest.mark.parametrize(
    "name", ["hopper.Lab.tif", "tiff_strip_ycbcr_jpeg_2x2_sampling.tif", "hopper_16bit_qtables.jpg", "hopper.bmp"]
)
def test_corpus_colour_spaces_convert(name: str) -> None:
    result = image_to_pdf(corpus_file(f"images/pillow-tests/{name}").read_bytes())
    page = only_page(result)
    assert 0.05 < ink_fraction(page, ink_bbox(page)) < 0.95


# --- animations: first frame only, every frame checked --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_faxes_its_first_frame(fmt: str) -> None:
    first = drawing((300, 300), "RGB")
    others = [Image.new("RGB", (300, 300), colour) for colour in ("black", "gray")]
    data = encode(first, fmt, save_all=True, append_images=others, duration=100, lossless=True)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert count_image_pages(data) == 1
    result = image_to_pdf(data)
    assert result.pages == 1
    assert_black_top_left_quarter(only_page(result))


def test_oversized_later_frame_is_refused_by_our_own_cap() -> None:
    data = gif_with_large_second_frame(8000, 7000)  # 56 Mpx: under Pillow's limits, over ours
    assert Image.open(io.BytesIO(data)).size == (100, 100)
    for convert in (count_image_pages, image_to_pdf):
        with pytest.raises(ImageTooLarge) as caught:
            convert(data)
        assert caught.value.pixels == 56_000_000
        assert image_refusal_reason(caught.value) == "the image is too large to fax (56 megapixels; the limit is 50)"


@pytest.mark.parametrize(
    "name", ["decompression_bomb.gif", "decompression_bomb_extents.gif", "bmp/b/reallybig.bmp", "l2rgb_read.bmp"]
)
def test_corpus_decompression_bombs_are_refused(name: str) -> None:
    data = corpus_file(f"images/pillow-tests/{name}").read_bytes()
    for convert in (count_image_pages, image_to_pdf):
        with pytest.raises(BOMB_TYPES) as caught:
            convert(data)
        assert caught.type is not None
        assert caught.match("pixels")
        assert image_refusal_reason(caught.value).startswith("the image is too large to fax")


def test_bomb_in_the_second_gif_frame_is_found() -> None:
    data = corpus_file("images/pillow-tests/decompression_bomb_extents.gif").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # the first frame alone is harmless...
        assert im.size[0] * im.size[1] < MAX_PIXELS
    with pytest.raises(BOMB_TYPES) as caught:  # ...so only checking every frame refuses it
        count_image_pages(data)
    assert image_refusal_reason(caught.value) == "the image is too large to fax (4,308 megapixels; the limit is 50)"


@pytest.mark.parametrize(
    ("side", "megapixels"),
    # Our cap (50 Mpx), Pillow's bomb warning (89 Mpx, raised as an error) and Pillow's bomb error (179 Mpx).
    [(8000, "64"), (10_000, "100"), (20_000, "400")],
)
def test_pixel_caps_give_the_size_in_the_reason(side: int, megapixels: str) -> None:
    with pytest.raises(BOMB_TYPES) as caught:
        count_image_pages(png_header_only(side, side))
    assert image_refusal_reason(caught.value) == (
        f"the image is too large to fax ({megapixels} megapixels; the limit is 50)"
    )


def test_own_cap_comes_before_any_decoding() -> None:
    with pytest.raises(ImageTooLarge) as caught:
        image_to_pdf(png_header_only(8000, 7000))  # no pixel data at all: decoding would fail differently
    assert caught.value.pixels == 56_000_000


# --- damaged files, loops, caps ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_image_is_refused_as_damaged(fmt: str) -> None:
    noise = Image.effect_noise((400, 400), 60).convert("RGB")
    data = encode(noise, fmt)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each decoder has its own exception
        image_to_pdf(data[: len(data) // 2])
    assert not isinstance(caught.value, AssertionError)
    assert image_refusal_reason(caught.value) in (
        "the image file is damaged or truncated",
        "the image file is damaged",
    )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("name", ["truncated_image.png", "truncated_jpeg.jpg"])
def test_corpus_truncated_files_are_refused(name: str) -> None:
    with pytest.raises(OSError, match="truncated") as caught:
        image_to_pdf(corpus_file(f"images/pillow-tests/{name}").read_bytes())
    assert image_refusal_reason(caught.value) == "the image file is damaged or truncated"


def test_not_an_image_is_refused() -> None:
    with pytest.raises(UnidentifiedImageError) as caught:
        count_image_pages(b"not a picture at all")
    assert image_refusal_reason(caught.value) == "the file is not an image this server can read"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "pages"), [("multipage_single_frame_loop.tiff", 1), ("multipage_multiple_frame_loop.tiff", 2)]
)
def test_corpus_tiff_ifd_loops_terminate(name: str, pages: int) -> None:
    data = corpus_file(f"images/pillow-tests/{name}").read_bytes()
    assert count_image_pages(data) == pages
    assert image_to_pdf(data).pages == pages


def test_tiff_with_more_pages_than_the_cap_is_refused() -> None:
    frame = Image.new("1", (8, 8), 1)
    at_cap = encode(frame, "TIFF", save_all=True, append_images=[frame] * (MAX_FRAMES - 1))
    assert count_image_pages(at_cap) == MAX_FRAMES
    over = encode(frame, "TIFF", save_all=True, append_images=[frame] * MAX_FRAMES)
    for convert in (count_image_pages, image_to_pdf):
        with pytest.raises(ImageTooManyPages) as caught:
            convert(over)
        assert image_refusal_reason(caught.value) == f"the image has too many pages to fax (more than {MAX_FRAMES})"


def test_animation_with_more_frames_than_the_cap_is_refused() -> None:
    frames = []
    for index in range(MAX_FRAMES + 1):
        frame = Image.new("L", (16, 16), 255)
        frame.putpixel((index % 16, index // 16), 0)  # no two frames alike, or the GIF writer merges them
        frames.append(frame)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)
    with pytest.raises(ImageTooManyPages) as caught:
        count_image_pages(data)
    assert image_refusal_reason(caught.value) == f"the animation has too many frames to check (more than {MAX_FRAMES})"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ImageTooLarge(120_000_000), "the image is too large to fax (120 megapixels; the limit is 50)"),
        (ImageTooLarge(50_040_000), "the image is too large to fax (50.0 megapixels; the limit is 50)"),
        (Image.DecompressionBombError("could be a bomb"), "the image is too large to fax"),
        (UnidentifiedImageError("cannot identify"), "the file is not an image this server can read"),
        (OSError("image file is truncated"), "the image file is damaged or truncated"),
        (EOFError(), "the image file is damaged or truncated"),
        (MemoryError(), "the image needs too much memory to process"),
        (SyntaxError("not a TIFF file"), "the image file is damaged"),
        (struct.error("unpack requires a buffer"), "the image file is damaged"),
    ],
)
def test_refusal_reasons_are_plain_sentences(exc: BaseException, reason: str) -> None:
    assert image_refusal_reason(exc) == reason


# --- cost ------------------------------------------------------------------------------------------------


def test_large_jpeg_is_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    photo = encode(gradient_photo((6000, 4000)), "JPEG", quality=90)  # 24 Mpx, turned onto the page
    decoded: list[tuple[tuple[int, int], str]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def recording_load(self: JpegImagePlugin.JpegImageFile) -> object:
        decoded.append((self.size, self.mode))
        return load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", recording_load)
    result = image_to_pdf(photo)
    assert result.dithered == 1
    # libjpeg decodes straight to grey at half scale (3000 x 2000, still at least the 2196 x 1646 the page
    # needs): a quarter of the work and memory of the full picture.
    assert decoded
    assert all(entry == ((3000, 2000), "L") for entry in decoded)


# --- corpus sweep ------------------------------------------------------------------------------------------


def convert_or_refusal(data: bytes) -> tuple[int, RasterPages] | Exception:
    try:
        return count_image_pages(data), image_to_pdf(data)
    except Exception as exc:
        return exc


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_corpus_image_converts_or_is_refused_with_a_reason() -> None:
    root = corpus_dir() / "images" / "pillow-tests"
    paths = sorted(path for path in root.rglob("*") if path.is_file())
    assert len(paths) > 500
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for path in paths:
        outcome = convert_or_refusal(path.read_bytes())
        if isinstance(outcome, Exception):
            reason = image_refusal_reason(outcome)
            assert reason, (path, outcome)
            assert reason[0].islower(), (path, outcome)  # it follows "name: " in the sender's notice
            assert not reason.endswith("."), (path, outcome)
            counts["refused"] += 1
            reasons[reason] += 1
            continue
        pages, result = outcome
        assert result.pages == pages >= 1, path
        reader = PdfReader(io.BytesIO(result.pdf))
        assert len(reader.pages) == pages, path
        box = (float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height))
        assert box == pytest.approx(PAPER_SIZES_PT["a4"], abs=0.5), path
        counts["converted"] += 1
    print(f"pillow-tests images: {dict(counts)} of {len(paths)}; refusals: {dict(reasons)}")
    assert counts["converted"] >= 0.8 * len(paths)
    assert reasons["the file is not an image this server can read"] > 0  # ICO, PPM… are never decoded
    assert sum(count for reason, count in reasons.items() if reason.startswith("the image is too large")) >= 4
