"""Find a font for every script a mail is written in, and decide which font prints which character.

Fonts come from the system, not from this package: Debian's ``fonts-dejavu-core`` (Latin, Greek, Cyrillic),
``fonts-noto-core`` (Arabic, Hebrew, Thai, Indic and most other scripts, one file per script) and
``fonts-noto-cjk`` (Chinese, Japanese, Korean, one TrueType collection). Each lookup tries the file paths
Debian/Ubuntu, Fedora and Arch use, then asks fontconfig (``fc-match``) for a font supporting the
script's language (or the character itself), and remembers the answer for the life of the process:
starting ``fc-match`` costs more than typesetting a short mail.

A script without a font is not an error: its characters print as "?" (never as invisible boxes) and a
warning is logged once per script, so an administrator learns which font package is missing.

The Unicode script of a character comes from fpdf2's table of Unicode's Scripts.txt (``fpdf.unicode_script``),
the same table fpdf2's text shaping uses to split runs.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fontTools.ttLib import TTFont  # type: ignore[import-untyped]  # comes with fpdf2, has no type information
from fpdf.unicode_script import UnicodeScript, get_unicode_script

log = logging.getLogger(__name__)

FONT_SUFFIXES: Final = (".ttf", ".otf", ".ttc", ".otc")

# Scripts the base font (DejaVu Sans) is meant for. Characters of every other script get that script's own
# font first: DejaVu has basic Arabic and Hebrew, but Noto's are designed for them (better joining, marks).
BASE_SCRIPTS: Final = frozenset(
    {
        UnicodeScript.COMMON,
        UnicodeScript.INHERITED,
        UnicodeScript.LATIN,
        UnicodeScript.GREEK,
        UnicodeScript.CYRILLIC,
        UnicodeScript.ARMENIAN,
        UnicodeScript.GEORGIAN,
    }
)
# Scripts set without shaping when the base font has them: one glyph per character, left to right.
SIMPLE_SCRIPTS: Final = BASE_SCRIPTS | {
    UnicodeScript.HAN,
    UnicodeScript.HIRAGANA,
    UnicodeScript.KATAKANA,
    UnicodeScript.HANGUL,
    UnicodeScript.BOPOMOFO,
}
_CJK_SCRIPTS: Final = frozenset(
    {
        UnicodeScript.HAN,
        UnicodeScript.HIRAGANA,
        UnicodeScript.KATAKANA,
        UnicodeScript.HANGUL,
        UnicodeScript.BOPOMOFO,
    }
)

# Where distributions install fonts, by package layout.
_NOTO_DIRS: Final = (
    "/usr/share/fonts/truetype/noto",  # Debian, Ubuntu: fonts-noto-core
    "/usr/share/fonts/noto",  # Arch: noto-fonts
    "/usr/share/fonts/google-noto",  # older Fedora
    "/usr/share/fonts/google-noto-sans-{slug}-fonts",  # Fedora 36+: one package per script
    "/usr/share/fonts/google-noto-vf",
    "/usr/local/share/fonts",
)
_CJK_FILES: Final = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian, Ubuntu: fonts-noto-cjk
    "/usr/share/fonts/google-noto-sans-cjk-fonts/NotoSansCJK-Regular.ttc",  # Fedora 38+
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # older Fedora
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch: noto-fonts-cjk
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
)
# Other CJK fonts Debian packages, each covering one language well: (path, languages).
_CJK_OTHER: Final = (
    ("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf", ("ja",)),  # fonts-ipafont-gothic
    ("/usr/share/fonts/truetype/fonts-japanese-gothic.ttf", ("ja",)),
    ("/usr/share/fonts/truetype/nanum/NanumGothic.ttf", ("ko",)),  # fonts-nanum
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", ("zh-cn", "zh-tw", "ja", "ko")),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", ("zh-cn", "zh-tw", "ja", "ko")),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", ("zh-cn", "zh-tw", "ja", "ko")),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", ("zh-tw", "zh-cn")),
)
# The face of Noto Sans CJK to use for each language: the collection orders them JP, KR, SC, TC, HK, but
# the name is checked rather than trusting the order.
_CJK_FACE_NAMES: Final = {"ja": "CJK JP", "ko": "CJK KR", "zh-cn": "CJK SC", "zh-tw": "CJK TC"}
# Unicode-script fonts that are not named after their script (Noto file stem, Fedora package slug).
_NOTO_NAMES: Final = {
    UnicodeScript.ARABIC: (("SansArabic", "arabic"), ("NaskhArabic", "naskh-arabic"), ("KufiArabic", "kufi-arabic")),
    UnicodeScript.HEBREW: (("SansHebrew", "hebrew"), ("RashiHebrew", "rashi-hebrew"), ("SerifHebrew", "hebrew")),
    UnicodeScript.NKO: (("SansNKo", "nko"),),
    UnicodeScript.PHAGS_PA: (("SansPhagsPa", "phags-pa"),),
}
# fontconfig languages for the fc-match fallback; other scripts are matched by the character itself.
_FC_LANGS: Final = {
    UnicodeScript.ARABIC: "ar",
    UnicodeScript.HEBREW: "he",
    UnicodeScript.THAI: "th",
    UnicodeScript.LAO: "lo",
    UnicodeScript.KHMER: "km",
    UnicodeScript.MYANMAR: "my",
    UnicodeScript.DEVANAGARI: "hi",
    UnicodeScript.BENGALI: "bn",
    UnicodeScript.GURMUKHI: "pa",
    UnicodeScript.GUJARATI: "gu",
    UnicodeScript.ORIYA: "or",
    UnicodeScript.TAMIL: "ta",
    UnicodeScript.TELUGU: "te",
    UnicodeScript.KANNADA: "kn",
    UnicodeScript.MALAYALAM: "ml",
    UnicodeScript.SINHALA: "si",
    UnicodeScript.TIBETAN: "bo",
    UnicodeScript.ETHIOPIC: "am",
    UnicodeScript.ARMENIAN: "hy",
    UnicodeScript.GEORGIAN: "ka",
    UnicodeScript.SYRIAC: "syr",
    UnicodeScript.THAANA: "dv",
    UnicodeScript.MONGOLIAN: "mn-cn",
}
# A common letter of each major script, to choose its font by.
_TYPICAL: Final = {
    UnicodeScript.ARABIC: "\u0627",  # alef
    UnicodeScript.HEBREW: "\u05d0",  # alef
    UnicodeScript.HAN: "\u4e2d",
    UnicodeScript.HIRAGANA: "\u3042",
    UnicodeScript.KATAKANA: "\u30a2",
    UnicodeScript.HANGUL: "\ud55c",
    UnicodeScript.THAI: "\u0e01",
    UnicodeScript.DEVANAGARI: "\u0915",
}
# Symbol fonts tried for punctuation and symbols (script "Common") the base font lacks: ①, ✓, arrows, math.
_SYMBOL_STEMS: Final = ("NotoSansSymbols-Regular", "NotoSansSymbols2-Regular", "NotoSansMath-Regular")

# The base text font: DejaVu first, it has the widest coverage of the fonts distributions install by default.
_BASE_CANDIDATES: Final = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu: fonts-dejavu-core
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


@dataclass(frozen=True, slots=True)
class FontFace:
    """One face of a font file (``index`` > 0 only inside a TrueType collection) and its characters."""

    path: Path
    index: int
    codepoints: frozenset[int] = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.path}#{self.index}"

    def has(self, ch: str) -> bool:
        return ord(ch) in self.codepoints


@dataclass(frozen=True, slots=True)
class FontPlan:
    """Which face prints each distinct character of a text; characters missing here print as "?"."""

    base: FontFace
    chars: dict[str, FontFace]

    def faces(self) -> list[FontFace]:
        """The faces in use, the base face first (always: it sets the "?" of missing characters)."""
        seen: dict[str, FontFace] = {self.base.key: self.base}
        for face in self.chars.values():
            seen.setdefault(face.key, face)
        return list(seen.values())


# --- finding fonts ----------------------------------------------------------------------------------------


@functools.cache
def base_font() -> FontFace | None:
    """The Unicode text font for Latin, Greek and Cyrillic (DejaVu Sans and friends), or ``None``."""
    for candidate in _BASE_CANDIDATES:
        face = load_face(Path(candidate))
        if face is not None:
            return face
    matched = _fc_match("sans-serif")
    if matched is not None:
        face = load_face(*matched)
        if face is not None:
            return face
    log.warning("no Unicode TrueType font found; install fonts-dejavu-core. Text outside Windows-1252 prints as '?'")
    return None


_found: dict[str, FontFace | None] = {}
_found_lock = threading.Lock()
_warned: set[str] = set()


def find_font(script: UnicodeScript, sample: str, *, lang: str | None = None) -> FontFace | None:
    """A face for ``script`` (``lang`` picks the CJK variant) that has ``sample``; cached per script.

    Returns ``None`` when the system has none; the caller then tries other faces, and prints "?" last.
    """
    cache_key = f"{script.name}:{lang or ''}"
    if cache_key not in _found:
        with _found_lock:  # one search per script, even when several conversions start at once
            if cache_key not in _found:
                # Chosen for a common letter of the script, so that a rare first character (an Urdu letter
                # in a mostly Arabic text) does not decide the font for all the others.
                _found[cache_key] = _search(script, _TYPICAL.get(script, sample), lang)
    face = _found[cache_key]
    # The cached face was chosen for another character of the script; it may lack this one.
    return face if face is not None and face.has(sample) else None


def warn_missing(script: UnicodeScript, sample: str) -> None:
    """Log once per script that its characters print as "?"."""
    if script.name in _warned:
        return
    _warned.add(script.name)
    name = unicodedata.name(sample, f"U+{ord(sample):04X}")
    log.warning(
        "no font for %s characters (such as %s) on this system; they print as '?'",
        script.name.title(),
        name,
    )


def _search(script: UnicodeScript, sample: str, lang: str | None) -> FontFace | None:
    if script in _CJK_SCRIPTS:
        return _search_cjk(lang or "zh-cn", sample)
    for path in _script_paths(script):
        face = load_face(path)
        if face is not None and face.has(sample):
            return face
    fc_lang = _FC_LANGS.get(script)
    if fc_lang is not None:
        matched = _fc_match(f"sans-serif:lang={fc_lang}")
        if matched is not None:
            face = load_face(*matched)
            if face is not None and face.has(sample):
                return face
    return _search_char(sample)


def _search_cjk(lang: str, sample: str) -> FontFace | None:
    wanted = _CJK_FACE_NAMES.get(lang, "CJK SC")
    for candidate in _CJK_FILES:
        face = _load_named_face(Path(candidate), wanted)
        if face is not None and face.has(sample):
            return face
    for candidate, langs in _CJK_OTHER:
        if lang in langs:
            face = load_face(Path(candidate))
            if face is not None and face.has(sample):
                return face
    matched = _fc_match(f"sans-serif:lang={lang}")
    if matched is not None:
        face = load_face(*matched)
        if face is not None and face.has(sample):
            return face
    return _search_char(sample)


@functools.cache
def symbol_fonts() -> tuple[FontFace, ...]:
    """Symbol and math fonts, for punctuation and symbols the base font lacks."""
    faces: list[FontFace] = []
    for stem in _SYMBOL_STEMS:
        for directory in _NOTO_DIRS:
            face = load_face(Path(directory.format(slug="symbols")) / f"{stem}.ttf")
            if face is not None:
                faces.append(face)
                break
    return tuple(faces)


@functools.cache
def _search_char(sample: str) -> FontFace | None:
    """Ask fontconfig for any font with this one character (rare scripts, symbols)."""
    matched = _fc_match(f"sans-serif:charset={ord(sample):x}")
    if matched is None:
        return None
    face = load_face(*matched)
    return face if face is not None and face.has(sample) else None


def _script_paths(script: UnicodeScript) -> Iterable[Path]:
    names = _NOTO_NAMES.get(script)
    if names is None:
        camel = "".join(part.title() for part in script.name.split("_"))
        names = ((f"Sans{camel}", script.name.lower().replace("_", "-")),)
    for stem, slug in names:
        for directory in _NOTO_DIRS:
            base = Path(directory.format(slug=slug))
            yield base / f"Noto{stem}-Regular.ttf"
            yield base / f"Noto{stem}-Regular.otf"
            # Fedora ships some scripts as variable fonts only: NotoSansArabic[wdth,wght].ttf
            if base.is_dir():
                yield from sorted(base.glob(f"Noto{stem}[[]*[]].ttf"))


def _fc_match(pattern: str) -> tuple[Path, int] | None:
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        result = subprocess.run(
            [fc_match, "--format=%{file}\n%{index}", pattern],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    lines = result.stdout.splitlines()
    if not lines:
        return None
    path = Path(lines[0].strip())
    try:
        index = int(lines[1]) if len(lines) > 1 and lines[1].strip() else 0
    except ValueError:
        index = 0
    return (path, index) if path.suffix.lower() in FONT_SUFFIXES else None


# --- reading fonts --------------------------------------------------------------------------------------------

_faces: dict[str, FontFace | None] = {}


def load_face(path: Path, index: int = 0) -> FontFace | None:
    """Read a face's character map (cached); ``None`` when the file is missing or unusable."""
    cache_key = f"{path}#{index}"
    if cache_key in _faces:
        return _faces[cache_key]
    face = _read_face(path, index)
    _faces[cache_key] = face
    return face


