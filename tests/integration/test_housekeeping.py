"""Reports and retention against a real store (SQLite and PostgreSQL) and a real Maildir.

Time is whatever the test says: jobs are stored under a fake store clock, and ``send_reports`` and ``purge``
are given their ``now``. Jobs reach their states through the store's own API (acquire, update, release),
as the worker moves them.
"""

from __future__ import annotations

import asyncio
import csv
import email
import io
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest

from bridge.cli import main
from bridge.errors import ExitCode, JobNotFound, NotificationError
from bridge.housekeeping import (
    CSV_COLUMNS,
    Housekeeping,
    build_report,
    compose_report,
    report_period,
)
from bridge.mailer import MaildirMailer, Mailer
from bridge.models import (
    AcceptRequest,
    EnvelopeInfo,
    InboundRef,
    InboundState,
    JobState,
    JobUpdate,
    NewJob,
    NoticeState,
)
from bridge.settings import Settings
from bridge.stores.base import PurgeResult
from bridge.stores.sql import SQLStore
from tests.conftest import SettingsFactory, maildir_bytes, running_bridge

PDF = b"%PDF-1.4 fax document\n"
PNG = b"\x89PNG preview\n"
LEASE = timedelta(minutes=5)
_ids = itertools.count(1)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def at(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(at(24, 12))


def _accounts(**demo: Any) -> list[dict[str, Any]]:
    return [
        {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"], **demo},
        {
            "name": "other",
            "provider": "local",
            "allowed_senders": ["other@example.org"],
            "report": "daily",
            "report_to": ["other-boss@example.org"],
        },
    ]


@pytest.fixture
def settings(make_settings: SettingsFactory, store_url: str) -> Settings:
    return make_settings(
        store={"url": store_url},
        accounts=_accounts(report="daily", report_to=["Boss@Example.com"], notify_extra=["ops@example.com"]),
        retention={"documents_days": 30.0, "messages_days": 60.0},
    )


@pytest.fixture
async def store(settings: Settings, clock: Clock) -> AsyncIterator[SQLStore]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    yield db
    await db.close()


def mailer_of(settings: Settings) -> MaildirMailer:
    assert settings.mail.maildir is not None
    return MaildirMailer(settings.path(settings.mail.maildir))


def mails(settings: Settings) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=default) for raw in maildir_bytes(settings)]


async def accept(
    store: SQLStore,
    clock: Clock,
    when: datetime,
    *,
    account: str = "demo",
    numbers: Sequence[str] = ("+4930123456",),
    subject: str = "Order 4711",
) -> list[str]:
    """Store one message with a job per number, accepted at ``when``; return the job ids."""
    clock.now = when
    n = next(_ids)
    sender = "other@example.org" if account == "other" else "demo@example.com"
    raw = f"From: {sender}\r\nSubject: {subject}\r\nMessage-ID: <m{n}@example.com>\r\n\r\nbody {n}\r\n".encode()
    jobs = tuple(
        NewJob(
            job_id=f"job{n:04d}n{index}",
            recipient=f"{number}@fax.localhost",
            number=number,
            account=account,
            provider="local",
            dedupe_key=f"key-{n}-{index}",
        )
        for index, number in enumerate(numbers)
    )
    envelope = EnvelopeInfo(
        mail_from=sender,
        rcpt_tos=tuple(job.recipient for job in jobs),
        client_address="127.0.0.1",
        message_id=f"<m{n}@example.com>",
        subject=subject,
        account=account,
    )
    [result] = await store.accept_messages([AcceptRequest(f"msg{n:04d}", raw, envelope, jobs)])
    return list(result.job_ids)


_PATHS: dict[JobState, tuple[JobState, ...]] = {
    JobState.READY: (JobState.READY,),
    JobState.RETRY_WAIT: (JobState.READY, JobState.SUBMITTING, JobState.RETRY_WAIT),
    JobState.DELIVERED: (JobState.READY, JobState.SUBMITTING, JobState.SUBMITTED, JobState.DELIVERED),
    JobState.FAILED: (JobState.READY, JobState.SUBMITTING, JobState.SUBMITTED, JobState.FAILED),
    JobState.QUARANTINED: (JobState.READY, JobState.SUBMITTING, JobState.SUBMIT_UNCERTAIN, JobState.QUARANTINED),
    JobState.REJECTED: (JobState.REJECTED,),
}


