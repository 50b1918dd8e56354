"""The worker's state machine against a real SQLite store, the real local provider and a real Maildir.

Faults are injected by small providers built on the local one (they are fax services that misbehave in a
scripted way), never by patching the worker.
"""

from __future__ import annotations

import asyncio
import email
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.policy import default
from typing import Any, ClassVar

import pytest

from bridge.errors import ProviderPermanentError, ProviderUnavailable, RateLimited
from bridge.intake import build_request
from bridge.mailer import MaildirMailer
from bridge.models import JobState, JobUpdate, NoticeState, OutboundFax, SendReceipt
from bridge.providers import build_provider
from bridge.providers.base import Capability, FaxProvider, ProviderContext
from bridge.providers.local import LocalProvider, LocalSettings
from bridge.routing import Router
from bridge.settings import Settings
from bridge.stores.sql import SQLStore
from bridge.worker import Worker, default_worker_id
from tests.conftest import maildir_bytes, outbox_submissions
from tests.integration.smtp_client import make_message


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class ScriptedProvider(LocalProvider):
    """The local provider, with a queue of faults to raise from ``send`` before or after writing the fax."""

    faults: list[tuple[str, Exception]]

    def __init__(self, context: ProviderContext, settings: LocalSettings) -> None:
        super().__init__(context, settings)
        self.faults = []
        self.sends = 0

    async def send(self, fax: OutboundFax) -> SendReceipt:
        self.sends += 1
        if self.faults:
            when, error = self.faults.pop(0)
            if when == "before":
                raise error
            await super().send(fax)
            raise error
        return await super().send(fax)


class NoReferenceProvider(ScriptedProvider):
    """A service with no way at all to look a fax up (the base class's ``find_submission``)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.STATUS_POLL})

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        return await FaxProvider.find_submission(self, fax)


class JournalProvider(ScriptedProvider):
    """A service that finds a fax once it is in its journal, but cannot prove a fax absent (as Sipwise)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.STATUS_POLL})
    journal_has_it = True

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        return await super().find_submission(fax) if self.journal_has_it else None


class NoStatusProvider(ScriptedProvider):
    """A service that takes faxes and never says what became of them (as VoipNow)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    service_name: ClassVar[str] = "Example Fax"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


@pytest.fixture
async def store(settings: Settings, clock: Clock) -> AsyncIterator[SQLStore]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    yield db
    await db.close()


_workers: list[Worker] = []


@pytest.fixture(autouse=True)
def _stop_conversion_servers() -> Iterator[None]:
    """Each worker's sandbox starts a conversion fork server on first use; stop it with the test."""
    yield
    while _workers:
        sandbox = _workers.pop().sandbox
        if sandbox is not None:
            sandbox.close()


def make_worker(
    settings: Settings, store: SQLStore, clock: Clock, provider_cls: type[ScriptedProvider] = ScriptedProvider
) -> tuple[Worker, ScriptedProvider]:
    section = settings.providers["local"]
    provider = provider_cls(
        ProviderContext(name="local", state_dir=settings.state_dir), LocalSettings.model_validate(section)
    )
    assert settings.mail.maildir is not None
    mailer = MaildirMailer(settings.path(settings.mail.maildir))
    worker = Worker(settings, store, {"local": provider}, mailer, worker_id="w1", clock=clock)
    _workers.append(worker)
    return worker, provider


async def accept(
    settings: Settings, store: SQLStore, to: str = "+4930123456@fax.localhost", sender: str = "demo@example.com"
) -> str:
    router = Router(settings)
    account = settings.accounts[0]
    request = build_request(
        router,
        account,
        make_message(to=to, sender=sender).as_bytes(),
        mail_from=sender,
        recipients=[router.recipient(to, account)],
        client_address="127.0.0.1",
    )
    [result] = await store.accept_messages([request])
    return result.job_ids[0]


def notice_subjects(settings: Settings) -> list[str]:
    return [str(email.message_from_bytes(raw, policy=default)["Subject"]) for raw in maildir_bytes(settings)]


