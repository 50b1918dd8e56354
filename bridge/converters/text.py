"""Typeset plain text (the message body, ``text/plain`` attachments, the cover page) as PDF pages with fpdf2.

Layout: portrait A4 or Letter, 20 mm margins, 11 pt type, lines wrapped at word boundaries (long words
broken; Chinese and Japanese between characters), ``\\f`` starts a new page.

Fonts, and why there are three paths (chosen per document from the characters it contains):

* **Windows-1252** text (English and Western European mail, the large majority) is set in Helvetica, a
  PDF standard font every PDF reader and fax provider has. Nothing is embedded, so a page costs well under
  a millisecond.
* **Simple scripts** the base TrueType font has (Cyrillic, Greek, Polish, Czech…: one glyph per
  character, left to right) use that font (DejaVu Sans), embedded as a subset, without text shaping.
* **Everything else** (Arabic and Hebrew, which run right to left and whose Arabic letters join; Chinese,
  Japanese and Korean, which DejaVu lacks; Indic scripts, Thai; mixtures with Latin) goes through fpdf2's
  text shaping (harfbuzz, plus fpdf2's implementation of the Unicode bidirectional algorithm) with one
  font per script found by ``bridge.converters.fonts``. Each font is registered with exactly the
  characters assigned to it (``unicode_range``), so fpdf2's fallback mechanism picks the font the plan
  chose (Noto Sans Arabic for Arabic even though DejaVu also has Arabic letters), and fpdf2 reads only
  those characters' metrics: loading the CJK collection drops from 160 to 80 ms.

Characters no font on the system has print as "?" rather than as invisible boxes; with no TrueType font at
all, everything goes through Helvetica and non-Windows-1252 characters become "?".

Line breaking is done here, not with fpdf2's ``multi_cell``: its line breaker re-measures the whole line for
every character (about 20 ms for a short mail), and it lays out the whole text before a page limit could
stop it. Here lines are produced lazily, so a text over the page limit is refused after measuring
``max_pages`` pages. Widths are exact: cached per-character advances for the unshaped fonts; on the shaping
path each word is shaped with harfbuzz directly (fpdf2's own measuring runs its pure-Python bidi algorithm
on every call, 100 times slower). A line of a right-to-left paragraph is broken in logical order and then
reordered and right-aligned by fpdf2, as the bidi algorithm prescribes.

Two fpdf2 2.8.9 shaping bugs are worked around here: combining marks split Arabic words into separately
shaped runs (``_FPDF``), and a page whose first line starts in a fallback font lost its main font for the
following lines (``Typesetter.add_page``).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

import uharfbuzz as hb
from fpdf import FPDF
from fpdf.line_break import Fragment
from fpdf.unicode_script import UnicodeScript, get_unicode_script

from bridge.converters import fonts
from bridge.converters.fonts import FontFace, FontPlan
from bridge.converters.pdf import PAPER_SIZES_MM, Paper

log = logging.getLogger(__name__)

FONT_SIZE_PT: Final = 11.0
LINE_HEIGHT_MM: Final = 5.5  # 1.4 × 11 pt: comfortable for reading, and survives fax resolution
MARGIN_MM: Final = 20.0
TAB_SIZE: Final = 8
PT_PER_MM: Final = 72 / 25.4
# The PDF standard fonts use WinAnsiEncoding (fpdf2 declares it), which is Windows-1252: a superset of
# Latin-1 that also has €, curly quotes and dashes, all common in mail.
_CORE_ENCODING: Final = "windows-1252"
# Zero-width joiners change how Arabic, Indic and emoji sequences join; only the shaping path uses them.
_JOINERS: Final = "\u200c\u200d"
# A shaped line shorter than this is measured whole before being split into words; longer paragraphs go
# word by word straight away, so a megabyte-long paragraph is never shaped in one piece.
_WHOLE_LINE_CHARS: Final = 400

# The historical name of a font face found on the system.
UnicodeFont = FontFace
Mode = Literal["core", "unicode", "shaped"]


class PageLimitExceeded(Exception):
    """The text needs more pages than allowed; ``at_least`` is how many were counted before stopping."""

    def __init__(self, at_least: int) -> None:
        super().__init__(f"at least {at_least} pages")
        self.at_least = at_least


@dataclass(frozen=True, slots=True)
class RenderedText:
    """The PDF for one text part and its number of pages."""

    pdf: bytes
    pages: int


@dataclass(frozen=True, slots=True)
class Line:
    """One display line in logical (typed) order; ``rtl`` lines are reordered and right-aligned."""

    text: str
    rtl: bool = False


# Yielded between the lines of two pages when the text has a form feed.
PAGE_BREAK: Final = Line("\f")


def find_unicode_font() -> FontFace | None:
    """The base Unicode TrueType font (DejaVu Sans and friends), or ``None``; cached for the process."""
    return fonts.base_font()


def prepare_text(text: str) -> str:
    """Normalise text for typesetting: NFC, Unix newlines, tabs expanded, control characters dropped.

    Form feeds are kept (they mean "new page"), and so are the zero-width joiners (they change how Arabic
    and Indic letters join); trailing spaces and blank lines at either end are removed.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Drop control and format characters (NUL, BEL, zero-width spaces, BOMs, bidi overrides) except \f:
    # fonts have no glyph for them and they would print as "?". Decided per distinct character, so a long
    # text costs one C-speed translate() instead of a Python test per character.
    drop = {
        ord(ch): None
        for ch in set(text)
        if ch not in "\n\f\t" and ch not in _JOINERS and unicodedata.category(ch) in ("Cc", "Cf")
    }
    if drop:
        text = text.translate(drop)
    return "\n".join(line.expandtabs(TAB_SIZE).rstrip() for line in text.split("\n")).strip("\n")


