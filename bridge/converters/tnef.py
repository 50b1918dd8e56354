"""Unpack Outlook's ``winmail.dat`` (``application/ms-tnef``): the message text and the attached files.

Parsing is tnefparse's (1.4.0, unmaintained since 2021). What this module adds, because tnefparse does not
(docs/reliability.md, "Archives and TNEF"):

* limits: at most ``MAX_TNEF_FILES`` attachments and ``MAX_TNEF_BYTES`` of file data, checked on the raw
  structure *before* tnefparse reads it and again on what it returns. The raw structure is walked first
  because tnefparse trusts every count in it: a 20-byte property block claiming four billion properties
  keeps it busy for hours, and it copies the rest of the input for every record (quadratic);
* safe file names: no path, no control characters, at most 100 characters (an over-long name loses the
  end of its stem, not its extension: "Quarterly report for the….docx"), never
  empty ("attachment 3"), and unique ("report.pdf", "report (2).pdf"). The names are only shown to people
  and used to guess a file's kind; nothing is ever written to disk under them;
* embedded e-mails and OLE objects, files only linked by reference, empty files and the hidden pictures of
  an HTML body (signature logos) are not returned but listed in ``skipped``;
* tolerance, as Outlook and the Debian ``tnef`` tool are tolerant: a checksum mismatch (tnefparse only logs
  it) and bytes after the last record do not make the file unreadable;
* exact file data: tnefparse drops trailing NUL bytes from files stored as a MAPI property, which damages
  Word and Excel files; those bytes are taken from the raw structure instead.

The message text, in order of preference: the plain-text body; else the HTML body reduced to text (with
``bridge.converters.html.html_to_text`` where that module exists, else the crude reader in ``mime``);
else the compressed RTF body, decompressed here (MS-OXRTFCP; the optional ``compressed_rtf`` package is not
needed). Outlook's RTF body is mostly HTML wrapped in RTF (MS-OXRTFEX): that HTML is unwrapped and goes
through the HTML converter; any other RTF is reduced to text crudely, by dropping control words and hidden
destinations. HTML before RTF because the HTML converter keeps paragraphs, lists and tables, which the crude
RTF reader does not. Outlook mostly sends the message text in the MIME part beside winmail.dat as well, so
this body is a fallback for the caller.

tnefparse logs a warning for every checksum mismatch and for every property it skips; while it runs, those
records are counted and suppressed, and one summary line goes to this module's logger at debug level.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
import struct
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

logger = logging.getLogger(__name__)

MAX_TNEF_FILES: Final = 50
MAX_TNEF_BYTES: Final = 50 * 1024 * 1024
# Records (attributes) in one winmail.dat, embedded messages included. A real one has about 7 per
# attachment plus some 20 for the message; this bounds tnefparse's quadratic copying.
MAX_TNEF_RECORDS: Final = 2000
# Embedded messages inside embedded messages: tnefparse parses them all, recursively.
MAX_TNEF_DEPTH: Final = 8
MAX_NAME_LENGTH: Final = 100
# Decompressed RTF body; longer bodies are cut (the text converter has its own page limit anyway).
MAX_RTF_BYTES: Final = 4 * 1024 * 1024

_SIGNATURE: Final = 0x223E9F78
_HEADER_LENGTH: Final = 6  # signature (4) + legacy key (2)
_MIN_RECORD: Final = 12  # tnefparse stops when fewer bytes than this are left: "garbage at end"
_LVL_ATTACHMENT: Final = 0x02
_ATT_ATTACH_DATA: Final = 0x800F
_ATT_ATTACH_REND_DATA: Final = 0x9002  # starts a new attachment
_ATT_MAPI_PROPS: Final = 0x9003
_ATT_RECIP_TABLE: Final = 0x9004
_ATT_ATTACHMENT: Final = 0x9005  # the attachment's MAPI properties

# MAPI property tags and values (MS-OXPROPS, MS-OXCMSG).
_PR_DISPLAY_NAME: Final = 0x3001
_PR_ATTACH_DATA_OBJ: Final = 0x3701
_PR_ATTACH_METHOD: Final = 0x3705
_PR_ATTACH_LONG_FILENAME: Final = 0x3707
_PR_ATTACHMENT_HIDDEN: Final = 0x7FFE
_ATTACH_BY_VALUE: Final = 1
_ATTACH_BY_REFERENCE: Final = frozenset({2, 3, 4})
_ATTACH_EMBEDDED_MSG: Final = 5
_ATTACH_OLE: Final = 6
_IMESSAGE_SIG: Final = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"

# MAPI property types, with the fixed size tnefparse reads for each (variable-length ones are None).
_FIXED_SIZES: Final = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0007: 8, 0x0006: 8}
_FIXED_SIZES_MORE: Final = {0x0014: 8, 0x0040: 8, 0x0048: 16}
_VARIABLE_TYPES: Final = frozenset({0x001E, 0x001F, 0x000D, 0x0102, 0x0000})
_MV_FLAG: Final = 0x1000
_NAMED_FLAG: Final = 0x8000
# tnefparse logs and skips each property that lies past the end of its block. A truncated block misses some
# (tolerated, as tnefparse tolerates it); thousands are a lie about the count, one log call each.
_MAX_MISSING_PROPERTIES: Final = 1000


@dataclass(frozen=True, slots=True)
class TnefFile:
    """One file from a winmail.dat, under a sanitised name that is unique within it."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TnefContents:
    """What a winmail.dat holds: the message text (or ``None``), the files, and notes on what was left out.

    Each note completes "winmail.dat: skipped, ...", for example "Untitled Attachment: attached e-mails
    cannot be faxed".
    """

    body: str | None
    files: tuple[TnefFile, ...]
    skipped: tuple[str, ...]