async def drive(
    store: SQLStore,
    clock: Clock,
    job_id: str,
    state: JobState,
    *,
    when: datetime,
    pages: int | None = None,
    reason: str | None = None,
    code: str | None = None,
    notice: NoticeState = NoticeState.SENT,
) -> None:
    """Walk ``job_id`` to ``state`` at ``when`` as a worker would, with a document and a preview once converted."""
    clock.now = when
    leased = await store.acquire_jobs("tester", LEASE, 1000)
    assert job_id in {item.job.job_id for item in leased}, "the job must be due"
    for item in leased:
        if item.job.job_id != job_id:
            await store.release_job("tester", item.job.job_id)
    path = _PATHS[state]
    for step in path[:-1]:
        converted = step == JobState.READY
        update = JobUpdate(
            state=step,
            pages=pages if converted else None,
            document=PDF if converted else None,
            preview=PNG if converted else None,
        )
        await store.update_job("tester", job_id, update, LEASE)
    final = path[-1]
    done = final in (JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.QUARANTINED)
    await store.release_job(
        "tester",
        job_id,
        JobUpdate(
            state=final,
            pages=pages if final == JobState.READY else None,
            document=PDF if final == JobState.READY else None,
            preview=PNG if final == JobState.READY else None,
            reason=reason,
            code=code,
            finished_at=when if done else None,
            notice=notice if done else None,
            next_attempt_at=when + timedelta(days=365) if not done else None,
        ),
    )


async def deliver_inbound(store: SQLStore, fax_id: str, when: datetime, provider: str = "local") -> None:
    ref = InboundRef(provider, fax_id, "+31201234567", "+4930123456", when)
    record = await store.claim_inbound(ref, "tester", when + LEASE, when)
    assert record is not None
    await store.update_inbound(provider, fax_id, "tester", state=InboundState.DELIVERED, now=when)


# -- periods ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "now", "since", "until", "label"),
    [
        ("daily", at(24, 0, 5), at(23), at(24), "2026-11-23"),
        ("daily", at(24, 0, 0), at(23), at(24), "2026-11-23"),
        ("daily", at(1, 12, month=1), datetime(2025, 12, 31, tzinfo=UTC), at(1, month=1), "2025-12-31"),
        # 24 November 2026 is a Tuesday: the week before ran from Monday 16 to Monday 23.
        ("weekly", at(24, 12), at(16), at(23), "2026-W47"),
        ("weekly", at(23, 0), at(16), at(23), "2026-W47"),
        # ISO week 53 of 2026 runs into 2027.
        ("weekly", datetime(2027, 1, 5, tzinfo=UTC), at(28, month=12), datetime(2027, 1, 4, tzinfo=UTC), "2026-W53"),
        ("monthly", at(1, 0, 1), at(1, month=10), at(1), "2026-10"),
        ("monthly", at(15, month=1), datetime(2025, 12, 1, tzinfo=UTC), at(1, month=1), "2025-12"),
        ("monthly", at(1, month=3), at(1, month=2), at(1, month=3), "2026-02"),
    ],
)
def test_report_period_is_the_last_full_period_in_utc(
    kind: str, now: datetime, since: datetime, until: datetime, label: str
) -> None:
    assert report_period(kind, now) == (since, until, label)


def test_report_period_refuses_naive_times_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="aware"):
        report_period("daily", datetime(2026, 11, 24))
    with pytest.raises(ValueError, match="hourly"):
        report_period("hourly", at(24))


# -- reports ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    in_period: dict[str, dict[str, Any]]
    """Job id -> what the CSV must say about it."""
    outside: list[str]


