"""convert_message: one email in, one fax-ready PDF (or a refusal a sender understands) out.

Inputs are built at test time (EmailMessage, Pillow, fpdf2, pypdf); the corpus tests at the end feed real
files nobody on this project wrote. The checks look at what a person would see: the words on the text
pages, black-and-white image pages the right way up, page counts, and the reasons given for refusals.
"""

from __future__ import annotations

import functools
import io
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import TypeVar

import pypdf
import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageOps
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DictionaryObject, NameObject, NumberObject, PdfObject

import bridge.converters.text as text_module
from bridge.converters import ConversionResult, convert_message
from bridge.converters.image import FAX_FINE_LPI, FAX_WIDTH_PX
from bridge.converters.mime import html_to_text, repair_boundary, sanitize_filename
from bridge.converters.pdf import PAPER_SIZES_PT, pdf_configuration
from bridge.converters.text import find_unicode_font, render_text
from bridge.errors import BridgeError, ConversionError, TooLarge, UnsupportedContent
from tests.corpus import corpus_dir, corpus_file

T = TypeVar("T")
A4 = PAPER_SIZES_PT["a4"]
LETTER = PAPER_SIZES_PT["letter"]
Attachment = tuple[bytes, str, str, str]  # data, maintype, subtype, filename


# --- building inputs ---------------------------------------------------------------------------------


