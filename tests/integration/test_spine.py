"""The spine end to end, in-process: smtplib → SMTP intake → store → worker → local outbox → notice."""

from __future__ import annotations

import asyncio
import email
import io
import json
import sqlite3
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

import pypdf
import pytest

from bridge.models import JobState, NoticeState
from bridge.settings import Settings
from tests.conftest import maildir_bytes, outbox_submissions, running_bridge
from tests.integration.smtp_client import atransact, make_message, send_and_vanish

FAX = "+4930123456@fax.localhost"
BUSY = "+4930999999@fax.localhost"
TIMEOUT = 30


def outbox(settings: Settings) -> Path:
    return settings.path(settings.providers["local"]["outbox"])


def submissions(settings: Settings) -> list[dict[str, Any]]:
    return outbox_submissions(settings)


def notices(settings: Settings) -> list[Message]:
    return [email.message_from_bytes(raw, policy=default) for raw in maildir_bytes(settings)]


def job_ids_from(reply: str) -> list[str]:
    return reply.rsplit(" as ", 1)[1].split(",")


async def wait_count(bridge: Any, name: str, n: int) -> None:
    await asyncio.wait_for(bridge.worker.wait_for_count(name, n), TIMEOUT)


async def test_a_mail_becomes_a_fax_and_a_threaded_notice(running: Any, settings: Settings) -> None:
    port = running.address[1]
    message = make_message()
    result = await atransact(port, "demo@example.com", [FAX], message.as_bytes())
    assert result.rcpts == [(250, b"2.1.5 Recipient OK")]
    assert result.data_code == 250, result.data_text
    assert result.data_text.startswith("2.0.0 Ok: queued as ")
    [job_id] = job_ids_from(result.data_text)

    await wait_count(running, "notice_sent", 1)

    pdf = outbox(settings) / f"{job_id}.pdf"
    sidecar = json.loads((outbox(settings) / f"{job_id}.json").read_text())
    assert sidecar["number"] == "+4930123456"
    assert sidecar["sender"] == "demo@example.com"
    assert sidecar["account"] == "demo"
    assert sidecar["pages"] == 1
    assert "submitted_at" in sidecar
    text = pypdf.PdfReader(pdf).pages[0].extract_text()
    assert "12 boxes of paper" in text

    [notice] = notices(settings)
    assert notice["In-Reply-To"] == message["Message-ID"]
    assert message["Message-ID"] in notice["References"]
    assert notice["Auto-Submitted"] == "auto-replied"
    assert "delivered" in notice["Subject"]
    assert "+49 30 123456" in notice["Subject"]
    assert "demo@example.com" in notice["To"]
    job = await running.store.get_job(job_id)
    assert job.state == JobState.DELIVERED
    assert job.notice == NoticeState.SENT
    assert [s["job_id"] for s in submissions(settings)] == [job_id]


async def test_a_failing_number_reports_the_reason(running: Any, settings: Settings) -> None:
    message = make_message(to=BUSY)
    result = await atransact(running.address[1], "demo@example.com", [BUSY], message.as_bytes())
    assert result.data_code == 250
    [job_id] = job_ids_from(result.data_text)
    await wait_count(running, "notice_sent", 1)
    [notice] = notices(settings)
    assert "failed" in notice["Subject"]
    assert "busy" in notice["Subject"]
    assert notice["In-Reply-To"] == message["Message-ID"]
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None
    assert "busy" in body.get_content()
    job = await running.store.get_job(job_id)
    assert job.state == JobState.FAILED
    assert job.reason == "the line was busy after 3 attempts"


async def test_one_job_per_recipient(running: Any, settings: Settings) -> None:
    rcpts = [FAX, "004940123456@fax.localhost", BUSY, "+49-30-123-456@fax.localhost"]
    message = make_message()
    result = await atransact(running.address[1], "demo@example.com", rcpts, message.as_bytes())
    assert [code for code, _ in result.rcpts] == [250, 250, 250, 250]
    job_ids = job_ids_from(result.data_text)
    # The fourth address is the first number written differently: one fax.
    assert len(job_ids) == 3
    await wait_count(running, "notice_sent", 3)
    numbers = sorted(s["number"] for s in submissions(settings))
    assert numbers == ["+4930123456", "+4930999999", "+4940123456"]
    assert len(notices(settings)) == 3