class TnefError(Exception):
    """The winmail.dat cannot be unpacked (damaged) or is over a limit; the text is for the sender."""


class _TooManyFiles(TnefError):
    pass


class _TooLarge(TnefError):
    pass


def unpack_tnef(data: bytes) -> TnefContents:
    """Return the message text and the files of a winmail.dat.

    Raises:
        TnefError: not a TNEF stream, damaged beyond reading, more than ``MAX_TNEF_FILES`` attachments or
            ``MAX_TNEF_BYTES`` of file data, or nested too deeply.
    """
    scan = _Scan(records_left=MAX_TNEF_RECORDS)
    _check_structure(data, depth=0, scan=scan)
    from tnefparse import TNEF  # imported here: the rest of the bridge never needs it

    with _quiet_tnefparse() as noise:
        try:
            parsed = TNEF(data, do_checksum=True)
        except MemoryError:
            raise
        except Exception as exc:
            # tnefparse fails with whatever its input provokes: struct.error, ValueError, UnicodeDecodeError,
            # LookupError (unknown code page), AssertionError, UnboundLocalError (attachment records before
            # the first attachment), RecursionError...
            raise TnefError(f"damaged TNEF stream: {exc!r}") from exc
    if noise.checksums or noise.other:
        logger.debug(
            "winmail.dat: ignored %d checksum mismatches and %d other tnefparse warnings",
            noise.checksums,
            noise.other,
        )
    codepage = _codepage(getattr(parsed, "codepage", None))
    files, skipped = _files(parsed.attachments, codepage, scan.data_objects)
    try:
        body = _body(parsed, codepage)
    except Exception:
        # A body that cannot be read must not cost the sender the attachments; the MIME text part beside the
        # winmail.dat usually carries the same words anyway.
        logger.info("winmail.dat: the message text could not be read", exc_info=True)
        body = None
    return TnefContents(body=body, files=tuple(files), skipped=tuple(skipped))


def tnef_refusal_reason(exc: BaseException) -> str:
    """Complete "winmail.dat: ..." for a winmail.dat that cannot be unpacked."""
    if isinstance(exc, _TooManyFiles):
        return f"the winmail.dat file holds too many files (more than {MAX_TNEF_FILES})"
    if isinstance(exc, _TooLarge):
        return f"the winmail.dat file is too large (its files add up to more than {MAX_TNEF_BYTES // (1024 * 1024)} MB)"
    return "the winmail.dat file is damaged"


