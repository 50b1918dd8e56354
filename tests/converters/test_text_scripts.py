"""Text in every script: render_text with the system's fonts, and decode_text for mislabelled charsets.

What a fax recipient sees is checked two ways: the text extracted back from the PDF (pypdf) shows that the
right characters were set (and no "?" replaced them); a rendering of the page (pypdfium2) shows there is
ink where the text should be, right-aligned for Arabic and Hebrew, and joined for Arabic.

Fonts come from the system (fonts-dejavu-core, fonts-noto-core, fonts-noto-cjk on Debian); a test that
needs a font the machine lacks is skipped, naming the package.
"""

from __future__ import annotations

import io
import logging
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pypdfium2 as pdfium  # type: ignore[import-untyped]  # no type information
import pytest
from fpdf.unicode_script import UnicodeScript
from PIL import Image
from pypdf import PdfReader

from bridge.converters import fonts
from bridge.converters import text as text_module
from bridge.converters.charset import decode_text
from bridge.converters.text import (
    LINE_HEIGHT_MM,
    MARGIN_MM,
    PageLimitExceeded,
    Typesetter,
    find_unicode_font,
    prepare_text,
    render_text,
)

A4_MM = (210.0, 297.0)
SCALE = 2.0  # pixels per PDF point: 144 dpi
PX_PER_MM = SCALE * 72 / 25.4

GERMAN = "Sehr geehrte Frau Müller, anbei die Unterlagen."
JAPANESE = "東京都千代田区丸の内一丁目一番一号"
CHINESE = "北京市朝阳区建国门外大街一号"
KOREAN = "서울특별시 중구 세종대로 110"
ARABIC = "مرحبا بالعالم وشكرا جزيلا"
HEBREW = "שלום עולם ותודה רבה"


def _has_face(script: UnicodeScript, sample: str, package: str, lang: str | None = None) -> pytest.MarkDecorator:
    base = find_unicode_font()
    found = base is not None and fonts.find_font(script, sample, lang=lang) is not None
    return pytest.mark.skipif(not found, reason=f"no font for {script.name.title()}; install {package}")


needs_dejavu = pytest.mark.skipif(find_unicode_font() is None, reason="no Unicode font; install fonts-dejavu-core")
needs_cjk = _has_face(UnicodeScript.HAN, "東", "fonts-noto-cjk", lang="ja")
needs_arabic = _has_face(UnicodeScript.ARABIC, "م", "fonts-noto-core")
needs_hebrew = _has_face(UnicodeScript.HEBREW, "ש", "fonts-noto-core")


# --- helpers ----------------------------------------------------------------------------------------------


def extract(pdf: bytes, page: int = 0) -> str:
    # pypdf reads fpdf2's CID-keyed CFF subsets (Noto CJK) with a NUL before each character; poppler does
    # not. The NULs are pypdf's, not in the document, so they are removed before comparing.
    return PdfReader(io.BytesIO(pdf)).pages[page].extract_text().replace("\x00", "")


def letters(text: str) -> Counter[str]:
    """The characters of a text, whitespace aside, in any order.

    pypdf extracts a right-to-left run in visual order and guesses spaces and line ends from positions,
    so words of Arabic and Hebrew may come back reordered, and a lam-alef ligature with its two letters
    swapped. Counting characters still proves that every one was set and none became "?".
    """
    return Counter("".join(text.split()))


def page_count(pdf: bytes) -> int:
    return len(PdfReader(io.BytesIO(pdf)).pages)


def font_names(pdf: bytes, page: int = 0) -> set[str]:
    resources: Any = PdfReader(io.BytesIO(pdf)).pages[page]["/Resources"].get_object()
    return {str(font.get_object()["/BaseFont"]) for font in resources["/Font"].get_object().values()}


def render(pdf: bytes, page: int = 0) -> Image.Image:
    document = pdfium.PdfDocument(pdf)
    try:
        image: Image.Image = document[page].render(scale=SCALE).to_pil().convert("L")
        return image
    finally:
        document.close()


