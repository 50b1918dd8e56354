"""Walk a parsed email and pick, in order, the parts that become fax pages.

The result is a flat list: the message text first (when it has any content), then each attachment in the
order it appears. Every part is classified here, by its bytes rather than its declared type where that
matters, so the converters downstream never see a part they are not meant to read.

Nothing in this module decodes an image or parses a PDF; it only reads MIME structure and decodes text.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import Final

# Postfix refuses mail nested deeper than 100 levels (mime_nesting_limit); real mail is a handful deep.
MAX_MIME_DEPTH: Final = 100
# A single mail with more parts than this is not a document anybody wants faxed; it is a probe.
MAX_MIME_PARTS: Final = 1000

BODY_NAME: Final = "message text"
EXTRA_TEXT_NAME: Final = "additional message text"

_PDF_MAGIC: Final = b"%PDF-"
# The PDF specification lets readers accept junk before the header; Acrobat looks at the first 1024 bytes.
_PDF_MAGIC_WINDOW: Final = 1024
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text to be typeset: the message body or a ``text/plain`` attachment."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class PdfPart:
    """A PDF attachment (declared or sniffed) that passes through as vector pages."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImagePart:
    """A JPEG or PNG image (sniffed by its magic bytes, or declared as one) that becomes one page."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SkippedPart:
    """A part that is not faxed; ``reason`` completes the sentence "<name>: skipped, <reason>"."""

    name: str
    reason: str


Part = TextPart | PdfPart | ImagePart | SkippedPart


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
            # A forwarded or attached e-mail (or a bounce report). Faxing its contents is a later feature.
            reason = (
                "attached e-mails cannot be faxed"
                if part.get_content_type() in ("message/rfc822", "message/global")
                else "this kind of attachment cannot be faxed"
            )
            self._parts.append(SkippedPart(self._name(part), reason))
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
                SkippedPart(f"a {ctype} section", "the mail's MIME structure is broken, so it cannot be read")
            )
            return
        payload = _payload_bytes(part)
        name = self._name(part)
        head = payload[:_PDF_MAGIC_WINDOW]
        filename = (part.get_filename() or "").lower()
        # Sniff first: the declared type is whatever the sender's mail program guessed.
        if _PDF_MAGIC in head:
            self._parts.append(PdfPart(name, payload))
            return
        if head.startswith((_JPEG_MAGIC, _PNG_MAGIC)):
            self._parts.append(ImagePart(name, payload))
            return
        other_image = _other_image_format(head)
        if other_image is not None:
            self._parts.append(SkippedPart(name, f"{other_image} images cannot be faxed yet"))
            return
        if ctype == "application/pdf" or filename.endswith(".pdf"):
            # Declared as a PDF but without a PDF header: let the PDF reader say it is damaged.
            self._parts.append(PdfPart(name, payload))
            return
        if ctype in ("image/jpeg", "image/jpg", "image/pjpeg", "image/png") or filename.endswith(
            (".jpg", ".jpeg", ".png")
        ):
            # Declared as JPEG/PNG but not one: the image reader will refuse it as damaged.
            self._parts.append(ImagePart(name, payload))
            return
        if ctype == "text/plain" or (filename.endswith(".txt") and b"\x00" not in payload):
            text = _decode_text(payload, part.get_content_charset())
            if text.strip():
                self._parts.append(TextPart(name, text))
            elif part.get_filename():
                self._parts.append(SkippedPart(name, "the file is empty"))
            # An unnamed empty text part is mail-program padding (Apple Mail adds them around pictures).
            return
        if not payload and not part.get_filename():
            return
        self._parts.append(SkippedPart(name, _skip_reason(ctype, filename)))

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
    text = _decode_text(_payload_bytes(part), part.get_content_charset())
    if part.get_content_type() == "text/html":
        return html_to_text(text)
    return text


def _payload_bytes(part: Message) -> bytes:
    # decode=True undoes base64/quoted-printable and is lenient: broken encodings are recorded as defects
    # on the part instead of raising, which is what we want for mail from the wild.
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _decode_text(payload: bytes, charset: str | None) -> str:
    """Decode text bytes: the declared charset, else UTF-8, else the declared charset with replacements.

    Mail often declares us-ascii or latin-1 while carrying UTF-8, and sometimes an unknown charset name.
    """
    declared = "utf-8"
    if charset:
        try:
            declared = codecs.lookup(charset).name
        except LookupError:
            declared = "utf-8"
    for encoding, errors in ((declared, "strict"), ("utf-8", "strict"), (declared, "replace")):
        try:
            text = payload.decode(encoding, errors)
        except (UnicodeDecodeError, LookupError):
            continue
        return text
    return payload.decode("latin-1")


def _other_image_format(head: bytes) -> str | None:
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF"
    return None


_SKIP_REASONS: Final[tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]] = (
    # (content types, file name endings, reason)
    (
        ("application/zip", "application/x-zip-compressed", "application/x-zip"),
        (".zip",),
        "zip archives cannot be faxed",
    ),
    (
        (
            "application/x-rar-compressed",
            "application/vnd.rar",
            "application/x-7z-compressed",
            "application/gzip",
            "application/x-gzip",
            "application/x-tar",
        ),
        (".rar", ".7z", ".gz", ".tgz", ".tar"),
        "archives cannot be faxed",
    ),
    (
        ("application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"),
        (".p7s", ".asc", ".sig"),
        "digital signatures are not faxed",
    ),
    (("text/vcard", "text/x-vcard"), (".vcf",), "contact cards cannot be faxed"),
    (("text/calendar",), (".ics",), "calendar invitations cannot be faxed"),
    (("application/ms-tnef", "application/vnd.ms-tnef"), ("winmail.dat",), "Outlook winmail.dat files cannot be faxed"),
    (
        (
            "application/msword",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.oasis.opendocument.text",
            "application/rtf",
            "text/rtf",
            "application/vnd.ms-excel",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.oasis.opendocument.spreadsheet",
        ),
        (".doc", ".docx", ".odt", ".rtf", ".xls", ".xlsx", ".ods"),
        "office documents cannot be faxed yet; please send a PDF",
    ),
    (("text/html",), (".html", ".htm"), "HTML files cannot be faxed; please send a PDF"),
)


def _skip_reason(ctype: str, filename: str) -> str:
    for types, endings, reason in _SKIP_REASONS:
        if ctype in types or (filename and filename.endswith(endings)):
            return reason
    if ctype.startswith("image/"):
        return "this kind of image cannot be faxed"
    return "this kind of attachment cannot be faxed"


class _HtmlText(HTMLParser):
    """A crude HTML-to-text reader: block elements become line breaks, scripts and styles vanish."""

    _BLOCK: Final = frozenset(
        {
            "address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "fieldset", "figure",
            "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
            "ol", "p", "pre", "section", "table", "tr", "ul",
        }
    )  # fmt: skip
    _HIDDEN: Final = frozenset({"head", "script", "style", "title", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._out.append("\n")
        elif tag in ("td", "th"):
            self._out.append("  ")
        elif tag in self._BLOCK:
            self._out.append("\n")
            if tag == "li":
                self._out.append("• ")
            elif tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCK:
            self._out.append("\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        data = data.replace("\x00", "")
        if self._pre:
            # Preformatted text keeps its spaces; mark them so that text() does not strip them.
            self._out.append(data.replace(" ", "\x00"))
        else:
            # Outside <pre>, HTML collapses runs of whitespace (including newlines) into one space.
            self._out.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = (line.strip() for line in "".join(self._out).split("\n"))
        text = "\n".join(lines).replace("\x00", " ")
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def html_to_text(html: str) -> str:
    """Turn an HTML mail body into readable plain text (paragraphs and line breaks kept, markup dropped)."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text()
