"""Mail2Fax secret keys, per-sender rate limits and the From: check, over real SMTP against a running bridge.

Time is the bridge's own clock (``Bridge.clock``), moved forward by the test; renewal runs the same
``KeyRotation.rotate_due`` the daemon's timer runs every minute.
"""

from __future__ import annotations

import asyncio
import email
import email.utils
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fpdf import FPDF
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.app import Bridge
from bridge.models import JobState
from bridge.secret_keys import KEY_LENGTH
from bridge.settings import Settings
from tests.conftest import maildir_bytes
from tests.integration.smtp_client import atransact, make_message

FAX = "+4930123456@fax.localhost"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY_WORD = re.compile(rf"^    ([A-Z0-9]{{{KEY_LENGTH}}})$", re.M)
pytestmark = pytest.mark.timeout(120)


def account(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "demo",
        "provider": "local",
        "country": "DE",
        "allowed_senders": ["demo@example.com", "scanner@example.com"],
    }
    return {**base, **changes}


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def mails(settings: Settings) -> list[Message]:
    return [email.message_from_bytes(raw, policy=default) for raw in maildir_bytes(settings)]


def key_mails(settings: Settings) -> list[Message]:
    """The key mails, oldest first by their Date (the bridge's clock): Maildir names do not order mails
    written within the same second."""
    found = [m for m in mails(settings) if str(m["Subject"]).startswith("New fax secret key")]
    return sorted(found, key=lambda m: email.utils.parsedate_to_datetime(str(m["Date"])))


def key_from(message: Message) -> str:
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found = KEY_WORD.findall(str(body.get_content()))
    assert len(found) == 1
    return str(found[0])


async def send(bridge: Bridge, subject: str, *, sender: str = "demo@example.com", **kw: Any) -> tuple[int, int, str]:
    assert bridge.address is not None
    message = make_message(sender=sender, subject=subject, **kw)
    result = await atransact(bridge.address[1], sender, [FAX], message.as_bytes())
    rcpt_code = result.rcpts[0][0]
    return rcpt_code, result.data_code or 0, result.data_text


async def job_count(bridge: Bridge) -> int:
    assert bridge.store is not None
    return len(await bridge.store.list_jobs(limit=1000))


async def database_text(settings: Settings) -> bytes:
    """Every value of every table, as text: what someone with the database in hand could read."""
    chunks: list[bytes] = []

    def read(conn: sa.Connection) -> None:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                chunks.extend(value if isinstance(value, bytes) else str(value).encode() for value in row)

    url = settings.store_url
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                read(conn)
        finally:
            engine.dispose()
    else:
        async_engine = create_async_engine(url)
        try:
            async with async_engine.connect() as conn:
                await conn.run_sync(read)
        finally:
            await async_engine.dispose()
    return b"\n".join(chunks)


async def test_keys_roll_on_schedule_and_the_old_one_works_only_in_its_grace(
    make_settings: Any, store_url: str
) -> None:
    settings = make_settings(
        store={"url": store_url},
        accounts=[
            account(
                secret_key_required=True,
                secret_key_renew="daily",
                secret_key_grace_hours=2,
                secret_key_notify=["fax-admin@example.com"],
            )
        ],
    )
    clock = Clock(T0)
    bridge = Bridge(settings, clock=clock)
    await bridge.start()
    try:
        assert bridge.keys is not None
        # An account that requires a key and has none gets one at start, mailed to its notify list.
        [first_mail] = key_mails(settings)
        assert first_mail["To"] == "fax-admin@example.com"
        first = key_from(first_mail)

        assert await send(bridge, "Invoice 4711") == (250, 550, "5.7.1 Delivery not authorized")
        assert await send(bridge, "Invoice 4711 Q2W3E4R5T6Y7U8P9") == (250, 550, "5.7.1 Delivery not authorized")
        assert await send(bridge, f"Invoice 4711 {first.lower()}") == (250, 550, "5.7.1 Delivery not authorized")
        assert await job_count(bridge) == 0
        rcpt, data, _ = await send(bridge, f"Invoice 4711 {first}")
        assert (rcpt, data) == (250, 250)

        # Not due yet: nothing changes a minute before the day is over.
        clock.now = T0 + timedelta(days=1) - timedelta(minutes=1)
        assert await bridge.keys.rotate_due(clock.now) == []
        clock.now = T0 + timedelta(days=1, minutes=1)
        assert await bridge.keys.rotate_due(clock.now) == ["demo"]
        assert await bridge.keys.rotate_due(clock.now) == []  # renewed once, not on every tick
        second = key_from(key_mails(settings)[-1])
        assert second != first
        assert len(key_mails(settings)) == 2

        clock.now = T0 + timedelta(days=1, hours=1)  # the old key is in its two hours of grace
        assert (await send(bridge, f"{first} order 1"))[1] == 250
        assert (await send(bridge, f"{second} order 2"))[1] == 250
        clock.now = T0 + timedelta(days=1, hours=2, minutes=2)  # and now it is not
        assert await send(bridge, f"{first} order 3") == (250, 550, "5.7.1 Delivery not authorized")
        assert (await send(bridge, f"{second} order 4"))[1] == 250

        assert bridge.store is not None
        jobs = await bridge.store.list_jobs(limit=100)
        assert sorted(job.subject for job in jobs) == ["Invoice 4711", "order 1", "order 2", "order 4"]
        for job in jobs:
            raw = await bridge.store.get_message(job.message_id)
            assert first.encode() not in raw
            assert second.encode() not in raw
        stored = await database_text(settings)
        assert first.encode() not in stored
        assert second.encode() not in stored
        assert b"Invoice 4711" in stored  # the scan does read the messages
    finally:
        await bridge.stop()
    # Nor did any notice to the sender echo a key.
    for message in mails(settings):
        if not str(message["Subject"]).startswith("New fax secret key"):
            assert first not in message.as_string()
            assert second not in message.as_string()


