"""Walk a parsed email and pick, in order, the parts that become fax pages.

The result is a flat list: the message text first (when it has any content), then each attachment in the
order it appears. Every part is classified here, by its bytes rather than its declared type where that
matters, so the converters downstream never see a part they are not meant to read.

Nothing in this module decodes an image or parses a PDF; it reads MIME structure, decodes text, sniffs magic
bytes and unpacks Outlook's winmail.dat (whose files are classified like any other attachment). It runs inside
the conversion sandbox, like every step that reads what the sender sent.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import Final

from bridge.converters.charset import decode_text
from bridge.converters.html import html_to_text
from bridge.converters.image import sniff_image, unsupported_image_format
from bridge.converters.office import OFFICE_EXTENSIONS, sniff_office
from bridge.converters.tnef import tnef_refusal_reason, unpack_tnef

__all__ = [
    "BODY_NAME",
    "ImagePart",
    "MimeStructureError",
    "OfficePart",
    "Part",
    "PdfPart",
    "RefusedPart",
    "SkippedPart",
    "TextPart",
    "classify",
    "extract_parts",
    "html_to_text",
    "repair_boundary",
    "sanitize_filename",
]

# Postfix refuses mail nested deeper than 100 levels (mime_nesting_limit); real mail is a handful deep.
MAX_MIME_DEPTH: Final = 100
# A single mail with more parts than this is not a document anybody wants faxed; it is a probe.
MAX_MIME_PARTS: Final = 1000

BODY_NAME: Final = "message text"
EXTRA_TEXT_NAME: Final = "additional message text"

_PDF_MAGIC: Final = b"%PDF-"
# The PDF specification lets readers accept junk before the header; Acrobat looks at the first 1024 bytes.
_PDF_MAGIC_WINDOW: Final = 1024


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text to be typeset: the message body or a ``text/plain`` attachment."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class PdfPart:
    """A PDF attachment (declared or sniffed); its pages are normalised to the fax paper, not rasterised."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in one of the formats the image converter opens (sniffed, or declared as one)."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class OfficePart:
    """A word-processor or spreadsheet file for LibreOffice; ``extension`` is the type it is converted as."""

    name: str
    data: bytes
    extension: str


@dataclass(frozen=True, slots=True)
class SkippedPart:
    """A part that is deliberately not faxed (a signature, a contact card, a logo…); the fax goes ahead.

    ``reason`` completes the sentence "<name>: not faxed, <reason>".
    """

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class RefusedPart:
    """A part the sender meant to fax that cannot be faxed (an archive, an unknown format…).

    One refused part refuses the whole fax: a fax with a document silently missing is worse than no fax.
    ``reason`` completes the sentence "<name>: <reason>".
    """

    name: str
    reason: str


Part = TextPart | PdfPart | ImagePart | OfficePart | SkippedPart | RefusedPart


class MimeStructureError(Exception):
    """The message cannot be walked safely (too deep, too many parts). The text is for the sender."""


def extract_parts(msg: EmailMessage) -> list[Part]:
    """Return the message's parts in fax order: the body text first, then attachments as they appear.

    A body that is empty or only whitespace is left out. Parts nested inside ``multipart/alternative``
    groups other than the chosen body, and the pictures a ``multipart/related`` HTML body refers to
    (signature logos), are not listed as pages; the latter are reported as skipped.

    Raises:
        MimeStructureError: the structure is nested too deeply or has too many parts.
    """
    walker = _Walker(msg)
    return walker.run()