# --- the raw structure, walked before tnefparse sees it ---------------------------------------------------


@dataclass(slots=True)
class _Scan:
    """State of one walk over a winmail.dat, embedded messages included."""

    records_left: int
    # Attachment number (0-based, as in tnefparse's list) -> the exact bytes of its PR_ATTACH_DATA_OBJ.
    # tnefparse strips trailing NULs from binary MAPI values, which truncates a Word or Excel file stored
    # there (corpus MAPI_ATTACH_DATA_OBJ: a CFBF .doc loses 418 bytes); these are given out instead.
    data_objects: dict[int, bytes] = field(default_factory=dict)
    attachment: int = -1


def _check_structure(data: bytes, *, depth: int, scan: _Scan) -> None:
    """Walk the records as tnefparse will, and refuse what would make it loop or allocate without bound."""
    if depth > MAX_TNEF_DEPTH:
        raise TnefError("embedded messages nested too deeply")
    try:
        _check_records(data, depth=depth, scan=scan)
    except struct.error as exc:
        # tnefparse would fail at the same place; inside an embedded message too (it parses those eagerly).
        raise TnefError(f"damaged TNEF stream: {exc}") from exc


def _check_records(data: bytes, *, depth: int, scan: _Scan) -> None:
    if len(data) < _HEADER_LENGTH or struct.unpack_from("<I", data)[0] != _SIGNATURE:
        raise TnefError("not a TNEF stream (wrong signature)")
    offset = _HEADER_LENGTH
    attachments = 0
    file_bytes = 0
    # The same loop condition and record length as tnefparse's TNEF.__init__, so that both see the same
    # records (a short declared length is cut to what is there, a few bytes left over are ignored).
    while offset + _MIN_RECORD < len(data):
        level = data[offset]
        name, declared = struct.unpack_from("<H2xI", data, offset + 1)
        length = min(len(data) - offset, declared + 11)
        value = data[offset + 9 : offset + length - 2]
        offset += length
        scan.records_left -= 1
        if scan.records_left < 0:
            raise TnefError(f"more than {MAX_TNEF_RECORDS} records")
        if name == _ATT_ATTACH_REND_DATA:
            attachments += 1
            if depth == 0:
                scan.attachment = attachments - 1
            if depth == 0 and attachments > MAX_TNEF_FILES:
                raise _TooManyFiles(f"more than {MAX_TNEF_FILES} attachments")
        if level == _LVL_ATTACHMENT and name == _ATT_ATTACH_DATA:
            file_bytes += len(value)
            if depth == 0 and file_bytes > MAX_TNEF_BYTES:
                raise _TooLarge(f"more than {MAX_TNEF_BYTES} bytes of attachments")
        # tnefparse decodes MAPI properties in an attachment's 0x9005 record and the message's 0x9003 one.
        attachment_props = level == _LVL_ATTACHMENT and name == _ATT_ATTACHMENT
        message_props = level != _LVL_ATTACHMENT and name == _ATT_MAPI_PROPS
        if attachment_props or message_props:
            _check_mapi(value, 0, depth=depth, scan=scan, attachment=attachment_props and depth == 0)
        elif level != _LVL_ATTACHMENT and name == _ATT_RECIP_TABLE and len(value) >= 4:
            rows = struct.unpack_from("<I", value)[0]
            _check_count(rows, len(value) - 4, "recipient rows")
            row_offset = 4
            for _ in range(rows):
                if row_offset + 4 > len(value):
                    break  # tnefparse fails here with struct.error: damaged, reported as such
                row_offset = _check_mapi(value, row_offset, depth=depth, scan=scan)