async def fill_report_period(store: SQLStore, clock: Clock) -> Scenario:
    """Jobs around 23 November 2026 for both accounts, and incoming faxes."""
    expected: dict[str, dict[str, Any]] = {}
    outside: list[str] = []

    [before] = await accept(store, clock, at(22, 23, 59))
    await drive(store, clock, before, JobState.DELIVERED, when=at(23, 0, 10), pages=9)
    outside.append(before)

    [first] = await accept(store, clock, at(23, 0, 0))  # the first instant of the period belongs to it
    await drive(store, clock, first, JobState.DELIVERED, when=at(23, 0, 5), pages=3)
    expected[first] = {"state": "delivered", "pages": "3", "reason": "", "code": ""}

    [second] = await accept(store, clock, at(23, 9), numbers=["+4940999888"])
    await drive(store, clock, second, JobState.DELIVERED, when=at(23, 9, 3), pages=2)
    expected[second] = {"state": "delivered", "pages": "2", "reason": "", "code": "", "number": "+4940999888"}

    for hour in (10, 11):
        [busy] = await accept(store, clock, at(23, hour))
        await drive(
            store, clock, busy, JobState.FAILED, when=at(23, hour, 20), pages=1, reason="the line was busy", code="busy"
        )
        expected[busy] = {"state": "failed", "pages": "1", "reason": "the line was busy", "code": "busy"}

    awkward = 'No answer, "fax" tone missing\nafter 3 rings'
    [odd] = await accept(store, clock, at(23, 12))
    await drive(store, clock, odd, JobState.FAILED, when=at(23, 12, 30), pages=4, reason=awkward, code="=1+1")
    expected[odd] = {"state": "failed", "pages": "4", "reason": awkward, "code": "'=1+1"}

    [refused] = await accept(store, clock, at(23, 13))
    await drive(store, clock, refused, JobState.REJECTED, when=at(23, 13), reason="the PDF is encrypted")
    expected[refused] = {"state": "rejected", "pages": "", "reason": "the PDF is encrypted", "code": ""}

    [waiting] = await accept(store, clock, at(23, 23, 59))
    expected[waiting] = {"state": "received", "pages": "", "reason": "", "code": ""}

    [theirs] = await accept(store, clock, at(23, 15), account="other")
    await drive(store, clock, theirs, JobState.DELIVERED, when=at(23, 15, 5), pages=7)
    outside.append(theirs)

    [later] = await accept(store, clock, at(24, 0, 0))  # the first instant of the next period does not
    outside.append(later)

    await deliver_inbound(store, "in-before", at(22, 23, 59))
    await deliver_inbound(store, "in-1", at(23, 8))
    await deliver_inbound(store, "in-2", at(23, 20))
    await deliver_inbound(store, "in-3", at(23, 21), provider="other-service")
    await deliver_inbound(store, "in-after", at(24, 0, 1))
    return Scenario(expected, outside)


def csv_rows(message: EmailMessage, filename: str) -> list[dict[str, str]]:
    [attachment] = [part for part in message.iter_attachments() if part.get_filename() == filename]
    assert attachment.get_content_type() == "text/csv"
    data = attachment.get_payload(decode=True)
    assert isinstance(data, bytes)
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    header, *rows = list(reader)
    assert tuple(header) == CSV_COLUMNS
    return [dict(zip(header, row, strict=True)) for row in rows]


async def test_a_daily_report_lists_every_job_of_the_period_and_only_those(
    settings: Settings, store: SQLStore, clock: Clock
) -> None:
    scenario = await fill_report_period(store, clock)
    housekeeping = Housekeeping(settings, store, mailer_of(settings), clock)

    sent = await housekeeping.send_reports(at(24, 0, 5))

    assert sent == ["demo", "other"]
    by_recipient = {str(message["To"]): message for message in mails(settings)}
    assert set(by_recipient) == {"boss@example.com", "other-boss@example.org"}  # report_to wins over notify_extra
    message = by_recipient["boss@example.com"]
    assert str(message["Subject"]) == "Fax report for demo: 2026-11-23"
    assert message["Auto-Submitted"] == "auto-generated"

    rows = csv_rows(message, "faxes-demo-2026-11-23.csv")
    assert sorted(row["job_id"] for row in rows) == sorted(scenario.in_period)
    assert not {row["job_id"] for row in rows} & set(scenario.outside)
    for row in rows:
        wanted = scenario.in_period[row["job_id"]]
        for key, value in wanted.items():
            assert row[key] == value, (row["job_id"], key)
        if "number" not in wanted:
            assert row["number"] == "+4930123456"
        assert row["created"].startswith("2026-11-23T")
        assert row["created"].endswith("Z")
    # Oldest first.
    assert [row["created"] for row in rows] == sorted(row["created"] for row in rows)

    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Fax report for the account demo: Monday 23 November 2026" in text
    assert "Faxes:              7" in text
    assert "Faxes sent:         2 (5 pages)" in text
    assert "Failed:             3" in text
    assert "Not sent (refused): 1" in text
    assert "Other:              1" in text
    assert "Faxes received:     3" in text
    failures = text.split("Failures by reason:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert failures == [
        "     2  the line was busy",
        '     1  No answer, "fax" tone missing after 3 rings',
        "     1  the PDF is encrypted",
    ]
    assert "     2  local" in text
    assert "     1  other-service" in text

    theirs = csv_rows(by_recipient["other-boss@example.org"], "faxes-other-2026-11-23.csv")
    assert [row["job_id"] for row in theirs] == [scenario.outside[1]]
    assert theirs[0]["pages"] == "7"


