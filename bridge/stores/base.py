"""The job store contract: what every backend guarantees.

Invariants, which the contract suite in ``tests/stores`` checks against SQLite and PostgreSQL:

* ``accept_messages`` commits the raw messages and all their job rows in one transaction and returns only
  after the commit. If it raises, nothing of that batch was stored. It is called before the SMTP 250.
* A job's ``dedupe_key`` seen within ``dedupe_window`` creates no second job: the earlier job id is returned.
  A message whose every job is a duplicate is not stored again and comes back with ``duplicate=True``.
* ``acquire_jobs`` hands a due job to exactly one worker at a time. A job is due when it is active (or has a
  notice pending), its ``next_attempt_at`` has come, and its lease is free or expired. A job whose lease
  expired while it was ``SUBMITTING`` comes back with ``interrupted=True``: the worker must reconcile it with
  the provider, never send it blindly.
* ``update_job`` and ``release_job`` write only while the caller still holds the lease; otherwise they raise
  ``LeaseLost`` and write nothing. A state change that ``models.can_transition`` forbids raises ``ValueError``.
* ``purge`` deletes documents, previews and raw messages of finished jobs only (``PURGEABLE_STATES``, no
  notice pending), never a job row or a message's metadata.
* Every method that fails to reach or write the database raises ``StoreUnavailable``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.models import (
    AcceptRequest,
    AcceptResult,
    FaxJob,
    InboundRecord,
    InboundRef,
    InboundState,
    JobState,
    JobUpdate,
    LeasedJob,
    SenderUsage,
    StoredKey,
)

PURGEABLE_STATES: frozenset[JobState] = frozenset(
    {JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.CANCELLED}
)
"""The states in which a job is finished for good, so that retention may delete its document, preview and raw
message. ``QUARANTINED`` is terminal but not here: a person may release it (back to ``READY``), and it is then
sent from its document. A job whose notice is still pending keeps its data too (the notice attaches the
preview)."""


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one ``purge`` deleted."""

    documents: int = 0
    """Fax-ready PDFs."""
    previews: int = 0
    """Page-1 previews."""
    messages: int = 0
    """Raw mails (the message row and its metadata stay)."""

    def __add__(self, other: PurgeResult) -> PurgeResult:
        return PurgeResult(
            self.documents + other.documents, self.previews + other.previews, self.messages + other.messages
        )