def _check_count(count: int, available: int, what: str) -> None:
    # Every property or value takes at least one byte (most take four or more), so a count above the bytes
    # left is a lie that would keep tnefparse looping over nothing.
    if count > available:
        raise TnefError(f"{count} {what} claimed in {available} bytes")


def _check_mapi(block: bytes, offset: int, *, depth: int, scan: _Scan, attachment: bool = False) -> int:
    """Walk one MAPI property block (mirroring tnefparse's decode_mapi); return the offset after it."""
    end = len(block)
    count = struct.unpack_from("<I", block, offset)[0]
    offset += 4
    _check_count(count, end - offset, "properties")
    for index in range(count):
        if offset >= end:
            if count - index > _MAX_MISSING_PROPERTIES:
                raise TnefError(f"{count - index} properties missing")
            return offset
        try:
            offset = _check_property(block, offset, depth=depth, scan=scan, attachment=attachment)
        except (struct.error, _UnknownType):
            # tnefparse's decode_mapi stops at the same place, logs it and keeps what it has read.
            return end
    return offset


class _UnknownType(Exception):
    pass


def _check_property(block: bytes, offset: int, *, depth: int, scan: _Scan, attachment: bool) -> int:
    end = len(block)
    prop_type, prop_name = struct.unpack_from("<HH", block, offset)
    offset += 4
    if prop_name >= _NAMED_FLAG:
        offset += 16  # property set GUID
        kind = struct.unpack_from("<I", block, offset)[0]
        offset += 4
        if kind == 0:
            offset += 4
        else:
            name_length = struct.unpack_from("<I", block, offset)[0]
            offset += 4 + name_length + (-name_length % 4)
    values = 1
    multi = bool(prop_type & _MV_FLAG)
    if multi:
        prop_type ^= _MV_FLAG
        values = struct.unpack_from("<I", block, offset)[0]
        offset += 4
        _check_count(values, end - offset, "values")
    size = _FIXED_SIZES.get(prop_type) or _FIXED_SIZES_MORE.get(prop_type)
    if size is not None:
        offset += size * values
        if values % 2 and prop_type in (0x0002, 0x000B):
            offset += 2  # tnefparse pads an odd number of 16-bit values to 4 bytes
        return offset
    if prop_type not in _VARIABLE_TYPES:
        raise _UnknownType(prop_type)
    for _ in range(values):
        items = 1
        if not multi:
            items = struct.unpack_from("<I", block, offset)[0]
            offset += 4
            _check_count(items, end - offset, "values")
        for _ in range(items):
            length = struct.unpack_from("<I", block, offset)[0]
            offset += 4
            item = block[offset : offset + length]
            if prop_name == _PR_ATTACH_DATA_OBJ and item.startswith(_IMESSAGE_SIG):
                # tnefparse parses an embedded message at once, all of it: the same checks apply inside.
                _check_structure(item[len(_IMESSAGE_SIG) :].rstrip(b"\x00"), depth=depth + 1, scan=scan)
            elif prop_name == _PR_ATTACH_DATA_OBJ and attachment and scan.attachment >= 0:
                scan.data_objects[scan.attachment] = item
            offset += length + (-length % 4)
    return offset


# --- tnefparse's log noise ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Noise:
    checksums: int = 0
    other: int = 0


class _CountingFilter(logging.Filter):
    def __init__(self, noise: _Noise) -> None:
        super().__init__()
        self._noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        # Debug records (only made when someone turned debug logging on) are dropped without being counted,
        # so that the summary does not depend on the log level.
        if record.msg == "Checksum: %s != %s":
            self._noise.checksums += 1
        elif record.levelno >= logging.WARNING:
            self._noise.other += 1
        return False  # counted, not emitted: a damaged file from the wild is no news for the operator


@contextlib.contextmanager
def _quiet_tnefparse() -> Iterator[_Noise]:
    noise = _Noise()
    counting = _CountingFilter(noise)
    # One logger for the whole package (its modules log to logging.getLogger("tnefparse")).
    tnef_logger = logging.getLogger("tnefparse")
    tnef_logger.addFilter(counting)
    try:
        yield noise
    finally:
        tnef_logger.removeFilter(counting)