async def test_happy_path_walks_every_state(settings: Settings, store: SQLStore, clock: Clock) -> None:
    worker, provider = make_worker(settings, store, clock)
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert (job.state, job.notice, job.attempts, job.pages) == (JobState.DELIVERED, NoticeState.SENT, 1, 1)
    for state in ("ready", "submitting", "submitted", "delivered", "notice_sent"):
        assert worker.counts[state] == 1, state
    assert provider.sends == 1
    [subject] = notice_subjects(settings)
    assert "delivered" in subject


async def test_a_provider_without_status_gets_a_handed_over_notice_once(
    settings: Settings, store: SQLStore, clock: Clock
) -> None:
    worker, provider = make_worker(settings, store, clock, NoStatusProvider)
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert (job.state, job.notice) == (JobState.SUBMITTED, NoticeState.SENT)
    [subject] = notice_subjects(settings)
    assert subject.startswith("Fax to +49 30 123456 handed to Example Fax")
    assert "delivered" not in subject
    clock.advance(days=30)
    await worker.run_until_idle()
    assert len(notice_subjects(settings)) == 1  # told once, and never asked about again
    assert provider.sends == 1
    assert (await store.get_job(job_id)).state == JobState.SUBMITTED


async def test_the_fax_carries_the_accounts_caller_id_and_the_senders_own(make_settings: Any, clock: Clock) -> None:
    settings = make_settings(
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["demo@example.com", "jane@example.com"],
                "caller_id": "+4930123000",
                "fax_header": "Example GmbH",
                "sender_caller_ids": {"Jane@Example.com": "+4930123457"},
            }
        ]
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    try:
        worker, _ = make_worker(settings, db, clock)
        first = await accept(settings, db)
        second = await accept(settings, db, sender="jane@example.com")
        await worker.run_until_idle()
        sidecars = {s["job_id"]: s for s in outbox_submissions(settings)}
        assert (sidecars[first]["caller_id"], sidecars[first]["header"]) == ("+4930123000", "Example GmbH")
        assert (sidecars[second]["caller_id"], sidecars[second]["header"]) == ("+4930123457", "Example GmbH")
    finally:
        await db.close()


async def test_routes_of_the_sending_number_get_status_reports_and_copies(make_settings: Any, clock: Clock) -> None:
    settings = make_settings(
        inbound={
            "enabled": False,
            "routes": [
                {
                    "number": "+4930123000",
                    "destinations": [
                        {"address": "reports@example.com", "incoming": False, "status_reports": True},
                        {"address": "archive@example.com", "incoming": False, "outgoing_copies": True},
                        {"address": "frontdesk@example.com"},
                    ],
                }
            ],
        },
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["demo@example.com"],
                "caller_id": "+4930123000",
            }
        ],
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    try:
        worker, _ = make_worker(settings, db, clock)
        job_id = await accept(settings, db)
        await worker.run_until_idle()
    finally:
        await db.close()
    sent = [email.message_from_bytes(raw, policy=default) for raw in maildir_bytes(settings)]
    [notice] = [m for m in sent if "reports@example.com" in str(m["To"])]
    assert "demo@example.com" in str(notice["To"])
    assert "frontdesk@example.com" not in str(notice["To"])
    [copy] = [m for m in sent if str(m["To"]) == "archive@example.com"]
    assert copy["Subject"] == notice["Subject"]
    [attachment] = [p for p in copy.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert attachment.get_filename() == f"fax-{job_id}.pdf"
    assert len(sent) == 2


async def test_an_acceptance_receipt_comes_before_the_outcome_where_wanted(make_settings: Any, clock: Clock) -> None:
    settings = make_settings(
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["demo@example.com"],
                "acceptance_receipt": True,
            }
        ]
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = SQLStore(settings.store_url, dedupe_window=timedelta(days=7), clock=clock)
    await db.start()
    try:
        worker, _ = make_worker(settings, db, clock)
        await accept(settings, db)
        await worker.run_until_idle()
    finally:
        await db.close()
    subjects = sorted(notice_subjects(settings))
    assert len(subjects) == 2
    assert subjects[0].startswith("Fax to +49 30 123456 accepted — 1 page")
    assert "delivered" in subjects[1]


