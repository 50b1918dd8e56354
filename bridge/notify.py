"""The mails the bridge sends to a fax's sender: delivered, failed, not sent, or uncertain.

``compose_notice`` builds one notice for a finished job; ``notice_recipients`` decides who gets it. Sending
is the ``bridge.mailer`` module's business. Each notice

* threads to the sender's mail (``In-Reply-To`` and ``References`` name its ``Message-ID``);
* is marked ``Auto-Submitted: auto-replied`` (RFC 3834) and ``X-Loop``, so that well-behaved responders do
  not answer it and the bridge can recognise its own mail coming back;
* carries ``X-Faxbridge-Job`` and ``X-Faxbridge-State`` for filters and for support.

Subjects and bodies are English for now; templates and other languages come later.
"""

from __future__ import annotations

import email.utils
import re
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from typing import ClassVar, Literal

from bridge.models import FaxJob, JobState
from bridge.routing import format_number

__all__ = ["NOTICE_STATES", "compose_notice", "notice_recipients"]

NOTICE_STATES: frozenset[JobState] = frozenset(
    {JobState.DELIVERED, JobState.FAILED, JobState.REJECTED, JobState.QUARANTINED, JobState.SUBMITTED}
)
"""The job states a notice can be composed for. ``SUBMITTED`` only for a provider that reports no outcome: the
notice then says the fax was handed over, never that it was delivered."""

# The sender's subject is echoed in ours; a mile-long subject would push ours out of view in a mail client.
PREVIEW_FILENAME = "fax-page-1.png"
_MAX_ECHOED_SUBJECT = 120
# A Message-ID as RFC 5322 allows it: printable ASCII without spaces or angle brackets inside.
_MSG_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