async def test_attachments_are_faxed_in_order(running: Any, settings: Settings) -> None:
    pdf = blank_pdf(3)
    message = make_message(attachments=[("report.pdf", pdf, "application/pdf")])
    result = await atransact(running.address[1], "demo@example.com", [FAX], message.as_bytes())
    [job_id] = job_ids_from(result.data_text)
    await wait_count(running, "notice_sent", 1)
    faxed = pypdf.PdfReader(outbox(settings) / f"{job_id}.pdf")
    assert len(faxed.pages) == 4
    [notice] = notices(settings)
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None
    assert "report.pdf: 3 pages" in body.get_content()


def blank_pdf(pages: int) -> bytes:
    writer = pypdf.PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def assert_nothing_happened(settings: Settings) -> None:
    assert notices(settings) == []
    assert submissions(settings) == []


async def jobs_in_store(bridge: Any) -> list[Any]:
    return list(await bridge.store.list_jobs())


@pytest.mark.parametrize(
    ("mail_from", "rcpt", "expected"),
    [
        ("demo@example.com", "someone@example.org", (550, "5.7.1")),
        ("demo@example.com", "+4930123456@fax.localhost.example.org", (550, "5.7.1")),
        ("stranger@example.org", FAX, (550, "5.7.1")),
        ("", FAX, (550, "5.7.1")),
        ("demo@example.com", "not-a-number@fax.localhost", (550, "5.1.1")),
        ("demo@example.com", "+49３0123456@fax.localhost", (550, "5.1.1")),
        ("demo@example.com", "12@fax.localhost", (550, "5.1.1")),
    ],
)
async def test_refusals_at_rcpt_have_exact_codes_and_leave_no_trace(
    running: Any, settings: Settings, mail_from: str, rcpt: str, expected: tuple[int, str]
) -> None:
    message = make_message(sender=mail_from or "demo@example.com", to="someone@example.org")
    options = ("SMTPUTF8",) if not rcpt.isascii() else ()
    result = await atransact(running.address[1], mail_from, [rcpt], message.as_bytes(), options)
    [(code, text)] = result.rcpts
    assert (code, text.decode().split()[0]) == expected
    assert result.data is None
    assert await jobs_in_store(running) == []
    assert_nothing_happened(settings)


async def test_from_header_of_a_stranger_is_refused_at_data(running: Any, settings: Settings) -> None:
    message = make_message(sender="stranger@example.org")
    result = await atransact(running.address[1], "demo@example.com", [FAX], message.as_bytes())
    assert result.rcpts[0][0] == 250
    assert result.data_code == 550
    assert result.data_text.startswith("5.7.1")
    assert await jobs_in_store(running) == []
    assert_nothing_happened(settings)


async def test_too_many_recipients(make_settings: Any) -> None:
    settings = make_settings(smtp={"listen_port": 0, "max_recipients": 2})
    async with running_bridge(settings) as bridge:
        rcpts = ["+4930123451@fax.localhost", "+4930123452@fax.localhost", "+4930123453@fax.localhost"]
        result = await atransact(bridge.address[1], "demo@example.com", rcpts, make_message().as_bytes())
        assert [code for code, _ in result.rcpts] == [250, 250, 452]
        assert result.rcpts[2][1].startswith(b"4.5.3")
        assert result.data_code == 250
        assert len(job_ids_from(result.data_text)) == 2


async def test_too_big_is_552_534_declared_or_not(make_settings: Any) -> None:
    settings = make_settings(smtp={"listen_port": 0, "max_message_size": 50_000})
    async with running_bridge(settings) as bridge:
        big = make_message(attachments=[("big.pdf", b"%PDF-1.4\n" + b"0" * 80_000, "application/pdf")]).as_bytes()
        declared = await atransact(bridge.address[1], "demo@example.com", [FAX], big, (f"SIZE={len(big)}",))
        assert declared.mail[0] == 552
        assert declared.mail[1].startswith(b"5.3.4")
        undeclared = await atransact(bridge.address[1], "demo@example.com", [FAX], big)
        assert undeclared.data_code == 552
        assert undeclared.data_text.startswith("5.3.4")
        assert await bridge.store.list_jobs() == []


async def test_storage_failure_answers_451_and_keeps_nothing(running: Any, settings: Settings) -> None:
    database = settings.state_dir / "faxbridge.db"

    def break_the_jobs_table() -> None:
        # Another program damaging the database is a storage failure the bridge must survive.
        with sqlite3.connect(database, timeout=30) as connection:
            connection.execute("PRAGMA foreign_keys = OFF")
            connection.execute("ALTER TABLE jobs RENAME TO broken_jobs")

    await asyncio.to_thread(break_the_jobs_table)
    result = await atransact(running.address[1], "demo@example.com", [FAX], make_message().as_bytes())
    assert result.data_code == 451
    assert result.data_text.startswith("4.3.0")
    assert_nothing_happened(settings)


