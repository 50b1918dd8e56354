"""The document pipeline: named, ordered steps from a raw mail to one fax-ready PDF, or a refusal.

Steps, in order (``STEPS``; the sandbox reports each one as it starts, so a limit that stops a conversion can
name the step and the attachment it stopped in):

``read-mail``       parse the MIME structure (and Outlook's winmail.dat) into parts, each classified by its bytes
``count-pages``     open every part cheaply and count its pages; office files are converted here, because
                    their pages cannot be counted any other way; a part that cannot be read is refused
``cover-page``      the mail text as the first pages, as a cover page, or not at all (per account)
``check-limits``    one refused part refuses the fax; too many pages refuse it; nothing faxable refuses it
``convert-parts``   images become bilevel pages at fax resolution (only now, once the fax is known to be sent)
``assemble``        every page onto portrait paper of the account's size, in one PDF
``preview``         a small picture of page 1 for the sender's notice

It is synchronous and CPU-bound, and reads what strangers send: the worker runs it in a sandboxed child
process (``bridge.converters.sandbox``), never in the daemon itself.
"""

from __future__ import annotations

import email
import email.errors
import email.parser
import email.policy
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Final, Literal, TypeVar

from pypdf import PdfReader

from bridge.converters.cover import CoverFields, render_cover
from bridge.converters.image import count_image_pages, image_refusal_reason, image_to_pdf
from bridge.converters.mime import (
    BODY_NAME,
    ImagePart,
    MimeStructureError,
    OfficePart,
    Part,
    PdfPart,
    RefusedPart,
    SkippedPart,
    TextPart,
    extract_parts,
    repair_boundary,
)
from bridge.converters.office import office_refusal_reason, office_to_pdf
from bridge.converters.pdf import Merger, Paper, count_pages, open_pdf, pdf_configuration, pdf_refusal_reason
from bridge.converters.preview import render_preview
from bridge.converters.text import PageLimitExceeded, render_text
from bridge.errors import BridgeError, ConversionError, TooLarge, UnsupportedContent

__all__ = [
    "STEPS",
    "ConversionOptions",
    "ConversionResult",
    "CoverInfo",
    "CoverStyle",
    "Progress",
    "Step",
    "convert_message",
]

log = logging.getLogger(__name__)

CoverStyle = Literal["none", "body", "page"]
Progress = Callable[[str, str], None]
"""Called with (step name, part name or ``""``) as the pipeline goes; must be cheap."""
ProcessWatch = Callable[[int, bool], None]
"""Called with (process group, running) when a helper program (LibreOffice) starts and when it is gone."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CoverInfo:
    """What the cover page says besides the message; the worker fills it from the job."""

    sender: str
    recipient: str
    subject: str
    date: str


@dataclass(frozen=True, slots=True)
class ConversionOptions:
    """How one mail is converted: the account's paper, page limit and cover style, and the office limits."""

    paper: Paper = "a4"
    max_pages: int = 50
    cover: CoverStyle = "body"
    cover_info: CoverInfo | None = None
    """For ``cover = "page"``; without it the cover shows the mail's own From, Subject and Date."""
    office_timeout: float = 60.0
    office_memory: int | None = None
    """Address-space limit for LibreOffice, in bytes (it needs far more than the other converters)."""
    preview: bool = True


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """The fax-ready PDF, its page count, one line per part of the mail, and a preview of page 1.

    ``notes`` read like ``"report.pdf: 3 pages"``, ``"message text: 1 page"`` or
    ``"card.vcf: skipped, contact cards are not faxed"``, in the order of the parts.
    """

    document: bytes
    pages: int
    notes: tuple[str, ...]
    preview: bytes | None = None
    """A PNG of page 1, a few hundred pixels wide, or ``None`` when previews are off or it failed."""