async def test_temporary_error_retries_with_backoff(settings: Settings, store: SQLStore, clock: Clock) -> None:
    worker, provider = make_worker(settings, store, clock)
    provider.faults.append(("before", RateLimited("slow down", provider="local", retry_after=120)))
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert job.state == JobState.RETRY_WAIT
    assert job.next_attempt_at >= clock.now + timedelta(seconds=120)
    assert notice_subjects(settings) == []
    clock.advance(seconds=121)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert (job.state, job.attempts) == (JobState.DELIVERED, 2)
    assert len(notice_subjects(settings)) == 1


async def test_give_up_after_the_deadline(settings: Settings, store: SQLStore, clock: Clock) -> None:
    worker, provider = make_worker(settings, store, clock)
    provider.faults.extend(("before", ProviderUnavailable("connection refused", provider="local")) for _ in range(50))
    job_id = await accept(settings, store)
    while (await store.get_job(job_id)).state != JobState.FAILED:
        await worker.run_until_idle()
        clock.advance(hours=1)
        assert clock.now < datetime(2026, 11, 27, tzinfo=UTC), "never gave up"
    job = await store.get_job(job_id)
    assert "24 hours" in (job.reason or "")
    assert "connection refused" in (job.reason or "")
    [subject] = notice_subjects(settings)
    assert "failed" in subject


async def test_permanent_error_fails_at_once(settings: Settings, store: SQLStore, clock: Clock) -> None:
    worker, provider = make_worker(settings, store, clock)
    provider.faults.append(("before", ProviderPermanentError("the number is not a fax line", provider="local")))
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)
    assert provider.sends == 1
    [subject] = notice_subjects(settings)
    assert "not a fax line" in subject


@pytest.mark.parametrize("when", ["before", "after"])
async def test_uncertain_send_is_reconciled_never_repeated_blindly(
    settings: Settings, store: SQLStore, clock: Clock, when: str
) -> None:
    worker, provider = make_worker(settings, store, clock)
    provider.faults.append((when, ProviderUnavailable("reset after upload", provider="local", maybe_accepted=True)))
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert job.state == JobState.DELIVERED
    outbox = settings.path(settings.providers["local"]["outbox"])
    lines = (outbox / "submissions.log").read_text().splitlines()
    # "after": the fax reached the provider, so the reconciliation finds it and nothing is resent.
    # "before": it certainly did not, so it is sent once.
    assert len(lines) == 1
    assert provider.sends == (1 if when == "after" else 2)


async def test_uncertain_without_a_reference_is_quarantined(settings: Settings, store: SQLStore, clock: Clock) -> None:
    worker, provider = make_worker(settings, store, clock, NoReferenceProvider)
    provider.faults.append(("after", ProviderUnavailable("timeout", provider="local", maybe_accepted=True)))
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert job.state == JobState.QUARANTINED
    assert provider.sends == 1
    [subject] = notice_subjects(settings)
    assert "uncertain" in subject


@pytest.mark.parametrize(("found", "expected"), [(True, JobState.DELIVERED), (False, JobState.QUARANTINED)])
async def test_a_provider_without_certain_lookups_is_still_asked(
    settings: Settings, store: SQLStore, clock: Clock, found: bool, expected: JobState
) -> None:
    worker, provider = make_worker(settings, store, clock, JournalProvider)
    provider.journal_has_it = found
    provider.faults.append(("after", ProviderUnavailable("timeout", provider="local", maybe_accepted=True)))
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    # Found: followed to its outcome. Not found: it may still be there, so it is set aside, not resent.
    assert (await store.get_job(job_id)).state == expected
    assert provider.sends == 1
    assert len(outbox_submissions(settings)) == 1