async def test_lost_reply_and_retransmission_give_one_fax(running: Any, settings: Settings) -> None:
    port = running.address[1]
    raw = make_message().as_bytes()
    await asyncio.to_thread(send_and_vanish, port, "demo@example.com", FAX, raw)
    # The client never saw a 250, so it sends the very same message again.
    again = await atransact(port, "demo@example.com", [FAX], raw)
    assert again.data_code == 250
    await wait_count(running, "notice_sent", 1)
    jobs = await running.store.list_jobs()
    assert len(jobs) == 1
    assert job_ids_from(again.data_text) == [jobs[0].job_id]
    assert len(submissions(settings)) == 1
    assert len(notices(settings)) == 1
    # A third copy, long after the fax went out, is still recognised.
    third = await atransact(port, "demo@example.com", [FAX], raw)
    assert "already queued" in third.data_text
    assert len(await running.store.list_jobs()) == 1


async def test_a_new_message_with_the_same_text_is_a_new_fax(running: Any, settings: Settings) -> None:
    port = running.address[1]
    first = await atransact(port, "demo@example.com", [FAX], make_message().as_bytes())
    second = await atransact(port, "demo@example.com", [FAX], make_message().as_bytes())
    assert job_ids_from(first.data_text) != job_ids_from(second.data_text)
    await wait_count(running, "notice_sent", 2)
    assert len(submissions(settings)) == 2


async def test_concurrent_sessions_are_all_stored(running: Any, settings: Settings) -> None:
    port = running.address[1]
    results = await asyncio.gather(
        *(atransact(port, "demo@example.com", [FAX], make_message(body=f"fax {i}").as_bytes()) for i in range(20))
    )
    assert all(r.data_code == 250 for r in results)
    ids = {job_ids_from(r.data_text)[0] for r in results}
    assert len(ids) == 20
    await wait_count(running, "notice_sent", 20)
    assert sorted(s["job_id"] for s in submissions(settings)) == sorted(ids)


async def test_the_spine_on_each_database(make_settings: Any, store_url: str) -> None:
    settings = make_settings(store={"url": store_url})
    async with running_bridge(settings) as bridge:
        port = bridge.address[1]
        raw = make_message().as_bytes()
        sends = [atransact(port, "demo@example.com", [FAX, BUSY], raw)]
        sends += [atransact(port, "demo@example.com", [FAX], make_message(body=f"n{i}").as_bytes()) for i in range(8)]
        results = await asyncio.gather(*sends)
        assert all(r.data_code == 250 for r in results)
        again = await atransact(port, "demo@example.com", [FAX, BUSY], raw)
        assert "already queued" in again.data_text
        assert job_ids_from(again.data_text) == job_ids_from(results[0].data_text)
        await wait_count(bridge, "notice_sent", 10)
        jobs = await bridge.store.list_jobs()
        assert len(jobs) == 10
        assert sorted(j.state.value for j in jobs).count("delivered") == 9
        assert len(submissions(settings)) == 10
        assert len(notices(settings)) == 10


async def test_notices_go_to_the_relay_and_survive_its_hiccups(make_settings: Any, sink: Any) -> None:
    mail = {"maildir": None, "relay": {"host": sink.host, "port": sink.port, "starttls": "never", "timeout": 10}}
    settings = make_settings(mail=mail, worker={"poll_seconds": 0.2, "retry_initial_seconds": 0.2})
    sink.fail_next("DATA", "451 4.3.0 try again later")
    async with running_bridge(settings) as bridge:
        message = make_message()
        result = await atransact(bridge.address[1], "demo@example.com", [FAX], message.as_bytes())
        assert result.data_code == 250
        await wait_count(bridge, "notice_sent", 1)
        [recorded] = sink.messages
        assert recorded.rcpt_tos == ("demo@example.com",)
        assert recorded.message["In-Reply-To"] == message["Message-ID"]
        assert recorded.message["Auto-Submitted"] == "auto-replied"
        assert "delivered" in str(recorded.message["Subject"])


async def test_an_intake_only_instance_stores_and_does_not_send(make_settings: Any) -> None:
    settings = make_settings(worker={"enabled": False})
    async with running_bridge(settings) as bridge:
        result = await atransact(bridge.address[1], "demo@example.com", [FAX], make_message().as_bytes())
        assert result.data_code == 250
        [job] = await bridge.store.list_jobs()
        assert job.state == JobState.RECEIVED
    assert submissions(settings) == []
    # A second instance with its worker on takes the job over.
    async with running_bridge(make_settings()) as sender:
        await wait_count(sender, "notice_sent", 1)
        assert [s["job_id"] for s in submissions(settings)] == [job.job_id]