class _Walker:
    """One depth-first walk over a message, collecting parts in document order."""

    def __init__(self, msg: EmailMessage) -> None:
        self._msg = msg
        self._parts: list[Part] = []
        self._unnamed = 0
        self._body: Message | None = None

    def run(self) -> list[Part]:
        self._check_depth(self._msg, 0)
        self._body = _find_body(self._msg)
        if self._body is not None:
            text = _body_text(self._body)
            if text.strip():
                self._parts.append(TextPart(BODY_NAME, text))
        self._walk(self._msg)
        return self._parts

    def _check_depth(self, part: Message, depth: int) -> None:
        # EmailMessage.get_body() recurses; check the depth iteratively first so that a nesting bomb is
        # refused with a reason instead of a RecursionError somewhere inside the standard library.
        stack: list[tuple[Message, int]] = [(part, depth)]
        seen = 0
        while stack:
            node, level = stack.pop()
            seen += 1
            if level > MAX_MIME_DEPTH:
                raise MimeStructureError(f"the mail is nested more than {MAX_MIME_DEPTH} levels deep")
            if seen > MAX_MIME_PARTS:
                raise MimeStructureError(f"the mail has more than {MAX_MIME_PARTS} parts")
            if node.is_multipart():
                children = node.get_payload()
                if isinstance(children, list):
                    stack.extend((child, level + 1) for child in children if isinstance(child, Message))

    def _walk(self, part: Message) -> None:
        if part is self._body:
            return
        if part.get_content_maintype() == "message":
            # A forwarded or attached e-mail (or a report). The sender meant something by attaching it, and
            # its layout is not a document's: refuse it rather than fax a guess.
            reason = (
                "attached e-mails cannot be faxed; please forward the message itself, or attach it as a PDF"
                if part.get_content_type() in ("message/rfc822", "message/global")
                else "this kind of attachment cannot be faxed"
            )
            self._parts.append(RefusedPart(self._name(part), reason))
            return
        if part.is_multipart():
            self._walk_multipart(part)
            return
        self._leaf(part)

    def _walk_multipart(self, part: Message) -> None:
        children = _children(part)
        subtype = part.get_content_subtype()
        if subtype == "alternative":
            # Alternatives are the same content in different forms: fax exactly one of them. The body was
            # chosen already when this group holds it; otherwise take the plainest alternative.
            if self._body is not None and any(_contains(c, self._body) for c in children):
                return
            chosen = _plainest(children)
            if chosen is not None:
                self._walk(chosen)
            return
        if subtype == "related":
            root = _related_root(part, children)
            for child in children:
                if child is root:
                    self._walk(child)
                elif _is_attachment(child):
                    # Explicitly attached files inside a related group are still attachments.
                    self._walk(child)
                elif not child.is_multipart() and child.get_content_maintype() == "image":
                    self._parts.append(SkippedPart(self._name(child), "pictures inside the message text are not faxed"))
            return
        # mixed, signed, digest, parallel, report and unknown multiparts: every child, in order.
        for child in children:
            self._walk(child)

    def _leaf(self, part: Message) -> None:
        ctype = part.get_content_type()
        if part.get_content_maintype() == "multipart":
            # Declared multipart, but the parser found no parts: the boundary is missing or wrong.
            self._parts.append(
                RefusedPart(f"a {ctype} section", "the mail's MIME structure is broken, so it cannot be read")
            )
            return
        payload = _payload_bytes(part)
        name = self._name(part)
        if _is_tnef(payload, ctype, part.get_filename() or ""):
            self._unpack_tnef(name, payload)
            return
        found = classify(
            name,
            payload,
            content_type=ctype,
            filename=part.get_filename() or "",
            charset=part.get_content_charset(),
            named=bool(part.get_filename()),
        )
        if found is not None:
            self._parts.append(found)

    def _unpack_tnef(self, name: str, payload: bytes) -> None:
        # Outlook's winmail.dat: its files are classified like any other attachment, under their own names.
        try:
            contents = unpack_tnef(payload)
        except Exception as exc:
            self._parts.append(RefusedPart(name, tnef_refusal_reason(exc)))
            return
        if contents.body and contents.body.strip() and not self._has_body_text():
            self._parts.insert(0, TextPart(BODY_NAME, contents.body))
        for note in contents.skipped:
            self._parts.append(SkippedPart(name, note))
        for inner in contents.files:
            inner_name = f"{inner.name} (from {name})"
            if _is_tnef(inner.data, "", inner.name):
                self._parts.append(RefusedPart(inner_name, "a winmail.dat inside a winmail.dat cannot be faxed"))
                continue
            found = classify(
                inner_name,
                inner.data,
                content_type="application/octet-stream",
                filename=inner.name,
                charset=None,
                named=True,
            )
            if found is not None:
                self._parts.append(found)
        if not contents.files and not (contents.body and contents.body.strip()):
            self._parts.append(SkippedPart(name, "the winmail.dat file holds no document"))

    def _has_body_text(self) -> bool:
        return any(isinstance(p, TextPart) and p.name == BODY_NAME for p in self._parts)

    def _name(self, part: Message) -> str:
        """A name the sender recognises: the sanitised file name, else a description of the part."""
        raw = part.get_filename()
        if raw:
            name = sanitize_filename(raw)
            if name:
                return name
        if part.get_content_type() == "text/plain":
            return EXTRA_TEXT_NAME
        self._unnamed += 1
        return f"unnamed attachment {self._unnamed} ({part.get_content_type()})"


