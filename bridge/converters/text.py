"""Typeset plain text (the message body, ``text/plain`` attachments) as PDF pages with fpdf2.

Layout: portrait A4 or Letter, 20 mm margins, 11 pt type, lines wrapped at word boundaries (long words
broken), ``\\f`` starts a new page.

Fonts, and why there are two paths:

* Text that Windows-1252 can encode (English and Western European mail, the large majority) is set in
  Helvetica, a PDF standard font that every PDF reader and fax provider has. Nothing is embedded, so a
  page costs well under a millisecond.
* Any other text (Cyrillic, Greek, Polish, Czech…) uses a Unicode TrueType font found on the system
  (DejaVu Sans and friends), embedded as a subset. fpdf2 parses the whole TTF for each document and
  subsets it on output, which costs tens of milliseconds; hence the fast path above. Characters the font
  lacks (CJK with DejaVu) become "?" rather than invisible boxes.
* With no TrueType font on the system, everything goes through Helvetica and non-Windows-1252 characters
  become "?".

Line wrapping is done here, not with fpdf2's ``multi_cell``: its line breaker re-measures the whole line for
every character (about 20 ms for a short mail), while summing cached per-character advance widths is exact
for unshaped, unkerned text, which is what fpdf2 emits for both fonts.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fontTools.ttLib import TTFont  # type: ignore[import-untyped]  # comes with fpdf2, has no type information
from fpdf import FPDF

from bridge.converters.pdf import PAPER_SIZES_MM, Paper

log = logging.getLogger(__name__)

FONT_SIZE_PT: Final = 11.0
LINE_HEIGHT_MM: Final = 5.5  # 1.4 × 11 pt: comfortable for reading, and survives fax resolution
MARGIN_MM: Final = 20.0
TAB_SIZE: Final = 8
_PT_PER_MM: Final = 72 / 25.4
# The PDF standard fonts use WinAnsiEncoding (fpdf2 declares it), which is Windows-1252: a superset of
# Latin-1 that also has €, curly quotes and dashes, all common in mail.
_CORE_ENCODING: Final = "windows-1252"

# Common places of a Unicode sans-serif TTF; the first that loads wins. DejaVu first: it has the widest
# coverage of the fonts distributions install by default.
_FONT_CANDIDATES: Final = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # older Fedora, CentOS
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/google-noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
)
_FONT_SUFFIXES: Final = (".ttf", ".otf")


class PageLimitExceeded(Exception):
    """The text needs more pages than allowed; ``at_least`` is how many were counted before stopping."""

    def __init__(self, at_least: int) -> None:
        super().__init__(f"at least {at_least} pages")
        self.at_least = at_least


@dataclass(frozen=True, slots=True)
class UnicodeFont:
    """A TrueType font file and the code points it has glyphs for."""

    path: Path
    codepoints: frozenset[int]


@dataclass(frozen=True, slots=True)
class RenderedText:
    """The PDF for one text part and its number of pages."""

    pdf: bytes
    pages: int


@functools.cache
def find_unicode_font() -> UnicodeFont | None:
    """Find a Unicode TrueType font on this system (cached for the life of the process).

    Known paths are tried first; ``fc-match`` is asked only when none exists, because starting a program
    costs more than the whole conversion of a short mail.
    """
    for candidate in _FONT_CANDIDATES:
        font = _load_font(Path(candidate))
        if font is not None:
            return font
    matched = _fc_match()
    if matched is not None:
        font = _load_font(matched)
        if font is not None:
            return font
    log.warning("no Unicode TrueType font found; text outside Windows-1252 will print as '?'")
    return None


def _fc_match() -> Path | None:
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        result = subprocess.run(
            [fc_match, "--format=%{file}", "sans-serif"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(result.stdout.strip())
    return path if result.returncode == 0 and path.suffix.lower() in _FONT_SUFFIXES else None


def _load_font(path: Path) -> UnicodeFont | None:
    if not path.is_file():
        return None
    try:
        with TTFont(str(path), lazy=True) as tt:
            cmap = tt.getBestCmap()
    except Exception:  # any parse failure just means "not this font"
        log.warning("cannot read font %s", path, exc_info=True)
        return None
    if not cmap:
        return None
    return UnicodeFont(path, frozenset(int(cp) for cp in cmap))


# Advance widths in mm at FONT_SIZE_PT, per font and character. Widths are a property of the font file, so
# the tables are shared by all documents. Concurrent workers may both fill in the same character; they
# write the same value and single dict operations are atomic, so no lock is needed. The tables stay small:
# only characters the chosen font can print are ever measured (Windows-1252, or the TrueType font's cmap).
_char_widths: dict[str, dict[str, float]] = {}


class _Measure:
    """Measures strings by summing cached character widths; remembers each word within one document."""

    def __init__(self, pdf: FPDF, font_key: str) -> None:
        self._pdf = pdf
        self._chars = _char_widths.setdefault(font_key, {})
        self._words: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        chars = self._chars
        try:
            return sum(map(chars.__getitem__, text))
        except KeyError:
            for ch in [c for c in set(text) if c not in chars]:
                chars[ch] = float(self._pdf.get_string_width(ch))
            return sum(map(chars.__getitem__, text))

    def word(self, token: str) -> float:
        width = self._words.get(token)
        if width is None:
            width = self._words[token] = self(token)
        return width


def prepare_text(text: str) -> str:
    """Normalise text for typesetting: NFC, Unix newlines, tabs expanded, control characters dropped.

    Form feeds are kept (they mean "new page"); trailing spaces and blank lines at either end are removed.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cleaned: list[str] = []
    for line in text.split("\n"):
        line = line.expandtabs(TAB_SIZE)
        # Drop control and format characters (zero-width joiners, BOMs, bidi controls) except \f;
        # fpdf2 has no glyph for them and they would print as "?".
        line = "".join(ch for ch in line if ch == "\f" or unicodedata.category(ch) not in ("Cc", "Cf"))
        cleaned.append(line.rstrip())
    return "\n".join(cleaned).strip("\n")


