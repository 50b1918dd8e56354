"""Destination policy over real SMTP: a number the account may not fax to is refused at RCPT and leaves no trace."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import DestinationDenied
from bridge.settings import Settings
from tests.conftest import SettingsFactory, maildir_bytes, outbox_submissions, running_bridge
from tests.integration.smtp_client import atransact, make_message

SENDER = "demo@example.com"
PREMIUM = "+499001234567@fax.localhost"  # phonenumbers' example German premium-rate number
FIXED = "+4930123456@fax.localhost"
TIMEOUT = 30


def denied(reply: tuple[int, bytes]) -> bool:
    """Whether an RCPT reply is exactly the destination refusal."""
    code, text = reply
    return f"{code} {text.decode()}" == DestinationDenied.smtp_reply


def outbox_files(settings: Settings) -> list[Path]:
    folder = settings.path(settings.providers["local"]["outbox"])
    return sorted(folder.iterdir()) if folder.exists() else []


def submitted_numbers(settings: Settings) -> list[str]:
    return [record["number"] for record in outbox_submissions(settings)]


def mails(settings: Settings) -> list[bytes]:
    return maildir_bytes(settings)


async def assert_no_trace(bridge: Any, settings: Settings) -> None:
    assert await bridge.store.list_jobs() == []
    assert outbox_files(settings) == []
    assert mails(settings) == []


@pytest.fixture
async def restricted(make_settings: SettingsFactory) -> AsyncIterator[tuple[Any, Settings]]:
    """A bridge whose account may fax only to Germany, and not to +4940."""
    settings = make_settings(
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "country": "DE",
                "allowed_senders": [SENDER],
                "allowed_countries": ["DE"],
                "denied_prefixes": ["+4940"],
            }
        ]
    )
    async with running_bridge(settings) as bridge:
        yield bridge, settings


@pytest.mark.parametrize("rcpt", [PREMIUM, "00499001234567@fax.localhost", "09001234567@fax.localhost"])
async def test_premium_rate_is_refused_at_rcpt_and_leaves_no_trace(running: Any, settings: Settings, rcpt: str) -> None:
    result = await atransact(running.address[1], SENDER, [rcpt], make_message(to=rcpt).as_bytes())

    [reply] = result.rcpts
    assert denied(reply), reply
    assert result.data is None
    await assert_no_trace(running, settings)


async def test_fixed_line_in_the_same_session_is_faxed_alone(running: Any, settings: Settings) -> None:
    message = make_message(to=f"{PREMIUM}, {FIXED}")

    result = await atransact(running.address[1], SENDER, [PREMIUM, FIXED], message.as_bytes())

    assert denied(result.rcpts[0]), result.rcpts[0]
    assert result.rcpts[1] == (250, b"2.1.5 Recipient OK")
    assert result.data_code == 250, result.data_text
    [job_id] = result.data_text.rsplit(" as ", 1)[1].split(",")
    [job] = await running.store.list_jobs()
    assert (job.job_id, job.number) == (job_id, "+4930123456")
    # The one fax goes out, and the only mail written is its notice: nothing about the refused number.
    await asyncio.wait_for(running.worker.wait_for_count("notice_sent", 1), TIMEOUT)
    assert submitted_numbers(settings) == ["+4930123456"]
    [raw] = mails(settings)
    notice = email.message_from_bytes(raw, policy=default)
    assert "+49 30 123456" in notice["Subject"]
    assert "+49 900" not in notice.as_string()


async def test_country_and_prefix_restrictions_over_smtp(restricted: tuple[Any, Settings]) -> None:
    bridge, settings = restricted
    rcpts = ["+31101234567@fax.localhost", "+4940123456@fax.localhost", PREMIUM]

    result = await atransact(bridge.address[1], SENDER, rcpts, make_message().as_bytes())

    assert all(denied(reply) for reply in result.rcpts), result.rcpts
    assert result.data is None
    await assert_no_trace(bridge, settings)

    accepted = await atransact(bridge.address[1], SENDER, [FIXED], make_message().as_bytes())
    assert accepted.rcpts == [(250, b"2.1.5 Recipient OK")]
    assert accepted.data_code == 250, accepted.data_text


async def test_invalid_numbers_keep_their_own_reply(running: Any, settings: Settings) -> None:
    # A number that is not valid at all is a bad address (5.1.1), not a refused destination (5.7.1).
    result = await atransact(running.address[1], SENDER, ["+4990012@fax.localhost"], make_message().as_bytes())

    [(code, text)] = result.rcpts
    assert (code, text.split()[0]) == (550, b"5.1.1")
    await assert_no_trace(running, settings)