_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_CONTENT_TYPE_HEADER: Final = re.compile(rb"(?im)^content-type:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
_UNQUOTED_BOUNDARY: Final = re.compile(rb'(?i)\bboundary\s*=\s*([^"\s;][^\s;]*)')


def repair_boundary(raw: bytes) -> bytes | None:
    """Quote an unquoted top-level multipart boundary; ``None`` when there is nothing to repair.

    Outlook Express and others wrote ``boundary=----=_NextPart_000_...`` without quotes. The ``=`` makes
    that illegal, and the standard library reads the boundary as ``----``, finding no parts at all.
    Quoting the value is what every lenient mail reader does.
    """
    end = _HEADER_END.search(raw)
    head_end = end.start() if end else len(raw)
    header = _CONTENT_TYPE_HEADER.search(raw, 0, head_end)
    if header is None:
        return None
    value = header.group(0)
    boundary = _UNQUOTED_BOUNDARY.search(value)
    if boundary is None:
        return None
    fixed = value[: boundary.start(1)] + b'"' + boundary.group(1) + b'"' + value[boundary.end(1) :]
    return raw[: header.start()] + fixed + raw[header.end() :]


def sanitize_filename(raw: str) -> str:
    """Make an attachment's file name safe to show in a notice: no path, no control characters, short."""
    name = unicodedata.normalize("NFC", raw)
    # Windows mail programs send full paths now and then; keep only the last component.
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split())
    if len(name) > 100:
        name = name[:97] + "..."
    return name


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [c for c in payload if isinstance(c, Message)]
    return []


def _contains(tree: Message, target: Message) -> bool:
    stack = [tree]
    while stack:
        node = stack.pop()
        if node is target:
            return True
        stack.extend(_children(node))
    return False


def _is_attachment(part: Message) -> bool:
    return (part.get_content_disposition() or "") == "attachment"


def _related_root(part: Message, children: list[Message]) -> Message | None:
    start = part.get_param("start")
    if isinstance(start, str) and start:
        for child in children:
            if child.get("content-id", "").strip() == start.strip():
                return child
    return children[0] if children else None


def _plainest(children: list[Message]) -> Message | None:
    for wanted in ("text/plain", "text/html"):
        for child in children:
            if child.get_content_type() == wanted:
                return child
    # multipart/alternative lists from the simplest to the richest form (RFC 2046 5.1.4).
    return children[0] if children else None


def _find_body(msg: EmailMessage) -> Message | None:
    """The part that carries the message text: plain text preferred; HTML when there is no usable plain text."""
    plain = msg.get_body(preferencelist=("plain",))
    if plain is not None and _body_text(plain).strip():
        return plain
    html = msg.get_body(preferencelist=("html",))
    if html is not None and _body_text(html).strip():
        return html
    return plain if plain is not None else html


def _body_text(part: Message) -> str:
    text = decode_text(_payload_bytes(part), part.get_content_charset())
    if part.get_content_type() == "text/html":
        return html_to_text(text)
    return text


def _payload_bytes(part: Message) -> bytes:
    # decode=True undoes base64/quoted-printable and is lenient: broken encodings are recorded as defects
    # on the part instead of raising, which is what we want for mail from the wild.
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


_TNEF_MAGIC: Final = b"\x78\x9f\x3e\x22"
_TNEF_TYPES: Final = ("application/ms-tnef", "application/vnd.ms-tnef")


def _is_tnef(payload: bytes, ctype: str, filename: str) -> bool:
    return payload.startswith(_TNEF_MAGIC) or ctype in _TNEF_TYPES or filename.lower() == "winmail.dat"


