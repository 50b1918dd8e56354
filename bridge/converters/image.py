"""Images (JPEG, PNG, GIF, BMP, WebP, TIFF) to bilevel fax pages.

Every page is a 1-bit raster 1728 pixels wide (the width of a fax scan line) across the whole paper width
and 196 lines per inch down it (ITU-T T.4 "fine"), so the provider's fax encoder has nothing left to
resample. The pages are embedded in one PDF of the requested paper size with CCITT G4 compression (Pillow's
PDF writer does that for 1-bit images).

What becomes a page:

* a TIFF: every page (frame) of it, except reduced-resolution copies (thumbnails) stored beside the pages;
* anything else: the first frame only. An animated GIF, WebP or PNG is faxed as its first picture, but
  every frame is still checked, because Pillow only finds a decompression bomb hidden in a later frame
  when it seeks to that frame.

How a frame is drawn:

* Fax-native bilevel frames (1-bit, 1728 pixels wide: a received fax, a fax modem's TIFF) are already fax
  pages. They are pasted as they are, standard-resolution (98 lpi) frames with every line doubled; they
  are never resampled through grey, blurred or dithered.
* Everything else is turned upright (EXIF orientation), turned a further 90 degrees when it is landscape
  and too detailed to show in full across the portrait page (``_should_turn``), fitted inside a 5 mm
  margin (centred across, at the top), flattened onto white, and reduced to black and white: other 1-bit
  images with a crisp scaling, photographs (``looks_like_photo``) with an ordered clustered-dot halftone
  (``_halftone``), and everything else (text, scans, line art, screenshots, logos) with a plain
  threshold. Dithering a scan would make its text fuzzy and its G4 page several times larger and slower
  on the line (docs/performance.md). The halftone's round dots on a 45-degree screen of about 37 lpi are
  what a fax machine prints cleanly and G4 codes compactly: error diffusion (Floyd-Steinberg) scatters
  lone pixels that a printer smears and that made a photo page about four times larger.

Only the decoders in ``ALLOWED_FORMATS`` are ever used, whatever the attachment claims to be; Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False, so damaged files are refused rather than half drawn.
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageChops, TiffImagePlugin, UnidentifiedImageError

from bridge.converters.pdf import PAPER_SIZES_MM, Paper

__all__ = [
    "ALLOWED_FORMATS",
    "FAX_FINE_LPI",
    "FAX_WIDTH_PX",
    "MARGIN_MM",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "ImageTooLarge",
    "ImageTooManyPages",
    "RasterPages",
    "count_image_pages",
    "image_refusal_reason",
    "image_to_pdf",
    "looks_like_photo",
    "sniff_image",
    "unsupported_image_format",
]

FAX_WIDTH_PX: Final = 1728
FAX_FINE_LPI: Final = 196
MARGIN_MM: Final = 5.0
# A fine fax page is 1728 x ~2300 pixels, about 4 megapixels, so no picture needs more than that to fill
# a page; 50 Mpx still admits any phone camera (12-48 Mpx) and an A4 scan at 600 dpi (35 Mpx), while
# keeping one decoded frame below ~200 MB even as RGBA. It is checked for every frame before anything is
# decoded. Pillow's own bomb checks (89 Mpx warning, raised as an error here; 179 Mpx error) run earlier,
# when a file is opened or a frame sought, and so answer first for pictures far beyond this limit;
# image_refusal_reason words both the same way.
MAX_PIXELS: Final[int] = 50_000_000
# Frames examined per file. A TIFF with more pages than this is not a fax anyone should send in one go,
# and an animation longer than this costs more to check (Pillow decodes every GIF/APNG frame it seeks
# past) than its single faxed frame is worth. The cap also ends any TIFF whose IFD chain Pillow cannot
# prove to be a loop.
MAX_FRAMES: Final[int] = 200
ALLOWED_FORMATS: Final = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")

# Turn a landscape picture onto the portrait page only when that shows at least this much more of its
# detail (linear); see _should_turn.
_ROTATE_GAIN: Final = 1.2
_MID_GREY: Final = 128
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_EXIF_ORIENTATION: Final = 0x0112
_UPRIGHT: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TIFF_BITS_PER_SAMPLE: Final = 258
_TIFF_NEW_SUBFILE_TYPE: Final = 254
_TIFF_X_RESOLUTION: Final = 282
_TIFF_Y_RESOLUTION: Final = 283
_BOMB_PIXELS: Final = re.compile(r"Image size \((\d+) pixels\)")


class ImageTooLarge(Exception):
    """One frame of the image has more pixels than ``MAX_PIXELS``."""

    def __init__(self, pixels: int) -> None:
        super().__init__(f"{pixels} pixels")
        self.pixels = pixels


class ImageTooManyPages(Exception):
    """The image has more than ``MAX_FRAMES`` pages (TIFF) or frames (animation)."""

    def __init__(self, limit: int, *, animation: bool) -> None:
        super().__init__(f"more than {limit} {'frames' if animation else 'pages'}")
        self.limit = limit
        self.animation = animation


@dataclass(frozen=True, slots=True)
class RasterPages:
    """A PDF with one page of the paper size per faxed frame, each a CCITT G4 1-bit image."""

    pdf: bytes
    pages: int
    dithered: int  # pages reduced to black and white by dithering (photographs)


@dataclass(frozen=True, slots=True)
class _Page:
    """The fax raster of one paper size."""

    size: tuple[int, int]  # canvas in pixels: 1728 across, 196 lines per inch down
    x_dpi: float
    y_dpi: float
    box_in: tuple[float, float]  # printable area inside the margin, inches
    top: int  # top margin, lines

    @classmethod
    def for_paper(cls, paper: str) -> _Page:
        if paper not in PAPER_SIZES_MM:
            raise ValueError(f"unknown paper size {paper!r}")
        width_mm, height_mm = PAPER_SIZES_MM[paper]
        x_dpi = FAX_WIDTH_PX / (width_mm / 25.4)
        y_dpi = float(FAX_FINE_LPI)
        return cls(
            size=(FAX_WIDTH_PX, round(height_mm / 25.4 * y_dpi)),
            x_dpi=x_dpi,
            y_dpi=y_dpi,
            box_in=((width_mm - 2 * MARGIN_MM) / 25.4, (height_mm - 2 * MARGIN_MM) / 25.4),
            top=round(MARGIN_MM / 25.4 * y_dpi),
        )


# --- recognising files --------------------------------------------------------------------------------


def sniff_image(head: bytes) -> str | None:
    """Return the Pillow format name (one of ``ALLOWED_FORMATS``) that ``head`` starts like, else None.

    ``head`` is the start of the file; 16 bytes are enough. Never raises.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # classic and BigTIFF
        return "TIFF"
    return None