async def test_job_found_in_submitting_after_a_crash(settings: Settings, store: SQLStore, clock: Clock) -> None:
    worker, provider = make_worker(settings, store, clock)
    job_id = await accept(settings, store)
    # A first worker converts the job, commits SUBMITTING and dies before its request left.
    lease = timedelta(minutes=5)
    [leased] = await store.acquire_jobs("dead-worker", lease, 1)
    assert leased.job.job_id == job_id
    await store.update_job(
        "dead-worker", job_id, JobUpdate(state=JobState.READY, document=b"%PDF-1.4\n", pages=1), lease
    )
    await store.update_job("dead-worker", job_id, JobUpdate(state=JobState.SUBMITTING, attempts=1), lease)
    assert await worker.run_until_idle() == 0  # the lease still holds
    clock.advance(minutes=6)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert job.state == JobState.DELIVERED
    assert provider.sends == 1


async def test_notice_retried_while_the_maildir_is_unwritable(
    settings: Settings, store: SQLStore, clock: Clock
) -> None:
    worker, _provider = make_worker(settings, store, clock)
    assert settings.mail.maildir is not None
    maildir = settings.path(settings.mail.maildir)
    maildir.parent.mkdir(parents=True, exist_ok=True)
    maildir.write_text("a file where the Maildir should be")
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert (job.state, job.notice) == (JobState.DELIVERED, NoticeState.PENDING)
    maildir.unlink()
    clock.advance(hours=1)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert job.notice == NoticeState.SENT
    assert len(notice_subjects(settings)) == 1


async def test_built_from_configuration(settings: Settings) -> None:
    provider: FaxProvider = build_provider("local", settings.providers["local"], settings.state_dir)
    assert isinstance(provider, LocalProvider)
    assert provider.outbox == settings.state_dir / "outbox"


class BrokenStatusProvider(ScriptedProvider):
    """A provider whose status call fails in a way no adapter should: a bug, not a fax failure."""

    async def status(self, receipt: SendReceipt) -> Any:
        raise RuntimeError("adapter bug")


async def test_an_unexpected_error_sets_the_job_aside_and_tells_the_sender(
    settings: Settings, store: SQLStore, clock: Clock
) -> None:
    worker, provider = make_worker(settings, store, clock, BrokenStatusProvider)
    job_id = await accept(settings, store)
    await worker.run_until_idle()
    job = await store.get_job(job_id)
    assert (job.state, job.notice) == (JobState.QUARANTINED, NoticeState.SENT)
    assert "RuntimeError" in (job.reason or "")
    assert provider.sends == 1
    [subject] = notice_subjects(settings)
    assert "uncertain" in subject
    # Set aside for good: another round does nothing.
    assert await worker.run_until_idle() == 0


async def test_jobs_of_a_dead_process_on_this_host_are_taken_back_at_once(
    settings: Settings, store: SQLStore, clock: Clock
) -> None:
    # A process that has certainly ended, on this host and in this PID namespace.
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    host, namespace, _ = default_worker_id().rsplit(":", 2)
    ghost = f"{host}:{namespace}:{dead.pid}"
    elsewhere = f"otherhost:{namespace}:{dead.pid}"
    first = await accept(settings, store)
    second = await accept(settings, store, to="+4940123456@fax.localhost")
    [held_by_ghost] = await store.acquire_jobs(ghost, timedelta(minutes=5), 1)
    [held_elsewhere] = await store.acquire_jobs(elsewhere, timedelta(minutes=5), 1)
    worker, provider = make_worker(settings, store, clock)
    worker.worker_id = default_worker_id()
    assert await worker.take_over_from_the_dead() == 1
    await worker.run_until_idle()
    assert (await store.get_job(held_by_ghost.job.job_id)).state == JobState.DELIVERED
    # A process on another host may be alive: its job waits for its lease to run out.
    assert (await store.get_job(held_elsewhere.job.job_id)).state == JobState.RECEIVED
    assert {first, second} == {held_by_ghost.job.job_id, held_elsewhere.job.job_id}
    assert provider.sends == 1