async def test_each_period_is_reported_once(settings: Settings, store: SQLStore, clock: Clock) -> None:
    await fill_report_period(store, clock)
    housekeeping = Housekeeping(settings, store, mailer_of(settings), clock)

    assert await housekeeping.send_reports(at(24, 0, 5)) == ["demo", "other"]
    assert len(mails(settings)) == 2
    for moment in (at(24, 0, 5), at(24, 1, 5), at(24, 23, 59)):
        assert await housekeeping.send_reports(moment) == []
    # Another instance on the same database knows it too.
    again = Housekeeping(settings, store, mailer_of(settings), clock)
    assert await again.send_reports(at(24, 7, 5)) == []
    assert len(mails(settings)) == 2

    assert await housekeeping.send_reports(at(25, 0, 5)) == ["demo", "other"]
    subjects = sorted(str(message["Subject"]) for message in mails(settings))
    assert subjects == [
        "Fax report for demo: 2026-11-23",
        "Fax report for demo: 2026-11-24",
        "Fax report for other: 2026-11-23",
        "Fax report for other: 2026-11-24",
    ]

    # Forced (what `faxbridge report` does): sent again, for that account only.
    assert await housekeeping.send_reports(at(25, 9), force_account="demo") == ["demo"]
    assert len(mails(settings)) == 5
    with pytest.raises(KeyError):
        await housekeeping.send_reports(at(25, 9), force_account="nobody")


async def test_two_instances_at_once_send_one_report(settings: Settings, store: SQLStore, clock: Clock) -> None:
    await fill_report_period(store, clock)
    first = Housekeeping(settings, store, mailer_of(settings), clock)
    second = Housekeeping(settings, store, mailer_of(settings), clock)

    results = await asyncio.gather(first.send_reports(at(24, 0, 5)), second.send_reports(at(24, 0, 5)))

    assert sorted(name for result in results for name in result) == ["demo", "other"]
    assert len(mails(settings)) == 2