_ISO_BMFF_BRANDS: Final[dict[bytes, str]] = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"jxl ": "JPEG XL",
    b"crx ": "Canon raw (CR3)",
}
_OTHER_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"%!PS", "PostScript (EPS)"),
    (b"\xc5\xd0\xd3\xc6", "PostScript (EPS)"),
    (b"DDS ", "DDS"),
    (b"\x97JB2\r\n\x1a\n", "JBIG2"),
    (b"AT&TFORM", "DjVu"),
    (b"\xd7\xcd\xc6\x9a", "Windows metafile (WMF)"),
    (b"gimp xcf", "GIMP (XCF)"),
    (b"SIMPLE  =", "FITS"),
    (b"qoif", "QOI"),
)
# Short or textual signatures need more than their first bytes, or a text attachment could be refused as a
# picture: an icon's header (reserved 0, type 1 or 2, a non-zero count, a zero reserved byte in the first
# entry), a Netpbm header with both dimensions, an SVG document (not an HTML page with an inline drawing).
_ICON: Final = re.compile(rb"\x00\x00[\x01\x02]\x00(?!\x00\x00)[\x00-\xff]{5}\x00", re.DOTALL)
_NETPBM: Final = re.compile(rb"P[1-6]\s+(?:#[^\n]*\n\s*)*\d+\s+(?:#[^\n]*\n\s*)*\d+\s")
_SVG: Final = re.compile(rb"(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype svg[^>]*>\s*)?<svg[\s>]", re.DOTALL)


