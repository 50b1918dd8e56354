"""The job state machine: convert → submit → poll status → notify, every step committed before the next.

A worker claims due jobs under a lease (so that another instance takes a job over if this one dies), and
carries each job as far as it can go right now, writing its state after every step. What happens to a job in
each state:

========================  ==========================================================================
``RECEIVED``              convert the message into one fax-ready PDF → ``READY``, or ``REJECTED``
``READY``/``RETRY_WAIT``  commit ``SUBMITTING``, then send → ``SUBMITTED``; temporary errors →
                          ``RETRY_WAIT`` with backoff; permanent ones → ``FAILED``; past the give-up
                          deadline → ``FAILED``
``SUBMITTING``            found after a crash: the send may have happened → ``SUBMIT_UNCERTAIN``
``SUBMIT_UNCERTAIN``      ask the provider: it has the fax → ``SUBMITTED``; it certainly has not →
                          ``READY``; it cannot tell → ``QUARANTINED`` (never sent twice)
``SUBMITTED``             poll the status until ``DELIVERED`` or ``FAILED``
notice pending            mail the outcome to the sender, retried while the relay says 4xx
========================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from bridge.converters import ConversionOptions, ConversionResult, CoverInfo
from bridge.converters.sandbox import ConverterStopped, Limits, Sandbox
from bridge.errors import (
    BridgeError,
    CapabilityMissing,
    ConversionError,
    LeaseLost,
    MessageRejected,
    NotificationError,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    RateLimited,
    StoreError,
    SubmissionUnknown,
)
from bridge.mailer import Mailer
from bridge.models import (
    TERMINAL_STATES,
    FaxJob,
    FaxStatus,
    JobState,
    JobUpdate,
    LeasedJob,
    NoticeState,
    OutboundFax,
    SendReceipt,
)
from bridge.notify import compose_notice, load_templates, notice_recipients
from bridge.providers.base import Capability, FaxProvider
from bridge.routing import format_number
from bridge.settings import Settings
from bridge.stores.base import JobStore

log = logging.getLogger(__name__)

Converter = Callable[[bytes, ConversionOptions], Awaitable[ConversionResult]]
"""Turns a raw mail into a fax document; the production one is ``Sandbox.convert`` (a child process per mail)."""
Clock = Callable[[], datetime]

# A job whose provider has no status call stays SUBMITTED; this keeps it from being picked up again.
_NEVER = timedelta(days=3650)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _pid_namespace() -> str:
    # Two containers can share a host name and a PID; the PID namespace tells them apart.
    try:
        return str(Path("/proc/self/ns/pid").readlink()).removeprefix("pid:[").removesuffix("]")
    except OSError:
        return "-"


def default_worker_id() -> str:
    """``host:pid-namespace:pid``: which process holds a lease, precisely enough to tell whether it is gone."""
    return f"{socket.gethostname()}:{_pid_namespace()}:{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_gone(holder: str, me: str) -> bool:
    """Whether the worker ``holder`` was a process on this host, in this PID namespace, that no longer exists.

    Anything else (another host, another namespace, a PID in use, an id of another form) counts as alive:
    its leases then run out by themselves, which is slower but never lets two workers hold one job.
    """
    host, ns, pid = [*holder.rsplit(":", 2), "", "", ""][:3]
    my_host, my_ns, my_pid = me.rsplit(":", 2)
    if host != my_host or ns != my_ns or ns == "-" or not pid.isdigit() or pid == my_pid:
        return False
    return not _process_alive(int(pid))


@dataclass
class _Step:
    """The outcome of one step: the update to write, and whether the job can go on right away."""

    update: JobUpdate
    proceed: bool


class Worker:
    """Runs fax jobs from the store through to a notice."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        providers: Mapping[str, FaxProvider],
        mailer: Mailer,
        *,
        worker_id: str | None = None,
        clock: Clock = _utcnow,
        converter: Converter | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._providers = providers
        self._mailer = mailer
        self.worker_id = worker_id or default_worker_id()
        self._clock = clock
        if converter is None:
            documents = settings.documents
            self.sandbox: Sandbox | None = Sandbox(
                Limits(
                    cpu_seconds=documents.cpu_seconds,
                    memory_bytes=documents.memory_mb * 1024 * 1024,
                    timeout_seconds=documents.timeout_seconds,
                    office_memory_bytes=documents.office_memory_mb * 1024 * 1024,
                ),
                concurrency=documents.concurrency,
            )
            converter = self.sandbox.convert
        else:
            self.sandbox = None
        self._convert = converter
        self._lease = timedelta(seconds=settings.worker.lease_seconds)
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots_free = asyncio.Event()
        self._slots_free.set()
        # The document a job was just converted into, kept for its submission a moment later so that it is
        # not read back from the store; dropped when the job leaves this worker.
        self._documents: dict[str, bytes] = {}
        self.counts: Counter[str] = Counter()
        """Events since start: ``submitted``, ``delivered``, ``failed``, ``rejected``, ``notices``…."""
        self._progress = asyncio.Condition()

    async def wait_for_count(self, name: str, at_least: int) -> None:
        """Wait until ``counts[name]`` reaches ``at_least`` (for tests and the benchmark)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.counts[name] >= at_least)

    async def _count(self, name: str) -> None:
        self.counts[name] += 1
        async with self._progress:
            self._progress.notify_all()

    def wake(self) -> None:
        """Look for due jobs now (called when a message was accepted)."""
        self._wake.set()

    # -- running ---------------------------------------------------------------------------------------

    async def take_over_from_the_dead(self) -> int:
        """End the leases of earlier bridge processes on this host that died; return how many jobs came back.

        Without this, a bridge restarted after a crash would wait up to ``worker.lease_seconds`` before it
        resumed the jobs its predecessor held.
        """
        taken = 0
        try:
            for holder in await self._store.lease_holders():
                if is_gone(holder, self.worker_id):
                    count = await self._store.expire_leases(holder)
                    taken += count
                    log.warning("took back %d job(s) from %s, an earlier faxbridge process that is gone", count, holder)
        except StoreError as exc:
            log.error("cannot look for the jobs of dead processes (%s); their leases will run out", exc)
        return taken

    async def run(self) -> None:
        """Claim and process due jobs until ``stop`` is called."""
        worker = self._settings.worker
        await self.take_over_from_the_dead()
        while not self._stopping:
            self._wake.clear()
            free = worker.concurrency - len(self._tasks)
            claimed = 0
            if free > 0:
                try:
                    leased = await self._store.acquire_jobs(self.worker_id, self._lease, free)
                except StoreError as exc:
                    log.error("cannot claim jobs: %s", exc)
                    leased = []
                except Exception:
                    # The loop must outlive anything the store throws; the next round tries again.
                    log.exception("unexpected error while claiming jobs")
                    leased = []
                for item in leased:
                    self._spawn(item)
                claimed = len(leased)
            if claimed and claimed == free:
                # There may be more due jobs: wait only for a free slot.
                self._slots_free.clear()
                await self._wait(self._slots_free, None)
            else:
                await self._wait(self._wake, worker.poll_seconds)

    async def _wait(self, event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _spawn(self, leased: LeasedJob) -> None:
        task = asyncio.create_task(self._guarded(leased), name=f"job-{leased.job.job_id}")
        self._tasks[leased.job.job_id] = task

        def done(_: asyncio.Task[None], job_id: str = leased.job.job_id) -> None:
            self._tasks.pop(job_id, None)
            self._slots_free.set()
            # A finished job may have left room for others, or be due again at once (a notice to send).
            self._wake.set()

        task.add_done_callback(done)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let in-flight jobs finish for ``grace`` seconds, then release their leases."""
        self._stopping = True
        self._wake.set()
        self._slots_free.set()
        grace = self._settings.worker.shutdown_grace_seconds if grace is None else grace
        pending = list(self._tasks.values())
        if not pending:
            return
        _done, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still)

    async def run_until_idle(self, *, limit: int = 10_000) -> int:
        """Process due jobs until none is left; return how many job runs happened. For the CLI and tests."""
        runs = 0
        while runs < limit:
            leased = await self._store.acquire_jobs(self.worker_id, self._lease, self._settings.worker.concurrency)
            if not leased:
                break
            await asyncio.gather(*(self._guarded(item) for item in leased))
            runs += len(leased)
        return runs

    # -- one job ---------------------------------------------------------------------------------------

    async def _guarded(self, leased: LeasedJob) -> None:
        job = leased.job
        try:
            await self._process(leased)
        except LeaseLost:
            log.warning("job %s: another worker took it over; dropping it here", job.job_id)
        except StoreError as exc:
            # Nothing is lost: the lease runs out and the job is picked up again from its last committed state.
            log.error("job %s: the store failed (%s); it will be retried when its lease expires", job.job_id, exc)
        except asyncio.CancelledError:
            await self._release_quietly(job.job_id)
            raise
        except Exception as exc:
            log.exception("job %s: unexpected error; taking it out of the queue", job.job_id)
            await self._set_aside(job.job_id, exc)

    async def _set_aside(self, job_id: str, exc: Exception) -> None:
        # An error we do not understand must neither crash the worker nor come back every lease period.
        try:
            current = await self._store.get_job(job_id)
            if current.state in TERMINAL_STATES:
                update = JobUpdate(notice=NoticeState.FAILED, detail={"notice_error": f"{type(exc).__name__}: {exc}"})
            else:
                update = JobUpdate(
                    state=JobState.QUARANTINED,
                    notice=NoticeState.PENDING,
                    reason=f"an internal error stopped the fax ({type(exc).__name__}); the administrator can see it "
                    "in the log",
                    finished_at=self._clock(),
                    next_attempt_at=self._clock(),
                )
            await self._store.release_job(self.worker_id, job_id, update)
        except Exception:
            log.exception("job %s: could not set it aside either; it returns when its lease expires", job_id)

    async def _release_quietly(self, job_id: str) -> None:
        # Shutting down: hand the job back untouched. A job left in SUBMITTING is reconciled by whoever takes
        # it next, so an interrupted send is never repeated blindly.
        with contextlib.suppress(BridgeError, asyncio.CancelledError):
            await asyncio.shield(self._store.release_job(self.worker_id, job_id))

    async def _process(self, leased: LeasedJob) -> None:
        try:
            await self._advance(leased)
        finally:
            self._documents.pop(leased.job.job_id, None)

    async def _advance(self, leased: LeasedJob) -> None:
        job = leased.job
        if job.state == JobState.SUBMITTING:
            # A job is only ever left in SUBMITTING by a send that did not finish: it may have reached the
            # provider, so it must be reconciled, not sent again.
            job = await self._write(job, JobUpdate(state=JobState.SUBMIT_UNCERTAIN))
        while True:
            step = await self._next_step(job)
            if step is None:
                await self._store.release_job(self.worker_id, job.job_id)
                return
            if not step.proceed:
                released = await self._store.release_job(self.worker_id, job.job_id, step.update)
                await self._counted(job, released)
                return
            job = await self._write(job, step.update)

    async def _write(self, job: FaxJob, update: JobUpdate) -> FaxJob:
        written = await self._store.update_job(self.worker_id, job.job_id, update, self._lease)
        await self._counted(job, written)
        return written

    async def _counted(self, before: FaxJob, after: FaxJob) -> None:
        if after.state != before.state:
            await self._count(after.state.value)
        if after.notice != before.notice and after.notice in (NoticeState.SENT, NoticeState.FAILED):
            await self._count(f"notice_{after.notice.value}")

    async def _next_step(self, job: FaxJob) -> _Step | None:
        if job.state not in TERMINAL_STATES:
            handler: Callable[[FaxJob], Awaitable[_Step | None]] | None = {
                JobState.RECEIVED: self._convert_job,
                JobState.READY: self._submit,
                JobState.RETRY_WAIT: self._submit,
                JobState.SUBMIT_UNCERTAIN: self._reconcile,
                JobState.SUBMITTED: self._poll_status,
            }.get(job.state)
            if handler is not None:
                if job.next_attempt_at > self._clock():
                    return None
                return await handler(job)
        if job.notice == NoticeState.PENDING:
            return await self._notify(job)
        return None

    # -- steps -----------------------------------------------------------------------------------------

    async def _convert_job(self, job: FaxJob) -> _Step:
        raw = await self._store.get_message(job.message_id)
        try:
            result = await self._convert(raw, self._conversion_options(job))
        except ConverterStopped as exc:
            # Not the document's fault (the bridge is stopping): convert it again a little later.
            log.warning("job %s: conversion interrupted (%s); it will be converted again", job.job_id, exc)
            delay = timedelta(seconds=self._settings.worker.retry_initial_seconds)
            return _Step(JobUpdate(next_attempt_at=self._clock() + delay), proceed=False)
        except (ConversionError, MessageRejected) as exc:
            log.info("job %s: document refused: %s", job.job_id, exc)
            notes = list(getattr(exc, "notes", ()))
            return self._finish(JobState.REJECTED, reason=str(exc), extra={"notes": notes} if notes else None)
        over = await self._over_daily_pages(job, result.pages)
        if over is not None:
            log.info("job %s: refused: %s", job.job_id, over)
            return self._finish(JobState.REJECTED, reason=over, extra={"notes": list(result.notes)})
        log.info("job %s: converted, %d page(s)", job.job_id, result.pages)
        self._documents[job.job_id] = result.document
        receipt_sent = await self._send_receipt(job, result.pages, list(result.notes))
        return _Step(
            JobUpdate(
                state=JobState.READY,
                document=result.document,
                preview=result.preview,
                pages=result.pages,
                detail={"notes": list(result.notes), **({"receipt_sent": True} if receipt_sent else {})},
                next_attempt_at=self._clock(),
            ),
            proceed=True,
        )

    async def _over_daily_pages(self, job: FaxJob, pages: int) -> str | None:
        """Why this fax would take its sender past the account's daily page limit, or ``None``."""
        if not self._has_account(job):
            return None
        limit = self._settings.account(job.account).max_pages_per_day
        if limit is None:
            return None
        now = self._clock()
        usage = await self._store.sender_usage(job.sender, faxes_since=now, pages_since=now - timedelta(days=1))
        if usage.pages + pages <= limit:
            return None
        return (
            f"the fax has {pages} pages, and {usage.pages} were sent in the last 24 hours; the limit is {limit} "
            "pages a day for each sender"
        )

    def _conversion_options(self, job: FaxJob) -> ConversionOptions:
        documents = self._settings.documents
        base = ConversionOptions(
            office_timeout=documents.office_timeout_seconds,
            office_memory=documents.office_memory_mb * 1024 * 1024,
            preview=documents.preview,
        )
        if not self._has_account(job):
            return base
        account = self._settings.account(job.account)
        return dataclasses.replace(
            base,
            paper=account.paper,
            max_pages=account.max_pages,
            cover=account.cover,
            cover_info=CoverInfo(
                sender=job.sender,
                recipient=format_number(job.number),
                subject=job.subject,
                date=job.created_at.astimezone(UTC).strftime("%d %B %Y, %H:%M UTC"),
            ),
        )

    async def _submit(self, job: FaxJob) -> _Step:
        provider = self._provider(job)
        now = self._clock()
        deadline = job.created_at + timedelta(hours=self._settings.worker.give_up_hours)
        if job.state == JobState.RETRY_WAIT and now >= deadline:
            last = job.reason or "the provider could not be reached"
            return self._finish(
                JobState.FAILED,
                reason=f"the fax could not be handed to the provider for {self._settings.worker.give_up_hours:g}"
                f" hours ({last})",
            )
        fax = await self._outbound(job)
        # Committed before the request: if we die during it, the job is found in SUBMITTING and reconciled.
        job = await self._write(job, JobUpdate(state=JobState.SUBMITTING, attempts=job.attempts + 1))
        try:
            receipt = await provider.send(fax)
        except ProviderError as exc:
            return self._after_send_error(job, exc)
        except Exception as exc:
            # We cannot know what an unexpected failure left behind at the provider.
            log.exception("job %s: unexpected error while sending", job.job_id)
            return _Step(
                JobUpdate(state=JobState.SUBMIT_UNCERTAIN, reason=f"unexpected error while sending: {exc}"),
                proceed=True,
            )
        log.info("job %s: submitted to %s (%s)", job.job_id, provider.name, receipt.provider_fax_id)
        return self._submitted(receipt)

    def _submitted(self, receipt: SendReceipt) -> _Step:
        return _Step(
            JobUpdate(
                state=JobState.SUBMITTED,
                provider_fax_id=receipt.provider_fax_id,
                submitted_at=receipt.accepted_at,
                reason="",
                next_attempt_at=self._clock(),
                detail={"receipt": dict(receipt.raw)},
            ),
            proceed=True,
        )

    def _after_send_error(self, job: FaxJob, exc: ProviderError) -> _Step:
        if exc.maybe_accepted:
            log.warning("job %s: the send may have reached the provider (%s); reconciling", job.job_id, exc)
            return _Step(JobUpdate(state=JobState.SUBMIT_UNCERTAIN, reason=str(exc)), proceed=True)
        if isinstance(exc, ProviderTemporaryError):
            delay = self._backoff(job.attempts)
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            log.info("job %s: temporary error (%s); trying again in %.0f s", job.job_id, exc, delay)
            return _Step(
                JobUpdate(
                    state=JobState.RETRY_WAIT,
                    reason=str(exc),
                    code=exc.code,
                    next_attempt_at=self._clock() + timedelta(seconds=delay),
                ),
                proceed=False,
            )
        assert isinstance(exc, ProviderPermanentError) or not exc.temporary
        log.info("job %s: the provider refused the fax: %s", job.job_id, exc)
        return self._finish(JobState.FAILED, reason=str(exc), code=exc.code)

    async def _reconcile(self, job: FaxJob) -> _Step:
        provider = self._provider(job)
        # Every provider is asked: one that can only sometimes find a fax (a journal written once the fax is
        # finished) still saves a quarantine when it does. Only a provider that declares CLIENT_REFERENCE may
        # answer "certainly not there" (None); from any other that answer counts as "cannot tell".
        certain = Capability.CLIENT_REFERENCE in provider.capabilities
        fax = await self._outbound(job)
        try:
            receipt = await provider.find_submission(fax)
        except CapabilityMissing:
            return self._uncertain(job, f"{provider.name} offers no way to look up an interrupted submission")
        except SubmissionUnknown as exc:
            return self._uncertain(job, str(exc))
        except ProviderTemporaryError as exc:
            delay = self._backoff(job.attempts)
            log.info("job %s: cannot reconcile yet (%s); asking again in %.0f s", job.job_id, exc, delay)
            return _Step(JobUpdate(next_attempt_at=self._clock() + timedelta(seconds=delay)), proceed=False)
        except ProviderError as exc:
            return self._uncertain(job, str(exc))
        if receipt is None and not certain:
            return self._uncertain(job, f"{provider.name} did not find the fax, but cannot rule out that it has it")
        if receipt is None:
            log.info("job %s: the interrupted send did not reach %s; sending it now", job.job_id, provider.name)
            return _Step(JobUpdate(state=JobState.READY, next_attempt_at=self._clock()), proceed=True)
        log.info("job %s: the interrupted send had reached %s", job.job_id, provider.name)
        return self._submitted(receipt)

    def _uncertain(self, job: FaxJob, why: str) -> _Step:
        log.warning("job %s: submission outcome unknown (%s); quarantined, not resent", job.job_id, why)
        return self._finish(
            JobState.QUARANTINED,
            reason="the fax service did not confirm whether it took the fax, so it was not sent again "
            f"to avoid a duplicate ({why})",
        )

    async def _poll_status(self, job: FaxJob) -> _Step:
        provider = self._provider(job)
        if Capability.STATUS_POLL not in provider.capabilities:
            # The provider never reports an outcome: tell the sender it was handed over, then rest for good.
            if job.notice == NoticeState.NONE:
                return _Step(JobUpdate(notice=NoticeState.PENDING), proceed=True)
            if job.notice == NoticeState.PENDING:
                return await self._notify(job)
            return _Step(JobUpdate(next_attempt_at=self._clock() + _NEVER), proceed=False)
        receipt = SendReceipt(
            provider_fax_id=job.provider_fax_id,
            client_reference=job.job_id,
            accepted_at=job.submitted_at or job.created_at,
            raw=job.detail.get("receipt", {}),
        )
        try:
            report = await provider.status(receipt)
        except ProviderError as exc:
            log.info("job %s: status not available (%s)", job.job_id, exc)
            return self._poll_later()
        if report.status == FaxStatus.DELIVERED:
            log.info("job %s: delivered", job.job_id)
            return self._finish(JobState.DELIVERED, reason="", code=report.code, extra={"status": dict(report.raw)})
        if report.status in (FaxStatus.FAILED, FaxStatus.CANCELLED):
            log.info("job %s: failed: %s", job.job_id, report.reason)
            return self._finish(
                JobState.FAILED,
                reason=report.reason or "the fax service reported a failure without a reason",
                code=report.code,
                extra={"status": dict(report.raw)},
            )
        return self._poll_later()

    def _poll_later(self) -> _Step:
        delay = timedelta(seconds=self._settings.worker.status_poll_seconds)
        return _Step(JobUpdate(next_attempt_at=self._clock() + delay), proceed=False)

    async def _notify(self, job: FaxJob) -> _Step:
        account = self._settings.account(job.account) if self._has_account(job) else None
        reports, copies = self._route_watchers(job)
        recipients = notice_recipients(job, [*(account.notify_extra if account is not None else []), *reports])
        if not recipients:
            return _Step(JobUpdate(notice=NoticeState.SENT), proceed=True)
        mail = self._settings.mail
        notes = job.detail.get("notes", [])
        preview = None
        if self._settings.documents.preview and job.state != JobState.REJECTED:
            preview = await self._store.get_preview(job.job_id)
        message = compose_notice(
            job,
            from_address=mail.from_address,
            to=recipients,
            hostname=self._settings.smtp.hostname,
            document_notes=[str(note) for note in notes] if isinstance(notes, list) else [],
            preview=preview,
            now=self._clock(),
            service=self._service_name(job),
            # The account's language and time zone; English and UTC for a job whose account is gone.
            language=account.language if account is not None else "en",
            timezone=account.timezone if account is not None else "UTC",
            templates=load_templates(self._settings),
        )
        tries = int(job.detail.get("notice_attempts", 0)) + 1
        try:
            await self._mailer.deliver(message, recipients)
        except NotificationError as exc:
            if exc.is_temporary:
                delay = self._backoff(tries)
                log.warning("job %s: notice not delivered (%s); trying again in %.0f s", job.job_id, exc, delay)
                return _Step(
                    JobUpdate(
                        detail={"notice_attempts": tries, "notice_error": str(exc)},
                        next_attempt_at=self._clock() + timedelta(seconds=delay),
                    ),
                    proceed=False,
                )
            log.error("job %s: notice refused for good: %s", job.job_id, exc)
            return _Step(JobUpdate(notice=NoticeState.FAILED, detail={"notice_error": str(exc)}), proceed=True)
        log.info("job %s: notice sent to %s", job.job_id, ", ".join(recipients))
        if copies and job.state != JobState.REJECTED:
            await self._send_copy(job, message, copies)
        return _Step(JobUpdate(notice=NoticeState.SENT, detail={"notice_attempts": tries}), proceed=True)

    # -- helpers ---------------------------------------------------------------------------------------

    def _finish(
        self, state: JobState, *, reason: str, code: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> _Step:
        return _Step(
            JobUpdate(
                state=state,
                reason=reason,
                code=code,
                notice=NoticeState.PENDING,
                finished_at=self._clock(),
                next_attempt_at=self._clock(),
                detail=dict(extra) if extra else None,
            ),
            proceed=True,
        )

    def _backoff(self, attempt: int) -> float:
        worker = self._settings.worker
        base = min(worker.retry_max_seconds, worker.retry_initial_seconds * 2 ** max(attempt - 1, 0))
        # Jitter spreads retries of many jobs that failed together.
        return float(base * random.uniform(0.8, 1.0))

    async def _send_receipt(self, job: FaxJob, pages: int, notes: list[str]) -> bool:
        """The acceptance receipt, where the account wants one: best effort, never holding the fax back."""
        if not self._has_account(job) or job.detail.get("receipt_sent"):
            return False
        account = self._settings.account(job.account)
        if not account.acceptance_receipt:
            return False
        recipients = notice_recipients(job, [])
        if not recipients:
            return False
        message = compose_notice(
            dataclasses.replace(job, pages=pages),
            from_address=self._settings.mail.from_address,
            to=recipients,
            hostname=self._settings.smtp.hostname,
            document_notes=notes,
            now=self._clock(),
            service=self._service_name(job),
            language=account.language,
            timezone=account.timezone,
            templates=load_templates(self._settings),
            receipt=True,
        )
        try:
            await self._mailer.deliver(message, recipients)
        except NotificationError as exc:
            log.warning("job %s: the acceptance receipt was not delivered: %s", job.job_id, exc)
            return False
        log.info("job %s: acceptance receipt sent to %s", job.job_id, ", ".join(recipients))
        return True

    def _route_watchers(self, job: FaxJob) -> tuple[list[str], list[str]]:
        """Who else hears of this fax by the inbound routes of the number it was sent from (Sipwise's flags):
        the ``status_reports`` destinations get the notice, the ``outgoing_copies`` ones a copy with the fax."""
        if not self._has_account(job):
            return [], []
        account = self._settings.account(job.account)
        own_number = account.sender_caller_ids.get(job.sender.strip().lower()) or account.caller_id
        if own_number is None:
            return [], []
        reports: list[str] = []
        copies: list[str] = []
        for route in self._settings.inbound.routes:
            if route.number != own_number:
                continue
            for destination in route.destinations:
                if destination.status_reports:
                    reports.append(destination.address)
                if destination.outgoing_copies:
                    copies.append(destination.address)
        return reports, copies

    async def _send_copy(self, job: FaxJob, notice: EmailMessage, copies: list[str]) -> None:
        # Best effort after the notice itself went out: a copy that cannot be delivered is logged, and the
        # notice is not sent again for it.
        document = await self._store.get_document(job.job_id)
        if document is None:
            return
        copy = EmailMessage()
        for name in ("From", "Subject", "Date", "Auto-Submitted", "X-Auto-Response-Suppress", "X-Loop"):
            if notice[name] is not None:
                copy[name] = notice[name]
        copy["To"] = ", ".join(copies)
        copy["Message-ID"] = make_msgid(domain=self._settings.smtp.hostname.strip().rstrip(".") or "faxbridge.invalid")
        copy["X-Faxbridge-Job"] = job.job_id
        body = notice.get_body(preferencelist=("plain",))
        copy.set_content(str(body.get_content()) if body is not None else "")
        copy.add_attachment(document, maintype="application", subtype="pdf", filename=f"fax-{job.job_id}.pdf")
        try:
            await self._mailer.deliver(copy, copies)
        except NotificationError as exc:
            log.warning("job %s: the copy for %s was not delivered: %s", job.job_id, ", ".join(copies), exc)
            return
        log.info("job %s: copy of the fax sent to %s", job.job_id, ", ".join(copies))

    def _service_name(self, job: FaxJob) -> str:
        provider = self._providers.get(job.provider)
        if provider is None:
            return job.provider
        return provider.display_name

    def _has_account(self, job: FaxJob) -> bool:
        return any(account.name == job.account for account in self._settings.accounts)

    def _provider(self, job: FaxJob) -> FaxProvider:
        provider = self._providers.get(job.provider)
        if provider is None:
            raise LookupError(f"job {job.job_id} names provider {job.provider!r}, which is not configured")
        return provider

    async def _outbound(self, job: FaxJob) -> OutboundFax:
        document = self._documents.get(job.job_id) or await self._store.get_document(job.job_id)
        if document is None:
            raise LookupError(f"job {job.job_id} has no document although it was converted")
        caller_id = header = None
        if self._has_account(job):
            account = self._settings.account(job.account)
            caller_id = account.sender_caller_ids.get(job.sender.strip().lower()) or account.caller_id
            header = account.fax_header
        return OutboundFax(
            job_id=job.job_id,
            to=job.number,
            document=document,
            pages=job.pages or 0,
            sender=job.sender,
            account=job.account,
            subject=job.subject,
            caller_id=caller_id,
            header=header,
        )