@dataclass(slots=True)
class _Item:
    """One part on its way through the pipeline."""

    part: Part
    pages: int = 0
    reader: PdfReader | None = None  # a PDF to take the pages from (attached, converted or typeset)
    generated: bytes | None = None  # the PDF, when it was typeset or rasterised here (already on fax paper)
    refused: str | None = None  # why this part cannot be faxed
    at_least: bool = False  # the page count is a lower bound (counting stopped at the limit)

    @property
    def name(self) -> str:
        return self.part.name

    def note(self) -> str:
        if isinstance(self.part, SkippedPart):
            return f"{self.name}: skipped, {self.part.reason}"
        if self.refused is not None:
            return f"{self.name}: {self.refused}"
        count = f"at least {self.pages}" if self.at_least else str(self.pages)
        return f"{self.name}: {count} page" if self.pages == 1 and not self.at_least else f"{self.name}: {count} pages"


@dataclass(slots=True)
class _Run:
    """The state of one conversion, handed from step to step."""

    raw: bytes
    options: ConversionOptions
    progress: Progress
    processes: ProcessWatch | None = None
    headers: EmailMessage | None = None
    items: list[_Item] = field(default_factory=list)
    body: str | None = None  # the mail text, when the cover page takes it
    cover: _Item | None = None
    document: bytes = b""
    pages: int = 0
    preview: bytes | None = None

    def everything(self) -> list[_Item]:
        """Every part, the cover page first."""
        return [self.cover, *self.items] if self.cover is not None else list(self.items)

    def notes(self) -> tuple[str, ...]:
        """One line per part, for the sender."""
        return tuple(item.note() for item in self.everything())

    def faxed(self) -> list[_Item]:
        """The items that become pages, in fax order (the cover first)."""
        items = [i for i in self.items if not isinstance(i.part, SkippedPart) and i.refused is None]
        return [self.cover, *items] if self.cover is not None else items


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    run: Callable[[_Run], None]


def convert_message(
    raw: bytes,
    *,
    paper: Paper = "a4",
    max_pages: int = 50,
    options: ConversionOptions | None = None,
    progress: Progress | None = None,
    processes: ProcessWatch | None = None,
) -> ConversionResult:
    """Convert a raw RFC 5322 message into one fax-ready PDF, in this process.

    ``options`` wins over ``paper`` and ``max_pages`` when given; ``progress`` hears of every step and part,
    ``processes`` of every helper program's process group. The daemon never calls this directly; it goes
    through ``bridge.converters.sandbox``, which runs it in a child process under limits.

    Raises:
        UnsupportedContent: nothing in the message can be faxed.
        ConversionError: a part cannot be faxed; the message names it and says why, ``notes`` list every part.
        TooLarge: the fax would have more than ``max_pages`` pages.
    """
    if options is None:
        options = ConversionOptions(paper=paper, max_pages=max_pages)
    if options.paper not in ("a4", "letter"):
        raise ValueError(f"unknown paper size {options.paper!r}")
    if options.max_pages < 1:
        raise ValueError("max_pages must be at least 1")
    run = _Run(raw=raw, options=options, progress=progress or _no_progress, processes=processes)
    with pdf_configuration():
        for step in STEPS:
            run.progress(step.name, "")
            step.run(run)
    return ConversionResult(
        document=run.document,
        pages=run.pages,
        notes=run.notes(),
        preview=run.preview,
    )


def _no_progress(step: str, part: str) -> None:
    return None


# -- read-mail ------------------------------------------------------------------------------------------

_FEED_CHUNK: Final = 64 * 1024


def _message_from_bytes(raw: bytes) -> EmailMessage:
    # Fed in chunks: message_from_bytes decodes the whole mail into one str first, which holds several
    # copies of a 25 MB mail in memory at once (measured 7.7x its size, 2.7x when fed in 64 KiB chunks).
    parser = email.parser.BytesFeedParser(policy=email.policy.default)
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    message = parser.close()
    assert isinstance(message, EmailMessage)
    return message