class JobStore(ABC):
    """Durable messages and fax jobs, shared by every bridge instance on the same database."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, create the schema if the database is empty, and check that it answers."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    @abstractmethod
    async def accept_messages(self, requests: Sequence[AcceptRequest]) -> list[AcceptResult]:
        """Store several messages and their jobs in one transaction; one result per request, in order."""

    @abstractmethod
    async def get_message(self, message_id: str) -> bytes:
        """Return the raw message as it was received. Raises ``JobNotFound``."""

    @abstractmethod
    async def get_document(self, job_id: str) -> bytes | None:
        """Return the job's fax-ready PDF, or ``None`` before it was converted."""

    @abstractmethod
    async def get_preview(self, job_id: str) -> bytes | None:
        """Return the PNG preview of page 1 of the job's document, or ``None`` when there is none."""

    @abstractmethod
    async def secret_keys(self, account: str) -> list[StoredKey]:
        """The account's secret keys as digests, the current one first, then the retired ones newest first."""

    @abstractmethod
    async def rotate_secret_key(
        self, account: str, key_hash: str, now: datetime, *, replaces: str | None, keep: int = 5
    ) -> bool:
        """Make ``key_hash`` the account's current key, retiring the current one, in one transaction.

        Only when the current key is still ``replaces`` (``None``: the account has none): of several instances
        rotating at once, exactly one succeeds and returns ``True``. Retired keys beyond the newest ``keep``
        are deleted.
        """

    @abstractmethod
    async def sender_usage(self, sender: str, *, faxes_since: datetime, pages_since: datetime) -> SenderUsage:
        """Faxes by ``sender`` (any case) accepted since ``faxes_since`` and their pages since ``pages_since``."""

    @abstractmethod
    async def take_cluster_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        """Hold the lease ``name`` until ``until`` if it is free, expired or already ours; whether we hold it."""

    @abstractmethod
    async def claim_inbound(self, ref: InboundRef, holder: str, until: datetime, now: datetime) -> InboundRecord | None:
        """Record ``ref`` if it is new and lease it to ``holder`` for delivery.

        ``None`` when there is nothing to do now: it was acknowledged already, another holder has it, or its
        next attempt is later. A record in ``DELIVERED`` means: mailed, the provider still to be told.
        """

    @abstractmethod
    async def update_inbound(
        self,
        provider: str,
        provider_fax_id: str,
        holder: str,
        *,
        state: InboundState | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        now: datetime,
    ) -> None:
        """Record the outcome of a delivery attempt and release the lease."""

    @abstractmethod
    async def acquire_jobs(self, worker_id: str, lease: timedelta, limit: int) -> list[LeasedJob]:
        """Claim up to ``limit`` due jobs for ``worker_id`` until now + ``lease``; oldest due first."""

    @abstractmethod
    async def update_job(self, worker_id: str, job_id: str, update: JobUpdate, lease: timedelta) -> FaxJob:
        """Apply ``update`` and extend the lease by ``lease`` from now; the worker keeps the job."""

    @abstractmethod
    async def release_job(self, worker_id: str, job_id: str, update: JobUpdate | None = None) -> FaxJob:
        """Apply ``update`` (if any) and clear the lease, so that the job is due again at its next attempt."""

    @abstractmethod
    async def get_job(self, job_id: str) -> FaxJob:
        """Return one job. Raises ``JobNotFound``."""

    @abstractmethod
    async def job_counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (states without jobs are left out)."""

    @abstractmethod
    async def provider_totals(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """Faxes handed to each provider (jobs with a submission time), and failed jobs by provider and code."""

    @abstractmethod
    async def oldest_active_job(self) -> datetime | None:
        """When the oldest job that is not finished was accepted, or ``None`` when none is active."""

    @abstractmethod
    async def list_jobs(self, *, states: Collection[JobState] | None = None, limit: int = 100) -> list[FaxJob]:
        """Return jobs, newest first, optionally only those in ``states``."""

    @abstractmethod
    async def next_due_at(self) -> datetime | None:
        """Return when the next job becomes due (ignoring leases), or ``None`` when nothing is pending."""

    @abstractmethod
    async def lease_holders(self) -> set[str]:
        """Return the workers that hold at least one unexpired lease."""

    @abstractmethod
    async def expire_leases(self, worker_id: str) -> int:
        """End every lease ``worker_id`` holds now, so that other workers may take its jobs; return how many.

        Only for a worker known to be dead: its jobs come back as they were (a job in ``SUBMITTING`` comes back
        ``interrupted``).
        """

    @abstractmethod
    async def report_jobs(self, account: str, since: datetime, until: datetime) -> list[FaxJob]:
        """The jobs of ``account`` created in ``[since, until)``, oldest first."""

    @abstractmethod
    async def inbound_counts(self, since: datetime, until: datetime) -> dict[str, int]:
        """Incoming faxes mailed (``delivered_at``) in ``[since, until)``, per provider; providers without any
        are left out."""

    @abstractmethod
    async def claim_report(self, account: str, period: str, now: datetime, *, stale_after: timedelta) -> bool:
        """Claim the report of ``account`` for ``period``; whether the caller should send it.

        ``False`` when it was sent, or when another claim is younger than ``stale_after`` (another instance is
        sending it, or crashed less than that long ago). ``force`` callers skip this and only record.
        """

    @abstractmethod
    async def finish_report(self, account: str, period: str, now: datetime, *, sent: bool) -> None:
        """Record the outcome of a claim: ``sent`` marks the period reported (also without a claim); otherwise
        the claim is dropped so that the next run tries again."""

    @abstractmethod
    async def purge(self, *, documents_before: datetime | None, messages_before: datetime | None) -> PurgeResult:
        """Delete the data retention lets go; ``None`` keeps that kind.

        Documents and previews of jobs in ``PURGEABLE_STATES`` without a pending notice whose ``finished_at``
        (or ``created_at`` when unset) is before ``documents_before``; the raw bytes of messages received
        before ``messages_before`` all of whose jobs are such jobs finished before it. Job rows and the
        messages' metadata are never touched. Runs in several short transactions, so that mail keeps being
        accepted meanwhile; an interrupted purge leaves a consistent store and the next one goes on.
        """

    @abstractmethod
    async def cleanup(self, *, dedupe_window: timedelta) -> int:
        """Delete dedupe keys older than the window; return how many rows went."""
