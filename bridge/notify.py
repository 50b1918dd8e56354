"""The mails the bridge sends to a fax's sender: delivered, failed, not sent, uncertain, or handed over.

``compose_notice`` builds one notice for a finished job; ``notice_recipients`` decides who gets it. Sending
is the ``bridge.mailer`` module's business. Each notice

* threads to the sender's mail (``In-Reply-To`` and ``References`` name its ``Message-ID``);
* is marked ``Auto-Submitted: auto-replied`` (RFC 3834) and ``X-Loop``, so that well-behaved responders do
  not answer it and the bridge can recognise its own mail coming back;
* carries ``X-Faxbridge-Job`` and ``X-Faxbridge-State`` for filters and for support.

Subject and body come from the templates (``bridge.templates``), in the account's language and time zone and
with the account's override directory; ``load_templates`` reads and checks them once per process, and the
bridge calls it at start so that a broken template stops it there (``TemplateError``, exit 78).
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from pathlib import Path
from typing import ClassVar, Literal

from bridge.models import FaxJob, JobState
from bridge.routing import format_number
from bridge.settings import Settings
from bridge.templates import Templates

__all__ = [
    "NOTICE_STATES",
    "PREVIEW_FILENAME",
    "compose_notice",
    "load_templates",
    "notice_recipients",
    "subject_header",
]

NOTICE_STATES: frozenset[JobState] = frozenset(
    {JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.QUARANTINED, JobState.SUBMITTED}
)
"""The job states a notice can be composed for. ``SUBMITTED`` only for a provider that reports no outcome: the
notice then says the fax was handed over, never that it was delivered."""

# The template of each state's notice.
_TEMPLATE: Mapping[JobState, str] = {
    JobState.DELIVERED: "delivered",
    JobState.FAILED: "failed",
    JobState.REJECTED: "rejected",
    JobState.QUARANTINED: "uncertain",
    JobState.SUBMITTED: "handed_over",
}

PREVIEW_FILENAME = "fax-page-1.png"
# A Message-ID as RFC 5322 allows it: printable ASCII without spaces or angle brackets inside.
_MSG_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")


# -- templates -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _load(overrides: tuple[tuple[str, Path], ...]) -> Templates:
    return Templates.load(None, dict(overrides))


def load_templates(settings: Settings | None = None) -> Templates:
    """The shipped templates with every account's override directory (``templates``, relative to ``state_dir``).

    Read and checked once per process for each set of override directories; later calls return the same
    ``Templates``. Raises ``TemplateError`` (a ``ConfigError``) naming the file, template and placeholder of
    the first mistake. Without ``settings``: the shipped templates alone.
    """
    overrides: tuple[tuple[str, Path], ...] = ()
    if settings is not None:
        overrides = tuple(
            (account.name, settings.path(account.templates))
            for account in settings.accounts
            if account.templates is not None
        )
    return _load(overrides)


class _SubjectHeader(UniqueUnstructuredHeader, BaseHeader):
    """A ``Subject`` that survives folding with non-ASCII text.

    CPython's folder (seen on 3.11) drops the space between two encoded words where it breaks a long
    non-ASCII subject: "(Re: Angebot für Müller)" reaches the reader as "(Re:Angebot für Müller)". For such
    subjects this header encodes itself with ``email.header.Header``, whose encoder keeps every space inside
    the encoded words. The header object travels with the message, so it is used by whichever generator
    serialises it (aiosmtplib uses its own SMTP policy, the Maildir writer the message's).
    """

    max_count: ClassVar[Literal[1]] = 1

    def fold(self, *, policy: Policy) -> str:
        text = str(self)
        if text.isascii() or getattr(policy, "utf8", False):
            return super().fold(policy=policy)
        encoded = Header(text, "utf-8", header_name=self.name).encode(linesep=policy.linesep)
        return f"{self.name}: {encoded}{policy.linesep}"


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("subject", _SubjectHeader)


def subject_header(subject: str) -> BaseHeader:
    """A ``Subject`` header for ``message["Subject"] = …`` that keeps every space of a non-ASCII subject."""
    header: BaseHeader = _HEADERS("Subject", subject)
    return header


def _message_id(value: str | None) -> str | None:
    """The original ``Message-ID`` in angle brackets, or ``None`` when it is missing or malformed.

    A malformed id is dropped rather than repaired: a header built from it could break threading in the
    sender's mail client or, with line breaks, add headers of its own.
    """
    if value is None:
        return None
    match = _MSG_ID.fullmatch(value.strip())
    return f"<{match.group(1)}>" if match else None


def _address_only(value: str) -> str:
    _name, address = email.utils.parseaddr(value)
    return address or value


def compose_notice(
    job: FaxJob,
    *,
    from_address: str,
    to: Sequence[str],
    hostname: str,
    document_notes: Sequence[str] = (),
    preview: bytes | None = None,
    now: datetime | None = None,
    service: str = "the fax service",
    language: str = "en",
    timezone: str = "UTC",
    templates: Templates | None = None,
    receipt: bool = False,
) -> EmailMessage:
    """Compose the notice telling the sender how ``job`` ended (or, with ``receipt``, that it was accepted).

    ``job`` must be DELIVERED, FAILED, REJECTED, QUARANTINED (the provider's answer was lost and the fax was
    not resent; the notice calls this "uncertain") or SUBMITTED to a service that reports no outcome (the
    notice says it was handed over). ``to`` comes from ``notice_recipients``; ``hostname`` is the domain of
    the new ``Message-ID``; ``document_notes`` are lines such as ``"report.pdf: 3 pages"``; ``preview`` is a
    PNG of page 1 of what was faxed, attached as ``fax-page-1.png`` (never to a refusal: nothing was faxed);
    ``now`` is the ``Date`` (default: the current time); ``service`` names the fax service.

    Subject and body are the template of the outcome in ``language``, with dates and times in ``timezone``
    (the account's; English and UTC when the job's account is unknown), from ``templates`` (default: the
    shipped ones, ``load_templates()``), using the override of the job's account where it has one.

    Raises ``ValueError`` for another state or an empty ``to``.
    """
    if not receipt and job.state not in NOTICE_STATES:
        raise ValueError(f"no notice for a job in state {job.state.value!r} (job {job.job_id})")
    recipients = [to] if isinstance(to, str) else [address for address in to if address.strip()]
    if not recipients:
        raise ValueError(f"no recipients for the notice of job {job.job_id}")

    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    attach_preview = preview is not None and job.state != JobState.REJECTED
    rendered = (templates or load_templates()).render(
        "accepted" if receipt else _TEMPLATE[job.state],
        language,
        {
            "to": format_number(job.number) or job.number or job.recipient or "?",
            "pages": job.pages,
            "reason": job.reason,
            "code": job.code,
            "job_id": job.job_id,
            "subject": job.subject,
            "received": job.created_at,
            # One attempt is the usual case: the line is worth reading only when there were more.
            "attempts": job.attempts if job.state == JobState.FAILED and job.attempts > 1 else None,
            "documents": [str(note) for note in document_notes if str(note).strip()],
            "service": service,
            "preview": PREVIEW_FILENAME if attach_preview else None,
        },
        account=job.account,
        tz=timezone,
        # The moment of the outcome: when the job finished (or was handed over), else now.
        when=(None if receipt else job.finished_at)
        or (job.submitted_at if job.state == JobState.SUBMITTED and not receipt else None)
        or moment,
    )

    message = EmailMessage()
    message["From"] = from_address
    message["To"] = ", ".join(recipients)
    # A header object whose name matches is stored as it is, keeping its own folding (see _SubjectHeader).
    message["Subject"] = subject_header(rendered.subject)
    message["Date"] = email.utils.format_datetime(moment)
    # An explicit domain: make_msgid's default looks up this host's FQDN, a blocking DNS query.
    message["Message-ID"] = email.utils.make_msgid(domain=hostname.strip().rstrip(".") or "faxbridge.invalid")
    original = _message_id(job.original_message_id)
    if original:
        message["In-Reply-To"] = original
        message["References"] = original
    # RFC 3834: responders must not answer this, and it marks the mail as an automatic reply.
    message["Auto-Submitted"] = "auto-replied"
    # Exchange and Outlook ignore Auto-Submitted but honour this when deciding on out-of-office replies.
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Loop"] = _address_only(from_address)
    message["X-Faxbridge-Job"] = job.job_id
    message["X-Faxbridge-State"] = job.state.value
    body = rendered.text
    # Quoted-printable only when needed: a plain ASCII notice stays readable as raw text, and a non-ASCII one
    # survives relays without 8BITMIME.
    message.set_content(body, charset="utf-8", cte=None if body.isascii() else "quoted-printable")
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    if attach_preview and preview is not None:
        message.add_attachment(preview, maintype="image", subtype="png", filename=PREVIEW_FILENAME)
    return message


def notice_recipients(job: FaxJob, extra: Sequence[str]) -> list[str]:
    """Who gets the notice for ``job``: its sender, then the account's ``notify_extra``.

    Lower-cased and without duplicates. Empty when the sender is empty (or ``<>``, or ``MAILER-DAEMON``):
    the message was a bounce, and RFC 3834 forbids answering one — nor do the extra addresses get a notice
    about it.
    """
    sender = job.sender.strip().strip("<>").strip()
    local_part = sender.rpartition("@")[0] if "@" in sender else sender
    if not sender or local_part.lower() == "mailer-daemon":
        return []
    recipients: list[str] = []
    for address in (sender, *extra):
        cleaned = address.strip().lower()
        if cleaned and cleaned not in recipients:
            recipients.append(cleaned)
    return recipients