def _read_mail(run: _Run) -> None:
    try:
        msg = _message_from_bytes(run.raw)
        if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
            repaired = repair_boundary(run.raw)
            if repaired is not None:
                second = _message_from_bytes(repaired)
                if second.is_multipart():
                    msg = second
        run.headers = msg
        parts = extract_parts(msg)
    except MimeStructureError as exc:
        raise ConversionError(f"the mail could not be read: {exc}") from exc
    # The standard library's parser records most damage as defects, but its header and content-manager
    # code still raises on some malformed input; none of that may escape as a crash.
    except (email.errors.MessageError, ValueError, TypeError, LookupError, AttributeError, RecursionError) as exc:
        log.info("unreadable MIME structure: %r", exc)
        raise ConversionError("the mail could not be read: its MIME structure is damaged") from exc

    body = next((p for p in parts if isinstance(p, TextPart) and p.name == BODY_NAME), None)
    others = [p for p in parts if p is not body]
    cover = run.options.cover
    if body is not None and cover == "page":
        run.body = body.text
        parts = others
    elif body is not None and cover == "none" and any(not isinstance(p, SkippedPart) for p in others):
        # No cover: the text of a mail with documents is a note to a person, not a page. A mail that is only
        # text is still faxed, or "none" would make text faxes impossible.
        parts = others
    run.items = [_Item(part) for part in parts]


# -- count-pages ----------------------------------------------------------------------------------------


def _count_pages(run: _Run) -> None:
    options = run.options
    total = 0
    for item in run.items:
        part = item.part
        if isinstance(part, SkippedPart):
            continue
        if isinstance(part, RefusedPart):
            item.refused = part.reason
            continue
        run.progress("count-pages", item.name)
        if isinstance(part, TextPart):
            try:
                budget = max(1, options.max_pages - total)
                rendered = render_text(part.text, paper=options.paper, max_pages=budget)
            except PageLimitExceeded as exc:
                item.pages, item.at_least = exc.at_least, True
                total += item.pages
                continue
            except Exception as exc:
                item.refused = _reason(item.name, exc, _text_refusal_reason)
                continue
            item.pages = rendered.pages
            item.generated = rendered.pdf
        elif isinstance(part, PdfPart):
            _open_pdf_item(item, part.data)
        elif isinstance(part, ImagePart):
            try:
                item.pages = count_image_pages(part.data)
            except Exception as exc:
                item.refused = _reason(item.name, exc, image_refusal_reason)
        elif isinstance(part, OfficePart):
            try:
                pdf = office_to_pdf(
                    part.data,
                    part.extension,
                    timeout=options.office_timeout,
                    memory_limit=options.office_memory,
                    on_process=run.processes,
                )
            except Exception as exc:
                item.refused = _reason(item.name, exc, office_refusal_reason)
                continue
            _open_pdf_item(item, pdf)
        total += item.pages


def _open_pdf_item(item: _Item, data: bytes) -> None:
    try:
        reader = open_pdf(data)
        item.pages = count_pages(reader)
    except Exception as exc:
        item.refused = _reason(item.name, exc, pdf_refusal_reason)
        return
    item.reader = reader


# -- cover-page -----------------------------------------------------------------------------------------


def _cover_page(run: _Run) -> None:
    if run.options.cover != "page":
        return
    others = sum(item.pages for item in run.faxed())
    fields = _cover_fields(run)
    run.progress("cover-page", "cover page")
    budget = run.options.max_pages
    try:
        rendered = render_cover(fields, other_pages=others, paper=run.options.paper, max_pages=budget)
    except PageLimitExceeded as exc:
        run.cover = _Item(TextPart("cover page", ""), pages=max(1, exc.at_least - others), at_least=True)
        return
    except Exception as exc:
        run.cover = _Item(TextPart("cover page", ""), refused=_reason("cover page", exc, _text_refusal_reason))
        return
    run.cover = _Item(TextPart("cover page", fields.message), pages=rendered.pages, generated=rendered.pdf)


def _cover_fields(run: _Run) -> CoverFields:
    info = run.options.cover_info
    headers = run.headers
    if info is None:
        sender = str(headers.get("from", "")) if headers is not None else ""
        subject = str(headers.get("subject", "")) if headers is not None else ""
        date = str(headers.get("date", "")) if headers is not None else ""
        to = str(headers.get("to", "")) if headers is not None else ""
        info = CoverInfo(sender=sender, recipient=to, subject=subject, date=date)
    return CoverFields(
        sender=info.sender,
        recipient=info.recipient,
        subject=info.subject,
        date=info.date,
        message=run.body or "",
    )


# -- check-limits ---------------------------------------------------------------------------------------


