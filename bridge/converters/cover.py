"""The fax cover page: "Fax", who it is from and for, the subject, the date, the page count, then the message.

Layout, top to bottom, inside the same 20 mm margins as every text page:

* "Fax" in 24 pt bold;
* a block of labelled fields (From, To, Subject, Date, Pages), labels in bold, values wrapped in the
  column beside them;
* a rule across the page;
* the message text, typeset exactly like ``render_text`` (same fonts, any script, same wrapping); what does
  not fit continues on following pages.

"Pages" is the number of pages of the whole fax: the cover's own pages plus ``other_pages``. The cover's
page count depends only on the message and the height of the field block, never on the number printed, so
the layout is computed first and drawn once.

Labels are English and set in Helvetica Bold (a PDF standard font, always available); the values may be in
any script and use the document's text fonts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from bridge.converters.pdf import Paper
from bridge.converters.text import (
    FONT_SIZE_PT,
    LINE_HEIGHT_MM,
    MARGIN_MM,
    PT_PER_MM,
    Line,
    PageLimitExceeded,
    RenderedText,
    Typesetter,
    paginate,
    prepare_text,
)

__all__ = ["CoverFields", "PageLimitExceeded", "render_cover"]

TITLE: Final = "Fax"
TITLE_SIZE_PT: Final = 24.0
LABELS: Final = ("From:", "To:", "Subject:", "Date:", "Pages:")
_LABEL_GAP_MM: Final = 4.0
_RULE_WIDTH_MM: Final = 0.4
# A header value longer than this is cut with "…": the cover shows what the fax is, and a 10 kB subject
# line would otherwise push the message off the first page. About four lines at 11 pt.
MAX_FIELD_CHARS: Final = 300


@dataclass(frozen=True, slots=True)
class CoverFields:
    """What the cover page says. The caller formats and cleans every value."""

    sender: str  # e.g. "Jane Sender <jane@example.com>"
    recipient: str  # formatted fax number, e.g. "+49 30 123456"
    subject: str  # already cleaned by the caller (secret key removed)
    date: str  # already formatted by the caller
    message: str  # the mail body as text ("" when none)


def render_cover(fields: CoverFields, *, other_pages: int, paper: Paper = "a4", max_pages: int = 50) -> RenderedText:
    """Typeset the cover page (and the pages its message continues on).

    Returns the cover's own PDF and page count; the page count printed on it is that plus ``other_pages``.

    Raises:
        PageLimitExceeded: the cover's pages plus ``other_pages`` exceed ``max_pages``; ``at_least`` counts
            the whole fax (cover pages counted so far plus ``other_pages``).
        ValueError: unknown paper size or negative ``other_pages``.
    """
    if other_pages < 0:
        raise ValueError("other_pages must not be negative")
    budget = max_pages - other_pages
    if budget < 1:
        raise PageLimitExceeded(other_pages + 1)

    values = [_one_line(v) for v in (fields.sender, fields.recipient, fields.subject, fields.date)]
    message = prepare_text(fields.message)
    # The largest possible page count has as many digits as any count we can print: reserve its glyphs.
    digits = "0123456789"
    with Typesetter([*values, message, digits], paper=paper) as setter:
        pdf = setter.pdf
        pdf.set_font("helvetica", "B", FONT_SIZE_PT)
        label_width = max(pdf.get_string_width(label) for label in LABELS) + _LABEL_GAP_MM
        setter.set_body_font()
        value_x = MARGIN_MM + label_width
        value_width = setter.text_width - label_width

        # Layout first: the field block's height decides how many message lines fit on the first page.
        title_baseline = MARGIN_MM + 0.8 * TITLE_SIZE_PT / PT_PER_MM
        fields_top = title_baseline + LINE_HEIGHT_MM
        value_lines = [list(setter.lines(value, value_width)) or [Line("")] for value in values]
        rows = len(LABELS)  # "Pages" is one line
        block_lines = sum(len(lines) for lines in value_lines) + 1
        rule_y = fields_top + block_lines * LINE_HEIGHT_MM + LINE_HEIGHT_MM / 2
        message_top = rule_y + LINE_HEIGHT_MM / 2
        first_page_lines = max(0, math.floor((setter.page_height - MARGIN_MM - message_top) / LINE_HEIGHT_MM))
        try:
            pages = paginate(setter.lines(message), first_page_lines, setter.lines_per_page, budget)
        except PageLimitExceeded as exc:
            raise PageLimitExceeded(exc.at_least + other_pages) from exc
        total = len(pages) + other_pages

        # Drawing.
        setter.add_page()
        pdf.set_font("helvetica", "B", TITLE_SIZE_PT)
        pdf.text(MARGIN_MM, title_baseline, TITLE)
        ascent = 0.8 * FONT_SIZE_PT / PT_PER_MM
        baseline = fields_top + ascent
        for row in range(rows):
            lines = value_lines[row] if row < len(value_lines) else [Line(str(total))]
            pdf.set_font("helvetica", "B", FONT_SIZE_PT)
            pdf.text(MARGIN_MM, baseline, LABELS[row])
            setter.set_body_font()
            for line in lines:
                setter.draw(line, value_x, baseline, value_width)
                baseline += LINE_HEIGHT_MM
        pdf.set_line_width(_RULE_WIDTH_MM)
        pdf.line(MARGIN_MM, rule_y, setter.page_width - MARGIN_MM, rule_y)

        for number, page in enumerate(pages):
            if number:
                setter.add_page()
            top = message_top if number == 0 else MARGIN_MM
            for index, line in enumerate(page):
                setter.draw(line, MARGIN_MM, top + ascent + index * LINE_HEIGHT_MM, setter.text_width)
        return RenderedText(setter.output(), pdf.page)


def _one_line(value: str) -> str:
    """A header value on one line: controls dropped, whitespace runs (folded headers) as one space."""
    text = " ".join(prepare_text(value).split())
    if len(text) > MAX_FIELD_CHARS:
        text = text[: MAX_FIELD_CHARS - 1].rstrip() + "…"
    return text
