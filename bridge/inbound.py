"""Fax to email: incoming faxes polled from the providers and mailed by route, exactly once.

Every ``inbound.poll_seconds`` one instance of the cluster (a lease in the store) asks each provider with an
inbound side for its faxes. Each fax is claimed in the store (a row per provider and fax id, with a lease),
fetched, and mailed to the destinations of the route for its called number. The order is what makes it
exactly once:

1. the mail relay (or the Maildir) takes the mail — only then is the fax recorded ``delivered``;
2. only then is the provider told (``acknowledge``: eComFax custody, Retarus deletion, the local inbox file
   moved aside) — and the fax recorded ``acknowledged``.

A relay that refuses for now leaves the fax ``pending`` at the provider, tried again with backoff. A crash
between 1 and 2 leaves it ``delivered``: the next poll acknowledges it without mailing it again. The same
fax announced twice at once (overlapping polls, a webhook replayed) is mailed once: the store's row and its
lease admit one delivery, and one lock per fax serialises this process's own attempts.

The mail is ``multipart/mixed``: a text and an HTML part from the ``incoming`` template (caller, called
number, pages, time received, the provider's id), the fax as PDF or TIFF as the destination asks (converted
with Pillow where needed), and a PNG of page 1 taken from the fax image itself (received faxes are images;
PDFs that are not are rendered).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from PIL import Image, ImageSequence

from bridge.errors import BridgeError, NotificationError
from bridge.mailer import Mailer
from bridge.models import InboundRef, InboundState
from bridge.notify import load_templates, subject_header
from bridge.providers.base import Capability, FaxProvider
from bridge.routing import format_number
from bridge.settings import AccountSettings, InboundDestination, Settings
from bridge.stores.base import JobStore
from bridge.templates import Templates

__all__ = ["FaxImages", "InboundDelivery", "account_for_incoming", "compose_incoming", "fax_images", "route_for"]

log = logging.getLogger(__name__)

POLL_LEASE = "inbound-poll"
PREVIEW_WIDTH = 480
_MAX_RETRY = timedelta(hours=1)


def route_for(settings: Settings, called: str | None) -> list[InboundDestination]:
    """The destinations for a fax to ``called``: its route's, else the ``*`` route's, else none."""
    routes = settings.inbound.routes
    for route in routes:
        if called and route.number == called:
            return [d for d in route.destinations if d.incoming]
    for route in routes:
        if route.number == "*":
            return [d for d in route.destinations if d.incoming]
    return []


def account_for_incoming(settings: Settings, called: str | None) -> AccountSettings | None:
    """The account whose language and time zone the mail of a fax to ``called`` is written in.

    Incoming faxes belong to no account as such: this is the first account that sends from that number
    (``caller_id``), else the first that gives it to one of its senders (``sender_caller_ids``); ``None``
    (English and UTC) when none does.
    """
    if not called:
        return None
    for account in settings.accounts:
        if account.caller_id == called:
            return account
    for account in settings.accounts:
        if called in account.sender_caller_ids.values():
            return account
    return None


@dataclass(frozen=True, slots=True)
class FaxImages:
    """An incoming fax as page images, with what it was delivered as."""

    pages: list[Image.Image]
    original: bytes
    kind: str  # "pdf" or "tiff"


def fax_images(document: bytes) -> FaxImages:
    """The fax's pages as images: TIFF frames, or the image on each PDF page (rendered when there is none)."""
    if document.startswith((b"II*\x00", b"MM\x00*")):
        with Image.open(io.BytesIO(document), formats=["TIFF"]) as tiff:
            frames = [frame.copy() for frame in ImageSequence.Iterator(tiff)]
        return FaxImages(frames, document, "tiff")
    if b"%PDF" not in document[:1024]:
        raise ValueError("the provider delivered something that is neither PDF nor TIFF")
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(document))
    pages: list[Image.Image] = []
    for index, page in enumerate(reader.pages):
        images = list(page.images)
        if len(images) == 1 and images[0].image is not None:
            pages.append(images[0].image.copy())
        else:
            pages.append(_render(document, index))
    return FaxImages(pages, document, "pdf")


def _render(document: bytes, index: int) -> Image.Image:
    # A page that is not one picture (a provider's cover sheet with text): render it at fax resolution.
    import pypdfium2

    pdf = pypdfium2.PdfDocument(document)
    try:
        page = pdf[index]
        image: Image.Image = page.render(scale=204 / 72, grayscale=True).to_pil().convert("L")
        page.close()
        return image
    finally:
        pdf.close()