def _check_limits(run: _Run) -> None:
    notes = run.notes()
    refused = [item for item in run.everything() if item.refused is not None]
    if len(refused) == 1:
        raise ConversionError(refused[0].note(), notes=notes)
    if refused:
        names = ", ".join(item.name for item in refused)
        raise ConversionError(f"{len(refused)} attachments cannot be faxed: {names}", notes=notes)
    faxed = run.faxed()
    total = sum(item.pages for item in faxed)
    limit = run.options.max_pages
    if total > limit:
        count = f"at least {total}" if any(item.at_least for item in faxed) else str(total)
        raise TooLarge(f"the fax would have {count} pages; the limit is {limit}", notes=notes)
    if not faxed or total == 0:
        raise UnsupportedContent(_nothing_to_fax(run.items), notes=notes)


def _nothing_to_fax(items: list[_Item]) -> str:
    skipped = [item for item in items if isinstance(item.part, SkippedPart)]
    if not skipped:
        return "nothing in this mail can be faxed: the message is empty"
    listed = ", ".join(f"{item.name} ({item.part.reason})" for item in skipped if isinstance(item.part, SkippedPart))
    return f"nothing in this mail can be faxed: {listed}"


# -- convert-parts --------------------------------------------------------------------------------------


def _convert_parts(run: _Run) -> None:
    refused: list[_Item] = []
    for item in run.faxed():
        if not isinstance(item.part, ImagePart):
            continue
        run.progress("convert-parts", item.name)
        try:
            raster = image_to_pdf(item.part.data, paper=run.options.paper)
            item.generated = raster.pdf
            item.pages = raster.pages
        except Exception as exc:
            item.refused = _reason(item.name, exc, image_refusal_reason)
            refused.append(item)
    if refused:
        _check_limits(run)  # raises, naming the image that could not be decoded


# -- assemble -------------------------------------------------------------------------------------------


def _assemble(run: _Run) -> None:
    faxed = run.faxed()
    if len(faxed) == 1 and faxed[0].generated is not None:
        # One part typeset or rasterised here is already the finished document, on the right paper.
        run.document = faxed[0].generated
        run.pages = faxed[0].pages
        return
    merger = Merger(run.options.paper)
    for item in faxed:
        run.progress("assemble", item.name)
        if item.generated is not None:
            item.reader = _guarded(item.name, pdf_refusal_reason, functools.partial(open_pdf, item.generated))
        if item.reader is None:  # pragma: no cover - every faxed item has its pages by now
            raise AssertionError(item.name)
        _guarded(item.name, pdf_refusal_reason, functools.partial(merger.add, item.reader))
    run.document = _guarded("the fax document", pdf_refusal_reason, merger.finish)
    run.pages = merger.pages


# -- preview --------------------------------------------------------------------------------------------


def _preview(run: _Run) -> None:
    if not run.options.preview:
        return
    try:
        run.preview = render_preview(run.document)
    except Exception:
        # A preview is a courtesy: the fax goes out without one rather than not at all.
        log.warning("could not render the preview of page 1", exc_info=True)
        run.preview = None


STEPS: Final[tuple[Step, ...]] = (
    Step("read-mail", _read_mail),
    Step("count-pages", _count_pages),
    Step("cover-page", _cover_page),
    Step("check-limits", _check_limits),
    Step("convert-parts", _convert_parts),
    Step("assemble", _assemble),
    Step("preview", _preview),
)


# -- helpers --------------------------------------------------------------------------------------------


def _text_refusal_reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "the text is too long to process"
    return "the text could not be typeset"


def _reason(name: str, exc: BaseException, reasons: Callable[[BaseException], str]) -> str:
    # Parsers of untrusted files fail in many ways (the corpus shows ValueError, TypeError, SyntaxError,
    # KeyError, struct.error, ZeroDivisionError…). Whatever the library, the sender's answer is a sentence
    # about the attachment; the log keeps the detail.
    if isinstance(exc, BridgeError):
        return str(exc)
    log.info("cannot convert %s: %r", name, exc)
    return reasons(exc)


def _guarded(name: str, reasons: Callable[[BaseException], str], call: Callable[[], _T]) -> _T:
    """Run ``call``; turn any failure into a ``ConversionError`` that names the part and says why."""
    try:
        return call()
    except BridgeError:
        raise
    except Exception as exc:
        raise ConversionError(f"{name}: {_reason(name, exc, reasons)}") from exc