def unsupported_image_format(head: bytes) -> str | None:
    """Name a picture format that ``head`` starts like but that cannot be faxed, else None.

    The name is for the sender ("HEIC", "AVIF", "JPEG 2000", "Photoshop (PSD)", "ICO"…). ``head`` is the
    start of the file; 64 bytes are enough (an SVG's prologue may need more). Never raises. Gives None for
    anything ``sniff_image`` recognises.
    """
    if sniff_image(head) is not None:
        return None
    if head[4:8] == b"ftyp" and (name := _ISO_BMFF_BRANDS.get(head[8:12])) is not None:
        return name
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name
    if _ICON.match(head):
        return "ICO"
    if head.startswith(b"\x01\x00\x00\x00") and head[40:44] == b" EMF":
        return "Windows metafile (EMF)"
    if _NETPBM.match(head):
        return "Netpbm (PBM/PGM/PPM)"
    if _SVG.match(head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()):
        return "SVG"
    return None


# --- public entry points ------------------------------------------------------------------------------


def count_image_pages(data: bytes) -> int:
    """Return how many fax pages ``data`` would give, without decoding the faxed pictures.

    A TIFF gives one page per page it holds, anything else one page. Every frame's size is checked, as in
    ``image_to_pdf``; GIF and APNG frames before the last are decoded on the way (Pillow needs them to
    find the next one).

    Raises:
        ImageTooLarge: a frame has more than ``MAX_PIXELS`` pixels.
        ImageTooManyPages: more than ``MAX_FRAMES`` frames.
        PIL.UnidentifiedImageError: not an image in one of ``ALLOWED_FORMATS``.
        PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning: Pillow's own bomb checks.
        OSError, EOFError: truncated or corrupt image data.
        ValueError, SyntaxError, TypeError, struct.error and others: other damage found by the decoders.
    """
    with _opened(data) as im:
        return len(_pages_to_fax(im))


def image_to_pdf(data: bytes, *, paper: Paper = "a4") -> RasterPages:
    """Convert an image into bilevel fax pages of ``paper`` size (see the module docstring).

    Frames are drawn one at a time and each is kept only as its small G4-compressed page, so memory
    holds one decoded frame at a time, whatever the page count.

    Raises:
        ValueError: ``paper`` is not a known paper size; also damage found by the decoders.
        ImageTooLarge: a frame has more than ``MAX_PIXELS`` pixels.
        ImageTooManyPages: more than ``MAX_FRAMES`` frames.
        PIL.UnidentifiedImageError: not an image in one of ``ALLOWED_FORMATS``.
        PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning: Pillow's own bomb checks.
        OSError, EOFError: truncated or corrupt image data.
        SyntaxError, TypeError, struct.error and others: other damage found by the decoders.
        MemoryError: a frame does not fit in memory.
    """
    page = _Page.for_paper(paper)
    dithered = 0
    with _opened(data) as im:
        pages = _pages_to_fax(im)
        if len(pages) == 1:
            im.seek(pages[0])
            canvas, photo = _draw(im, page)
            return RasterPages(pdf=_pdf(canvas, page), pages=1, dithered=int(photo))
        # Several pages: each canvas goes into a multi-page G4 TIFF as soon as it is drawn (a 1-bit canvas
        # takes a byte per pixel in Pillow, ~4 MB a page; its G4 form a few KB to a few hundred KB).
        tiff = io.BytesIO()
        with TiffImagePlugin.AppendingTiffWriter(tiff, new=True) as writer:
            for index in pages:
                im.seek(index)
                canvas, photo = _draw(im, page)
                dithered += int(photo)
                canvas.save(writer, "TIFF", compression="group4")
                writer.newFrame()
                del canvas
    # Our own file, but opened through the same allow-list all the same. The PDF writer seeks through its
    # frames one at a time, so again only one page is decoded at once.
    with Image.open(io.BytesIO(tiff.getvalue()), formats=("TIFF",)) as stack:
        return RasterPages(pdf=_pdf(stack, page, save_all=True), pages=len(pages), dithered=dithered)


