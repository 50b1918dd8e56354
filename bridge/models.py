"""Value objects shared by the intake, the store, the worker and the providers.

Job states and the transitions between them are data (``TRANSITIONS``): the store refuses any other move,
and a test walks the table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobState(enum.StrEnum):
    """Where a fax job is. One job per (message, recipient)."""

    RECEIVED = "received"
    """Stored with its message before the SMTP 250; no document yet."""
    READY = "ready"
    """The fax-ready PDF is stored; waiting to be submitted."""
    SUBMITTING = "submitting"
    """Committed just before the request to the provider: if we find a job here, we may have sent it."""
    SUBMIT_UNCERTAIN = "submit_uncertain"
    """A submission was interrupted; the provider must be asked before anything is sent again."""
    RETRY_WAIT = "retry_wait"
    """The provider certainly did not take the fax; it will be submitted again later."""
    SUBMITTED = "submitted"
    """The provider accepted the fax; waiting for its outcome."""
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    """The document could not be made into a fax; nothing was sent."""
    CANCELLED = "cancelled"
    QUARANTINED = "quarantined"
    """Needs a person: the outcome of a submission is unknown, or the worker hit an error it does not know."""


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.CANCELLED, JobState.QUARANTINED}
)
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_STATES)

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.RECEIVED: frozenset({JobState.READY, JobState.REJECTED}),
    JobState.READY: frozenset({JobState.SUBMITTING}),
    JobState.RETRY_WAIT: frozenset({JobState.SUBMITTING, JobState.FAILED}),
    JobState.SUBMITTING: frozenset(
        {JobState.SUBMITTED, JobState.RETRY_WAIT, JobState.SUBMIT_UNCERTAIN, JobState.FAILED}
    ),
    JobState.SUBMIT_UNCERTAIN: frozenset({JobState.SUBMITTED, JobState.READY, JobState.FAILED, JobState.QUARANTINED}),
    JobState.SUBMITTED: frozenset({JobState.DELIVERED, JobState.FAILED}),
    JobState.DELIVERED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.REJECTED: frozenset(),
    JobState.CANCELLED: frozenset(),
    # `faxbridge jobs retry` releases a quarantined job after a person has checked with the provider.
    JobState.QUARANTINED: frozenset({JobState.READY}),
}


def can_transition(old: JobState, new: JobState) -> bool:
    """Return whether a job may move from ``old`` to ``new``; staying put is always allowed."""
    if old == new:
        return True
    if new == JobState.CANCELLED:
        return old in ACTIVE_STATES
    if new == JobState.QUARANTINED:
        return old in ACTIVE_STATES
    return new in TRANSITIONS[old]


class NoticeState(enum.StrEnum):
    """Whether the sender still has to be told about a job's outcome."""

    NONE = "none"
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class FaxStatus(enum.StrEnum):
    """The one status vocabulary every provider's statuses are mapped into."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class OutboundFax:
    """One fax to hand to a provider."""

    job_id: str
    """Our job id; also the client reference where the provider has one."""
    to: str
    """The destination in E.164."""
    document: bytes
    """The fax-ready PDF."""
    pages: int
    sender: str
    account: str
    subject: str = ""
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    caller_id: str | None = None
    """The number the fax says it comes from (E.164), where the provider's API takes one."""
    header: str | None = None
    """The fax header line (TSI / CSID text, or the cover-page sender), where the provider's API takes one."""


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """What a provider gave back when it accepted a fax."""

    provider_fax_id: str | None
    client_reference: str
    accepted_at: datetime
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A provider's word on a submitted fax, mapped into ``FaxStatus`` and kept verbatim in ``raw``."""

    status: FaxStatus
    reason: str | None = None
    """For a failure: a reason a person understands."""
    code: str | None = None
    """The provider's own status or error code."""
    pages_sent: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundRef:
    """A fax a provider holds for us."""

    provider: str
    provider_fax_id: str
    caller: str | None
    called: str | None
    received_at: datetime
    pages: int | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A status a provider pushed (webhook) for one of our faxes."""

    provider_fax_id: str | None
    client_reference: str | None
    report: StatusReport


@dataclass(frozen=True, slots=True)
class EnvelopeInfo:
    """The SMTP envelope and the headers the bridge needs from an accepted message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    client_address: str | None
    message_id: str | None
    """The message's own ``Message-ID`` header, to thread notices to it."""
    subject: str
    account: str


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job to create with a message: one per recipient."""

    job_id: str
    recipient: str
    """The RCPT address as the client gave it."""
    number: str
    """The destination in E.164."""
    account: str
    provider: str
    dedupe_key: str
    """Same message, sender and recipient again within the window: no second job."""


@dataclass(frozen=True, slots=True)
class AcceptRequest:
    """Everything ``JobStore.accept_messages`` commits for one message."""

    message_id: str
    raw: bytes
    envelope: EnvelopeInfo
    jobs: tuple[NewJob, ...]


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """The job ids to name in the 250, and whether all of them already existed."""

    message_id: str
    job_ids: tuple[str, ...]
    duplicate: bool


@dataclass(frozen=True, slots=True)
class FaxJob:
    """A job as the store holds it (without the document and the raw message, which are fetched apart)."""

    job_id: str
    message_id: str
    account: str
    provider: str
    recipient: str
    number: str
    sender: str
    subject: str
    original_message_id: str | None
    state: JobState
    notice: NoticeState
    attempts: int
    pages: int | None
    provider_fax_id: str | None
    reason: str | None
    """Why the job failed or was rejected, in plain words."""
    code: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    """Provider payloads and conversion notes, as JSON."""


@dataclass(frozen=True, slots=True)
class LeasedJob:
    """A job claimed by one worker until ``lease_expires_at``."""

    job: FaxJob
    lease_expires_at: datetime
    interrupted: bool
    """The job was found in ``SUBMITTING`` with an expired lease: a submission may have happened."""


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """A change to a job, applied only while the worker still holds its lease.

    Fields left ``None`` are not changed.
    """

    state: JobState | None = None
    notice: NoticeState | None = None
    attempts: int | None = None
    pages: int | None = None
    document: bytes | None = None
    preview: bytes | None = None
    """A PNG of page 1 of ``document``, stored beside it for the notice."""
    provider_fax_id: str | None = None
    reason: str | None = None
    code: str | None = None
    next_attempt_at: datetime | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One Mail2Fax secret key of an account, as the store holds it: a digest, never the key."""

    key_hash: str
    created_at: datetime
    retired_at: datetime | None
    """``None`` for the current key; otherwise when the next key replaced it."""


@dataclass(frozen=True, slots=True)
class SenderUsage:
    """What one envelope sender has faxed recently, for the per-sender rate limits."""

    faxes: int
    """Faxes (jobs not refused) accepted since the hour's start."""
    pages: int
    """Pages of those jobs since the day's start (jobs not converted yet count 0)."""


class InboundState(enum.StrEnum):
    """Where the delivery of an incoming fax stands."""

    PENDING = "pending"
    """Announced by the provider; not yet mailed (or the relay refused it for now)."""
    DELIVERED = "delivered"
    """The mail relay (or the Maildir) took the mail; the provider is not told yet."""
    ACKNOWLEDGED = "acknowledged"
    """The provider was told; nothing more to do."""


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """An incoming fax as the store tracks it."""

    provider: str
    provider_fax_id: str
    state: InboundState
    attempts: int
    next_attempt_at: datetime
    error: str | None = None
