"""render_cover: the fax cover page, read back as a recipient would see it."""

from __future__ import annotations

import io
import re
from typing import Any

import pypdfium2 as pdfium  # type: ignore[import-untyped]  # no type information
import pytest
from fpdf.unicode_script import UnicodeScript
from PIL import Image
from pypdf import PdfReader

from bridge.converters import fonts
from bridge.converters.cover import MAX_FIELD_CHARS, CoverFields, render_cover
from bridge.converters.text import MARGIN_MM, PageLimitExceeded, find_unicode_font, render_text

FIELDS = CoverFields(
    sender="Jane Sender <jane@example.com>",
    recipient="+49 30 123456",
    subject="Contract for signature",
    date="Tue, 4 Jun 2024 10:15",
    message="Dear Sir or Madam,\n\nplease sign the attached contract.\n\nJane",
)


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text().replace("\x00", "") for page in PdfReader(io.BytesIO(pdf)).pages]


def field(text: str, label: str) -> str:
    match = re.search(rf"^{label}:\s*(.*)$", text, re.MULTILINE)
    assert match is not None, f"no {label} line in {text!r}"
    return match.group(1).strip()


def test_cover_shows_every_field_and_the_message() -> None:
    cover = render_cover(FIELDS, other_pages=2)

    assert cover.pages == 1
    [text] = pages_text(cover.pdf)
    assert text.splitlines()[0] == "Fax"
    assert field(text, "From") == "Jane Sender <jane@example.com>"
    assert field(text, "To") == "+49 30 123456"
    assert field(text, "Subject") == "Contract for signature"
    assert field(text, "Date") == "Tue, 4 Jun 2024 10:15"
    assert field(text, "Pages") == "3"  # this page and the two that follow
    # The message comes after the header block, in order.
    message_start = text.index("Dear Sir or Madam,")
    assert message_start > text.index("Pages:")
    assert text[message_start:].split() == FIELDS.message.split()


def test_message_is_below_the_rule() -> None:
    cover = render_cover(FIELDS, other_pages=0)
    document = pdfium.PdfDocument(cover.pdf)
    try:
        image: Image.Image = document[0].render(scale=2).to_pil().convert("L")
    finally:
        document.close()
    px_per_mm = 2 * 72 / 25.4
    # The rule is the one row of ink that spans the text width.
    dark = image.point(lambda v: 255 if v < 128 else 0)
    rule_rows = [
        y
        for y in range(image.height)
        if (box := dark.crop((0, y, image.width, y + 1)).getbbox()) is not None and (box[2] - box[0]) / px_per_mm > 160
    ]
    assert rule_rows, "no rule across the page"
    # The header (title and fields) is above it; the message text below it.
    above = dark.crop((0, 0, image.width, rule_rows[0])).getbbox()
    below = dark.crop((0, rule_rows[-1] + 1, image.width, image.height)).getbbox()
    assert above is not None
    assert below is not None
    assert above[1] / px_per_mm == pytest.approx(MARGIN_MM, abs=1.5)


def test_empty_message_gives_a_header_only_cover() -> None:
    cover = render_cover(CoverFields("a@example.com", "+1 555 0100", "", "today", ""), other_pages=0)
    assert cover.pages == 1
    [text] = pages_text(cover.pdf)
    assert field(text, "Pages") == "1"
    assert field(text, "From") == "a@example.com"


def test_long_message_continues_on_following_pages_and_pages_counts_them() -> None:
    message = "\n".join(f"line {n}" for n in range(1, 121))
    cover = render_cover(CoverFields("a", "b", "c", "d", message), other_pages=3)

    assert cover.pages == 3  # 120 lines: the first page holds fewer than the 46 of a full page
    texts = pages_text(cover.pdf)
    assert len(texts) == 3
    assert field(texts[0], "Pages") == "6"  # 3 cover pages + 3 others
    # No line lost or repeated at a page boundary, and the order is kept.
    found = [int(n) for text in texts for n in re.findall(r"line (\d+)", text)]
    assert found == list(range(1, 121))
    # Continuation pages carry only the message, on the full page height the header took on page 1.
    assert "Pages:" not in texts[1]
    on_page = [len(re.findall(r"line \d+", text)) for text in texts]
    assert on_page[0] < on_page[1]


