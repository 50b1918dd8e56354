"""Fax to email: incoming faxes from each provider with an inbound side, mailed once, acknowledged after.

The mail goes to a real aiosmtpd on loopback (the recording sink, standing in for the relay) or into the
Maildir; providers are the local inbox and the fakes of the real services, served on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import email
import io
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader

from bridge.app import Bridge
from bridge.fakes import available
from bridge.fakes.base import start
from bridge.providers import provider_class
from bridge.providers.base import Capability
from bridge.settings import Settings
from tests.conftest import maildir_bytes, running_bridge
from tests.fakes.smtp import RecordingSink
from tests.integration.test_providers_e2e import harness_class, pointed_at

pytestmark = pytest.mark.timeout(120)


def fax_page(text: str = "INCOMING FAX") -> Image.Image:
    """A received fax page: 1-bit, 1728 dots across, fine resolution."""
    page = Image.new("1", (1728, 2292), 1)
    draw = ImageDraw.Draw(page)
    draw.rectangle((100, 100, 1628, 400), outline=0, width=8)
    draw.text((200, 200), text, fill=0)
    return page


def fax_pdf(pages: int = 2) -> bytes:
    frames = [fax_page(f"PAGE {n + 1}") for n in range(pages)]
    out = io.BytesIO()
    frames[0].save(out, "PDF", save_all=True, append_images=frames[1:], resolution=204.0)
    return out.getvalue()


def drop(settings: Settings, name: str, data: bytes, caller: str, called: str) -> Path:
    inbox = settings.path(settings.providers["local"]["inbox"])
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / Path(name).with_suffix(".json")).write_text(json.dumps({"caller": caller, "called": called}))
    path = inbox / name
    path.write_bytes(data)
    return path


def mails(settings: Settings) -> list[EmailMessage]:
    found = []
    for raw in maildir_bytes(settings):
        message = email.message_from_bytes(raw, policy=default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def relay(sink: RecordingSink) -> dict[str, Any]:
    return {"maildir": None, "relay": {"host": sink.host, "port": sink.port, "starttls": "never", "timeout": 10}}


def attachments(message: EmailMessage) -> dict[str, tuple[str, bytes]]:
    return {str(p.get_filename()): (p.get_content_type(), p.get_content()) for p in message.iter_attachments()}


async def test_a_fax_dropped_into_the_inbox_is_mailed_once_with_preview(make_settings: Any) -> None:
    settings = make_settings(inbound={"enabled": False})  # polled by hand below, not by the timer
    async with running_bridge(settings) as bridge:
        path = drop(settings, "fax1.pdf", fax_pdf(2), caller="+31201234567", called="+4930123456")
        assert await bridge.inbound.poll() == 1
        assert await bridge.inbound.poll() == 0  # acknowledged: moved out of the inbox
    [message] = mails(settings)
    assert message["To"] == "demo@example.com"
    assert message["Subject"] == "Fax from +31 20 123 4567 — 2 pages"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    for fact in ("+31 20 123 4567", "+49 30 123456", "Pages:", "fax1.pdf"):
        assert fact in str(text.get_content())
    assert "+31 20 123 4567" in str(html.get_content())
    files = attachments(message)
    [(pdf_type, pdf)] = [v for k, v in files.items() if k.endswith(".pdf")]
    assert pdf_type == "application/pdf"
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 2
    preview_type, preview = files["fax-page-1.png"]
    assert preview_type == "image/png"
    picture = Image.open(io.BytesIO(preview))
    assert picture.width == 480
    # The preview is the fax's own page: ink where the box was drawn, white below it.
    grey = picture.convert("L")
    assert grey.crop((20, 20, 460, 130)).getextrema()[0] < 100
    assert grey.crop((30, 150, 450, 600)).getextrema()[0] > 200
    assert not path.exists()
    assert (path.parent / "delivered" / "fax1.pdf").exists()


async def test_routes_pick_the_destinations_and_the_format(make_settings: Any) -> None:
    settings = make_settings(
        inbound={
            "enabled": False,
            "routes": [
                {
                    "number": "+4930123456",
                    "destinations": [
                        {"address": "sales@example.com", "format": "tiff", "preview": False},
                        {"address": "boss@example.com", "format": "pdf"},
                    ],
                },
                {"number": "*", "destinations": [{"address": "frontdesk@example.com"}]},
            ],
        }
    )
    async with running_bridge(settings) as bridge:
        drop(settings, "a.tif", _tiff(), caller="+31201234567", called="+4930123456")
        drop(settings, "b.pdf", fax_pdf(1), caller="+31201234567", called="+4930999888")
        assert await bridge.inbound.poll() == 2
    by_to = {str(m["To"]): m for m in mails(settings)}
    assert set(by_to) == {"sales@example.com", "boss@example.com", "frontdesk@example.com"}
    sales = attachments(by_to["sales@example.com"])
    assert [t for t, _ in sales.values()] == ["image/tiff"]
    boss = attachments(by_to["boss@example.com"])
    assert sorted(t for t, _ in boss.values()) == ["application/pdf", "image/png"]
    [(_, converted)] = [v for k, v in boss.items() if k.endswith(".pdf")]
    assert len(PdfReader(io.BytesIO(converted)).pages) == 3  # the TIFF's three pages, as PDF


def _tiff() -> bytes:
    frames = [fax_page(f"T{n}") for n in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", compression="group4", save_all=True, append_images=frames[1:], dpi=(204, 196))
    return out.getvalue()


async def test_relay_outage_keeps_the_fax_and_acknowledges_only_after_the_250(
    make_settings: Any, sink: RecordingSink
) -> None:
    settings = make_settings(mail=relay(sink), inbound={"enabled": False, "retry_seconds": 60})
    clock = [datetime.now(UTC)]
    bridge = Bridge(settings, clock=lambda: clock[0])
    await bridge.start()
    try:
        assert bridge.inbound is not None
        path = drop(settings, "fax2.pdf", fax_pdf(1), caller="+31201234567", called="+4930123456")
        sink.fail_next("DATA", "451 4.3.0 relay busy, try later")
        assert await bridge.inbound.poll() == 0
        assert sink.messages == []
        assert path.exists()  # not acknowledged: the provider keeps it
        assert await bridge.inbound.poll() == 0  # and not retried before its time
        clock[0] += timedelta(seconds=61)
        assert await bridge.inbound.poll() == 1
        [received] = await sink.wait_for(1)
        assert received.rcpt_tos == ("demo@example.com",)
        assert not path.exists()
        clock[0] += timedelta(hours=2)
        assert await bridge.inbound.poll() == 0
        assert len(sink.messages) == 1
    finally:
        await bridge.stop()


async def test_the_same_fax_announced_three_times_at_once_is_mailed_once(
    make_settings: Any, sink: RecordingSink
) -> None:
    settings = make_settings(mail=relay(sink), inbound={"enabled": False})
    async with running_bridge(settings) as bridge:
        drop(settings, "fax3.pdf", fax_pdf(1), caller="+31201234567", called="+4930123456")
        provider = bridge.providers["local"]
        [ref] = await provider.poll_incoming()
        results = await asyncio.gather(*(bridge.inbound.deliver(provider, ref) for _ in range(3)))
        assert sorted(results) == [False, False, True]
        # A second bridge instance on the same database sees it as done, too.
        other = type(bridge.inbound)(settings, bridge.store, {"local": provider}, bridge.mailer, holder="other")
        assert await other.deliver(provider, ref) is False
    assert len(sink.messages) == 1


def inbound_fakes() -> list[str]:
    return [name for name in available() if Capability.INBOUND_POLL in provider_class(name).capabilities]


@pytest.mark.parametrize("name", inbound_fakes())
async def test_each_providers_incoming_fax_reaches_the_relay_once(
    name: str, make_settings: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    state_dir = tmp_path / "var"
    state_dir.mkdir()
    harness = harness_class(name)(state_dir)
    url, stop = await start(harness.fake)
    try:
        settings = make_settings(
            mail=relay(sink),
            inbound={"enabled": False},
            providers={name: pointed_at(harness.section(), url)},
            accounts=[{"name": "demo", "provider": name, "country": "DE", "allowed_senders": ["demo@example.com"]}],
        )
        async with running_bridge(settings) as bridge:
            await harness.inject_inbound(fax_pdf(1), caller="+31201234567", called="+4930999000")
            assert await bridge.inbound.poll() == 1
            assert await bridge.inbound.poll() == 0
        [received] = await sink.wait_for(1)
        message = received.message
        assert str(message["Subject"]).startswith("Fax from +31 20 123 4567")
        files = attachments(message)
        assert any(t == "application/pdf" for t, _ in files.values())
        assert "fax-page-1.png" in files
        assert len(sink.messages) == 1
    finally:
        await stop()