# --- files ----------------------------------------------------------------------------------------------


def _files(attachments: list[Any], codepage: str, data_objects: dict[int, bytes]) -> tuple[list[TnefFile], list[str]]:
    files: list[TnefFile] = []
    skipped: list[str] = []
    used: set[str] = set()
    total = 0
    for number, attachment in enumerate(attachments, start=1):
        properties = {attr.name: attr for attr in getattr(attachment, "mapi_attrs", [])}
        method = _int_property(properties.get(_PR_ATTACH_METHOD), _ATTACH_BY_VALUE)
        data = attachment.data if isinstance(attachment.data, bytes) else b""
        exact = data_objects.get(number - 1)
        if exact is not None and exact.rstrip(b"\x00") == data:
            data = exact  # the value tnefparse read, with the trailing NULs it dropped
        name = _attachment_name(attachment, properties, codepage)
        if hasattr(attachment, "embed") or method == _ATTACH_EMBEDDED_MSG:
            skipped.append(f"{name or 'embedded message'}: attached e-mails cannot be faxed")
            continue
        if method == _ATTACH_OLE:
            skipped.append(f"{name or 'embedded object'}: embedded objects cannot be faxed; please attach a file")
            continue
        shown = name or f"attachment {number}"
        if method in _ATTACH_BY_REFERENCE:
            skipped.append(f"{shown}: the file is only linked, not attached")
            continue
        if _int_property(properties.get(_PR_ATTACHMENT_HIDDEN), 0):
            # Outlook's inline pictures (signature logos): part of the HTML body, not documents.
            skipped.append(f"{shown}: pictures inside the message text are not faxed")
            continue
        if not data:
            skipped.append(f"{shown}: the file is empty")
            continue
        if len(files) >= MAX_TNEF_FILES:
            raise _TooManyFiles(f"more than {MAX_TNEF_FILES} files")
        total += len(data)
        if total > MAX_TNEF_BYTES:
            raise _TooLarge(f"more than {MAX_TNEF_BYTES} bytes of files")
        files.append(TnefFile(_unique(shown, used), data))
    return files, skipped


def _int_property(attr: Any, default: int) -> int:
    if attr is None:
        return default
    try:
        return int(attr.data)
    except (TypeError, ValueError, struct.error):
        return default


def _attachment_name(attachment: Any, properties: dict[int, Any], codepage: str) -> str:
    # tnefparse's own TNEFAttachment.name decodes the 8.3 title as UTF-8 and raises on a cp1252 umlaut, so
    # the raw values are read and decoded here: the long name first, then the title, then the display name.
    candidates: list[object] = []
    if _PR_ATTACH_LONG_FILENAME in properties:
        candidates.append(_property_value(properties[_PR_ATTACH_LONG_FILENAME]))
    candidates.append(getattr(attachment, "_name", b""))
    if _PR_DISPLAY_NAME in properties:
        candidates.append(_property_value(properties[_PR_DISPLAY_NAME]))
    for raw in candidates:
        text = raw.decode(codepage, "replace") if isinstance(raw, bytes) else raw if isinstance(raw, str) else ""
        name = safe_name(text)
        if name:
            return name
    return ""


def _property_value(attr: Any) -> object:
    try:
        return attr.data
    except Exception:
        return b""


def safe_name(raw: str) -> str:
    """Sanitise a file name from a winmail.dat: last path component, no control characters, ≤ 100 chars.

    The rules of ``mime.sanitize_filename``, except that a long name keeps its extension (".docx" tells the
    converters what the file may be). Returns "" when nothing printable is left.
    """
    name = unicodedata.normalize("NFC", raw)
    # Windows paths ("C:\\Users\\...\\report.doc") and Unix ones: only the last component counts.
    name = re.split(r"[\\/]", name)[-1]
    name = " ".join(name.split())  # tabs and line breaks become spaces before control characters go
    # Category C: control characters (NUL included), format characters such as the right-to-left override
    # that makes "cod.exe" look like "exe.doc", surrogates, private use and unassigned code points.
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(" .")  # "..." or " " is no name
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and 0 < len(extension) <= 10 and " " not in extension:
            keep = MAX_NAME_LENGTH - len(extension) - 2
            name = f"{stem[:keep].rstrip()}\u2026.{extension}"
        else:
            name = name[: MAX_NAME_LENGTH - 3].rstrip() + "..."
    return name