def classify(
    name: str,
    payload: bytes,
    *,
    content_type: str,
    filename: str,
    charset: str | None,
    named: bool,
) -> Part | None:
    """Decide what one file becomes: pages of some kind, a skipped part, a refused part, or nothing.

    The bytes are sniffed first, because the declared type is whatever the sender's mail program guessed;
    the declared type and the file name decide only when the bytes say nothing. ``None`` means the part is
    mail-program padding (empty and unnamed) and is not mentioned at all.
    """
    lowered = filename.lower()
    head = payload[:_PDF_MAGIC_WINDOW]
    if _PDF_MAGIC in head:
        return PdfPart(name, payload)
    if sniff_image(head) is not None:
        return ImagePart(name, payload)
    unsupported = unsupported_image_format(head)
    if unsupported is not None:
        return RefusedPart(name, f"this image format ({unsupported}) cannot be faxed; please send JPEG, PNG or PDF")
    extension = sniff_office(head, lowered, content_type)
    if extension is not None:
        return OfficePart(name, payload, extension)
    if content_type == "application/pdf" or lowered.endswith(".pdf"):
        # Declared as a PDF but without a PDF header: let the PDF reader say it is damaged.
        return PdfPart(name, payload)
    if content_type in _DECLARED_IMAGE_TYPES or lowered.endswith(_IMAGE_ENDINGS):
        # Declared as a faxable image but not one by its bytes: the image reader will say it is damaged.
        return ImagePart(name, payload)
    if lowered.endswith(tuple(OFFICE_EXTENSIONS)):
        # Named like an office file but not one by its bytes: LibreOffice will say whether it can read it.
        return OfficePart(name, payload, next(ext for ext in OFFICE_EXTENSIONS if lowered.endswith(ext)))
    if content_type == "text/plain" or (lowered.endswith(".txt") and b"\x00" not in payload):
        text = decode_text(payload, charset)
        if text.strip():
            return TextPart(name, text)
        # An unnamed empty text part is mail-program padding (Apple Mail adds them around pictures).
        return SkippedPart(name, "the file is empty") if named else None
    if not payload and not named:
        return None
    for types, endings, reason in _NOT_FAXED:
        if content_type in types or (lowered and lowered.endswith(endings)):
            return SkippedPart(name, reason)
    for types, endings, reason in _REFUSED:
        if content_type in types or (lowered and lowered.endswith(endings)):
            return RefusedPart(name, reason)
    if not payload:
        return SkippedPart(name, "the file is empty")
    if content_type.startswith("image/"):
        return RefusedPart(name, "this image format cannot be faxed; please send JPEG, PNG or PDF")
    return RefusedPart(name, "this kind of attachment cannot be faxed; please send a PDF")


_DECLARED_IMAGE_TYPES: Final = frozenset(
    {
        "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/gif", "image/bmp", "image/x-bmp",
        "image/x-ms-bmp", "image/webp", "image/tiff", "image/tif",
    }
)  # fmt: skip
_IMAGE_ENDINGS: Final = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")

# (content types, file name endings, reason): parts that carry no page of the document, listed as not faxed.
_Rule = tuple[tuple[str, ...], tuple[str, ...], str]
_NOT_FAXED: Final[tuple[_Rule, ...]] = (
    (
        (
            "application/pkcs7-signature",
            "application/x-pkcs7-signature",
            "application/pgp-signature",
            "application/pgp-keys",
        ),
        (".p7s", ".asc", ".sig", ".gpg"),
        "digital signatures and keys are not faxed",
    ),
    (("text/vcard", "text/x-vcard", "text/directory"), (".vcf", ".vcard"), "contact cards are not faxed"),
    (("text/calendar", "application/ics"), (".ics", ".vcs"), "calendar invitations are not faxed"),
)
# Parts the sender meant to fax that cannot be faxed; each refuses the fax.
_REFUSED: Final[tuple[_Rule, ...]] = (
    (
        ("application/zip", "application/x-zip-compressed", "application/x-zip"),
        (".zip",),
        "zip archives cannot be faxed (they are never opened); please attach the documents themselves",
    ),
    (
        (
            "application/x-rar-compressed",
            "application/vnd.rar",
            "application/x-rar",
            "application/x-7z-compressed",
            "application/gzip",
            "application/x-gzip",
            "application/x-tar",
            "application/x-bzip2",
            "application/x-xz",
        ),
        (".rar", ".7z", ".gz", ".tgz", ".tar", ".bz2", ".xz"),
        "archives cannot be faxed (they are never opened); please attach the documents themselves",
    ),
    (
        ("application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted"),
        (".p7m", ".pgp"),
        "encrypted attachments cannot be faxed",
    ),
    (("application/vnd.ms-outlook",), (".msg", ".eml"), "attached e-mails cannot be faxed; please attach a PDF"),
    (
        ("text/html", "application/xhtml+xml"),
        (".html", ".htm", ".xhtml"),
        "HTML files cannot be faxed; please send a PDF",
    ),
)
