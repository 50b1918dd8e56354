"""Decode the bytes of a text part when its declared charset may be missing, unknown or wrong.

Mail from the wild lies about its charset in a few recurring ways, and each needs a different answer:

* ``us-ascii`` or ``iso-8859-1`` declared, UTF-8 sent (mail programs that label by habit). Latin-1 decodes
  any bytes, so "it decoded" proves nothing; valid UTF-8 with multi-byte sequences is, in practice, never
  an accident, so it wins over a single-byte declaration.
* ``utf-8`` declared, Windows-1252 sent: strict UTF-8 fails, and a detector takes over.
* Legacy names that mean a Microsoft superset in practice: ``gb2312`` bodies carry GBK characters,
  ``shift_jis`` carries NEC/IBM extensions (①, ㈱), ``ks_c_5601-1987`` is really code page 949,
  ``iso-8859-1`` and ``us-ascii`` carry Windows-1252 punctuation (€, curly quotes). Browsers decode these
  labels as the superset (WHATWG Encoding Standard); so do we.
* Unknown names (``x-unknown``, ``unicode``, typos): treated as "not declared".

charset-normalizer is only asked when the declaration failed, and only about the encodings mail actually
uses: on short texts its unrestricted guess is often exotic (a few German words come out as cp1006).
"""

from __future__ import annotations

import codecs
import logging
import re
from typing import Final

from charset_normalizer import from_bytes

log = logging.getLogger(__name__)

# Labels whose real-world content is a superset encoding; decoding with the superset never loses text that
# the strict label would have decoded, and rescues the extensions.
_SUPERSETS: Final[dict[str, str]] = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",  # Python's name for ks_c_5601-1987 as well
    "big5": "big5hkscs",
    "iso2022_jp": "iso2022_jp_ext",  # adds half-width katakana, which Japanese mail programs send
}
# Names Python does not know, seen in mail headers (WHATWG aliases and Microsoft spellings).
_ALIASES: Final[dict[str, str]] = {
    "windows-31j": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "iso-8859-8-i": "iso8859_8",
    "x-gbk": "gb18030",
    "x-euc-jp": "euc_jp",
    "x-user-defined": "cp1252",
}
# Encodings that are not ASCII-compatible: their bytes must be decoded with them or not at all, and
# "valid UTF-8" says nothing about them (ISO-2022 and UTF-7 are pure 7-bit ASCII bytes).
_NOT_ASCII_COMPATIBLE: Final = re.compile(r"^(utf[-_]?(16|32)|iso2022|utf[-_]?7|hz)")
# Double-byte East Asian encodings. Their strict decoding is a real test (lead and trail bytes must pair
# up), so a declaration that passes it is trusted over "also valid UTF-8", which a few EUC characters can
# be by accident. Single-byte declarations get no such trust: they decode anything.
_MULTIBYTE: Final = frozenset(
    {
        "gb2312",
        "gbk",
        "gb18030",
        "shift_jis",
        "cp932",
        "shift_jis_2004",
        "shift_jisx0213",
        "euc_jp",
        "euc_jis_2004",
        "euc_jisx0213",
        "euc_kr",
        "cp949",
        "johab",
        "big5",
        "big5hkscs",
        "cp950",
    }
)
# Candidates for the detector, in order of preference when it scores several equally (short texts): the
# order is roughly how common each is in mail.
_DETECT_CANDIDATES: Final = (
    "cp1252",
    "gb18030",
    "cp932",
    "cp949",
    "big5",
    "euc_jp",
    "iso2022_jp",
    "cp1251",
    "koi8_r",
    "koi8_u",
    "cp1250",
    "iso8859_2",
    "iso8859_15",
    "cp1253",
    "iso8859_7",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp874",
    "cp866",
)
_ESCAPE_SEQUENCE: Final = re.compile(rb"\x1b[$(][@ABDJ]")  # ISO-2022-JP designations
# C1 controls never appear in real text: a single-byte decode that produces them used the wrong table.
_C1_CONTROLS: Final = re.compile("[\x80-\x9f]")


def decode_text(payload: bytes, declared: str | None) -> str:
    """Decode a text part's bytes into a string; never raises.

    Order: a byte-order mark; the declared charset when it is not ASCII-compatible (UTF-16, ISO-2022-JP);
    plain ASCII as is; a declared East Asian double-byte charset (or its superset) that decodes strictly;
    UTF-8 when the bytes are valid UTF-8; a declared single-byte charset (or its superset) that decodes
    strictly without C1 controls; charset-normalizer's best guess among the encodings mail uses; and
    finally the declared charset (or Windows-1252) with replacement characters.
    """
    if payload.startswith(codecs.BOM_UTF8):
        return payload[len(codecs.BOM_UTF8) :].decode("utf-8", "replace")
    if payload.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return payload.decode("utf-32", "replace")
    if payload.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return payload.decode("utf-16", "replace")

    encoding = _lookup(declared)
    if encoding is not None and _NOT_ASCII_COMPATIBLE.match(encoding):
        text = _strict(payload, _SUPERSETS.get(encoding, encoding)) or _strict(payload, encoding)
        if text is not None:
            return text
        encoding = None  # the declaration is wrong; the bytes decide below

    if payload.isascii():
        if _ESCAPE_SEQUENCE.search(payload):
            # Undeclared (or mislabelled) ISO-2022-JP: 7-bit, so it looks like ASCII with escapes.
            text = _strict(payload, "iso2022_jp_ext") or _strict(payload, "iso2022_jp_2")
            if text is not None:
                return text
        return payload.decode("ascii")

    declared_first = encoding in _MULTIBYTE
    for attempt in ("declared", "utf-8") if declared_first else ("utf-8", "declared"):
        if attempt == "utf-8":
            text = _strict(payload, "utf-8")
            if text is not None:
                return text
        elif encoding is not None and encoding not in ("utf-8", "ascii"):
            for candidate in (_SUPERSETS.get(encoding, encoding), encoding):
                text = _strict(payload, candidate)
                if text is not None and _plausible(text):
                    return text

    guess = _detect(payload)
    if guess is not None:
        return payload.decode(guess, "replace")
    fallback = _SUPERSETS.get(encoding, encoding) if encoding not in (None, "utf-8") else "cp1252"
    try:
        return payload.decode(fallback or "cp1252", "replace")
    except LookupError:  # pragma: no cover - every name here came from codecs.lookup
        return payload.decode("latin-1")


def _lookup(declared: str | None) -> str | None:
    """The codec name for a declared charset, or ``None`` when it is absent or unknown to Python."""
    if not declared:
        return None
    label = declared.strip().strip("\"'").lower()
    label = _ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        log.info("unknown charset %r; detecting it from the bytes", declared)
        return None


def _strict(payload: bytes, encoding: str) -> str | None:
    try:
        return payload.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _plausible(text: str) -> bool:
    return _C1_CONTROLS.search(text) is None


def _detect(payload: bytes) -> str | None:
    """charset-normalizer's guess among mail encodings, ties broken by how common the encoding is."""
    try:
        results = list(from_bytes(payload, cp_isolation=list(_DETECT_CANDIDATES)))
    except Exception:  # a detector bug must not lose the mail; the caller falls back to replacement
        log.warning("charset detection failed", exc_info=True)
        return None
    if not results:
        return None
    least = min(result.chaos for result in results)
    tied = {result.encoding for result in results if result.chaos <= least + 0.01}
    for encoding in _DETECT_CANDIDATES:
        if encoding in tied:
            return encoding
    return str(results[0].encoding)