def _unique(name: str, used: set[str]) -> str:
    """Return ``name``, or "name (2).ext", "name (3).ext"... when it is taken (compared case-insensitively)."""
    candidate = name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""
    number = 1
    while candidate.casefold() in used:
        number += 1
        suffix = f" ({number})" + (f".{extension}" if extension else "")
        candidate = stem[: MAX_NAME_LENGTH - len(suffix)].rstrip() + suffix
    used.add(candidate.casefold())
    return candidate


# --- body -----------------------------------------------------------------------------------------------


def _codepage(value: object) -> str:
    """The message's code page as a Python codec name; Windows-1252 when missing or unknown."""
    if isinstance(value, str):
        try:
            return codecs.lookup(value).name
        except LookupError:
            pass
    return "cp1252"


def _body(parsed: Any, codepage: str) -> str | None:
    plain = _text(getattr(parsed, "body", None), codepage)
    if plain and plain.strip():
        return _tidy(plain)
    html = _text(getattr(parsed, "htmlbody", None), codepage, prefer_utf8=True)
    if html and html.strip():
        text = _html_to_text()(html)
        if text.strip():
            return _tidy(text)
    # tnefparse's rtfbody property needs the compressed_rtf package and logs a warning without it; the raw
    # compressed bytes are decompressed here instead.
    compressed = getattr(parsed, "_rtfbody", None)
    if isinstance(compressed, bytes) and compressed:
        try:
            rtf = decompress_rtf(compressed)
        except ValueError:
            logger.debug("winmail.dat: the compressed RTF body is damaged; no message text")
            return None
        text = rtf_to_text(rtf)
        if text.strip():
            return _tidy(text)
    return None


def _text(value: object, codepage: str, *, prefer_utf8: bool = False) -> str | None:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, bytes):
        if prefer_utf8:
            # Outlook's HTML body is UTF-8 when PR_INTERNET_CPID is missing more often than not.
            with contextlib.suppress(UnicodeDecodeError):
                return value.decode("utf-8").replace("\x00", "")
        return value.decode(codepage, "replace").replace("\x00", "")
    return None


def _html_to_text() -> Callable[[str], str]:
    # bridge.converters.html is the project's HTML reader (inscriptis and lxml, with limits). Imported when a
    # body needs it, which keeps them out of a plain-text winmail.dat; mime's crude reader is the fallback
    # for a checkout that has no html module (it was written alongside this one).
    try:
        from bridge.converters.html import html_to_text
    except ImportError:
        from bridge.converters.mime import html_to_text
    return html_to_text