def make_mail(
    body: str | None = "",
    *,
    html: str | None = None,
    attachments: Iterable[Attachment] = (),
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Sender <jane@example.com>"
    msg["To"] = "+4930123456@fax.example.com"
    msg["Subject"] = "test"
    if body is not None:
        msg.set_content(body)
    if html is not None:
        if body is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    for data, maintype, subtype, filename in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def make_pdf(pages: int, label: str = "Quarterly report") -> bytes:
    pdf = FPDF(unit="mm", format="a4")
    pdf.set_font("helvetica", size=14)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.text(20, 30, f"{label} page {number}")
    return bytes(pdf.output())


def encrypt_pdf(data: bytes, *, user_password: str, owner_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def image_bytes(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries no pixels: enough for Pillow to open and check the size."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def read(result: ConversionResult) -> PdfReader:
    reader = PdfReader(io.BytesIO(result.document))
    assert len(reader.pages) == result.pages
    return reader


def page_raster(reader: PdfReader, index: int) -> Image.Image:
    images = reader.pages[index].images
    assert len(images) == 1
    image = images[0].image
    assert image is not None
    return image


def black_bbox(page: Image.Image) -> tuple[int, int, int, int]:
    bbox = ImageOps.invert(page.convert("L")).getbbox()
    assert bbox is not None, "the page is blank"
    return bbox


def dictionary(obj: object) -> DictionaryObject:
    """Resolve a pypdf object (maybe indirect) that must be a dictionary."""
    resolved = obj.get_object() if isinstance(obj, PdfObject) else obj
    assert isinstance(resolved, DictionaryObject)
    return resolved


def words(text: str) -> list[str]:
    return text.split()


# --- text ---------------------------------------------------------------------------------------------


def test_plain_text_body_is_one_readable_a4_page() -> None:
    result = convert_message(make_mail("Dear Sir or Madam,\n\nplease find the contract attached.\n\nJane"))

    assert result.pages == 1
    assert result.notes == ("message text: 1 page",)
    reader = read(result)
    page = reader.pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(A4, abs=0.5)
    assert words(page.extract_text()) == words("Dear Sir or Madam, please find the contract attached. Jane")


def test_windows_1252_punctuation_survives() -> None:
    body = "Grüße aus Köln – “quoted” €5 … naïve façade"
    result = convert_message(make_mail(body))
    assert read(result).pages[0].extract_text().strip() == body


def test_long_text_wraps_and_breaks_pages_without_losing_words() -> None:
    paragraph = " ".join(f"word{n}" for n in range(3000))
    url = "https://example.com/" + "x" * 300
    result = convert_message(make_mail(paragraph + "\n" + url), max_pages=100)

    reader = read(result)
    assert result.pages > 1
    assert result.notes == (f"message text: {result.pages} pages",)
    extracted = " ".join(page.extract_text() for page in reader.pages)
    assert words(extracted)[:3000] == words(paragraph)
    # The over-long URL is broken across lines, not cut off.
    assert "".join(words(extracted)[3000:]) == url


def test_text_layout_keeps_margins() -> None:
    rendered = render_text("W" * 500 + "\n" + "i" * 900, paper="a4", max_pages=5)
    reader = PdfReader(io.BytesIO(rendered.pdf))
    lines = reader.pages[0].extract_text().splitlines()
    assert "".join(lines) == "W" * 500 + "i" * 900
    assert len(lines) > 2


def test_form_feed_starts_a_new_page() -> None:
    result = convert_message(make_mail("first page\fsecond page\f"))
    reader = read(result)
    assert result.pages == 2
    assert reader.pages[1].extract_text().strip() == "second page"


@pytest.mark.skipif(find_unicode_font() is None, reason="no Unicode TrueType font on this system")
def test_non_latin_text_uses_an_embedded_unicode_font() -> None:
    body = "Привет, мир! Ελληνικά. Zażółć gęślą jaźń."
    result = convert_message(make_mail(body + " 日本語"))

    page = read(result).pages[0]
    text = page.extract_text()
    assert body in text
    # DejaVu has no CJK glyphs; a CJK font found on the system prints them, never "?" nor invisible boxes.
    assert "日本語" in text.replace("\x00", "")
    assert "?" not in text
    fonts = dictionary(dictionary(page["/Resources"])["/Font"])
    font = dictionary(next(iter(fonts.values())))
    assert str(font["/Subtype"]) == "/Type0"  # an embedded TrueType subset


def test_without_a_ttf_font_text_falls_back_to_helvetica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "find_unicode_font", lambda: None)
    result = convert_message(make_mail("Grüße, Привет"))
    assert read(result).pages[0].extract_text().strip() == "Grüße, ??????"


def test_odd_characters_raise_no_warnings() -> None:
    # pytest turns warnings into errors: control characters, bidi marks, emoji and tabs must be handled.
    body = "a\x00b\x07c\u200b\u202e\ufeffd\tTab 😀 שלום مرحبا"
    result = convert_message(make_mail(body))
    assert result.pages == 1


def test_html_only_body_is_turned_into_text() -> None:
    html = (
        "<html><head><style>p {color: red}</style><script>alert('x')</script></head>"
        "<body><p>Hello&nbsp;there,</p><p>see the <b>plan</b>:<br>line two</p>"
        "<ul><li>first</li><li>second</li></ul></body></html>"
    )
    result = convert_message(make_mail(None, html=html))

    text = read(result).pages[0].extract_text()
    assert words(text) == words("Hello there, see the plan: line two • first • second")
    assert "alert" not in text
    assert "color" not in text


def test_html_to_text_keeps_preformatted_text() -> None:
    assert html_to_text("<pre>a  b\n  c</pre><p>x   y</p>") == "a  b\n  c\n\nx y"


def test_plain_text_is_preferred_over_its_html_alternative() -> None:
    result = convert_message(make_mail("the plain version", html="<p>the html version</p>"))
    assert result.notes == ("message text: 1 page",)
    assert read(result).pages[0].extract_text().strip() == "the plain version"


def test_whitespace_only_body_is_left_out() -> None:
    result = convert_message(make_mail("  \n\t\n", attachments=[(make_pdf(1), "application", "pdf", "a.pdf")]))
    assert result.notes == ("a.pdf: 1 page",)
    assert result.pages == 1


def test_text_attachment_is_typeset_like_the_body() -> None:
    result = convert_message(
        make_mail("body words", attachments=[(b"notes from the meeting\n", "text", "plain", "notes.txt")])
    )
    reader = read(result)
    assert result.notes == ("message text: 1 page", "notes.txt: 1 page")
    assert reader.pages[1].extract_text().strip() == "notes from the meeting"


def test_legacy_charsets_are_decoded() -> None:
    msg = EmailMessage()
    msg.set_content("Привет из Москвы", charset="koi8-r")
    msg.add_attachment("Grüße".encode("cp1252"), maintype="text", subtype="plain", filename="note.txt")
    msg.get_payload()[1].set_param("charset", "windows-1252")
    result = convert_message(msg.as_bytes())
    reader = read(result)
    if find_unicode_font() is not None:
        assert reader.pages[0].extract_text().strip() == "Привет из Москвы"
    assert reader.pages[1].extract_text().strip() == "Grüße"


def test_empty_text_attachment_is_skipped_with_a_note() -> None:
    result = convert_message(make_mail("body", attachments=[(b"  \n", "text", "plain", "empty.txt")]))
    assert result.notes == ("message text: 1 page", "empty.txt: skipped, the file is empty")


# --- PDFs ---------------------------------------------------------------------------------------------


def test_pdf_attachment_passes_through_as_vector_pages() -> None:
    result = convert_message(make_mail("", attachments=[(make_pdf(3), "application", "pdf", "report.pdf")]))

    reader = read(result)
    assert result.pages == 3
    assert result.notes == ("report.pdf: 3 pages",)
    # Vector text survives (it was not rasterised) and the pages keep their order.
    assert [p.extract_text().strip() for p in reader.pages] == [f"Quarterly report page {n}" for n in (1, 2, 3)]
    assert not reader.pages[0].images


def test_pdf_is_sniffed_whatever_its_content_type() -> None:
    result = convert_message(make_mail("", attachments=[(make_pdf(2), "application", "octet-stream", "scan0001")]))
    assert result.notes == ("scan0001: 2 pages",)


def test_page_count_walks_the_page_tree_not_count() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(1))))
    dictionary(writer.root_object["/Pages"])[NameObject("/Count")] = NumberObject(9_999_999_999)
    out = io.BytesIO()
    writer.write(out)

    result = convert_message(make_mail("", attachments=[(out.getvalue(), "application", "pdf", "liar.pdf")]))
    assert result.pages == 1


