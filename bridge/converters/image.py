"""JPEG and PNG images to one bilevel fax page each.

The page is a 1-bit raster 1728 pixels wide (the width of a fax scan line) across the whole paper width
and 196 lines per inch down it (ITU-T T.4 "fine"), so the provider's fax encoder has nothing left to
resample. The image is turned upright (EXIF orientation), fitted inside a 5 mm margin, flattened onto
white, and reduced to black and white with a plain threshold: dithering would make scanned text fuzzy and
multiplies the fax's size and transmission time (docs/performance.md). The page is embedded in a PDF of
the requested paper size with CCITT G4 compression (Pillow's PDF writer does that for 1-bit images).

Only the JPEG and PNG decoders are ever used, whatever the attachment claims to be.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

from PIL import Image, ImageOps

from bridge.converters.pdf import PAPER_SIZES_MM, Paper

FAX_WIDTH_PX: Final = 1728
FAX_FINE_LPI: Final = 196
MARGIN_MM: Final = 5.0
# A fine fax page is about 4 megapixels; 50 Mpx covers any phone camera and stays far below the memory a
# bomb would need. Pillow's own limit (89 Mpx warning, 179 Mpx error) is higher, so this check comes first.
MAX_PIXELS: Final = 50_000_000
ALLOWED_FORMATS: Final = ("JPEG", "PNG")

# Plain threshold at mid-grey: anything lighter than 128 becomes white paper.
_THRESHOLD_LUT: Final = [0] * 129 + [255] * 127
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_EXIF_ORIENTATION: Final = 0x0112


class ImageTooLarge(Exception):
    """The image has more pixels than ``MAX_PIXELS``."""

    def __init__(self, pixels: int) -> None:
        super().__init__(f"{pixels} pixels")
        self.pixels = pixels


def image_to_pdf(data: bytes, *, paper: Paper = "a4") -> bytes:
    """Convert one JPEG or PNG image into a one-page bilevel PDF of ``paper`` size.

    Raises:
        ImageTooLarge: over ``MAX_PIXELS``.
        PIL.UnidentifiedImageError: not a JPEG or PNG.
        OSError: truncated or corrupt image data.
        PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning: Pillow's own bomb checks.
        ValueError, SyntaxError, TypeError: other damage found by the decoders.
    """
    if paper not in PAPER_SIZES_MM:
        raise ValueError(f"unknown paper size {paper!r}")
    page_w_mm, page_h_mm = PAPER_SIZES_MM[paper]
    x_dpi = FAX_WIDTH_PX / (page_w_mm / 25.4)
    y_dpi = float(FAX_FINE_LPI)
    canvas_size = (FAX_WIDTH_PX, round(page_h_mm / 25.4 * y_dpi))
    box_w_in = (page_w_mm - 2 * MARGIN_MM) / 25.4
    box_h_in = (page_h_mm - 2 * MARGIN_MM) / 25.4

    # Pillow reports damage it can work around ("Invalid APNG, will use default PNG image", a bad MPO
    # header, odd EXIF tags) as UserWarning; the picture is still usable, so those are ignored, which also
    # keeps the outcome the same whether or not warnings are turned into errors (as under pytest). A
    # decompression-bomb warning, on the other hand, is an error.
    # catch_warnings changes process-wide state, not per-thread state. Acceptable here: a race between two
    # concurrent conversions can at worst leave these two narrow filters installed for the process, and
    # the explicit MAX_PIXELS check below refuses every image that could trigger the bomb warning anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageTooLarge(width * height)
            orientation = _orientation(im)
            shown_w, shown_h = (height, width) if orientation in _SWAPS_AXES else (width, height)
            # Fit the upright picture into the printable box; pixels of the source are taken as square.
            inches_per_px = min(box_w_in / shown_w, box_h_in / shown_h)
            target = (
                max(1, round(shown_w * inches_per_px * x_dpi)),
                max(1, round(shown_h * inches_per_px * y_dpi)),
            )
            if im.format in ("JPEG", "MPO"):
                # Let libjpeg decode in grey at 1/2, 1/4 or 1/8 scale when the page needs fewer pixels:
                # a 12 Mpx photo then costs a fraction of the time and memory.
                stored_target = (target[1], target[0]) if orientation in _SWAPS_AXES else target
                im.draft("L", stored_target)
            im.load()
            upright = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
            gray = _to_gray(upright)
    gray = gray.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    bilevel = gray.point(_THRESHOLD_LUT, "1")
    canvas = Image.new("1", canvas_size, 1)
    top = round(MARGIN_MM / 25.4 * y_dpi)
    canvas.paste(bilevel, ((canvas_size[0] - target[0]) // 2, top))
    out = io.BytesIO()
    # With different horizontal and vertical resolutions the PDF page comes out at exactly the paper size.
    canvas.save(out, "PDF", dpi=(x_dpi, y_dpi))
    return out.getvalue()


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        # A damaged EXIF block is metadata, not picture: print the image as stored rather than refuse it.
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _to_gray(im: Image.Image) -> Image.Image:
    """Greyscale on a white background, 8 bits per pixel."""
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        # Transparent pixels are usually stored as black: composite onto white paper first.
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        paper.alpha_composite(rgba)
        return paper.convert("L")
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit greyscale PNG: Pillow's convert("L") clips instead of scaling, which would turn almost
        # everything white. Scale 0..65535 to 0..255 first.
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    return im.convert("L")