def render_text(text: str, *, paper: Paper = "a4", max_pages: int = 50) -> RenderedText:
    """Typeset ``text`` on portrait pages of ``paper`` size and return the PDF and its page count.

    The text is laid out before anything is drawn, and lazily, so a text that would need more than
    ``max_pages`` pages is refused after measuring that many pages.

    Raises:
        PageLimitExceeded: the text needs more than ``max_pages`` pages.
        ValueError: unknown paper size.
    """
    text = prepare_text(text)
    with Typesetter([text], paper=paper) as setter:
        pages = paginate(setter.lines(text), setter.lines_per_page, setter.lines_per_page, max_pages)
        for page in pages:
            setter.add_page()
            for index, line in enumerate(page):
                setter.draw(line, MARGIN_MM, setter.first_baseline + index * LINE_HEIGHT_MM, setter.text_width)
        return RenderedText(setter.output(), setter.pdf.page)


def paginate(lines: Iterable[Line], first_page: int, per_page: int, max_pages: int) -> list[list[Line]]:
    """Distribute lines on pages holding ``first_page`` lines on the first page, ``per_page`` after.

    Raises ``PageLimitExceeded`` as soon as a line lands on page ``max_pages + 1``, so the lines after it
    are never produced (``lines`` is lazy).
    """
    pages: list[list[Line]] = [[]]
    capacity = first_page
    for line in lines:
        if line is PAGE_BREAK:
            pages.append([])
            capacity = per_page
            continue
        if len(pages[-1]) >= capacity:
            pages.append([])
            capacity = per_page
        pages[-1].append(line)
        # Checked when a line lands on a page, so a trailing form feed alone never counts as a page.
        if len(pages) > max_pages:
            raise PageLimitExceeded(len(pages))
    # A trailing form feed leaves an empty last page: no one wants to fax a blank sheet.
    while len(pages) > 1 and not pages[-1]:
        pages.pop()
    return pages