def test_encrypted_pdf_with_empty_user_password_is_faxed_unencrypted() -> None:
    data = encrypt_pdf(make_pdf(2), user_password="", owner_password="owner-secret")
    assert PdfReader(io.BytesIO(data)).is_encrypted

    result = convert_message(make_mail("", attachments=[(data, "application", "pdf", "locked.pdf")]))

    reader = read(result)
    assert result.pages == 2
    assert not reader.is_encrypted
    assert reader.pages[1].extract_text().strip() == "Quarterly report page 2"


def test_password_protected_pdf_is_refused() -> None:
    data = encrypt_pdf(make_pdf(1), user_password="secret", owner_password="owner-secret")
    with pytest.raises(ConversionError, match=r"^report\.pdf: the PDF is password-protected$"):
        convert_message(make_mail("hi", attachments=[(data, "application", "pdf", "report.pdf")]))


def test_damaged_pdf_is_refused_naming_it() -> None:
    data = make_pdf(2)[:300]
    with pytest.raises(ConversionError, match=r"^contract\.pdf: the PDF file is damaged$"):
        convert_message(make_mail("hi", attachments=[(data, "application", "pdf", "contract.pdf")]))


def test_pypdf_never_starts_jbig2dec() -> None:
    # pypdf 7 reads the jbig2dec path from a context-local configuration. The legacy module constant
    # pypdf.filters.JBIG2DEC_BINARY must stay untouched: pypdf raises DeprecationError on every
    # PdfReader() when it differs from the default.
    legacy = pypdf.filters.JBIG2DEC_BINARY
    with pypdf.apply_configuration(jbig2dec_binary="/usr/bin/jbig2dec"), pdf_configuration():
        assert pypdf.get_configuration().jbig2dec_binary is None
    assert legacy == pypdf.filters.JBIG2DEC_BINARY
    convert_message(make_mail("", attachments=[(make_pdf(1), "application", "pdf", "a.pdf")]))
    assert legacy == pypdf.filters.JBIG2DEC_BINARY


# --- images -------------------------------------------------------------------------------------------