def test_a_cover_that_fills_exactly_one_page_says_so() -> None:
    # Find the largest message that still fits the first page, then one line more.
    fitting = 0
    for count in range(20, 60):
        message = "\n".join(f"line {n}" for n in range(count))
        if render_cover(CoverFields("a", "b", "c", "d", message), other_pages=0).pages > 1:
            fitting = count - 1
            break
    assert fitting > 20
    one = render_cover(CoverFields("a", "b", "c", "d", "\n".join(f"l{n}" for n in range(fitting))), other_pages=0)
    two = render_cover(CoverFields("a", "b", "c", "d", "\n".join(f"l{n}" for n in range(fitting + 1))), other_pages=0)
    assert (one.pages, two.pages) == (1, 2)
    assert field(pages_text(one.pdf)[0], "Pages") == "1"
    assert field(pages_text(two.pdf)[0], "Pages") == "2"


def test_page_limit_counts_the_whole_fax() -> None:
    message = "\n".join(f"line {n}" for n in range(200))  # about 5 cover pages
    with pytest.raises(PageLimitExceeded) as caught:
        render_cover(CoverFields("a", "b", "c", "d", message), other_pages=47, max_pages=50)
    assert caught.value.at_least == 47 + 4  # refused as soon as the 4th cover page was needed

    with pytest.raises(PageLimitExceeded) as caught:
        render_cover(FIELDS, other_pages=50, max_pages=50)  # no room even for the cover itself
    assert caught.value.at_least == 51

    assert render_cover(FIELDS, other_pages=49, max_pages=50).pages == 1


def test_header_values_are_one_line_and_long_ones_are_cut() -> None:
    subject = "Re: " * 500 + "the real subject"
    cover = render_cover(
        CoverFields("Jane\r\n\tSender <jane@example.com>", "+49 30 123456", subject, "today\x00", "body"),
        other_pages=0,
    )
    [text] = pages_text(cover.pdf)
    assert field(text, "From") == "Jane Sender <jane@example.com>"
    assert field(text, "Date") == "today"
    shown = "".join(text[text.index("Subject:") + len("Subject:") : text.index("Date:")].split())
    assert shown.endswith("…")
    assert len(shown) < MAX_FIELD_CHARS
    assert "body" in text


def test_letter_paper() -> None:
    cover = render_cover(FIELDS, other_pages=0, paper="letter")
    box = PdfReader(io.BytesIO(cover.pdf)).pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((612, 792), abs=0.5)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="other_pages"):
        render_cover(FIELDS, other_pages=-1)
    with pytest.raises(ValueError, match="paper"):
        render_cover(FIELDS, other_pages=0, paper="a3")  # type: ignore[arg-type]


def test_cover_message_is_typeset_like_render_text() -> None:
    # The same text in the same fonts and the same wrapping: the message lines match render_text's lines.
    message = " ".join(f"word{n}" for n in range(300))
    cover_lines = pages_text(render_cover(CoverFields("a", "b", "c", "d", message), other_pages=0).pdf)
    text_lines = pages_text(render_text(message).pdf)
    assert cover_lines[0].splitlines()[-len(text_lines[0].splitlines()) :] == text_lines[0].splitlines()


_has_cjk = find_unicode_font() is not None and fonts.find_font(UnicodeScript.HAN, "東", lang="ja") is not None
_has_arabic = find_unicode_font() is not None and fonts.find_font(UnicodeScript.ARABIC, "ع") is not None


@pytest.mark.skipif(not (_has_cjk and _has_arabic), reason="needs fonts-noto-cjk and fonts-noto-core")
def test_non_latin_subject_sender_and_message() -> None:
    fields = CoverFields(
        sender="山田太郎 <taro@example.jp>",
        recipient="+81 3 1234 5678",
        subject="見積書の送付 / عرض سعر",
        date="2024年6月4日",
        message="山田様\n\nいつもお世話になっております。\n\nمع أطيب التحيات",
    )
    cover = render_cover(fields, other_pages=1)

    [text] = pages_text(cover.pdf)
    assert "?" not in text
    assert field(text, "From") == "山田太郎 <taro@example.jp>"
    assert field(text, "Date") == "2024年6月4日"
    assert field(text, "Pages") == "2"
    assert "見積書の送付" in field(text, "Subject")
    assert "いつもお世話になっております。" in text
    resources: Any = PdfReader(io.BytesIO(cover.pdf)).pages[0]["/Resources"].get_object()
    names = {str(font.get_object()["/BaseFont"]) for font in resources["/Font"].get_object().values()}
    assert any("CJKJP" in name for name in names)
    assert any("Arabic" in name for name in names)
    assert "/Helvetica-Bold" in names  # the labels
