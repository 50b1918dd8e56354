"""Documents end to end: what people attach, through SMTP, the sandboxed pipeline, the outbox and the notice.

Each test reads what a person would read: the pages in the outbox (text extracted, or pixels rendered) and
the notice in the Maildir (its lines per attachment, its preview picture).
"""

from __future__ import annotations

import asyncio
import email
import io
import random
from email.message import EmailMessage, Message
from email.policy import default
from pathlib import Path
from typing import Any

import pypdf
import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw
from pypdf import PdfWriter

from bridge.models import JobState
from bridge.settings import Settings
from tests.conftest import maildir_bytes, running_bridge
from tests.integration.smtp_client import atransact, make_message

FAX = "+4930123456@fax.localhost"
TIMEOUT = 60
pytestmark = pytest.mark.timeout(180)


def pdf_with(pages: int, label: str, *, size: str = "a4", orientation: str = "portrait") -> bytes:
    doc = FPDF(orientation=orientation, unit="mm", format=size)
    doc.set_font("helvetica", size=16)
    for number in range(1, pages + 1):
        doc.add_page()
        doc.text(20, 30, f"{label} page {number}")
    return bytes(doc.output())


def photo_jpeg() -> bytes:
    # A scene with smooth gradients and noise: a photograph as far as the converter can tell.
    rng = random.Random(5)
    image = Image.linear_gradient("L").resize((1200, 900)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(400):
        x, y = rng.randrange(1200), rng.randrange(900)
        shade = rng.randrange(256)
        draw.ellipse((x, y, x + rng.randrange(10, 80), y + rng.randrange(10, 80)), fill=(shade, shade // 2, 90))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def locked_pdf() -> bytes:
    writer = PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_with(1, "Secret"))))
    writer.encrypt(user_password="letmein", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def job_ids_from(reply: str) -> list[str]:
    return reply.rsplit(" as ", 1)[1].split(",")


def notices(settings: Settings) -> list[Message]:
    return [email.message_from_bytes(raw, policy=default) for raw in maildir_bytes(settings)]


def outbox_pdf(settings: Settings, job_id: str) -> pypdf.PdfReader:
    path: Path = settings.path(settings.providers["local"]["outbox"]) / f"{job_id}.pdf"
    return pypdf.PdfReader(path)


def body_of(notice: Message) -> str:
    assert isinstance(notice, EmailMessage)
    part = notice.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


async def send(bridge: Any, message: EmailMessage) -> str:
    result = await atransact(bridge.address[1], "demo@example.com", [FAX], message.as_bytes())
    assert result.data_code == 250, result.data_text
    [job_id] = job_ids_from(result.data_text)
    return job_id


async def test_pdf_photo_and_vcard_become_one_fax_and_the_notice_lists_each(running: Any, settings: Settings) -> None:
    message = make_message(
        attachments=[
            ("report.pdf", pdf_with(3, "Quarterly report", size="letter"), "application/pdf"),
            ("wide.pdf", pdf_with(1, "Landscape table", orientation="landscape"), "application/pdf"),
            ("holiday.jpg", photo_jpeg(), "image/jpeg"),
            ("jane.vcf", b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane\r\nEND:VCARD\r\n", "text/vcard"),
        ]
    )
    job_id = await send(running, message)
    await asyncio.wait_for(running.worker.wait_for_count("notice_sent", 1), TIMEOUT)

    fax = outbox_pdf(settings, job_id)
    assert len(fax.pages) == 6  # the message text, 3 + 1 PDF pages, the photo
    for page in fax.pages:  # every page portrait A4, whatever it was
        assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (595, 842)
    assert "12 boxes of paper" in fax.pages[0].extract_text()
    assert "Quarterly report page 3" in fax.pages[3].extract_text()
    assert "Landscape table page 1" in fax.pages[4].extract_text()

    [notice] = notices(settings)
    text = body_of(notice)
    for line in (
        "message text: 1 page",
        "report.pdf: 3 pages",
        "wide.pdf: 1 page",
        "holiday.jpg: 1 page",
        "jane.vcf: skipped, contact cards are not faxed",
    ):
        assert line in text
    previews = [part for part in notice.iter_attachments() if part.get_filename() == "fax-page-1.png"]
    assert len(previews) == 1
    picture = Image.open(io.BytesIO(previews[0].get_content()))
    assert picture.format == "PNG"
    assert 200 <= picture.width <= 600
    job = await running.store.get_job(job_id)
    assert job.pages == 6


async def test_refused_attachments_are_each_named_and_nothing_is_dialled(running: Any, settings: Settings) -> None:
    message = make_message(
        attachments=[
            ("contract.pdf", pdf_with(2, "Contract"), "application/pdf"),
            ("secret.pdf", locked_pdf(), "application/pdf"),
            ("bundle.zip", b"PK\x03\x04" + bytes(60), "application/zip"),
        ]
    )
    job_id = await send(running, message)
    await asyncio.wait_for(running.worker.wait_for_count("notice_sent", 1), TIMEOUT)

    job = await running.store.get_job(job_id)
    assert job.state == JobState.REJECTED
    assert job.reason == "2 attachments cannot be faxed: secret.pdf, bundle.zip"
    assert not (settings.path(settings.providers["local"]["outbox"]) / f"{job_id}.pdf").exists()
    [notice] = notices(settings)
    assert "not sent" in notice["Subject"]
    text = body_of(notice)
    assert "contract.pdf: 2 pages" in text
    assert "secret.pdf: the PDF is password-protected" in text
    assert "bundle.zip: zip archives cannot be faxed" in text
    assert not [part for part in notice.iter_attachments() if part.get_filename() == "fax-page-1.png"]


async def test_cover_page_carries_from_to_subject_date_and_page_count(make_settings: Any) -> None:
    settings = make_settings(
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["demo@example.com"],
                "cover": "page",
            }
        ]
    )
    async with running_bridge(settings) as bridge:
        message = make_message(
            subject="Invoice 2026-117",
            body="Dear Mr Smith,\n\nplease find our invoice attached.",
            attachments=[("invoice.pdf", pdf_with(2, "Invoice"), "application/pdf")],
        )
        job_id = await send(bridge, message)
        await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", 1), TIMEOUT)
        fax = outbox_pdf(settings, job_id)
        assert len(fax.pages) == 3
        cover = fax.pages[0].extract_text()
        for expected in ("demo@example.com", "+49 30 123456", "Invoice 2026-117", "please find our invoice", "3"):
            assert expected in cover
        assert "Invoice page 1" in fax.pages[1].extract_text()


async def test_a_document_over_a_limit_is_refused_and_the_bridge_carries_on(make_settings: Any) -> None:
    # A text of some 2000 pages is real work for the typesetter: about two seconds, far more than half a second.
    settings = make_settings(
        documents={"timeout_seconds": 0.5},
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["demo@example.com"],
                "max_pages": 10000,
            }
        ],
    )
    words = ["fax", "page", "limit", "sandbox", "timeout", "document"]
    rng = random.Random(1)
    text = "\n".join(" ".join(rng.choice(words) for _ in range(14)) for _ in range(48 * 1500)).encode()
    async with running_bridge(settings) as bridge:
        heavy = make_message(attachments=[("minutes.txt", text, "text/plain")])
        heavy_id = await send(bridge, heavy)
        await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", 1), TIMEOUT)
        job = await bridge.store.get_job(heavy_id)
        assert job.state == JobState.REJECTED
        assert job.reason == "minutes.txt: converting it took longer than the limit of 0.5 seconds"

        light_id = await send(bridge, make_message(body="a short note"))
        await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", 2), TIMEOUT)
        assert (await bridge.store.get_job(light_id)).state == JobState.DELIVERED