def image_refusal_reason(exc: BaseException) -> str:
    """Say in plain words why ``image_to_pdf`` or ``count_image_pages`` refused an image.

    The sentence has no trailing full stop and fits after "photo.jpg: ". Never raises.
    """
    limit = MAX_PIXELS // 1_000_000
    if isinstance(exc, ImageTooLarge):
        return f"the image is too large to fax ({_megapixels(exc.pixels)} megapixels; the limit is {limit})"
    if isinstance(exc, ImageTooManyPages):
        if exc.animation:
            return f"the animation has too many frames to check (more than {exc.limit})"
        return f"the image has too many pages to fax (more than {exc.limit})"
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        found = _BOMB_PIXELS.search(str(exc))
        if found is None:
            return "the image is too large to fax"
        pixels = int(found.group(1))
        return f"the image is too large to fax ({_megapixels(pixels)} megapixels; the limit is {limit})"
    if isinstance(exc, UnidentifiedImageError):
        return "the file is not an image this server can read"
    if isinstance(exc, OSError | EOFError):
        return "the image file is damaged or truncated"
    if isinstance(exc, MemoryError):
        return "the image needs too much memory to process"
    return "the image file is damaged"


def looks_like_photo(gray: Image.Image) -> bool:
    """Tell a photograph (to be dithered) from text, scans, line art and screenshots (to be thresholded).

    ``gray`` is the picture in grey at no more than the resolution it will be printed at: upscaling would
    smear every sharp edge into a ramp of invented mid-tones.

    Why this test: a threshold keeps text sharp and G4 pages small, but turns a photo into black blobs;
    dithering keeps a photo's tones but makes text fuzzy and a scan's page ten times larger. What tells them
    apart is where the pixels lie between the image's own ink (2nd percentile) and paper (98th percentile)
    levels. Text, scans, line art, logos and screenshots are bimodal: nearly every pixel sits close to the
    paper or the ink, with a few per cent of anti-aliased or blurred edge pixels in between, and that holds
    for JPEG noise and grey-tinted paper too, because the levels are the image's own. A photograph spreads
    over the tones in between, smoothly: a large share of its pixels is in the middle half of that range
    (measured: 38-66 % for photos and gradients, under 17 % for scans and screenshots), on many distinct
    grey levels (67-130 against at most 11), which also keeps flat mid-grey areas of screenshots, charts
    and logos (one level each) on the threshold side. A flat image has no range at all and is thresholded.
    """
    if gray.mode != "L":
        gray = gray.convert("L")
    histogram = gray.histogram()
    total = sum(histogram)
    if total == 0:
        return False
    ink = _percentile(histogram, total, 0.02)
    paper = _percentile(histogram, total, 0.98)
    span = paper - ink
    low, high = ink + span / 4, paper - span / 4
    middle = [count for level, count in enumerate(histogram) if low < level < high]
    share = sum(middle) / total
    levels = sum(1 for count in middle if count * 1000 >= total)  # levels holding at least 0.1 % each
    return share >= 0.25 and levels >= 32


# --- opening and checking -----------------------------------------------------------------------------


@contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """Open ``data`` with the allowed decoders only, Pillow's bomb warning raised as an error.

    Pillow reports damage it can work around ("Invalid APNG, will use default PNG image", a bad MPO
    header, odd EXIF tags) as UserWarning; the picture is still usable, so those are ignored, which also
    keeps the outcome the same whether or not warnings are turned into errors (as under pytest).
    catch_warnings changes process-wide state, not per-thread state. Acceptable here: a race between two
    concurrent conversions can at worst leave these two narrow filters installed for the process, and the
    explicit MAX_PIXELS check refuses every frame that could trigger the bomb warning anyway.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            yield im


def _pages_to_fax(im: Image.Image) -> list[int]:
    """Check the size of every frame (at most ``MAX_FRAMES``); return the indices of those to fax.

    Frames are walked by seeking forward until Pillow reports the end (``EOFError``), never through
    ``n_frames``, which would walk a TIFF's whole IFD chain however long it is. Pillow stops at an IFD it
    has seen before, so looping chains end; the frame cap ends everything else. Leaves the image on frame 0.
    """
    tiff = isinstance(im, TiffImagePlugin.TiffImageFile)
    pages: list[int] = []
    index = 0
    while True:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(width * height)
        if (index == 0 and not tiff) or (tiff and not _is_auxiliary_tiff_frame(im)):
            pages.append(index)
        index += 1
        try:
            im.seek(index)
        except EOFError:
            break
        if index >= MAX_FRAMES:
            raise ImageTooManyPages(MAX_FRAMES, animation=not tiff)
    im.seek(0)
    return pages or [0]  # a TIFF holding nothing but thumbnails still shows its first


def _is_auxiliary_tiff_frame(im: Image.Image) -> bool:
    """A reduced-resolution copy (bit 0) or a transparency mask (bit 2) of another page, not a page."""
    tags = getattr(im, "tag_v2", None)
    value = tags.get(_TIFF_NEW_SUBFILE_TYPE) if tags is not None else None
    return isinstance(value, int) and bool(value & 0b101)


# --- drawing one frame --------------------------------------------------------------------------------


def _draw(im: Image.Image, page: _Page) -> tuple[Image.Image, bool]:
    """Draw the current frame of ``im`` on a new 1-bit page canvas; say whether it was dithered."""
    width, height = im.size
    if width < 1 or height < 1:
        raise ValueError("the image has no pixels")
    # Pillow's TIFF reader turns TIFF frames upright itself (its size is already the upright one); every
    # other format is stored as shot and says in EXIF (or XMP, which getexif reads too) how to turn it.
    orientation = None if isinstance(im, TiffImagePlugin.TiffImageFile) else _orientation(im)
    swaps = orientation in _SWAPS_AXES
    density = _pixel_density(im)  # lines per unit height / columns per unit width
    upright_w = height if swaps else width
    if im.mode == "1" and upright_w == FAX_WIDTH_PX:
        return _draw_fax_native(im, page, orientation, density), False

    # Physical extent of the upright picture, in units of one column's width.
    extent_w, extent_h = (width, height / density) if not swaps else (height / density, width)
    turn = _should_turn(extent_w, extent_h, page)
    if turn:
        extent_w, extent_h = extent_h, extent_w
    scale = min(page.box_in[0] / extent_w, page.box_in[1] / extent_h)
    target = (max(1, round(extent_w * scale * page.x_dpi)), max(1, round(extent_h * scale * page.y_dpi)))
    # The same pixel count in the stored orientation: scaling comes before turning, on the smaller image.
    stored = (target[1], target[0]) if swaps != turn else target
    if im.format in ("JPEG", "MPO"):
        # Let libjpeg decode in grey at 1/2, 1/4 or 1/8 scale when the page needs fewer pixels: a 12 Mpx
        # photo then costs a fraction of the time and memory.
        im.draft("L", stored)
    im.load()

    if im.mode == "1":
        # Already black and white (a scan, a fax at another size): keep it so, crisply, never dithered.
        bilevel = _transposed(_scale_bilevel(im, stored), orientation, turn)
        return _on_canvas(bilevel, page), False

    source = _to_gray(im)
    gray = source.resize(stored, Image.Resampling.LANCZOS, reducing_gap=3.0) if source.size != stored else source
    gray = _flatten(gray)
    sample = gray if gray.width * gray.height <= source.width * source.height else _flatten(source)
    del source
    photo = looks_like_photo(sample)
    gray = _transposed(gray, orientation, turn)
    if photo:
        bilevel = _halftone(gray, ((page.size[0] - gray.width) // 2, page.top), page.size)
    else:
        level = _threshold_level(sample.histogram())
        bilevel = gray.point([0] * (level + 1) + [255] * (255 - level), "1")
    return _on_canvas(bilevel, page), photo


def _draw_fax_native(im: Image.Image, page: _Page, orientation: int | None, density: float) -> Image.Image:
    """Paste a 1728-pixel-wide 1-bit frame as the page it already is, at the top, without margins."""
    im.load()
    frame = _transposed(im, orientation, False)
    # Standard resolution (98 lpi, half the fine line density) repeats every line; superfine (391 lpi)
    # drops to fine. Anything near fine, or without a usable resolution tag, is taken line for line.
    rows_per_line = 2.0 if density < 0.75 else 0.5 if density > 1.5 else 1.0
    rows = max(1, round(frame.height * rows_per_line))
    if rows != frame.height:
        frame = _scale_bilevel(frame, (FAX_WIDTH_PX, rows))
    canvas_w, canvas_h = page.size
    if frame.height > canvas_h:
        ink = frame.convert("L").point(lambda v: 255 - v).getbbox()
        bottom = ink[3] if ink is not None else 0
        if bottom <= canvas_h:
            frame = frame.crop((0, 0, FAX_WIDTH_PX, canvas_h))  # only blank paper runs past the sheet
        else:
            # A page longer than the sheet (an A4 fax on Letter): shrink it to fit, crisply.
            scale = canvas_h / frame.height
            frame = _scale_bilevel(frame, (max(1, round(FAX_WIDTH_PX * scale)), canvas_h))
    canvas = Image.new("1", page.size, 1)
    canvas.paste(frame, ((canvas_w - frame.width) // 2, 0))
    return canvas


def _on_canvas(bilevel: Image.Image, page: _Page) -> Image.Image:
    canvas = Image.new("1", page.size, 1)
    canvas.paste(bilevel, ((page.size[0] - bilevel.width) // 2, page.top))
    return canvas


def _should_turn(extent_w: float, extent_h: float, page: _Page) -> bool:
    """Turn a landscape picture onto the portrait page when that shows markedly more of its detail.

    That is the case for a picture with more pixels than the page can show across it (a landscape page
    scanned at 200-300 dpi, a phone photo, a wide screenshot) when, turned, it prints at least 20 % larger
    (4:3 and A4 landscape gain 30 %). A smaller picture, enlarged to fill the page either way, stays the way
    the sender sees it. The turn is counter-clockwise (the picture's top at the paper's left edge), as
    printers print landscape pages.
    """
    if extent_w <= extent_h:
        return False
    box_w, box_h = page.box_in
    # Fax pixels per source pixel, capped at 1: enlarging beyond the source's own pixels shows nothing more.
    as_is = min(1.0, min(box_w / extent_w, box_h / extent_h) * page.x_dpi)
    turned = min(1.0, min(box_w / extent_h, box_h / extent_w) * page.y_dpi)
    return turned >= _ROTATE_GAIN * as_is


def _transposed(im: Image.Image, orientation: int | None, turn: bool) -> Image.Image:
    method = _UPRIGHT.get(orientation) if orientation is not None else None
    if method is not None:
        im = im.transpose(method)
    if turn:
        im = im.transpose(Image.Transpose.ROTATE_90)
    return im


def _scale_bilevel(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale a 1-bit image and keep it 1-bit and crisp.

    Enlarging repeats pixels (nearest neighbour): that reproduces the source exactly, including any
    dither pattern, which interpolation would melt into blobs. Reducing averages through grey and cuts at
    mid-grey, which keeps the share of ink (measured within 3 % on a 200 dpi G4 scan) and thin strokes
    that a nearest-neighbour reduction would drop at random.
    """
    if im.size == size:
        return im
    if size[0] * size[1] >= im.width * im.height:
        return im.resize(size, Image.Resampling.NEAREST)
    reduced = im.convert("L").resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return reduced.point([0] * (_MID_GREY + 1) + [255] * (255 - _MID_GREY), "1")


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        # A damaged EXIF block is metadata, not picture: print the image as stored rather than refuse it.
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _pixel_density(im: Image.Image) -> float:
    """Vertical over horizontal resolution of an upright TIFF frame (0.48 for a 204 x 98 dpi fax), else 1.

    Fax TIFFs are the one common kind of file with non-square pixels. Other formats' resolution fields
    are too often junk (and never non-square on purpose) to stretch a picture by them.
    """
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return 1.0
    try:
        x_res = float(tags.get(_TIFF_X_RESOLUTION, 1))
        y_res = float(tags.get(_TIFF_Y_RESOLUTION, 1))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return 1.0
    if not (math.isfinite(x_res) and math.isfinite(y_res) and x_res > 0 and y_res > 0):
        return 1.0
    density = y_res / x_res
    if tags.get(_EXIF_ORIENTATION) in _SWAPS_AXES:
        density = 1 / density  # Pillow will turn the frame; its resolutions are for the stored axes
    return density if 0.2 <= density <= 5 else 1.0