def _read_face(path: Path, index: int) -> FontFace | None:
    if path.suffix.lower() not in FONT_SUFFIXES or not path.is_file():
        return None
    try:
        # The file is opened here, not by fontTools: when TTFont() fails on a damaged file it leaves the
        # file it opened unclosed (a ResourceWarning).
        with path.open("rb") as file, TTFont(file, lazy=True, fontNumber=index) as tt:
            # Colour bitmap fonts (Noto Color Emoji: CBDT, sbix) have no outlines fpdf2 can embed.
            if "glyf" not in tt and "CFF " not in tt and "CFF2" not in tt:
                return None
            cmap = tt.getBestCmap()
    except Exception:  # any parse failure just means "not this font"
        log.warning("cannot read font %s (face %d)", path, index, exc_info=True)
        return None
    if not cmap:
        return None
    return FontFace(path, index, frozenset(int(cp) for cp in cmap))


def _load_named_face(path: Path, wanted: str) -> FontFace | None:
    """The face of a collection whose full name contains ``wanted`` (e.g. "CJK JP"); face 0 otherwise."""
    index = _face_index(str(path), wanted)
    return None if index is None else load_face(path, index)


@functools.cache
def _face_index(path: str, wanted: str) -> int | None:
    if not Path(path).is_file():
        return None
    if not path.lower().endswith((".ttc", ".otc")):
        return 0
    try:
        for index in range(64):  # collections have a handful of faces; the bound guards a corrupt file
            # TTFont closes the file it is given; one open per face, so nothing leaks when it raises.
            with Path(path).open("rb") as file, TTFont(file, lazy=True, fontNumber=index) as tt:
                if wanted in str(tt["name"].getBestFullName()):
                    return index
    except Exception:  # past the last face fontTools raises; a damaged file ends the search the same way
        pass
    return 0