def _one_line(text: str) -> str:
    """Collapse whitespace and drop control characters: header values must stay on one line."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _pages(count: int) -> str:
    return f"{count} page" if count == 1 else f"{count} pages"


def _when(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    # The store keeps UTC; a naive value is taken as UTC rather than as this host's local time.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def _subject(job: FaxJob, number: str, service: str) -> str:
    reason = _one_line(job.reason or "")
    if job.state == JobState.DELIVERED:
        subject = f"Fax to {number} delivered"
        if job.pages:
            subject += f" — {_pages(job.pages)}"
    elif job.state == JobState.FAILED:
        subject = f"Fax to {number} failed: {reason}" if reason else f"Fax to {number} failed"
    elif job.state == JobState.REJECTED:
        subject = f"Fax to {number} not sent: {reason}" if reason else f"Fax to {number} not sent"
    elif job.state == JobState.SUBMITTED:
        subject = f"Fax to {number} handed to {service}"
        if job.pages:
            subject += f" — {_pages(job.pages)}"
    else:
        subject = f"Fax to {number}: delivery uncertain"
    theirs = _one_line(job.subject)
    if theirs:
        subject += f" (Re: {_shorten(theirs, _MAX_ECHOED_SUBJECT)})"
    return subject


# Lines of at most 72 characters keep a plain-ASCII notice in 7-bit encoding (no quoted-printable soft
# breaks in the raw text) and readable in any mail client.
_WIDTH = 72


def _paragraph(text: str) -> list[str]:
    return textwrap.wrap(_one_line(text), _WIDTH, break_long_words=False, break_on_hyphens=False)


def _bullet(text: str) -> list[str]:
    return textwrap.wrap(
        _one_line(text),
        _WIDTH,
        initial_indent="- ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _body(
    job: FaxJob, number: str, document_notes: Sequence[str], *, with_preview: bool = False, service: str = ""
) -> str:
    reason = _one_line(job.reason or "")
    lines: list[str] = []
    if job.state == JobState.DELIVERED:
        lines += _paragraph(f"Your fax to {number} was delivered.")
    elif job.state == JobState.SUBMITTED:
        lines += _paragraph(f"Your fax to {number} was handed to {service}, which accepted it for sending.")
        lines.append("")
        lines += _paragraph(
            f"{service} does not tell whether faxes reach the recipient, so this is the last message about it."
            " If it matters, ask the recipient whether it arrived."
        )
    elif job.state == JobState.FAILED:
        lines += _paragraph(f"Your fax to {number} could not be delivered.")
    elif job.state == JobState.REJECTED:
        lines += _paragraph(
            f"Your fax to {number} was not sent: your email could not be turned into a fax. Nothing was dialled."
        )
    else:
        lines += _paragraph(f"We cannot tell whether your fax to {number} was delivered.")
        lines.append("")
        lines += _paragraph(
            "The fax was handed to the fax service, but its answer was lost. So that the recipient does not"
            " get your fax twice, it has not been sent again."
        )
    if reason and job.state in (JobState.FAILED, JobState.REJECTED):
        lines.append("")
        lines += _paragraph(f"Reason: {reason}")
        if job.code:
            lines += _paragraph(f"Code from the fax service: {job.code}")

    details: list[tuple[str, str]] = [("Number", number)]
    if job.pages:
        details.append(("Pages", str(job.pages)))
    theirs = _one_line(job.subject)
    if theirs:
        details.append(("Your subject", theirs))
    details.append(("Job", job.job_id))
    received = _when(job.created_at)
    if received:
        details.append(("Received", received))
    finished = _when(job.finished_at)
    if finished:
        details.append(("Delivered" if job.state == JobState.DELIVERED else "Finished", finished))
    if job.state == JobState.FAILED and job.attempts > 1:
        details.append(("Attempts", str(job.attempts)))
    width = max(len(label) for label, _ in details) + 1
    lines.append("")
    lines += [f"{label + ':':<{width}} {value}" for label, value in details]

    notes = [_one_line(note) for note in document_notes if _one_line(note)]
    if notes:
        lines += ["", "What was in your email:"]
        lines += [f"  {note}" for note in notes]
    if with_preview:
        lines += ["", f"Page 1 of the fax as it was sent is attached ({PREVIEW_FILENAME})."]

    advice = _advice(job.state)
    if advice:
        lines += ["", "What you can do:"]
        for item in advice:
            lines += _bullet(item)

    lines += ["", "-- "]
    lines += _paragraph(
        "This message was sent automatically by the fax gateway; replies are not read. If you need help,"
        f" ask your administrator and quote the job {job.job_id}."
    )
    return "\n".join(lines) + "\n"


def _advice(state: JobState) -> list[str]:
    if state == JobState.FAILED:
        return [
            "Check that the number is right and that it belongs to a fax machine, not a telephone.",
            "If the line was busy or nobody answered, send your email again later.",
            "If it fails again, ask the recipient whether their fax machine is switched on and has paper.",
        ]
    if state == JobState.REJECTED:
        return [
            "Attach the document as a PDF without a password, an image (JPEG, PNG, TIFF, GIF, BMP or WebP), a"
            " Word, Excel or OpenDocument file, or plain text; archives (zip, rar, 7z) are never opened.",
            "Then send your email again.",
        ]
    if state == JobState.QUARANTINED:
        return [
            "Ask the recipient whether your fax arrived.",
            "If it did not, send your email again.",
        ]
    return []


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
) -> EmailMessage:
    """Compose the notice telling the sender how ``job`` ended.

    ``job`` must be DELIVERED, FAILED, REJECTED or QUARANTINED (the provider's answer was lost and the fax
    was not resent; the notice calls this "uncertain"). ``to`` comes from ``notice_recipients``;
    ``hostname`` is the domain of the new ``Message-ID``; ``document_notes`` are lines such as
    ``"report.pdf: 3 pages"``; ``preview`` is a PNG of page 1 of what was faxed, attached as
    ``fax-page-1.png`` (never to a refusal: nothing was faxed); ``now`` is the ``Date`` (default: the current
    time); ``service`` names the fax service in a notice for a provider that reports no outcome.

    Raises ``ValueError`` for another state or an empty ``to``.
    """
    if job.state not in NOTICE_STATES:
        raise ValueError(f"no notice for a job in state {job.state.value!r} (job {job.job_id})")
    recipients = [to] if isinstance(to, str) else [address for address in to if address.strip()]
    if not recipients:
        raise ValueError(f"no recipients for the notice of job {job.job_id}")

    number = format_number(job.number)
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    message = EmailMessage()
    message["From"] = from_address
    message["To"] = ", ".join(recipients)
    # A header object whose name matches is stored as it is, keeping its own folding (see _SubjectHeader).
    message["Subject"] = _HEADERS("Subject", _subject(job, number, service))
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
    attach_preview = preview is not None and job.state != JobState.REJECTED
    body = _body(job, number, document_notes, with_preview=attach_preview, service=service)
    # Quoted-printable only when needed: a plain ASCII notice stays readable as raw text, and a non-ASCII one
    # survives relays without 8BITMIME.
    message.set_content(body, charset="utf-8", cte=None if body.isascii() else "quoted-printable")
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