# --- grey and black-and-white ---------------------------------------------------------------------------


def _to_gray(im: Image.Image) -> Image.Image:
    """Grey, 8 bits per pixel: "L", or "LA" when the picture has transparency (flattened later).

    Alpha is kept until after scaling (Pillow scales "LA" with premultiplied alpha), so the full-size
    picture never exists as RGBA plus a white copy of it.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _deep_to_gray(im)
    if mode == "LAB":
        return im.getchannel("L")  # Pillow cannot convert Lab to L; its L* channel is the lightness
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return im.convert("LA")
    if "transparency" in im.info:
        # A palette entry or colour key marked transparent: only RGBA conversion honours it for every mode.
        return im.convert("RGBA").convert("LA")
    return im.convert("L")


def _deep_to_gray(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey to 8 bits, scaled: Pillow's own conversion clips instead."""
    if im.mode == "F":
        low, high = _extrema(im)
        if low >= 0 and high <= 1:
            return im.point(lambda v: v * 255).convert("L")
        if low >= 0 and high <= 255:
            return im.convert("L")
        return _stretch(im.convert("F"), low, high)
    wide = im.convert("I")
    if im.mode.startswith("I;16"):
        bits = _tiff_bits_per_sample(im)
        return wide.point(lambda v: v * (255 / (2**bits - 1))).convert("L")
    low, high = _extrema(wide)
    if low >= 0 and high <= 255:
        return wide.convert("L")
    if low >= 0 and high <= 65535:
        return wide.point(lambda v: v * (1 / 257)).convert("L")
    return _stretch(wide.convert("F"), low, high)