_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _tidy(text: str) -> str:
    # Bodies from a winmail.dat end in NULs and may hold other control characters; none belongs on paper.
    text = _CONTROL_CHARACTERS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = (line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --- compressed RTF (MS-OXRTFCP) ------------------------------------------------------------------------

_RTF_PREBUF: Final = (
    b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript "
    b"\\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par "
    b"\\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx"
)
_LZFU: Final = 0x75465A4C  # "LZFu": compressed
_MELA: Final = 0x414C454D  # "MELA": stored


def decompress_rtf(data: bytes, limit: int = MAX_RTF_BYTES) -> bytes:
    """Decompress a PR_RTF_COMPRESSED value (MS-OXRTFCP 2.1.3.1); the output is cut at ``limit`` bytes.

    Raises:
        ValueError: the header is missing or names an unknown compression.
    """
    if len(data) < 16:
        raise ValueError("compressed RTF shorter than its header")
    compressed_size, raw_size, magic, _crc = struct.unpack_from("<IIII", data)
    if magic == _MELA:
        return data[16 : 16 + min(raw_size, limit)]
    if magic != _LZFU:
        raise ValueError(f"unknown RTF compression {magic:#010x}")
    dictionary = bytearray(4096)
    dictionary[: len(_RTF_PREBUF)] = _RTF_PREBUF
    write = len(_RTF_PREBUF)
    out = bytearray()
    limit = min(limit, raw_size)
    position = 16
    end = min(len(data), compressed_size + 4)  # COMPSIZE counts the bytes after itself
    while position < end and len(out) < limit:
        control = data[position]
        position += 1
        for bit in range(8):
            if position >= end:
                break
            if control & (1 << bit):
                if position + 2 > end:
                    break
                reference = (data[position] << 8) | data[position + 1]
                position += 2
                start, length = reference >> 4, (reference & 0x0F) + 2
                if start == write:
                    return bytes(out[:limit])  # the end marker
                for index in range(length):
                    byte = dictionary[(start + index) & 0x0FFF]
                    out.append(byte)
                    dictionary[write] = byte
                    write = (write + 1) & 0x0FFF
            else:
                byte = data[position]
                position += 1
                out.append(byte)
                dictionary[write] = byte
                write = (write + 1) & 0x0FFF
    return bytes(out[:limit])


# --- RTF to text, crudely -------------------------------------------------------------------------------

_RTF_TOKEN: Final = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?"  # control word, optional parameter, delimiting space
    rb"|\\'([0-9a-fA-F]{2})"  # hex-escaped byte in the document's code page
    rb"|\\([^a-zA-Z'])"  # control symbol: \{ \} \\ \~ \- \_ \* ...
    rb"|([{}])"
    rb"|[\r\n]+"  # bare line breaks carry no meaning in RTF
    rb"|([^\\{}\r\n]+)"
)
# Destinations whose text is not part of what the reader sees (fonts, styles, metadata, pictures, field
# instructions, headers and footers of a mail body, Word's XML islands).
_RTF_SKIPPED: Final = frozenset(
    {
        "fonttbl", "colortbl", "stylesheet", "info", "pict", "object", "fldinst", "listtable",
        "listoverridetable", "rsidtbl", "generator", "xmlnstbl", "themedata", "colorschememapping",
        "latentstyles", "datastore", "header", "headerl", "headerr", "headerf", "footer", "footerl",
        "footerr", "footerf", "filetbl", "revtbl", "mmathPr", "pgdsctbl", "nonshppict", "bkmkstart",
        "bkmkend", "xe", "tc", "template", "docvar", "userprops", "fchars", "lchars", "pnseclvl",
    }
)  # fmt: skip
_RTF_BREAKS: Final = {"par": "\n", "line": "\n", "sect": "\n\n", "page": "\n\n", "row": "\n", "cell": "\t"}
_RTF_CHARACTERS: Final = {
    "tab": "\t", "emdash": "\u2014", "endash": "\u2013", "bullet": "\u2022", "lquote": "\u2018",
    "rquote": "\u2019", "ldblquote": "\u201c", "rdblquote": "\u201d", "emspace": " ", "enspace": " ",
    "qmspace": " ",
}  # fmt: skip
_RTF_SYMBOLS: Final = {"~": "\u00a0", "_": "\u2011", "-": "", "\\": "\\", "{": "{", "}": "}"}


@dataclass(slots=True)
class _RtfGroup:
    skip: bool  # inside a destination whose text is not shown
    uc: int  # how many fallback characters follow a \uN
    suppressed: bool = False  # between \htmlrtf and \htmlrtf0: RTF-only formatting of encapsulated HTML
    tag: bool = False  # inside {\*\htmltag...}: original HTML markup