def _fits_core(text: str) -> bool:
    try:
        text.encode(_CORE_ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _to_core(text: str) -> str:
    return text.encode(_CORE_ENCODING, errors="replace").decode(_CORE_ENCODING)


def _to_font(text: str, font: UnicodeFont) -> str:
    cps = font.codepoints
    return "".join(ch if ord(ch) in cps or ch in "\n\f" else "?" for ch in text)


def render_text(text: str, *, paper: Paper = "a4", max_pages: int = 50) -> RenderedText:
    """Typeset ``text`` on portrait pages of ``paper`` size and return the PDF and its page count.

    The text is laid out before anything is drawn, so a text that would need more than ``max_pages``
    pages is refused cheaply.

    Raises:
        PageLimitExceeded: the text needs more than ``max_pages`` pages.
        ValueError: unknown paper size.
    """
    if paper not in PAPER_SIZES_MM:
        raise ValueError(f"unknown paper size {paper!r}")
    page_w, page_h = PAPER_SIZES_MM[paper]
    text = prepare_text(text)

    pdf = FPDF(orientation="portrait", unit="mm", format=(page_w, page_h))
    try:
        return _typeset(pdf, text, page_w=page_w, page_h=page_h, max_pages=max_pages)
    finally:
        # fpdf2 keeps a TrueType file open until output() has subset it; when layout stops early (page
        # limit, error), close it here, or the garbage collector reports an unclosed file.
        for font in getattr(pdf, "fonts", {}).values():
            close = getattr(font, "close", None)
            if close is not None:
                close()


def _typeset(pdf: FPDF, text: str, *, page_w: float, page_h: float, max_pages: int) -> RenderedText:
    pdf.set_auto_page_break(False)
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_creator("faxbridge")
    font = None if _fits_core(text) else find_unicode_font()
    if font is None:
        pdf.core_fonts_encoding = _CORE_ENCODING
        pdf.set_font("helvetica", size=FONT_SIZE_PT)
        font_key = "core:helvetica"
        text = _to_core(text)
    else:
        pdf.add_font("body", "", str(font.path))
        pdf.set_font("body", size=FONT_SIZE_PT)
        font_key = f"ttf:{font.path}"
        text = _to_font(text, font)

    width = page_w - 2 * MARGIN_MM
    lines_per_page = max(1, math.floor((page_h - 2 * MARGIN_MM) / LINE_HEIGHT_MM))
    pages = _paginate(_wrap(_Measure(pdf, font_key), text, width), lines_per_page, max_pages)

    # The first baseline sits one ascent (about 0.8 of the type size) below the top margin.
    first_baseline = MARGIN_MM + 0.8 * FONT_SIZE_PT / _PT_PER_MM
    for page in pages:
        pdf.add_page()
        for index, line in enumerate(page):
            if line:
                pdf.text(MARGIN_MM, first_baseline + index * LINE_HEIGHT_MM, line)
    return RenderedText(bytes(pdf.output()), pdf.page)


def _paginate(lines: Iterator[str], lines_per_page: int, max_pages: int) -> list[list[str]]:
    pages: list[list[str]] = [[]]
    for line in lines:
        if line == "\f":
            pages.append([])
            continue
        if len(pages[-1]) >= lines_per_page:
            pages.append([])
        pages[-1].append(line)
        # Checked when a line lands on a page, so a trailing form feed alone never counts as a page.
        if len(pages) > max_pages:
            raise PageLimitExceeded(len(pages))
    # A trailing form feed leaves an empty last page: no one wants to fax a blank sheet.
    while len(pages) > 1 and not pages[-1]:
        pages.pop()
    return pages


_TOKEN = re.compile(r"\S+\s*|\s+")


def _wrap(measure: _Measure, text: str, width: float) -> Iterator[str]:
    """Yield display lines; a lone ``"\\f"`` marks a page break."""
    for raw_line in text.split("\n"):
        segments = raw_line.split("\f")
        for seg_index, segment in enumerate(segments):
            if seg_index:
                yield "\f"
            if not segment and len(segments) > 1:
                continue  # the empty text either side of a form feed is not a line
            yield from _wrap_line(measure, segment, width)


def _wrap_line(measure: _Measure, line: str, width: float) -> Iterator[str]:
    if not line or measure(line) <= width:
        yield line
        return
    current = ""
    current_w = 0.0
    for token in _TOKEN.findall(line):
        word = token.rstrip()
        if current and current_w + measure.word(word) > width:
            # The word does not fit: close the line; the spaces that separated it are dropped.
            yield current.rstrip()
            current, current_w = "", 0.0
            token = token.lstrip()
            word = token.rstrip()
        if measure.word(word) > width:
            # A word (URL, base64 blob) wider than the line: break it between characters.
            for ch in token:
                ch_w = measure.word(ch)
                if current and current_w + ch_w > width:
                    yield current.rstrip()
                    current, current_w = "", 0.0
                    if ch.isspace():
                        continue
                current += ch
                current_w += ch_w
            continue
        current += token
        current_w += measure.word(token)
    if current.strip():
        yield current.rstrip()