def _extrema(im: Image.Image) -> tuple[float, float]:
    low, high = im.getextrema()
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        raise ValueError(f"unexpected extrema for mode {im.mode}")
    return float(low), float(high)


def _stretch(im: Image.Image, low: float, high: float) -> Image.Image:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return Image.new("L", im.size, 255 if high > 0 else 0)
    factor = 255 / (high - low)
    return im.point(lambda v: (v - low) * factor).convert("L")


def _tiff_bits_per_sample(im: Image.Image) -> int:
    """Bits actually used by a 16-bit TIFF sample (12-bit scanners store 0..4095); 16 otherwise."""
    tags = getattr(im, "tag_v2", None)
    value = tags.get(_TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(value, tuple) and value:
        value = value[0]
    return value if isinstance(value, int) and 8 < value < 16 else 16


def _flatten(gray: Image.Image) -> Image.Image:
    """Lay a grey picture with alpha onto white paper (transparent pixels are often stored black)."""
    if gray.mode != "LA":
        return gray
    paper = Image.new("L", gray.size, 255)
    paper.paste(gray.getchannel("L"), (0, 0), gray.getchannel("A"))
    return paper


def _halftone(gray: Image.Image, origin: tuple[int, int], canvas: tuple[int, int]) -> Image.Image:
    """Halftone a grey picture with the clustered-dot screen; ``origin`` is where it goes on the canvas.

    A pixel stays white where it is lighter than the screen's threshold at the same place on the page, so
    every picture on every page shares one screen. Two C passes over the picture (subtract, then a table
    lookup into mode "1"), whatever its size.
    """
    x, y = origin
    screen = _screen(canvas).crop((x, y, x + gray.width, y + gray.height))
    # grey - threshold + 128, clipped to 0..255: above 128 exactly where grey > threshold.
    margin = ImageChops.subtract(gray, screen, scale=1.0, offset=_MID_GREY)
    return margin.point([0] * (_MID_GREY + 1) + [255] * (255 - _MID_GREY), "1")


@functools.lru_cache(maxsize=4)
def _screen(canvas: tuple[int, int]) -> Image.Image:
    """The threshold map of a whole canvas: ``_SCREEN_TILE`` repeated across and down (one per paper size).

    Built by repeating bytes (a row of the tile across the width, then the tile's band of rows down the
    height), which costs a few milliseconds and no loop over pixels.
    """
    width, height = canvas
    n = _SCREEN_PERIOD
    across = width // n + 1
    band = b"".join((_SCREEN_TILE[row * n : (row + 1) * n] * across)[:width] for row in range(n))
    return Image.frombytes("L", canvas, (band * (height // n + 1))[: width * height])


def _clustered_dot_tile(period: int) -> bytes:
    """Thresholds of a ``period`` x ``period`` tile holding two round dots on a 45-degree lattice.

    The dots sit at the tile's corner and centre, so the screen repeats every period / sqrt(2) pixels along
    the 45-degree lines. Ink grows from each dot's centre outwards, in the order of the classic "round"
    spot function cos(2 pi u) + cos(2 pi v) in lattice coordinates (u, v), so that at 50 % grey black and
    white dots make a chequerboard; the two dots take turns, so a tile of n * n pixels gives n * n + 1
    levels of grey. The thresholds are spread evenly over 0..255 (the pixel that inks k-th from white has
    255 * (n * n - k - 0.5) / (n * n)), so a flat grey level g is inked on (255 - g) / 255 of its pixels,
    to within one level.
    """
    cells = period * period
    order: list[tuple[float, float, int, int]] = []
    for row in range(period):
        for column in range(period):
            x, y = column + 0.5, row + 0.5  # pixel centre
            u, v = (x + y) / period, (x - y) / period  # lattice coordinates: dot centres at integers
            spot = math.cos(2 * math.pi * u) + math.cos(2 * math.pi * v)
            near_u, near_v = round(u), round(v)  # the dot this pixel belongs to
            centre_x, centre_y = (near_u + near_v) * period / 2, (near_u - near_v) * period / 2
            angle = math.atan2(y - centre_y, x - centre_x)
            order.append((-round(spot, 9), round(angle, 9), (near_u + near_v) % 2, row * period + column))
    order.sort()  # darkest-first: the first pixel here is the last to turn white
    tile = bytearray(cells)
    for inked, (*_, index) in enumerate(order):
        tile[index] = math.floor((cells - inked - 0.5) * 255 / cells)
    return bytes(tile)


# 8 x 8 pixels with two dots: a 45-degree screen of 5.7 pixels, about 37 lines per inch across a fax page
# (209 dpi on A4) and 35 down it (196 lpi), with 65 levels of grey. Finer screens have too few levels at
# fax resolution (60 lpi would leave about 13) and larger G4 pages; this one is about as coarse as the screen
# Ghostscript's tiffg4 device uses at 204 x 196 dpi.
_SCREEN_PERIOD: Final = 8
_SCREEN_TILE: Final = _clustered_dot_tile(_SCREEN_PERIOD)


def _threshold_level(histogram: list[int]) -> int:
    """The grey level at and below which a pixel becomes black: mid-grey, unless the picture is two-toned
    entirely on one side of it.

    Mid-grey suits documents (light paper, dark ink), whatever else is on the page: a shaded form field
    stays white and its text black, which an automatic choice among three tones could get wrong. But when
    both tones of a two-tone picture lie on the same side of mid-grey (red letters on black, pencil-grey
    on white) mid-grey would give an empty or a black page; then the level Otsu's method finds between
    the two tones is used, provided they are clearly apart (JPEG noise on a blank page is not two tones).
    """
    found = _otsu(histogram)
    if found is None:
        return _MID_GREY
    level, dark_mean, light_mean = found
    same_side = light_mean <= _MID_GREY or dark_mean > _MID_GREY
    return level if same_side and light_mean - dark_mean >= 48 else _MID_GREY


def _otsu(histogram: list[int]) -> tuple[int, float, float] | None:
    """Otsu's threshold (last level of the dark class) with the two classes' mean levels, or None if flat."""
    total = sum(histogram)
    weighted_total = sum(level * count for level, count in enumerate(histogram))
    best: tuple[int, float, float] | None = None
    best_variance = 0.0
    dark = dark_weighted = 0
    for level, count in enumerate(histogram[:255]):
        dark += count
        dark_weighted += level * count
        light = total - dark
        if dark == 0 or light == 0:
            continue
        dark_mean = dark_weighted / dark
        light_mean = (weighted_total - dark_weighted) / light
        variance = dark * light * (light_mean - dark_mean) ** 2
        if variance > best_variance:
            best_variance = variance
            best = (level, dark_mean, light_mean)
    return best


def _percentile(histogram: list[int], total: int, fraction: float) -> int:
    wanted = fraction * total
    seen = 0
    for level, count in enumerate(histogram):
        seen += count
        if seen >= wanted:
            return level
    return len(histogram) - 1


# --- output -------------------------------------------------------------------------------------------


def _pdf(im: Image.Image, page: _Page, *, save_all: bool = False) -> bytes:
    out = io.BytesIO()
    # With different horizontal and vertical resolutions each page comes out at exactly the paper size.
    im.save(out, "PDF", save_all=save_all, dpi=(page.x_dpi, page.y_dpi))
    return out.getvalue()


def _megapixels(pixels: int) -> str:
    limit = MAX_PIXELS // 1_000_000
    megapixels = pixels / 1_000_000
    # "50 megapixels; the limit is 50" would read as no reason at all.
    return f"{megapixels:,.0f}" if round(megapixels) > limit else f"{megapixels:.1f}"