class Typesetter:
    """One PDF document, set up with fonts for all of ``texts``, that wraps and draws lines.

    Every string that will be drawn must be among ``texts`` (already passed through ``prepare_text``),
    because the choice of fonts depends on all the characters of the document. Use it as a context
    manager: fpdf2 keeps TrueType files open until ``output()``, and an early exit must close them.
    """

    def __init__(self, texts: Sequence[str], *, paper: Paper) -> None:
        if paper not in PAPER_SIZES_MM:
            raise ValueError(f"unknown paper size {paper!r}")
        self.page_width, self.page_height = PAPER_SIZES_MM[paper]
        self.text_width = self.page_width - 2 * MARGIN_MM
        self.lines_per_page = max(1, math.floor((self.page_height - 2 * MARGIN_MM) / LINE_HEIGHT_MM))
        # The first baseline sits one ascent (about 0.8 of the type size) below the top margin.
        self.first_baseline = MARGIN_MM + 0.8 * FONT_SIZE_PT / PT_PER_MM

        pdf = _FPDF(orientation="portrait", unit="mm", format=(self.page_width, self.page_height))
        pdf.set_auto_page_break(False)
        pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
        pdf.set_creator("faxbridge")
        pdf.c_margin = 0  # cells start exactly at the margin, like text() on the unshaped paths
        # "{nb}" in a mail is text, not fpdf2's page-count placeholder.
        pdf.str_alias_nb_pages = ""
        self.pdf = pdf
        self._rtl: bool | None = None
        self.plan: FontPlan | None = None  # which face prints which character, on the shaping path
        try:
            self.mode, self._table = self._choose_fonts("".join(texts))
        except BaseException:
            self.close()
            raise

    # -- fonts ---------------------------------------------------------------------------------------------

    def _choose_fonts(self, text: str) -> tuple[Mode, dict[int, str | None]]:
        chars = [ch for ch in dict.fromkeys(text) if ch not in "\n\f"]
        base = find_unicode_font() if not _fits_core(text) else None
        if base is None:
            self.pdf.core_fonts_encoding = _CORE_ENCODING
            self.pdf.set_font("helvetica", size=FONT_SIZE_PT)
            self._measure: _Measure | _ShapedMeasure = _Measure(self.pdf, "core:helvetica")
            return "core", _replacements(chars, _fits_core)
        if all(base.has(ch) and not fonts.needs_shaping(ch) for ch in chars):
            self.pdf.add_font("body", "", str(base.path), unicode_range=_unicode_range(chars))
            self.pdf.set_font("body", size=FONT_SIZE_PT)
            self._measure = _Measure(self.pdf, f"ttf:{base.key}")
            return "unicode", _replacements(chars, lambda ch: ch not in _JOINERS)

        plan = fonts.plan_fonts(text, base)
        self.plan = plan
        families: list[str] = []
        for number, face in enumerate(plan.faces()):
            assigned = [ch for ch, chosen in plan.chars.items() if chosen.key == face.key]
            if face is plan.base:
                assigned += [" ", "?"]  # the base face sets the "?" of missing characters
            family = f"f{number}"
            self.pdf.add_font(
                family,
                "",
                str(face.path),
                unicode_range=_unicode_range(assigned),
                collection_font_number=face.index,
            )
            families.append(family)
        self.pdf.set_font(families[0], size=FONT_SIZE_PT)
        if len(families) > 1:
            self.pdf.set_fallback_fonts(families[1:], exact_match=False)
        self.pdf.set_text_shaping(True)
        self._measure = _ShapedMeasure(plan)
        table = _replacements(chars, lambda ch: ch in plan.chars or ch in " ?")
        # A joiner or combining mark no font has is dropped, not replaced: it has no width of its own.
        for ch in chars:
            if ch not in plan.chars and unicodedata.category(ch) in ("Cf", "Mn"):
                table[ord(ch)] = None
        return "shaped", table

    def set_body_font(self) -> None:
        """Select the body font again (after drawing labels in another font)."""
        family = {"core": "helvetica", "unicode": "body", "shaped": "f0"}[self.mode]
        self.pdf.set_font(family, size=FONT_SIZE_PT)

    # -- layout ----------------------------------------------------------------------------------------------

    def printable(self, text: str) -> str:
        """``text`` with the characters no font has replaced by "?" (joiners dropped where unused)."""
        return text.translate(self._table) if self._table else text

    def lines(self, text: str, width: float | None = None) -> Iterator[Line]:
        """Yield the display lines of ``text`` wrapped at ``width`` mm; ``PAGE_BREAK`` for a form feed."""
        width = self.text_width if width is None else width
        text = self.printable(text)
        shaped = self.mode == "shaped"
        # The unshaped measures ask fpdf2 for the width of characters they have not seen, in the current
        # font: make sure it is the body font, not a label font the caller selected before.
        self.set_body_font()
        for raw_line in text.split("\n"):
            rtl = shaped and _is_rtl(raw_line)
            if shaped:
                self._set_direction(rtl)
            segments = raw_line.split("\f")
            for seg_index, segment in enumerate(segments):
                if seg_index:
                    yield PAGE_BREAK
                if not segment and len(segments) > 1:
                    continue  # the empty text either side of a form feed is not a line
                for piece in _wrap_line(self._measure, segment, width, shaped=shaped):
                    yield Line(piece, rtl)

    def width(self, text: str) -> float:
        """The printed width of one line of (printable) text in mm, in the body font."""
        return self._measure(text)

    # -- drawing ---------------------------------------------------------------------------------------------

    def add_page(self) -> None:
        self.pdf.add_page()
        if self.mode == "shaped":
            # Work around fpdf2 2.8.9: when the first line of a page starts in a fallback font, cell()
            # selects the main font only inside that line's q…Q block yet marks it as set for the page, so
            # later lines that start in the main font show text with no font (poppler: "No font in show").
            # An empty text() selects the main font for the whole page first.
            self.pdf.text(MARGIN_MM, MARGIN_MM, "")

    def draw(self, line: Line, x: float, baseline: float, width: float) -> None:
        """Draw a line whose baseline is at ``baseline``; right-to-left lines end at ``x + width``."""
        if not line.text:
            return
        if self.mode != "shaped":
            self.pdf.text(x, baseline, line.text)
            return
        self._set_direction(line.rtl)
        # fpdf2 puts a cell's baseline at y + h/2 + 0.3 × type size; solve for y.
        self.pdf.set_xy(x, baseline - 0.5 * LINE_HEIGHT_MM - 0.3 * self.pdf.font_size)
        self.pdf.cell(w=width, h=LINE_HEIGHT_MM, text=line.text, align="R" if line.rtl else "L")

    def _set_direction(self, rtl: bool) -> None:
        # The paragraph's base direction for fpdf2's bidi algorithm: a wrapped line of an Arabic paragraph
        # that happens to start with a Latin word must still be laid out right to left.
        if rtl != self._rtl:
            self.pdf.set_text_shaping(True, direction="rtl" if rtl else "ltr")
            self._rtl = rtl

    def output(self) -> bytes:
        return bytes(self.pdf.output())

    def close(self) -> None:
        # fpdf2 keeps a TrueType file open until output() has subset it; when layout stops early (page
        # limit, error), close it here, or the garbage collector reports an unclosed file.
        for font in getattr(self.pdf, "fonts", {}).values():
            close = getattr(font, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Typesetter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _FPDF(FPDF):
    """fpdf2 with one fix to its text shaping: combining marks stay in their letter's run.

    fpdf2 2.8.9 starts a new fragment (a separately shaped run) whenever the Unicode script changes, and
    counts the "Inherited" script of combining marks as a change. Arabic vowel signs (fatha, shadda…) are
    Inherited, so a vocalised word such as "مُحَمَّد" was shaped letter by letter: no joining, marks not
    placed on their letters. Unicode says a mark takes the script of its base; gluing the fragments back
    together, when nothing but that split separates them, restores one run per word.
    """

    def _preload_font_styles(
        self,
        text: str | None,
        markdown: bool,
        _initial_emphasis: tuple[bool, bool, bool, bool] | None = None,
    ) -> Sequence[Fragment]:
        fragments = super()._preload_font_styles(text, markdown, _initial_emphasis)
        if self.text_shaping is None or len(fragments) < 2:
            return fragments
        merged: list[Fragment] = []
        for fragment in fragments:
            previous = merged[-1] if merged else None
            if (
                previous is not None
                and previous.characters
                and fragment.characters
                and (_is_inherited(fragment.characters[0]) or _is_inherited(previous.characters[-1]))
                and previous.graphics_state == fragment.graphics_state
                and previous.link == fragment.link
            ):
                merged[-1] = Fragment(previous.characters + fragment.characters, previous.graphics_state, previous.k)
            else:
                merged.append(fragment)
        return tuple(merged)


def _is_inherited(ch: str) -> bool:
    return get_unicode_script(ch) == UnicodeScript.INHERITED


def _fits_core(text: str) -> bool:
    try:
        text.encode(_CORE_ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _replacements(chars: Iterable[str], printable: Callable[[str], bool]) -> dict[int, str | None]:
    """A ``str.translate`` table: "?" for characters that cannot print, nothing for unused joiners."""
    table: dict[int, str | None] = {}
    for ch in chars:
        if ch in _JOINERS and not printable(ch):
            table[ord(ch)] = None
        elif not printable(ch):
            table[ord(ch)] = "?"
    return table


def _unicode_range(chars: Iterable[str]) -> list[int]:
    return sorted({ord(ch) for ch in chars} | {ord("?")})


def _is_rtl(line: str) -> bool:
    """The paragraph direction by its first strong character (rule P2 of the bidi algorithm)."""
    for ch in line:
        kind = unicodedata.bidirectional(ch)
        if kind == "L":
            return False
        if kind in ("R", "AL"):
            return True
    return False


# -- measuring -------------------------------------------------------------------------------------------------

# Advance widths in mm at FONT_SIZE_PT, per font and character. Widths are a property of the font file, so
# the tables are shared by all documents. Concurrent workers may both fill in the same character; they
# write the same value and single dict operations are atomic, so no lock is needed. The tables stay small:
# only characters the chosen font can print are ever measured (Windows-1252, or the TrueType font's cmap).
_char_widths: dict[str, dict[str, float]] = {}


class _Measure:
    """Measures strings by summing cached character widths; remembers each word within one document.

    Exact for the unshaped paths: fpdf2 applies no kerning or ligatures without text shaping.
    """

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


class _ShapedMeasure:
    """Measures shaped text with harfbuzz directly, the way fpdf2 will set it: one run per font and script.

    fpdf2's own ``get_string_width`` runs its pure-Python bidi algorithm and builds fragments on every
    call (about 1.5 ms for a line of Arabic); calling harfbuzz directly costs a few microseconds, which is
    what makes refusing an over-long Arabic or CJK text cheap. Words are shaped separately: joining,
    ligatures and kerning do not cross a space, and Chinese and Japanese characters, the other break
    opportunity, do not interact. Direction does not change a run's width, so it is left to harfbuzz's
    guess from the script.
    """

    def __init__(self, plan: FontPlan) -> None:
        self._face_of = plan.chars
        self._base = plan.base
        self._words: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        em = 0.0
        for face, run in self._runs(text):
            em += _run_width(str(face.path), face.index, run)
        return em * FONT_SIZE_PT / PT_PER_MM

    def word(self, token: str) -> float:
        width = self._words.get(token)
        if width is None:
            width = self._words[token] = self(token)
        return width

    def _runs(self, text: str) -> Iterator[tuple[FontFace, str]]:
        # Split where fpdf2 (with the fix in _FPDF) splits fragments: where the font changes, and where one
        # real script follows another (Common and Inherited characters stay in the run they are in).
        face_of, base = self._face_of, self._base
        start = 0
        run_face: FontFace | None = None
        run_script: UnicodeScript | None = None
        for index, ch in enumerate(text):
            face = face_of.get(ch, base)
            script: UnicodeScript | None = get_unicode_script(ch)
            if script in _NEUTRAL_SCRIPTS:
                script = None
            new_script = script is not None and run_script is not None and script != run_script
            if run_face is not None and (face is not run_face or new_script):
                yield run_face, text[start:index]
                start = index
                run_script = None
            run_face = face
            if script is not None:
                run_script = script
        if run_face is not None:
            yield run_face, text[start:]


_NEUTRAL_SCRIPTS: Final = frozenset({UnicodeScript.COMMON, UnicodeScript.INHERITED, UnicodeScript.UNKNOWN})


@functools.cache
def _hb_font(path: str, index: int) -> tuple[Any, int]:
    """A harfbuzz font for a face, and its units per em; made once per process (the file is mapped)."""
    face = hb.Face(hb.Blob.from_file_path(path), index)
    return hb.Font(face), int(face.upem)


@functools.lru_cache(maxsize=65536)
def _run_width(path: str, index: int, run: str) -> float:
    """The shaped advance width of ``run`` in ems (bounded cache: words recur across documents)."""
    font, upem = _hb_font(path, index)
    buf = hb.Buffer()
    buf.add_str(run)
    buf.guess_segment_properties()
    hb.shape(font, buf, {})
    return float(sum(position.x_advance for position in buf.glyph_positions)) / upem


# -- wrapping --------------------------------------------------------------------------------------------------

_TOKEN: Final = re.compile(r"\S+\s*|\s+")

# Break opportunities for the shaping path (a small part of UAX #14): after spaces, and on either side of
# a Chinese or Japanese character. Korean is left out: it separates words with spaces, and breaking
# inside a word, though allowed, reads worse. Opening brackets stay with the character after
# them; closing punctuation, small kana and the iteration and prolonged-sound marks stay with the one
# before (Japanese "kinsoku" rules), so no line starts with "。" or ends with "「".
_CJK: Final = (
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3038-\u303c\u3040-\u30ff\u3100-\u312f"
    "\u31a0-\u31bf\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_OPENING: Final = "「『（［｛〈《【〔〖〘〚“‘(\\[{"
_CLOSING: Final = (
    "、。，．：；？！」』）］｝〉》】〕〗〙〛”’・ー々ゝゞヽヾぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ"
    "…‥〜～%,.:;?!)\\]}"
)
_SHAPED_TOKEN: Final = re.compile(
    rf"[{_OPENING}]*[{_CJK}][{_CLOSING}]*\s*|[^\s{_CJK}]+?(?=[{_OPENING}]*[{_CJK}])|[^\s{_CJK}]+\s*|\s+"
)


def _clusters(text: str) -> list[str]:
    """Split into grapheme clusters, near enough: a character with the marks and joiners that follow it.

    Words wider than the line are broken between clusters, never between a letter and its accent.
    """
    clusters: list[str] = []
    for ch in text:
        if clusters and (unicodedata.category(ch)[0] == "M" or ch in _JOINERS or clusters[-1][-1] in _JOINERS):
            clusters[-1] += ch
        else:
            clusters.append(ch)
    return clusters


def _wrap_line(measure: _Measure | _ShapedMeasure, line: str, width: float, *, shaped: bool) -> Iterator[str]:
    if not line:
        yield line
        return
    if (not shaped or len(line) <= _WHOLE_LINE_CHARS) and measure(line) <= width:
        yield line
        return
    current = ""
    current_w = 0.0
    tokens = _SHAPED_TOKEN if shaped else _TOKEN
    for match in tokens.finditer(line):
        token = match.group()
        word = token.rstrip()
        if current and current_w + measure.word(word) > width:
            # The word does not fit: close the line; the spaces that separated it are dropped.
            yield current.rstrip()
            current, current_w = "", 0.0
            token = token.lstrip()
            word = token.rstrip()
        if measure.word(word) > width:
            # A word (URL, base64 blob) wider than the line: break it between characters.
            pieces: Iterable[str] = _clusters(token) if shaped else token
            for piece in pieces:
                piece_w = measure.word(piece)
                if current and current_w + piece_w > width:
                    yield current.rstrip()
                    current, current_w = "", 0.0
                    if piece.isspace():
                        continue
                current += piece
                current_w += piece_w
            continue
        current += token
        current_w += measure.word(token)
    if current.strip():
        yield current.rstrip()