def rtf_to_text(rtf: bytes) -> str:
    r"""Reduce an RTF document to its visible text: control words dropped, paragraphs kept as line breaks.

    Crude by design (no tables, no lists, no fields beyond their shown result). Outlook's RTF bodies are
    often HTML or plain text wrapped in RTF (MS-OXRTFEX, ``\fromhtml1`` / ``\fromtext``): those are
    unwrapped as the specification says (the ``\htmlrtf`` parts dropped, the ``{\*\htmltag}`` parts
    kept) and wrapped HTML goes through the HTML-to-text converter.
    """
    content, is_html = _read_rtf(rtf)
    return _html_to_text()(content) if is_html else content


def _read_rtf(rtf: bytes) -> tuple[str, bool]:
    """The text of an RTF document, or the HTML it encapsulates (then the flag is true)."""
    head = rtf[:2048]
    is_html = b"\\fromhtml" in head
    encapsulated = is_html or b"\\fromtext" in head
    out: list[str] = []
    pending = bytearray()  # \'hh bytes, decoded together (double-byte code pages)
    codepage = "cp1252"
    stack = [_RtfGroup(skip=False, uc=1)]
    group_start = False
    starred = False  # the group began with \*: skipped unless it is an htmltag
    fallback = 0  # characters still to skip after \uN

    def shown() -> bool:
        group = stack[-1]
        return group.tag or not (group.skip or group.suppressed)

    def flush() -> None:
        if pending:
            if shown():
                out.append(pending.decode(codepage, "replace"))
            pending.clear()

    position = 0
    while position < len(rtf):
        match = _RTF_TOKEN.match(rtf, position)
        if match is None:  # a lone backslash, or \' without two hex digits: drop one byte, go on
            position += 1
            continue
        position = match.end()
        word, parameter, hex_byte, symbol, brace, text = match.groups()
        group = stack[-1]
        if hex_byte is not None:
            if fallback:
                fallback -= 1
            else:
                pending.append(int(hex_byte, 16))
            group_start = starred = False
            continue
        flush()
        if brace == b"{":
            stack.append(_RtfGroup(skip=group.skip, uc=group.uc, suppressed=group.suppressed, tag=group.tag))
            group_start, starred, fallback = True, False, 0
            continue
        if brace == b"}":
            if len(stack) > 1:
                stack.pop()
            group_start = starred = False
            fallback = 0
            continue
        if symbol is not None:
            char = symbol.decode("latin-1")
            if char == "*" and group_start:
                group.skip = True  # {\* ...}: an optional destination this reader does not know
                starred = True
            elif char in _RTF_SYMBOLS and shown():
                out.append(_RTF_SYMBOLS[char])
            group_start = False
            continue
        if word is not None:
            name = word.decode("ascii")
            if starred and is_html and name == "htmltag":
                group.skip, group.tag = False, True
            elif group_start and name in _RTF_SKIPPED:
                group.skip = True
            group_start = starred = False
            if name == "bin" and parameter is not None:
                position += max(0, int(parameter))  # raw binary data (a picture): may hold any byte, even braces
            elif name == "htmlrtf" and encapsulated:
                group.suppressed = parameter != b"0"
            elif name == "ansicpg" and parameter is not None:
                with contextlib.suppress(LookupError):
                    codepage = codecs.lookup(f"cp{int(parameter)}").name
            elif name == "uc" and parameter is not None:
                group.uc = max(0, int(parameter))
            elif name == "u" and parameter is not None:
                if shown():
                    out.append(chr(int(parameter) % 65536))
                fallback = group.uc
            elif not shown():
                continue
            elif name in _RTF_BREAKS:
                out.append("\n" if encapsulated and name != "cell" else _RTF_BREAKS[name])
            elif name in _RTF_CHARACTERS:
                out.append(_RTF_CHARACTERS[name])
            continue
        if text is not None:
            group_start = starred = False
            chunk = text.decode(codepage, "replace")
            if fallback:
                skip = min(fallback, len(chunk))
                chunk = chunk[skip:]
                fallback -= skip
            if shown():
                out.append(chunk)
    flush()
    # Characters outside the BMP arrive as two \uN surrogates; join them (a lone one becomes U+FFFD).
    content = "".join(out).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return content, is_html