def test_image_becomes_one_bilevel_fax_resolution_page() -> None:
    img = Image.new("RGB", (1200, 900), "white")
    ImageDraw.Draw(img).rectangle((100, 100, 1100, 300), fill=(40, 40, 40))
    result = convert_message(make_mail("", attachments=[(image_bytes(img, "PNG"), "image", "png", "photo.png")]))

    reader = read(result)
    assert result.notes == ("photo.png: 1 page",)
    page = reader.pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(A4, abs=0.5)
    raster = page_raster(reader, 0)
    assert raster.mode == "1"
    assert raster.size == (FAX_WIDTH_PX, round(297 / 25.4 * FAX_FINE_LPI))
    xobjects = dictionary(dictionary(page["/Resources"])["/XObject"])
    assert str(dictionary(next(iter(xobjects.values())))["/BitsPerComponent"]) == "1"


def test_letter_paper_for_text_and_images() -> None:
    img = image_bytes(Image.new("L", (300, 300), 0), "JPEG")
    result = convert_message(make_mail("hello", attachments=[(img, "image", "jpeg", "a.jpg")]), paper="letter")

    reader = read(result)
    for page in reader.pages:
        assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(LETTER, abs=0.5)
    assert page_raster(reader, 1).size == (FAX_WIDTH_PX, round(11 * FAX_FINE_LPI))


def test_grey_is_thresholded_not_dithered() -> None:
    def black_pixels(grey: int) -> int:
        img = image_bytes(Image.new("L", (400, 400), grey), "PNG")
        result = convert_message(make_mail("", attachments=[(img, "image", "png", "grey.png")]))
        histogram = page_raster(read(result), 0).convert("L").histogram()
        return histogram[0]

    # Dithering would scatter black dots through a mid-grey area; a threshold gives all or nothing.
    assert black_pixels(150) == 0
    page_area = FAX_WIDTH_PX * round(297 / 25.4 * FAX_FINE_LPI)
    assert black_pixels(100) > page_area // 2


def test_exif_orientation_is_applied() -> None:
    # Stored landscape 400 x 200 with its left quarter black; EXIF 6 means "turn 90 degrees clockwise to
    # view", so upright the picture is portrait with a black band across the top.
    stored = Image.new("L", (400, 200), 255)
    ImageDraw.Draw(stored).rectangle((0, 0, 99, 199), fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    x_dpi = FAX_WIDTH_PX / (210 / 25.4)
    top_margin_px = round(5 / 25.4 * FAX_FINE_LPI)

    def band(jpeg: bytes) -> tuple[float, float, int]:
        result = convert_message(make_mail("", attachments=[(jpeg, "image", "jpeg", "phone.jpg")]))
        left, top, right, bottom = black_bbox(page_raster(read(result), 0))
        return (right - left) / x_dpi, (bottom - top) / FAX_FINE_LPI, top  # inches wide, inches tall, top

    width_in, height_in, top = band(image_bytes(stored, "JPEG", exif=exif))
    assert width_in / height_in == pytest.approx(2, rel=0.05)  # a wide band...
    assert abs(top - top_margin_px) <= 2  # ...at the top of the upright picture
    assert height_in == pytest.approx((297 - 10) / 25.4 / 4, rel=0.05)  # a quarter of the page height

    # The same picture without EXIF stays landscape: the band is a tall stripe on the left.
    width_in, height_in, _ = band(image_bytes(stored, "JPEG"))
    assert height_in / width_in == pytest.approx(2, rel=0.05)


def test_transparent_png_is_flattened_onto_white() -> None:
    img = Image.new("RGBA", (300, 300), (0, 0, 0, 0))  # transparent black: the usual way to store "nothing"
    ImageDraw.Draw(img).rectangle((100, 100, 199, 199), fill=(0, 0, 0, 255))
    result = convert_message(make_mail("", attachments=[(image_bytes(img, "PNG"), "image", "png", "logo.png")]))
    left, _, right, _ = black_bbox(page_raster(read(result), 0))
    x_dpi = FAX_WIDTH_PX / (210 / 25.4)
    # Only the opaque square is black: a third of the picture's width.
    assert (right - left) / x_dpi == pytest.approx((210 - 10) / 25.4 / 3, rel=0.05)


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (200, 200), 10_000)  # dark grey in 16 bits; clipping to 8 bits would make it white
    result = convert_message(make_mail("", attachments=[(image_bytes(img, "PNG"), "image", "png", "depth.png")]))
    assert page_raster(read(result), 0).convert("L").histogram()[0] > 0