def ink(image: Image.Image, box_mm: tuple[float, float, float, float] | None = None) -> int:
    """Dark pixels, in the whole page or in a box given in millimetres (left, top, right, bottom)."""
    if box_mm is not None:
        left, top, right, bottom = (round(v * PX_PER_MM) for v in box_mm)
        image = image.crop((left, top, right, bottom))
    return sum(image.point(lambda v: 255 if v < 128 else 0).histogram()[255:])


def ink_box_mm(image: Image.Image) -> tuple[float, float, float, float]:
    bbox = image.point(lambda v: 255 if v < 128 else 0).getbbox()
    assert bbox is not None, "the page is blank"
    return (bbox[0] / PX_PER_MM, bbox[1] / PX_PER_MM, bbox[2] / PX_PER_MM, bbox[3] / PX_PER_MM)


def first_line_box() -> tuple[float, float, float, float]:
    return (0.0, MARGIN_MM - 1, A4_MM[0], MARGIN_MM + LINE_HEIGHT_MM)


@pytest.fixture
def no_fonts_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A system with the base font only: every per-script lookup, symbol font and fc-match finds nothing."""
    monkeypatch.setattr(fonts, "find_font", lambda script, sample, lang=None: None)
    monkeypatch.setattr(fonts, "_search_char", lambda sample: None)
    monkeypatch.setattr(fonts, "symbol_fonts", tuple)
    monkeypatch.setattr(fonts, "_warned", set())


# --- Latin, Cyrillic, Greek: text extracted back -------------------------------------------------------


def test_windows_1252_text_stays_on_the_helvetica_fast_path() -> None:
    body = "Grüße aus Köln – “quoted” €5 … naïve façade"
    rendered = render_text(body)
    assert extract(rendered.pdf).strip() == body
    assert font_names(rendered.pdf) == {"/Helvetica"}


@needs_dejavu
def test_cyrillic_greek_and_central_european_text_is_extracted_back() -> None:
    body = "Привет, мир! Ελληνικά γράμματα. Zażółć gęślą jaźń. Příliš žluťoučký kůň."
    rendered = render_text(body)
    assert extract(rendered.pdf).strip() == body
    # Simple scripts stay on the unshaped path: one embedded font, DejaVu.
    names = font_names(rendered.pdf)
    assert len(names) == 1
    assert names.pop().split("+")[-1].startswith("DejaVuSans")


# --- CJK ------------------------------------------------------------------------------------------------


@needs_cjk
@pytest.mark.parametrize(
    ("body", "face"),
    [(JAPANESE + "です。", "CJKJP"), (CHINESE + "。", "CJKSC"), (KOREAN + "입니다.", "CJKKR")],
    ids=["japanese", "chinese", "korean"],
)
def test_cjk_text_is_set_in_the_right_face_with_ink_and_no_question_marks(body: str, face: str) -> None:
    rendered = render_text(body)

    extracted = extract(rendered.pdf)
    assert "".join(extracted.split()) == "".join(body.split())
    assert "?" not in extracted
    assert any(face in name for name in font_names(rendered.pdf)), font_names(rendered.pdf)
    # Ink on the first line, much more of it than a line of as many "?" would make: real glyphs, not
    # replacement characters and not empty boxes.
    page = render(rendered.pdf)
    cjk_ink = ink(page, first_line_box())
    question_ink = ink(render(render_text("?" * len(body)).pdf), first_line_box())
    assert cjk_ink > 1.5 * question_ink > 0
    assert ink(page) == cjk_ink  # nothing drawn anywhere else


@needs_cjk
def test_latin_and_cjk_mix_in_one_line() -> None:
    body = f"Frau Müller: 〒100-0005 {JAPANESE}, Tel. 03-1234"
    rendered = render_text(body)

    extracted = extract(rendered.pdf)
    assert len(extracted.strip().splitlines()) == 1
    assert "Müller" in extracted
    assert JAPANESE in extracted
    assert "〒100-0005" in extracted
    assert "?" not in extracted
    names = font_names(rendered.pdf)
    assert any("DejaVu" in name for name in names)
    assert any("CJK" in name for name in names)


@needs_cjk
def test_long_cjk_text_wraps_between_characters_and_breaks_pages_without_losing_any() -> None:
    sentence = "「東京都千代田区丸の内」にある事務所へ、来週の会議の資料を送付いたします。"
    body = sentence * 150  # one paragraph without a single space
    rendered = render_text(body, max_pages=10)

    assert rendered.pages == page_count(rendered.pdf) > 1
    extracted = "".join(extract(rendered.pdf, n) for n in range(rendered.pages))
    assert "".join(extracted.split()) == body
    lines = [line for n in range(rendered.pages) for line in extract(rendered.pdf, n).splitlines()]
    assert len(lines) > 100
    # Japanese line-breaking rules: no line starts with closing punctuation or ends with an opening bracket.
    assert not [line for line in lines if line.startswith(("、", "。", "」"))]
    assert not [line for line in lines if line.endswith("「")]
    # Every line stays inside the margins.
    for n in range(rendered.pages):
        left, _, right, bottom = ink_box_mm(render(rendered.pdf, n))
        assert left >= MARGIN_MM - 1
        assert right <= A4_MM[0] - MARGIN_MM + 1
        assert bottom <= A4_MM[1] - MARGIN_MM + 1


@needs_cjk
def test_form_feed_starts_a_new_page_in_shaped_text() -> None:
    rendered = render_text(f"{JAPANESE}\f{CHINESE}")
    assert rendered.pages == 2
    assert extract(rendered.pdf, 1).strip() == CHINESE


@needs_cjk
def test_page_limit_is_refused_cheaply_for_a_huge_cjk_text() -> None:
    body = JAPANESE * 100_000  # 1.7 million characters in one paragraph
    with pytest.raises(PageLimitExceeded) as caught:
        render_text(body, max_pages=5)
    assert caught.value.at_least == 6


# --- Arabic and Hebrew -----------------------------------------------------------------------------------


@needs_arabic
def test_arabic_is_right_aligned_and_extracted_back() -> None:
    rendered = render_text(ARABIC)

    extracted = extract(rendered.pdf)
    assert "?" not in extracted
    assert letters(extracted) == letters(ARABIC)
    assert any("NotoSansArabic" in name for name in font_names(rendered.pdf))
    left, _, right, _ = ink_box_mm(render(rendered.pdf))
    assert right == pytest.approx(A4_MM[0] - MARGIN_MM, abs=1.5)  # ends at the right margin
    assert left > 100  # a short line: nothing near the left margin


def components(image: Image.Image) -> int:
    """Connected areas of ink (8-connected): a joined Arabic word without dots is one stroke."""
    dark = image.point(lambda v: 255 if v < 160 else 0)
    bbox = dark.getbbox()
    assert bbox is not None, "the page is blank"
    dark = dark.crop(bbox)
    width, height = dark.size
    pixels = dark.load()
    assert pixels is not None
    seen: set[tuple[int, int]] = set()
    count = 0
    for y in range(height):
        for x in range(width):
            if pixels[x, y] and (x, y) not in seen:
                count += 1
                queue = deque([(x, y)])
                seen.add((x, y))
                while queue:
                    cx, cy = queue.popleft()
                    for nx in (cx - 1, cx, cx + 1):
                        for ny in (cy - 1, cy, cy + 1):
                            if 0 <= nx < width and 0 <= ny < height and pixels[nx, ny] and (nx, ny) not in seen:
                                seen.add((nx, ny))
                                queue.append((nx, ny))
    return count


@needs_arabic
def test_arabic_letters_are_joined() -> None:
    # م ح م د have no dots: joined, "محمد" is a single stroke. The same letters kept apart by zero-width
    # non-joiners are four isolated forms; that is also what unshaped text would look like.
    assert components(render(render_text("محمد").pdf)) == 1
    assert components(render(render_text("م\u200cح\u200cم\u200cد").pdf)) == 4


@needs_arabic
def test_vowel_marks_do_not_break_arabic_joining() -> None:
    # fpdf2 splits runs at every "Inherited" character; text.py glues them back (see _FPDF). Damma, fatha
    # and shadda add separate marks above the one joined stroke.
    plain = render(render_text("محمد").pdf)
    vocalised = render(render_text("مُحَمَّد").pdf)
    assert components(plain) == 1
    assert components(vocalised) == 1 + 4  # the stroke, damma, fatha, shadda, fatha
    plain_box, vocalised_box = ink_box_mm(plain), ink_box_mm(vocalised)
    assert vocalised_box[2] - vocalised_box[0] == pytest.approx(plain_box[2] - plain_box[0], abs=0.5)
    assert vocalised_box[1] < plain_box[1]  # the marks sit above the letters: more ink above the line
    assert ink(vocalised) > ink(plain)


@needs_arabic
def test_long_arabic_paragraph_wraps_right_aligned_keeping_every_word() -> None:
    body = " ".join([ARABIC, "Berlin", "2024"] * 30)
    rendered = render_text(body)

    extracted = extract(rendered.pdf)
    assert letters(extracted) == letters(body)
    page = render(rendered.pdf)
    lines = len(extracted.splitlines())
    assert lines > 3
    # Every full line ends at the right margin; the last (short) line too.
    for index in range(lines):
        top = MARGIN_MM + index * LINE_HEIGHT_MM
        band = page.crop((0, round(top * PX_PER_MM), page.width, round((top + LINE_HEIGHT_MM) * PX_PER_MM))).point(
            lambda v: 255 if v < 128 else 0
        )
        bbox = band.getbbox()
        assert bbox is not None
        assert bbox[2] / PX_PER_MM == pytest.approx(A4_MM[0] - MARGIN_MM, abs=1.5)


@needs_hebrew
def test_hebrew_is_right_aligned_with_points_and_extracted_back() -> None:
    body = "שָׁלוֹם " + HEBREW
    rendered = render_text(body)

    extracted = extract(rendered.pdf)
    assert "?" not in extracted
    assert letters(extracted) == letters(body)
    assert any("NotoSansHebrew" in name for name in font_names(rendered.pdf))
    left, _, right, _ = ink_box_mm(render(rendered.pdf))
    assert right == pytest.approx(A4_MM[0] - MARGIN_MM, abs=1.5)
    assert left > 100


@needs_arabic
@needs_cjk
def test_german_mail_with_a_japanese_address_and_an_arabic_name() -> None:
    body = (
        f"{GERMAN}\n\nBitte senden Sie die Ware an:\n{JAPANESE}\n"
        "z. Hd. Herrn محمد عبد الله (Einkauf)\n\nMit freundlichen Grüßen"
    )
    rendered = render_text(body)

    extracted = extract(rendered.pdf)
    assert "?" not in extracted
    assert "Mit freundlichen Grüßen" in extracted
    assert JAPANESE in extracted
    assert letters(extracted) == letters(body)
    names = " ".join(font_names(rendered.pdf))
    assert "DejaVu" in names
    assert "CJK" in names
    assert "Arabic" in names
    # A left-to-right paragraph with an Arabic name inside stays left-aligned.
    assert ink_box_mm(render(rendered.pdf))[0] == pytest.approx(MARGIN_MM, abs=1)


# --- missing fonts and odd input ------------------------------------------------------------------------


@needs_dejavu
@pytest.mark.usefixtures("no_fonts_found")
def test_script_without_a_font_prints_question_marks_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.converters.fonts"):
        first = render_text("Tokyo 東京 ok")
        second = render_text("Beijing 北京")
    assert extract(first.pdf).strip() == "Tokyo ?? ok"
    assert extract(second.pdf).strip() == "Beijing ??"
    warnings = [r for r in caplog.records if "no font for Han" in r.getMessage()]
    assert len(warnings) == 1


@needs_dejavu
@pytest.mark.usefixtures("no_fonts_found")
def test_arabic_without_noto_falls_back_to_dejavu_still_shaped() -> None:
    rendered = render_text(ARABIC)
    assert "?" not in extract(rendered.pdf)
    names = font_names(rendered.pdf)
    assert len(names) == 1
    assert names.pop().split("+")[-1].startswith("DejaVuSans")
    assert ink_box_mm(render(rendered.pdf))[2] == pytest.approx(A4_MM[0] - MARGIN_MM, abs=1.5)


def test_without_any_truetype_font_everything_is_helvetica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "find_unicode_font", lambda: None)
    rendered = render_text("Grüße 東京 مرحبا")
    assert extract(rendered.pdf).strip() == "Grüße ?? ?????"
    assert font_names(rendered.pdf) == {"/Helvetica"}


@needs_dejavu
def test_control_characters_and_fpdf_placeholders_are_harmless() -> None:
    # pytest turns warnings into errors: none may come from fpdf2 or fontTools here.
    body = "a\x00b\x07c\u200b\u202e\ufeffd\tTab {nb} 😀 שלום مرحبا 東京"
    rendered = render_text(body)
    extracted = extract(rendered.pdf)
    assert "{nb}" in extracted  # fpdf2's page-count alias is not applied to mail text
    assert "abcd" in extracted


@needs_arabic
@needs_cjk
def test_concurrent_shaped_rendering_gives_the_same_pages() -> None:
    # Conversions run in worker threads; the font caches and harfbuzz fonts are shared between them.
    texts = [ARABIC * 5, f"{GERMAN} {JAPANESE} محمد", "שָׁלוֹם " + HEBREW, "Привет " * 20]
    expected = [extract(render_text(text).pdf) for text in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda text: extract(render_text(text).pdf), texts * 2))
    assert results == expected * 2


def test_prepare_text_keeps_joiners_and_form_feeds() -> None:
    assert prepare_text("a\u200cb\u200dc\fd\x00e\u200bf\r\ng  \n\n") == "a\u200cb\u200dc\fdef\ng"


@needs_cjk
def test_letter_paper_works_on_the_shaping_path() -> None:
    rendered = render_text(JAPANESE, paper="letter")
    box = PdfReader(io.BytesIO(rendered.pdf)).pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((612, 792), abs=0.5)


@needs_arabic
def test_shaped_widths_match_what_fpdf_draws() -> None:
    # Line breaking measures with harfbuzz directly; fpdf2 draws with its own shaping. They must agree,
    # or lines would overflow the margin.
    samples = [ARABIC, "مُحَمَّد", HEBREW, GERMAN + " AVAVA ﬁ", "Müller 東京 محمد Привет"]
    with Typesetter(["\n".join(samples)], paper="a4") as setter:
        assert setter.mode == "shaped"
        for sample in samples:
            printable = setter.printable(sample)
            assert setter.width(printable) == pytest.approx(setter.pdf.get_string_width(printable), abs=0.05)


# --- fonts.py ----------------------------------------------------------------------------------------------


@needs_cjk
def test_cjk_faces_are_chosen_by_name_in_the_collection() -> None:
    for lang, name in (("ja", "JP"), ("ko", "KR"), ("zh-cn", "SC")):
        face = fonts.find_font(UnicodeScript.HAN, "東", lang=lang)
        assert face is not None
        from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

        with TTFont(str(face.path), fontNumber=face.index, lazy=True) as tt:
            assert f"CJK {name}" in tt["name"].getBestFullName()


def test_cjk_language_follows_the_characters() -> None:
    assert fonts.cjk_language("東京です") == "ja"
    assert fonts.cjk_language("서울 東京") == "ko"
    assert fonts.cjk_language("北京") == "zh-cn"


@needs_dejavu
def test_fontconfig_is_asked_when_no_known_path_has_the_font(monkeypatch: pytest.MonkeyPatch) -> None:
    if fonts._fc_match("sans-serif") is None:
        pytest.skip("fc-match is not installed (fontconfig)")
    # No known Noto paths: the lookup must go to fc-match, which knows the same fonts under any path.
    monkeypatch.setattr(fonts, "_script_paths", lambda script: iter(()))
    monkeypatch.setattr(fonts, "_found", {})
    face = fonts.find_font(UnicodeScript.THAI, "ก")
    if face is None:
        pytest.skip("no Thai font on this system (fonts-noto-core)")
    assert face.has("ก")


def test_unreadable_font_files_are_skipped(tmp_path: pytest.TempPathFactory) -> None:
    broken = tmp_path / "Broken.ttf"  # type: ignore[operator]
    broken.write_bytes(b"not a font at all")
    assert fonts.load_face(broken) is None
    assert fonts.load_face(tmp_path / "missing.ttf") is None  # type: ignore[operator]


# --- decode_text --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "declared"),
    [
        ("Grüße aus Köln, schöne Grüße", "utf-8", "us-ascii"),
        ("Grüße € – “quoted”", "utf-8", "iso-8859-1"),
        ("Grüße €5 – “quoted”", "cp1252", "utf-8"),
        ("Grüße €5 – “quoted”", "cp1252", "iso-8859-1"),  # latin-1 labels carry Windows-1252
        ("Grüße €5", "cp1252", "us-ascii"),
        ("日本語のテキストです。ｱｲｳｴｵ", "iso2022_jp_ext", "iso-2022-jp"),
        ("日本語①のテキスト㈱です。", "cp932", "shift_jis"),
        ("안녕하세요. 똠방각하 회의는 내일입니다.", "cp949", "ks_c_5601-1987"),
        ("你好，世界。我们明天开会。镕", "gb18030", "gb2312"),
        ("Привет из Москвы, как дела?", "koi8-r", "koi8-r"),
        ("Привет из Москвы, как дела?", "cp1251", "windows-1251"),
        ("Zażółć gęślą jaźń", "iso8859-2", "ISO-8859-2"),
        ("שלום עולם", "utf-8", None),
        ("plain ascii", "ascii", None),
        ("日本語のテキストです。", "iso2022_jp", None),  # undeclared 7-bit ISO-2022-JP
        ("日本語のテキストです。", "iso2022_jp", "us-ascii"),
        ("Grüße", "utf-16", None),  # byte-order mark
        ("Grüße", "utf-8-sig", "iso-8859-1"),
    ],
)
def test_decode_text_reads_real_bytes(text: str, encoding: str, declared: str | None) -> None:
    assert decode_text(text.encode(encoding), declared) == text


def test_decode_text_guesses_an_unknown_or_missing_charset() -> None:
    japanese = "日本語のテキストです。よろしくお願いします。来週の会議の資料を送付いたします。"
    assert decode_text(japanese.encode("cp932"), "x-unknown-charset") == japanese
    assert decode_text(japanese.encode("euc_jp"), None) == japanese
    russian = "Привет из Москвы! Как дела? Мы получили ваше письмо и скоро ответим на него."
    assert decode_text(russian.encode("cp1251"), "bogus-42") == russian
    assert decode_text("Grüße aus Köln".encode("cp1252"), "x-unknown") == "Grüße aus Köln"


def test_decode_text_never_raises_on_garbage() -> None:
    garbage = bytes(range(256)) * 4
    for declared in (None, "utf-8", "us-ascii", "shift_jis", "utf-16", "iso-2022-jp", "nonsense", ""):
        assert isinstance(decode_text(garbage, declared), str)
    assert decode_text(b"", "utf-8") == ""


def test_decode_text_trusts_a_declared_double_byte_charset_over_accidental_utf8() -> None:
    # C3 AC C2 A9 is valid UTF-8 ("ì©") and valid EUC-KR (two Hangul syllables). For a declared
    # double-byte charset the strict decoding is a real test, so the declaration wins; for a single-byte
    # one it is not, and UTF-8 wins.
    data = "ì©".encode()
    assert decode_text(data, "euc-kr") == data.decode("cp949")
    assert decode_text(data, "iso-8859-1") == "ì©"