class FlakyMailer(Mailer):
    """Refuses the first ``failures`` mails for now, then hands them to the Maildir."""

    def __init__(self, inner: Mailer, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise NotificationError("relay.example:25 unreachable", temporary=True)
        await self.inner.deliver(message, recipients)


async def test_a_report_the_relay_refused_goes_out_at_the_next_run(
    settings: Settings, store: SQLStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await fill_report_period(store, clock)
    housekeeping = Housekeeping(settings, store, FlakyMailer(mailer_of(settings), failures=1), clock)

    with caplog.at_level(logging.ERROR, logger="bridge.housekeeping"):
        assert await housekeeping.send_reports(at(24, 0, 5)) == ["other"]
    assert "account demo: the daily report could not be sent" in caplog.text
    assert await housekeeping.send_reports(at(24, 1, 5)) == ["demo"]
    assert await housekeeping.send_reports(at(24, 2, 5)) == []
    assert len(mails(settings)) == 2


async def test_a_report_nobody_would_get_is_skipped_with_a_log_line(
    make_settings: SettingsFactory, store_url: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(store={"url": store_url}, accounts=_accounts(report="weekly"))
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    try:
        housekeeping = Housekeeping(settings, db, mailer_of(settings), clock)
        with caplog.at_level(logging.WARNING, logger="bridge.housekeeping"):
            assert await housekeeping.send_reports(at(24, 0, 5)) == ["other"]
            assert await housekeeping.send_reports(at(24, 1, 5)) == []
        lines = [r.getMessage() for r in caplog.records if "nobody would get it" in r.getMessage()]
        assert lines == [
            "account demo: the weekly report for 2026-W47 is not sent: nobody would get it (set report_to or "
            "notify_extra)"
        ]
        # notify_extra is the fallback for report_to.
        extra = make_settings(
            store={"url": store_url}, accounts=_accounts(report="weekly", notify_extra=["ops@example.com"])
        )
        assert await Housekeeping(extra, db, mailer_of(extra), clock).send_reports(at(24, 2, 5)) == ["demo"]
        assert sorted(str(message["To"]) for message in mails(settings)) == [
            "ops@example.com",
            "other-boss@example.org",
        ]
    finally:
        await db.close()


def test_compose_report_escapes_the_csv_and_names_the_attachment() -> None:
    from bridge.models import FaxJob

    job = FaxJob(
        job_id="j1",
        message_id="m1",
        account="acme.eu",
        provider="local",
        recipient="+4930123456@fax.localhost",
        number="+4930123456",
        sender="a@example.com",
        subject="s",
        original_message_id=None,
        state=JobState.FAILED,
        notice=NoticeState.SENT,
        attempts=1,
        pages=2,
        provider_fax_id=None,
        reason='Leitung besetzt; "Gegenstelle" antwortet nicht, 3×',
        code="@SUM(A1)",
        created_at=at(1, 8, month=10),
        updated_at=at(1, 9, month=10),
        next_attempt_at=at(1, 9, month=10),
        submitted_at=None,
        finished_at=at(1, 9, month=10),
    )
    report = build_report("acme.eu", [job], {}, at(1, month=10), at(1), "2026-10")
    message = compose_report(
        report, from_address="faxbridge@example.com", to=["a@example.com"], hostname="fax.example.com", now=at(1, 0, 5)
    )
    [row] = csv_rows(message, "faxes-acme.eu-2026-10.csv")
    assert row == {
        "job_id": "j1",
        "created": "2026-10-01T08:00:00Z",
        "number": "+4930123456",
        "state": "failed",
        "pages": "2",
        "reason": 'Leitung besetzt; "Gegenstelle" antwortet nicht, 3×',
        "code": "'@SUM(A1)",
    }
    body = message.get_body(("plain",))
    assert body is not None
    assert "October 2026" in body.get_content()
    assert report.received == 0


# -- retention -------------------------------------------------------------------------------------------


@dataclass
class Retained:
    old: str
    """Delivered 100 days ago: document, preview and raw mail go."""
    middle: str
    """Delivered 45 days ago: document and preview go (30 days), the raw mail stays (60 days)."""
    recent: str
    """Delivered 5 days ago: everything stays."""
    active: str
    """Accepted 100 days ago and still waiting for a retry: everything stays."""
    quarantined: str
    """Held for a person 100 days ago: everything stays (a person may still release it)."""
    notice_pending: str
    """Failed 100 days ago, its notice not sent yet: everything stays."""
    shared_finished: str
    shared_active: str
    """Two jobs of one message 100 days old: the finished one's document goes, the raw mail stays."""


async def fill_retention(store: SQLStore, clock: Clock, now: datetime) -> Retained:
    def ago(days: float) -> datetime:
        return now - timedelta(days=days)

    [old] = await accept(store, clock, ago(101), subject="Invoice 1")
    await drive(store, clock, old, JobState.DELIVERED, when=ago(100), pages=3)
    [middle] = await accept(store, clock, ago(46))
    await drive(store, clock, middle, JobState.DELIVERED, when=ago(45), pages=1)
    [recent] = await accept(store, clock, ago(6))
    await drive(store, clock, recent, JobState.DELIVERED, when=ago(5), pages=1)
    [active] = await accept(store, clock, ago(101))
    await drive(store, clock, active, JobState.RETRY_WAIT, when=ago(100), pages=2)
    [quarantined] = await accept(store, clock, ago(101))
    await drive(store, clock, quarantined, JobState.QUARANTINED, when=ago(100), pages=2)
    [pending] = await accept(store, clock, ago(101))
    await drive(store, clock, pending, JobState.FAILED, when=ago(100), pages=2, notice=NoticeState.PENDING)
    finished, unfinished = await accept(store, clock, ago(101), numbers=["+4930111111", "+4930222222"])
    await drive(store, clock, finished, JobState.DELIVERED, when=ago(100), pages=2)
    await drive(store, clock, unfinished, JobState.READY, when=ago(100), pages=2)
    clock.now = now
    return Retained(old, middle, recent, active, quarantined, pending, finished, unfinished)


async def test_retention_deletes_exactly_what_is_due(
    settings: Settings, store: SQLStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of one job, so that the purge has to loop over its short transactions.
    monkeypatch.setattr("bridge.stores.sql._PURGE_BATCH", 1)
    now = at(24, 3, 30)
    jobs = await fill_retention(store, clock, now)
    housekeeping = Housekeeping(settings, store, mailer_of(settings), clock)
    before = {job.job_id: job for job in await store.list_jobs(limit=100)}

    result = await housekeeping.purge(now)

    assert result == PurgeResult(documents=3, previews=3, messages=1)
    for job_id in (jobs.old, jobs.middle, jobs.shared_finished):
        assert await store.get_document(job_id) is None
        assert await store.get_preview(job_id) is None
    kept = {jobs.recent, jobs.active, jobs.quarantined, jobs.notice_pending, jobs.shared_active}
    for job_id in kept:
        assert await store.get_document(job_id) == PDF, job_id
        assert await store.get_preview(job_id) == PNG, job_id

    old = await store.get_job(jobs.old)
    with pytest.raises(JobNotFound, match="retention"):
        await store.get_message(old.message_id)
    for job_id in (jobs.middle, jobs.recent, jobs.active, jobs.quarantined, jobs.notice_pending, jobs.shared_active):
        message_id = (await store.get_job(job_id)).message_id
        assert (await store.get_message(message_id)).startswith(b"From: demo@example.com")

    # Metadata stays: every job is still listed, with the same state, pages, subject and times.
    after = {job.job_id: job for job in await store.list_jobs(limit=100)}
    assert after == before
    assert (old.state, old.pages, old.subject) == (JobState.DELIVERED, 3, "Invoice 1")
    assert await store.report_jobs("demo", now - timedelta(days=200), now) == sorted(
        after.values(), key=lambda job: (job.created_at, job.job_id)
    )

    # Nothing is left to do, and a second purge deletes nothing.
    assert await housekeeping.purge(now) == PurgeResult()


async def test_retention_settings_decide_the_cutoffs(
    make_settings: SettingsFactory, store_url: str, clock: Clock
) -> None:
    now = at(24, 3, 30)
    settings = make_settings(
        store={"url": store_url}, accounts=_accounts(), retention={"documents_days": 200.0, "messages_days": 50.0}
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    try:
        jobs = await fill_retention(db, clock, now)
        result = await Housekeeping(settings, db, mailer_of(settings), clock).purge(now)
        # No document is 200 days old; of the raw mails only the 100-day one is past 50 days (the shared
        # message waits for its active job, the 45-day one is within 50).
        assert result == PurgeResult(documents=0, previews=0, messages=1)
        assert await db.get_document(jobs.old) == PDF
        with pytest.raises(JobNotFound):
            await db.get_message((await db.get_job(jobs.old)).message_id)
    finally:
        await db.close()


# -- the command line and the daemon -----------------------------------------------------------------------


def config_of(settings: Settings) -> str:
    assert settings.config_file is not None
    return str(settings.config_file)


def test_cli_purge_and_jobs_show_of_a_purged_job(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    clock = Clock(now)

    async def setup() -> Retained:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
        await db.start()
        try:
            return await fill_retention(db, clock, now)
        finally:
            await db.close()

    jobs = asyncio.run(setup())
    assert main(["--config", config_of(settings), "purge"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "documents: 3 deleted, previews: 3 deleted" in out
    assert "raw mails: 1 deleted" in out

    assert main(["--config", config_of(settings), "jobs", "show", jobs.old]) == ExitCode.OK
    shown = capsys.readouterr().out
    assert "delivered" in shown
    assert "Invoice 1" in shown
    assert main(["--config", config_of(settings), "purge"]) == ExitCode.OK
    assert "documents: 0 deleted, previews: 0 deleted" in capsys.readouterr().out


def test_cli_report_mails_the_last_full_period(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    since, _until, label = report_period("daily", datetime.now(UTC))
    clock = Clock(since)

    async def setup() -> list[str]:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
        await db.start()
        try:
            [delivered] = await accept(db, clock, since + timedelta(hours=1))
            await drive(db, clock, delivered, JobState.DELIVERED, when=since + timedelta(hours=2), pages=4)
            [failed] = await accept(db, clock, since + timedelta(hours=3))
            await drive(db, clock, failed, JobState.FAILED, when=since + timedelta(hours=4), pages=1, reason="busy")
            return [delivered, failed]
        finally:
            await db.close()

    job_ids = asyncio.run(setup())
    config = config_of(settings)
    assert main(["--config", config, "report", "demo"]) == ExitCode.OK
    assert (
        capsys.readouterr().out.strip() == f"daily report {label} of account demo (2 faxes) mailed to boss@example.com"
    )
    [message] = mails(settings)
    rows = csv_rows(message, f"faxes-demo-{label}.csv")
    assert [(row["job_id"], row["state"], row["pages"], row["reason"]) for row in rows] == [
        (job_ids[0], "delivered", "4", ""),
        (job_ids[1], "failed", "1", "busy"),
    ]

    # The command recorded the period: the daemon's next run sends only the other account's report.
    async def scheduled_run() -> list[str]:
        db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7))
        await db.start()
        try:
            return await Housekeeping(settings, db, mailer_of(settings)).send_reports(datetime.now(UTC))
        finally:
            await db.close()

    assert asyncio.run(scheduled_run()) == ["other"]
    assert len(mails(settings)) == 2

    # Another period and another address on request; an unknown account is a usage error.
    assert main(["--config", config, "report", "demo", "--period", "monthly", "--to", "me@example.net"]) == 0
    assert "mailed to me@example.net" in capsys.readouterr().out
    assert main(["--config", config, "report", "nobody"]) == ExitCode.USAGE
    assert "no account named 'nobody'" in capsys.readouterr().err
    assert main(["--config", config, "report", "demo", "--to", "not an address"]) == ExitCode.USAGE
    assert len(mails(settings)) == 3


def test_cli_report_without_recipients_is_a_configuration_error(
    make_settings: SettingsFactory, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(store={"url": store_url}, accounts=_accounts())
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    assert main(["--config", config_of(settings), "report", "demo"]) == ExitCode.CONFIG
    assert "nobody would get the report" in capsys.readouterr().err
    assert mails(settings) == []


async def test_the_daemon_sends_due_reports_and_purges(settings: Settings, clock: Clock) -> None:
    async with running_bridge(settings) as bridge:
        assert bridge.housekeeping is not None
        assert bridge.store is not None
        bridge.clock = lambda: at(24, 0, 5)
        await bridge._send_reports()
        await bridge._send_reports()
        assert sorted(str(message["Subject"]) for message in mails(settings)) == [
            "Fax report for demo: 2026-11-23",
            "Fax report for other: 2026-11-23",
        ]
        await bridge._purge()  # nothing to delete: no error


def test_the_report_speaks_the_accounts_language() -> None:
    since = datetime(2026, 11, 23, tzinfo=UTC)
    report = build_report("demo", [], {}, since, since + timedelta(days=1), "2026-11-23")
    message = compose_report(
        report,
        from_address="faxbridge@example.com",
        to=["boss@example.com"],
        hostname="fax.example.com",
        now=since + timedelta(days=1, hours=6),
        language="de",
        timezone="Europe/Berlin",
    )
    assert str(message["Subject"]) == "Fax-Bericht für demo: 2026-11-23"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "24. November 2026" in str(body.get_content())
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "faxes-demo-2026-11-23.csv"