def test_the_cli_shows_the_state_and_rotates_by_hand(make_settings: Any, capsys: Any) -> None:
    from bridge.cli import main

    settings = make_settings(accounts=[account(secret_key_required=True, secret_key_notify=["ops@example.com"])])
    assert settings.config_file is not None
    config = str(settings.config_file)
    assert main(["--config", config, "secrets", "show", "demo"]) == 0
    shown = capsys.readouterr().out
    assert "current key:     none yet" in shown
    assert main(["--config", config, "secrets", "rotate", "demo"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(key) == KEY_LENGTH
    assert key_from(key_mails(settings)[-1]) == key
    assert main(["--config", config, "secrets", "show", "demo"]) == 0
    shown = capsys.readouterr().out
    assert key not in shown
    assert "key required:    yes" in shown
    assert "current key:     20" in shown
    assert main(["--config", config, "secrets", "show", "nobody"]) == 64
    # The administrator's own command needs no key: it has the configuration.
    assert main(["--config", config, "send", "--to", "030123456", "--text", "from the console"]) == 0
    assert "queued job" in capsys.readouterr().out

    async def daemon_accepts_it() -> None:
        bridge = Bridge(settings)
        await bridge.start()
        try:
            assert (await send(bridge, f"hello {key}"))[1] == 250
            assert len(key_mails(settings)) == 1  # the running bridge found a key and made none of its own
        finally:
            await bridge.stop()

    asyncio.run(daemon_accepts_it())


async def test_faxes_per_hour_are_limited_per_sender(make_settings: Any) -> None:
    settings = make_settings(accounts=[account(max_faxes_per_hour=2)])
    clock = Clock(datetime.now(UTC))
    bridge = Bridge(settings, clock=clock)
    await bridge.start()
    try:
        assert (await send(bridge, "one"))[1] == 250
        assert (await send(bridge, "two"))[1] == 250
        rcpt, _, _ = await send(bridge, "three")
        assert rcpt == 450
        assert await job_count(bridge) == 2
        # Another sender of the same account has a budget of its own.
        assert (await send(bridge, "scan", sender="scanner@example.com"))[1] == 250
        clock.now += timedelta(hours=1, minutes=1)
        assert (await send(bridge, "three, later"))[1] == 250
    finally:
        await bridge.stop()


def pdf_of(pages: int) -> bytes:
    doc = FPDF()
    doc.set_font("helvetica", size=14)
    for number in range(pages):
        doc.add_page()
        doc.text(20, 30, f"page {number + 1}")
    return bytes(doc.output())


async def test_pages_per_day_are_limited_per_sender(make_settings: Any) -> None:
    settings = make_settings(accounts=[account(max_pages_per_day=4, cover="none")])
    bridge = Bridge(settings)
    await bridge.start()
    try:
        assert bridge.worker is not None
        attach = [("two.pdf", pdf_of(2), "application/pdf")]
        assert (await send(bridge, "first", attachments=attach))[1] == 250
        await bridge.worker.wait_for_count("delivered", 1)
        # Two more pages reach the limit exactly; three would pass it and are refused with a notice.
        three = [("three.pdf", pdf_of(3), "application/pdf")]
        assert (await send(bridge, "too long", attachments=three))[1] == 250
        await bridge.worker.wait_for_count("rejected", 1)
        assert (await send(bridge, "second", attachments=attach))[1] == 250
        await bridge.worker.wait_for_count("delivered", 2)
        # The day's pages are used up: the next mail is deferred at RCPT.
        assert (await send(bridge, "fourth", attachments=attach))[0] == 450
        assert bridge.store is not None
        jobs = {job.subject: job for job in await bridge.store.list_jobs(limit=10)}
        assert jobs["too long"].state == JobState.REJECTED
        assert jobs["too long"].reason is not None
        assert "the limit is 4 pages a day" in jobs["too long"].reason
        assert "fourth" not in jobs
    finally:
        await bridge.stop()


async def test_from_must_match_unless_the_account_says_otherwise(make_settings: Any, tmp_path: Path) -> None:
    for check_from, expected in ((True, 550), (False, 250)):
        settings = make_settings(accounts=[account(check_from=check_from)])
        bridge = Bridge(settings)
        await bridge.start()
        try:
            assert bridge.address is not None
            message = make_message(sender="demo@example.com")
            del message["From"]
            message["From"] = "Copier 3rd floor <copier@printers.internal>"
            result = await atransact(bridge.address[1], "demo@example.com", [FAX], message.as_bytes())
            assert result.data_code == expected, check_from
        finally:
            await bridge.stop()