def test_image_type_is_sniffed_not_taken_from_content_type() -> None:
    jpeg = image_bytes(Image.new("RGB", (50, 50), "black"), "JPEG")
    result = convert_message(make_mail("", attachments=[(jpeg, "application", "pdf", "really-a-jpeg.pdf")]))
    assert result.notes == ("really-a-jpeg.pdf: 1 page",)
    assert page_raster(read(result), 0).mode == "1"


def test_a_gif_named_like_a_jpeg_is_read_as_the_gif_it_is() -> None:
    gif = image_bytes(Image.new("P", (10, 10)), "GIF")
    result = convert_message(make_mail("text", attachments=[(gif, "image", "jpeg", "anim.jpg")]))
    assert result.notes == ("message text: 1 page", "anim.jpg: 1 page")
    assert page_raster(read(result), 1).mode == "1"


def test_an_image_format_that_cannot_be_faxed_refuses_the_fax_naming_it() -> None:
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(100)
    with pytest.raises(ConversionError) as caught:
        convert_message(make_mail("text", attachments=[(heic, "image", "heic", "scan.heic")]))
    assert str(caught.value).startswith("scan.heic: this image format (HEIC")
    assert "cannot be faxed" in str(caught.value)


def test_truncated_png_is_refused_naming_it() -> None:
    png = image_bytes(Image.effect_noise((400, 400), 60).convert("L"), "PNG")
    with pytest.raises(ConversionError, match=r"^scan\.png: the image file is damaged or truncated$"):
        convert_message(make_mail("hi", attachments=[(png[: len(png) // 2], "image", "png", "scan.png")]))


def test_file_declared_as_jpeg_that_is_not_an_image_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"^photo\.jpg: the file is not an image this server can read$"):
        convert_message(make_mail("", attachments=[(b"not a picture at all", "image", "jpeg", "photo.jpg")]))


def test_image_over_the_pixel_cap_is_refused() -> None:
    with pytest.raises(
        ConversionError, match=r"^huge\.png: the image is too large to fax \(56 megapixels; the limit is 50\)$"
    ):
        convert_message(make_mail("", attachments=[(png_header_only(8000, 7000), "image", "png", "huge.png")]))


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow's bomb warning (89 Mpx) and bomb error (179 Mpx)
def test_decompression_bombs_are_refused(side: int) -> None:
    with pytest.raises(ConversionError, match=r"^bomb\.png: the image is too large"):
        convert_message(make_mail("", attachments=[(png_header_only(side, side), "image", "png", "bomb.png")]))


# --- order, skipping, refusing ------------------------------------------------------------------------


def test_body_first_then_attachments_in_order() -> None:
    png = image_bytes(Image.new("L", (100, 100), 0), "PNG")
    raw = make_mail(
        "cover words",
        attachments=[
            (make_pdf(2), "application", "pdf", "report.pdf"),
            (b"BEGIN:VCARD\r\nEND:VCARD\r\n", "text", "vcard", "jane.vcf"),
            (png, "image", "png", "photo.png"),
            (b"last words\n", "text", "plain", "notes.txt"),
        ],
    )
    result = convert_message(raw)

    assert result.notes == (
        "message text: 1 page",
        "report.pdf: 2 pages",
        "jane.vcf: skipped, contact cards are not faxed",
        "photo.png: 1 page",
        "notes.txt: 1 page",
    )
    reader = read(result)
    assert result.pages == 5
    assert reader.pages[0].extract_text().strip() == "cover words"
    assert reader.pages[2].extract_text().strip() == "Quarterly report page 2"
    assert page_raster(reader, 3).mode == "1"
    assert reader.pages[4].extract_text().strip() == "last words"


def test_an_archive_is_refused_and_never_opened() -> None:
    raw = make_mail("see the zip", attachments=[(b"PK\x03\x04", "application", "zip", "archive.zip")])
    with pytest.raises(ConversionError) as caught:
        convert_message(raw)
    assert str(caught.value) == (
        "archive.zip: zip archives cannot be faxed (they are never opened); please attach the documents themselves"
    )
    assert caught.value.notes == ("message text: 1 page", str(caught.value))


def test_only_skipped_parts_is_unsupported() -> None:
    raw = make_mail("", attachments=[(b"BEGIN:VCARD\r\nEND:VCARD\r\n", "text", "vcard", "jane.vcf")])
    with pytest.raises(UnsupportedContent) as caught:
        convert_message(raw)
    assert str(caught.value) == "nothing in this mail can be faxed: jane.vcf (contact cards are not faxed)"


def test_empty_mail_is_unsupported() -> None:
    with pytest.raises(UnsupportedContent, match="the message is empty"):
        convert_message(make_mail(""))


def test_signatures_cards_and_invitations_are_skipped_and_the_fax_goes_ahead() -> None:
    raw = make_mail(
        "see attached",
        attachments=[
            (b"BEGIN:VCARD\r\nEND:VCARD\r\n", "text", "vcard", "jane.vcf"),
            (b"0\x82sig", "application", "pkcs7-signature", "smime.p7s"),
            (b"-----BEGIN PGP SIGNATURE-----\n", "application", "pgp-signature", "signature.asc"),
            (b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "text", "calendar", "invite.ics"),
        ],
    )
    result = convert_message(raw)
    assert result.pages == 1
    assert result.notes == (
        "message text: 1 page",
        "jane.vcf: skipped, contact cards are not faxed",
        "smime.p7s: skipped, digital signatures and keys are not faxed",
        "signature.asc: skipped, digital signatures and keys are not faxed",
        "invite.ics: skipped, calendar invitations are not faxed",
    )


def test_unknown_and_unreadable_attachments_refuse_the_fax_each_named() -> None:
    raw = make_mail(
        "see attached",
        attachments=[
            (make_pdf(1), "application", "pdf", "fine.pdf"),
            (b"\x00\x01binary", "application", "octet-stream", "data.bin"),
            (b"7z\xbc\xaf\x27\x1c", "application", "x-7z-compressed", "photos.7z"),
        ],
    )
    with pytest.raises(ConversionError) as caught:
        convert_message(raw)
    assert str(caught.value) == "2 attachments cannot be faxed: data.bin, photos.7z"
    assert caught.value.notes == (
        "message text: 1 page",
        "fine.pdf: 1 page",
        "data.bin: this kind of attachment cannot be faxed; please send a PDF",
        "photos.7z: archives cannot be faxed (they are never opened); please attach the documents themselves",
    )


def test_inline_logo_of_an_html_body_is_not_faxed() -> None:
    msg = EmailMessage()
    msg.set_content("Best regards, Jane")
    msg.add_alternative('<p>Best regards, Jane</p><img src="cid:logo">', subtype="html")
    _, html_part = msg.iter_parts()
    logo = image_bytes(Image.new("RGB", (40, 20), "blue"), "PNG")
    html_part.add_related(
        logo, maintype="image", subtype="png", cid="<logo>", filename="image001.png", disposition="inline"
    )

    result = convert_message(msg.as_bytes())
    assert result.pages == 1
    assert result.notes == ("message text: 1 page",)


def test_html_body_with_inline_picture_notes_the_skipped_picture() -> None:
    msg = EmailMessage()
    msg.set_content("<p>Signed, Jane</p><img src='cid:logo'>", subtype="html")
    logo = image_bytes(Image.new("RGB", (40, 20), "blue"), "PNG")
    msg.add_related(logo, maintype="image", subtype="png", cid="<logo>", filename="image001.png", disposition="inline")

    result = convert_message(msg.as_bytes())
    assert result.notes == (
        "message text: 1 page",
        "image001.png: skipped, pictures inside the message text are not faxed",
    )


def test_attachment_names_are_sanitised() -> None:
    raw = make_mail("x", attachments=[(b"BEGIN:VCARD", "text", "vcard", "C:\\Users\\jane\\evil\x07 name.vcf")])
    assert convert_message(raw).notes[1] == "evil name.vcf: skipped, contact cards are not faxed"
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert len(sanitize_filename("a" * 500)) == 100


def test_too_many_pages_is_refused_with_the_count() -> None:
    raw = make_mail("cover", attachments=[(make_pdf(119), "application", "pdf", "book.pdf")])
    with pytest.raises(TooLarge) as caught:
        convert_message(raw, max_pages=50)
    assert str(caught.value) == "the fax would have 120 pages; the limit is 50"
    assert convert_message(raw, max_pages=120).pages == 120


def test_too_long_text_is_refused_with_a_lower_bound_of_its_pages() -> None:
    # Layout stops at the limit: the count is "at least", not the 2000-odd pages the whole text would need.
    raw = make_mail("line\n" * 100_000)
    with pytest.raises(TooLarge, match=r"^the fax would have at least 51 pages; the limit is 50$"):
        convert_message(raw)


def test_images_are_not_decoded_when_the_fax_is_too_long() -> None:
    # The PNG is cut short: decoding it would fail. Refused for its length instead, it was never decoded.
    png = image_bytes(Image.effect_noise((400, 400), 60).convert("L"), "PNG")
    broken = png[: len(png) // 2]
    raw = make_mail("", attachments=[(broken, "image", "png", "a.png"), (make_pdf(3), "application", "pdf", "b.pdf")])
    with pytest.raises(TooLarge, match="4 pages; the limit is 3"):
        convert_message(raw, max_pages=3)
    with pytest.raises(ConversionError, match=r"^a\.png: "):
        convert_message(raw, max_pages=4)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="paper"):
        convert_message(make_mail("x"), paper="a3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pages"):
        convert_message(make_mail("x"), max_pages=0)


# --- malformed MIME -----------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    head = b"From: a@example.com\r\nSubject: deep\r\n"
    parts = [b"Content-Type: text/plain\r\n\r\nbottom\r\n"]
    for level in range(depth):
        boundary = b"b%d" % level
        parts.append(
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n"
            + parts[-1] + b"\r\n--" + boundary + b"--\r\n"
        )  # fmt: skip
    return head + parts[-1]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage without headers",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain; charset=bogus-42\r\n'
        b"\r\nhello\r\n--x--\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
        b"Content-Type: application/pdf; name==?utf-8?q?=FF=FE?=\r\nContent-Disposition: attachment; "
        b"filename*=utf-8''%FF%FE%00.pdf\r\n\r\n%PDF-1.4 nothing else",
        b"Subject: =?x-unknown?b?AAAA?=\r\nContent-Type: text/plain\r\n\r\nbody",
        nested(30),
        nested(150),
    ],
)
def test_malformed_mime_never_crashes(raw: bytes) -> None:
    refusal: BridgeError | None = None
    result: ConversionResult | None = None
    try:
        result = convert_message(raw)
    except BridgeError as exc:
        refusal = exc
    if refusal is not None:
        assert isinstance(refusal, ConversionError | UnsupportedContent | TooLarge)
        assert str(refusal)
    else:
        assert result is not None
        assert len(PdfReader(io.BytesIO(result.document)).pages) == result.pages


def test_deep_nesting_is_refused_with_a_reason() -> None:
    with pytest.raises(ConversionError, match="nested more than 100 levels"):
        convert_message(nested(150))
    assert convert_message(nested(30)).pages == 1


def test_unquoted_outlook_express_boundary_is_repaired() -> None:
    raw = (
        b"From: a@example.com\r\nContent-Type: multipart/alternative;\r\n"
        b"\tboundary=----=_NextPart_000_0093_01C81419.EB75E850\r\n\r\n"
        b"------=_NextPart_000_0093_01C81419.EB75E850\r\nContent-Type: text/plain\r\n\r\nHello from OE\r\n"
        b"------=_NextPart_000_0093_01C81419.EB75E850--\r\n"
    )
    assert repair_boundary(raw) is not None
    result = convert_message(raw)
    assert read(result).pages[0].extract_text().strip() == "Hello from OE"


# --- speed and concurrency ----------------------------------------------------------------------------


def test_concurrent_conversions_give_the_same_results() -> None:
    png = image_bytes(Image.new("L", (300, 200), 0), "PNG")
    mails = (
        [make_mail(f"mail number {n} " * 50, attachments=[(png, "image", "png", "p.png")]) for n in range(4)]
        + [make_mail("Привет " * 20)]
        + [make_mail("", attachments=[(make_pdf(2), "application", "pdf", "x.pdf")])]
    )
    expected = [convert_message(raw).notes for raw in mails]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(convert_message, mails * 3))
    assert [r.notes for r in results] == expected * 3


# --- corpus -------------------------------------------------------------------------------------------

PER_FILE_TIMEOUT = 30.0


def run_with_timeout(call: Callable[[], T], label: str) -> T:
    """Run ``call`` in a daemon thread; fail the test (instead of hanging it) after PER_FILE_TIMEOUT."""
    outcome: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True, name=f"convert {label}")
    thread.start()
    thread.join(PER_FILE_TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"{label}: conversion did not finish within {PER_FILE_TIMEOUT:.0f} s")
    if error:
        raise error[0]
    return outcome[0]