# --- deciding which face prints which character --------------------------------------------------------------


def cjk_language(chars: Iterable[str]) -> str:
    """Pick the CJK face by the characters a text contains: kana means Japanese, hangul Korean, bopomofo
    Traditional Chinese, else Simplified Chinese.

    The Han characters look different in each (same code point, regional glyph forms), so a Japanese
    address should be set in the Japanese face. Pass distinct characters: this is a Python loop.
    """
    scripts = {get_unicode_script(ch) for ch in chars}
    if scripts & {UnicodeScript.HIRAGANA, UnicodeScript.KATAKANA}:
        return "ja"
    if UnicodeScript.HANGUL in scripts:
        return "ko"
    if UnicodeScript.BOPOMOFO in scripts:
        return "zh-tw"
    return "zh-cn"


# fc-match runs per character for symbols no known font has; a text full of distinct emoji must not start
# hundreds of processes.
MAX_CHAR_SEARCHES: Final = 8


def plan_fonts(text: str, base: FontFace, *, cjk_lang: str | None = None) -> FontPlan:
    """Assign each distinct character of ``text`` a face; characters no face has are left out ("?").

    Order of preference: the script's own font (Noto Sans Arabic for Arabic), else the base font, else a
    face already in use that has it, else a symbol font, else whatever fontconfig finds for it. Combining
    marks and joiners go with the letter before them (an Arabic vowel sign in DejaVu, between letters in
    Noto Sans Arabic, would cut the word in two runs and break the joining).
    """
    chars = [ch for ch in dict.fromkeys(text) if ch not in "\n\f"]
    lang = cjk_lang or cjk_language(chars)
    assigned: dict[str, FontFace] = {}
    used: list[FontFace] = [base]
    searches = 0

    def take(ch: str, face: FontFace) -> None:
        assigned[ch] = face
        if face not in used:
            used.append(face)

    # Letters first, so that shared punctuation ("、" in Japanese) goes to a face already in use.
    deferred: list[str] = []
    for ch in chars:
        script = get_unicode_script(ch)
        if script in BASE_SCRIPTS or script == UnicodeScript.UNKNOWN:
            deferred.append(ch)
            continue
        face = find_font(script, ch, lang=lang if script in _CJK_SCRIPTS else None)
        if face is None and base.has(ch):
            face = base
        if face is None:
            deferred.append(ch)
            continue
        take(ch, face)
    for ch in deferred:
        face = None
        if _attaches(ch):
            host = assigned.get(_host(text, ch), base)
            face = host if host.has(ch) else None
        face = face or _first_with(ch, used) or _first_with(ch, symbol_fonts())
        if face is None and searches < MAX_CHAR_SEARCHES and unicodedata.category(ch)[0] not in ("C", "M"):
            searches += 1
            face = _search_char(ch)
        if face is None:
            if unicodedata.category(ch) not in ("Cf", "Mn"):  # a lone joiner or mark is simply dropped
                warn_missing(get_unicode_script(ch), ch)
            continue
        take(ch, face)
    return FontPlan(base, assigned)


_TATWEEL: Final = "\u0640"


def _attaches(ch: str) -> bool:
    """Marks, joiners and the Arabic tatweel belong to the run of the letter before them."""
    return unicodedata.category(ch)[0] == "M" or ch in ("\u200c", "\u200d", _TATWEEL)


def _host(text: str, mark: str) -> str:
    """The letter before the first occurrence of ``mark`` (skipping other marks); "" when none."""
    index = text.find(mark) - 1
    while index >= 0 and _attaches(text[index]):
        index -= 1
    return text[index] if index >= 0 else ""


def _first_with(ch: str, faces: Iterable[FontFace]) -> FontFace | None:
    return next((face for face in faces if face.has(ch)), None)


def needs_shaping(ch: str) -> bool:
    """True for characters that harfbuzz must set: right-to-left, joining, or combining with a base."""
    if unicodedata.bidirectional(ch) in ("R", "AL", "AN"):
        return True
    if unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return True
    return get_unicode_script(ch) not in SIMPLE_SCRIPTS