def as_tiff(fax: FaxImages) -> bytes:
    if fax.kind == "tiff":
        return fax.original
    frames = [page.convert("1") for page in fax.pages]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", compression="group4", save_all=True, append_images=frames[1:], dpi=(204, 196))
    return out.getvalue()


def as_pdf(fax: FaxImages) -> bytes:
    if fax.kind == "pdf":
        return fax.original
    frames = [page.convert("1") if page.mode == "1" else page.convert("L") for page in fax.pages]
    dpi = fax.pages[0].info.get("dpi", (204, 196))
    out = io.BytesIO()
    frames[0].save(out, "PDF", save_all=True, append_images=frames[1:], resolution=float(dpi[0]))
    return out.getvalue()


def preview_png(fax: FaxImages) -> bytes:
    first = fax.pages[0].convert("L")
    # Fax pages are often 204 × 98 or 204 × 196 dpi: stretch to square pixels before shrinking.
    x_dpi, y_dpi = (float(v) for v in fax.pages[0].info.get("dpi", (1, 1)))
    height = first.height * (x_dpi / y_dpi if y_dpi else 1.0)
    size = (PREVIEW_WIDTH, max(1, round(height * PREVIEW_WIDTH / first.width)))
    # An integer reduction first (a box filter, cheap) and a gentle resize after: as sharp as LANCZOS from
    # the full page at a fifth of the time (measured 16 ms against 3 ms for a fine A4 page).
    factor = max(1, min(first.width // size[0], first.height // size[1]))
    small = first.reduce(factor) if factor > 1 else first
    out = io.BytesIO()
    small.resize(size, Image.Resampling.BILINEAR).save(out, "PNG", compress_level=3)
    return out.getvalue()


def compose_incoming(
    ref: InboundRef,
    fax: FaxImages,
    destinations: Sequence[InboundDestination],
    *,
    from_address: str,
    hostname: str,
    service: str,
    now: datetime,
    language: str = "en",
    timezone: str = "UTC",
    account: str | None = None,
    templates: Templates | None = None,
) -> EmailMessage:
    """The mail that brings one incoming fax to its destinations (which share a format and preview choice).

    Subject, text and HTML part are the ``incoming`` template in ``language``, with the time received in
    ``timezone``, from ``templates`` (default: the shipped ones), using the override of ``account`` where it
    has one (``account_for_incoming`` picks the account; English and UTC when there is none).
    """
    rendered = (templates or load_templates()).render(
        "incoming",
        language,
        {
            "caller": format_number(ref.caller) if ref.caller else None,
            "called": format_number(ref.called) if ref.called else None,
            "pages": len(fax.pages),
            "fax_id": ref.provider_fax_id,
            "service": service,
        },
        account=account,
        tz=timezone,
        when=ref.received_at,
    )
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = ", ".join(d.address for d in destinations)
    message["Subject"] = subject_header(rendered.subject)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=hostname.strip().rstrip(".") or "faxbridge.invalid")
    message["Auto-Submitted"] = "auto-generated"
    message["X-Faxbridge-Fax"] = f"{ref.provider}:{ref.provider_fax_id}"
    text = rendered.text
    message.set_content(text, charset="utf-8", cte=None if text.isascii() else "quoted-printable")
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    stamp = ref.received_at.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    number = (ref.caller or "unknown").lstrip("+")
    choice = destinations[0]
    if choice.format == "tiff":
        message.add_attachment(as_tiff(fax), maintype="image", subtype="tiff", filename=f"fax-{stamp}-{number}.tif")
    else:
        message.add_attachment(as_pdf(fax), maintype="application", subtype="pdf", filename=f"fax-{stamp}-{number}.pdf")
    if choice.preview:
        message.add_attachment(preview_png(fax), maintype="image", subtype="png", filename="fax-page-1.png")
    return message


class InboundDelivery:
    """Polls the providers and mails their faxes, once."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        providers: Mapping[str, FaxProvider],
        mailer: Mailer,
        *,
        holder: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._store = store
        self._providers = providers
        self._mailer = mailer
        self._holder = holder
        self._clock = clock
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.delivered = 0
        """Faxes this instance mailed since it started."""

    async def poll(self) -> int:
        """Ask every provider with an inbound side for its faxes and deliver them; return how many were mailed."""
        now = self._clock()
        lease = timedelta(seconds=max(30.0, self._settings.inbound.poll_seconds * 3))
        try:
            if not await self._store.take_cluster_lease(POLL_LEASE, self._holder, now + lease, now):
                return 0
        except BridgeError as exc:
            log.warning("cannot take the inbound polling lease: %s", exc)
            return 0
        mailed = 0
        for provider in self._providers.values():
            if Capability.INBOUND_POLL not in provider.capabilities:
                continue
            try:
                refs = await provider.poll_incoming()
            except BridgeError as exc:
                log.warning("cannot list incoming faxes at %s: %s", provider.name, exc)
                continue
            for ref in refs:
                mailed += await self.deliver(provider, ref)
        return mailed

    async def deliver(self, provider: FaxProvider, ref: InboundRef) -> bool:
        """Mail one fax if it is still due; whether this call mailed it."""
        async with self._locks[(ref.provider, ref.provider_fax_id)]:
            return await self._deliver(provider, ref)

    async def _deliver(self, provider: FaxProvider, ref: InboundRef) -> bool:
        now = self._clock()
        record = await self._store.claim_inbound(ref, self._holder, now + timedelta(minutes=10), now)
        if record is None:
            return False
        mailed = False
        if record.state == InboundState.PENDING:
            destinations = route_for(self._settings, ref.called)
            if not destinations:
                log.warning(
                    "incoming fax %s at %s to %s: no inbound route takes it; it stays at the provider",
                    ref.provider_fax_id,
                    provider.name,
                    ref.called or "an unknown number",
                )
                await self._later(ref, record.attempts, "no inbound route for the called number")
                return False
            try:
                document = await provider.download(ref)
                fax = await asyncio.to_thread(fax_images, document)
                groups: dict[tuple[str, bool], list[InboundDestination]] = defaultdict(list)
                for destination in destinations:
                    groups[(destination.format, destination.preview)].append(destination)
                account = account_for_incoming(self._settings, ref.called)
                templates = load_templates(self._settings)
                for group in groups.values():
                    message = await asyncio.to_thread(
                        compose_incoming,
                        ref,
                        fax,
                        group,
                        from_address=self._settings.mail.from_address,
                        hostname=self._settings.smtp.hostname,
                        service=provider.display_name,
                        now=now,
                        language=account.language if account is not None else "en",
                        timezone=account.timezone if account is not None else "UTC",
                        account=account.name if account is not None else None,
                        templates=templates,
                    )
                    await self._mailer.deliver(message, [d.address for d in group])
            except NotificationError as exc:
                log.warning(
                    "incoming fax %s: the mail was not taken (%s); trying again later", ref.provider_fax_id, exc
                )
                await self._later(ref, record.attempts, str(exc))
                return False
            except Exception as exc:  # a provider error, a damaged document: the fax stays at the provider
                log.warning(
                    "incoming fax %s at %s cannot be delivered yet: %s", ref.provider_fax_id, provider.name, exc
                )
                await self._later(ref, record.attempts, f"{type(exc).__name__}: {exc}")
                return False
            await self._store.update_inbound(
                ref.provider, ref.provider_fax_id, self._holder, state=InboundState.DELIVERED, now=self._clock()
            )
            self.delivered += 1
            mailed = True
            log.info(
                "incoming fax %s at %s from %s mailed to %s",
                ref.provider_fax_id,
                provider.name,
                ref.caller or "an unknown number",
                ", ".join(d.address for d in destinations),
            )
        if Capability.INBOUND_ACK in provider.capabilities:
            try:
                await provider.acknowledge(ref)
            except BridgeError as exc:
                log.warning(
                    "incoming fax %s: mailed, but %s was not told yet: %s", ref.provider_fax_id, provider.name, exc
                )
                await self._later(ref, record.attempts, str(exc))
                return mailed
        await self._store.update_inbound(
            ref.provider, ref.provider_fax_id, self._holder, state=InboundState.ACKNOWLEDGED, now=self._clock()
        )
        return mailed

    async def _later(self, ref: InboundRef, attempts: int, error: str) -> None:
        base = timedelta(seconds=self._settings.inbound.retry_seconds)
        delay = min(_MAX_RETRY, base * (2 ** min(attempts, 10)))
        now = self._clock()
        await self._store.update_inbound(
            ref.provider, ref.provider_fax_id, self._holder, error=error[:1000], next_attempt_at=now + delay, now=now
        )