def pypdf_page_count(data: bytes) -> int | None:
    """What pypdf itself says, or None when it cannot read the file (with the empty password)."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return None
        return len(reader.pages)
    except Exception:
        return None


def test_corpus_pdfs_convert_with_the_right_page_count_or_are_refused() -> None:
    paths = sorted(p for p in (corpus_dir() / "pdf").rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    assert len(paths) > 50
    counts: Counter[str] = Counter()
    for path in paths:
        data = path.read_bytes()
        raw = make_mail("", attachments=[(data, "application", "pdf", path.name)])
        expected = pypdf_page_count(data)
        refusal: BridgeError | None = None
        result: ConversionResult | None = None
        try:
            result = run_with_timeout(functools.partial(convert_message, raw, max_pages=1000), path.name)
        except (ConversionError, TooLarge) as exc:
            refusal = exc
        if refusal is not None:
            counts["refused"] += 1
            print(f"refused {path.relative_to(corpus_dir())}: {refusal}")
            assert str(refusal).startswith(f"{path.name}: ")
            continue
        counts["converted"] += 1
        assert result is not None
        assert result.pages == expected, path
        assert len(PdfReader(io.BytesIO(result.document)).pages) == expected, path
    print(f"corpus PDFs: {counts['converted']} converted, {counts['refused']} refused, of {len(paths)}")
    # A regression that refuses everything (for example pypdf's DeprecationError trap) must not pass.
    assert counts["converted"] >= 0.8 * len(paths)


def test_corpus_pdf_too_long_for_the_limit_is_refused() -> None:
    book = corpus_file("pdf/py-pdf-sample-files/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf")
    raw = make_mail("", attachments=[(book.read_bytes(), "application", "pdf", book.name)])
    with pytest.raises(TooLarge, match="the fax would have 117 pages; the limit is 50"):
        convert_message(raw)


RUBY_PDF_MAILS = [
    "attachment_pdf.eml",
    "attachment_pdf_lf.eml",
    "attachment_pdf_non_ascii.eml",
    "attachment_pdf_non_ascii_lf.eml",
]


@pytest.mark.parametrize("name", RUBY_PDF_MAILS)
def test_ruby_mail_pdf_fixture_attachment_is_a_truncated_pdf(name: str) -> None:
    # The fixture's attachment is named broken.pdf and really is: 1,026 bytes, cut off inside its first
    # stream, no page tree. A fax without the document the sender attached would be worse than none, so
    # the mail is refused, naming the attachment. CRLF and LF twins must decode to the same bytes.
    path = corpus_file(f"email/ruby-mail/emails/attachment_emails/{name}")
    with pytest.raises(ConversionError, match=r"^broken\.pdf: the PDF file is damaged$"):
        convert_message(path.read_bytes())


def test_ruby_mail_jpeg_fixture_converts() -> None:
    path = corpus_file("email/ruby-mail/emails/attachment_emails/attachment_with_quoted_filename.eml")
    result = convert_message(path.read_bytes())
    assert result.pages >= 1
    assert result.notes == ("Eelanalüüsi päring.jpg: 1 page",)
    assert page_raster(read(result), 0).mode == "1"
