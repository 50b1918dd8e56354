"""Housekeeping: a periodic report per account, and retention (the purge of old documents and raw mails).

Reports (``report = "daily" | "weekly" | "monthly"`` on an account):

* A report covers the previous full period in UTC: the day before, the ISO week (Monday to Monday) before, or
  the calendar month before. It is due from the first moment after its period ends, and the daemon looks
  every hour (``Housekeeping.send_reports``), so a daily report goes out shortly after midnight UTC. Only
  the latest full period is reported: a bridge that was down for a whole period does not catch up.
* It counts the account's jobs created in the period (by state; failures grouped by reason, pages sent) and
  the incoming faxes mailed in it. Incoming faxes are not tied to accounts yet (an inbound row names its
  provider and its numbers, not an account), so every report counts all of them, per provider, and says so.
* A CSV attachment ``faxes-<account>-<period>.csv`` lists every job of the period, one per line.
* Each period is reported once across every instance of a cluster: a row in the store's ``report_runs``
  table is claimed before the mail is sent and marked sent afterwards. A failed delivery drops the claim, so
  the next hourly run tries again; the claim of an instance that died while sending expires after
  ``REPORT_CLAIM_SECONDS``, after which another instance sends it (at least once, never silently lost).
* Recipients: ``report_to``, or else ``notify_extra``. With neither, the report is skipped with a log line.

Retention (``[retention]``): ``Housekeeping.purge`` deletes documents and previews of jobs finished for good
(``bridge.stores.base.PURGEABLE_STATES``) more than ``documents_days`` ago, and the raw mails whose every
job finished more than ``messages_days`` ago. Job rows and message metadata (sender, subject, size, states,
pages, reasons) stay, so ``faxbridge jobs`` and reports still show every fax. The daemon runs it daily at
``retention.hour`` UTC; ``faxbridge purge`` runs it now.
"""

from __future__ import annotations

import csv
import email.utils
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Final, Literal

from bridge.errors import BridgeError
from bridge.mailer import Mailer
from bridge.models import FaxJob, JobState
from bridge.notify import load_templates, subject_header
from bridge.settings import AccountSettings, Settings
from bridge.stores.base import JobStore, PurgeResult
from bridge.templates import Templates

__all__ = [
    "CSV_COLUMNS",
    "REPORT_CLAIM_SECONDS",
    "Housekeeping",
    "ReportData",
    "ReportKind",
    "SentReport",
    "build_report",
    "compose_report",
    "csv_filename",
    "report_csv",
    "report_period",
    "report_recipients",
    "report_text",
]

log = logging.getLogger(__name__)

ReportKind = Literal["daily", "weekly", "monthly"]

REPORT_CLAIM_SECONDS: Final = 3600.0
"""How long a claimed report that was never marked sent keeps other instances from sending it (the
claiming instance died while sending); then the next run sends it."""

CSV_COLUMNS: Final = ("job_id", "created", "number", "state", "pages", "reason", "code")

# Spreadsheets run a cell that starts with one of these as a formula. Reasons and codes come from fax
# services; such a cell gets a leading apostrophe (OWASP's advice), which spreadsheets show as text.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")

_NO_REASON: Final = "(no reason given)"


# -- periods ----------------------------------------------------------------------------------------------


def report_period(kind: str, now: datetime) -> tuple[datetime, datetime, str]:
    """The last full period of ``kind`` before ``now``, in UTC: ``(since, until, label)``.

    ``daily``: the day before (label ``2026-11-23``); ``weekly``: the ISO week before, Monday 00:00 to Monday
    00:00 (``2026-W47``); ``monthly``: the month before (``2026-10``). Raises ``ValueError`` for another kind.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"report_period needs an aware datetime, got {now.isoformat()}")
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        since = today - timedelta(days=1)
        return since, today, f"{since:%Y-%m-%d}"
    if kind == "weekly":
        until = today - timedelta(days=today.weekday())
        since = until - timedelta(days=7)
        year, week, _ = since.isocalendar()
        return since, until, f"{year}-W{week:02d}"
    if kind == "monthly":
        until = today.replace(day=1)
        since = (until - timedelta(days=1)).replace(day=1)
        return since, until, f"{since:%Y-%m}"
    raise ValueError(f"no report period {kind!r}; use daily, weekly or monthly")


# -- the report -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportData:
    """What a report says about one account and one period."""

    account: str
    label: str
    since: datetime
    until: datetime
    jobs: tuple[FaxJob, ...]
    """Every job of the account created in the period, oldest first."""
    delivered: int
    failed: int
    rejected: int
    """Refused before anything was dialled (the document could not be made into a fax)."""
    other: int
    """Still in progress, handed to a service that reports no outcome, cancelled, or waiting for a person."""
    pages_sent: int
    """Pages of the delivered faxes."""
    failures_by_reason: tuple[tuple[str, int], ...]
    """Failed and refused jobs per reason, most frequent first."""
    received: int
    """Incoming faxes mailed in the period, at every provider (they are not tied to accounts yet)."""
    received_by_provider: Mapping[str, int] = field(default_factory=dict)

    @property
    def faxes(self) -> int:
        """Jobs in the period, whatever became of them."""
        return len(self.jobs)


def _one_line(text: str) -> str:
    return " ".join("".join(char if char.isprintable() else " " for char in text).split())


def build_report(
    account: str,
    jobs: Iterable[FaxJob],
    inbound_counts: Mapping[str, int] | int,
    since: datetime,
    until: datetime,
    label: str | None = None,
) -> ReportData:
    """Count ``jobs`` (the account's jobs of the period) and the incoming faxes into a ``ReportData``.

    ``inbound_counts`` is the store's count of incoming faxes per provider (or a plain total). ``label``
    names the period (default: the start date).
    """
    chosen = tuple(sorted((job for job in jobs if job.account == account), key=lambda j: (j.created_at, j.job_id)))
    states = Counter(job.state for job in chosen)
    reasons = Counter(
        _one_line(job.reason or "") or _NO_REASON for job in chosen if job.state in (JobState.FAILED, JobState.REJECTED)
    )
    by_provider = {"all": inbound_counts} if isinstance(inbound_counts, int) else dict(sorted(inbound_counts.items()))
    delivered = states[JobState.DELIVERED]
    failed = states[JobState.FAILED]
    rejected = states[JobState.REJECTED]
    return ReportData(
        account=account,
        label=label or f"{since:%Y-%m-%d}",
        since=since,
        until=until,
        jobs=chosen,
        delivered=delivered,
        failed=failed,
        rejected=rejected,
        other=len(chosen) - delivered - failed - rejected,
        pages_sent=sum(job.pages or 0 for job in chosen if job.state == JobState.DELIVERED),
        failures_by_reason=tuple(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        received=sum(by_provider.values()),
        received_by_provider=by_provider,
    )


def csv_filename(account: str, label: str) -> str:
    """``faxes-<account>-<period>.csv``; account names are letters, digits, ``.``, ``_`` and ``-`` already."""
    return f"faxes-{account}-{label}.csv"


def _cell(text: str | None) -> str:
    value = text or ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def report_csv(report: ReportData) -> bytes:
    """The report's jobs as CSV (RFC 4180: comma, double quotes, CRLF), UTF-8, with a header line."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for job in report.jobs:
        writer.writerow(
            (
                job.job_id,
                job.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                job.number,
                job.state.value,
                "" if job.pages is None else job.pages,
                _cell(job.reason),
                _cell(job.code),
            )
        )
    return buffer.getvalue().encode("utf-8")


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _period_text(report: ReportData) -> str:
    """The period in words, from the shape of its label (see ``report_period``)."""
    last = report.until - timedelta(days=1)
    if report.until - report.since == timedelta(days=1):
        return f"{report.since:%A %d %B %Y}"
    if "-W" in report.label:
        return f"week {report.label[-2:].lstrip('0')} of {report.label[:4]} ({report.since:%d %B} to {last:%d %B %Y})"
    if len(report.label) == len("2026-11"):
        return f"{report.since:%B %Y}"
    return f"{report.since:%Y-%m-%d} to {last:%Y-%m-%d}"


def report_text(report: ReportData) -> str:
    """The plain-text body of the report mail."""
    filename = csv_filename(report.account, report.label)
    rows: list[tuple[str, str]] = [
        ("Faxes", str(report.faxes)),
        ("Faxes sent", f"{report.delivered} ({_plural(report.pages_sent, 'page')})"),
        ("Failed", str(report.failed)),
        ("Not sent (refused)", str(report.rejected)),
    ]
    if report.other:
        rows.append(("Other", f"{report.other} (in progress, no outcome reported, cancelled or held)"))
    rows.append(("Faxes received", str(report.received)))
    width = max(len(label) for label, _ in rows) + 1
    lines = [
        f"Fax report for the account {report.account}: {_period_text(report)}",
        f"From {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    lines += [f"{label + ':':<{width}} {value}" for label, value in rows]
    if report.failures_by_reason:
        lines += ["", "Failures by reason:"]
        lines += [f"  {count:>4}  {reason}" for reason, count in report.failures_by_reason]
    if report.received_by_provider and list(report.received_by_provider) != ["all"]:
        lines += ["", "Faxes received per fax service:"]
        lines += [f"  {count:>4}  {provider}" for provider, count in report.received_by_provider.items()]
    lines += [
        "",
        "Faxes received are counted for every account: incoming faxes are not assigned to accounts yet.",
        "",
        f"The attached {filename} lists every fax of the period, one per line",
        f"({', '.join(CSV_COLUMNS)}; times in UTC).",
        "",
        "-- ",
        "This message was sent automatically by the fax gateway; replies are not read.",
    ]
    return "\n".join(lines) + "\n"


def compose_report(
    report: ReportData,
    *,
    from_address: str,
    to: Sequence[str],
    hostname: str,
    now: datetime,
    language: str = "en",
    timezone: str = "UTC",
    templates: Templates | None = None,
) -> EmailMessage:
    """The report mail, from the ``report`` template: a summary and the CSV of every job as an attachment.

    The summary block itself (the counts and the failures by reason) is written here, in English.
    """
    recipients = [address for address in to if address.strip()]
    if not recipients:
        raise ValueError(f"no recipients for the report of account {report.account}")
    rendered = (templates or load_templates()).render(
        "report",
        language,
        {
            "period": report.label,
            "summary": report_text(report).rstrip(),
            "faxes_sent": report.delivered,
            "faxes_received": report.received,
            "pages_sent": report.pages_sent,
            "failures": report.failed,
        },
        account=report.account,
        tz=timezone,
        when=now,
    )
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject_header(rendered.subject)
    message["Date"] = email.utils.format_datetime(now.astimezone(UTC))
    message["Message-ID"] = email.utils.make_msgid(domain=hostname.strip().rstrip(".") or "faxbridge.invalid")
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Loop"] = email.utils.parseaddr(from_address)[1] or from_address
    message["X-Faxbridge-Report"] = f"{report.account} {report.label}"
    body = rendered.text
    message.set_content(body, charset="utf-8", cte=None if body.isascii() else "quoted-printable")
    message.add_attachment(
        report_csv(report),
        maintype="text",
        subtype="csv",
        filename=csv_filename(report.account, report.label),
        params={"charset": "utf-8"},
    )
    return message


def report_recipients(account: AccountSettings) -> list[str]:
    """Who gets the account's report: ``report_to``, else ``notify_extra``; lower-cased, without repeats."""
    seen: list[str] = []
    for address in account.report_to or account.notify_extra:
        cleaned = address.strip().lower()
        if cleaned and cleaned not in seen:
            seen.append(cleaned)
    return seen


# -- the service ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentReport:
    """A report that was mailed: to whom, and what it covered."""

    account: str
    label: str
    recipients: tuple[str, ...]
    faxes: int


class Housekeeping:
    """Sends the reports that are due and purges what retention lets go."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        mailer: Mailer,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._mailer = mailer
        self._clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._unaddressed: set[tuple[str, str]] = set()
        """(account, period) pairs already logged as having nobody to send to: one line per period, not hourly."""

    # -- reports ----------------------------------------------------------------------------------------

    async def send_reports(self, now: datetime | None = None, force_account: str | None = None) -> list[str]:
        """Mail every report that is due and was not sent yet; return the accounts whose report went out.

        ``force_account`` sends that account's report for its last full period now (``daily`` if the account
        has ``report = "never"``), even when it was sent already. Run hourly by the daemon; errors are logged
        per account and never stop the others (a forced report raises them instead; an unknown ``force_account``
        raises ``KeyError``).
        """
        moment = now or self._clock()
        if force_account is not None:
            self._settings.account(force_account)  # KeyError for an unknown account
        sent: list[str] = []
        for account in self._settings.accounts:
            forced = account.name == force_account
            if force_account is not None and not forced:
                continue
            if account.report == "never" and not forced:
                continue
            kind: ReportKind = "daily" if account.report == "never" else account.report
            try:
                done = await self.send_report(account, kind, moment, force=forced)
            except BridgeError as exc:
                if forced:
                    raise
                log.error("account %s: the %s report could not be sent: %s", account.name, kind, exc)
                continue
            if done is not None:
                sent.append(account.name)
        return sent

    async def send_report(
        self,
        account: AccountSettings,
        kind: ReportKind,
        now: datetime,
        *,
        force: bool = False,
        recipients: Sequence[str] | None = None,
    ) -> SentReport | None:
        """Build and mail ``account``'s report of ``kind`` for the last full period before ``now``.

        Without ``force``, only when this period was not reported yet (and no other instance is sending it);
        with it, always. ``recipients`` replaces the account's list; a report mailed to the account's own list
        records the period as reported, one mailed elsewhere does not. Returns what was sent, or ``None`` when
        nothing was. Raises ``NotificationError`` when the mail could not be handed over (the period then stays
        due), and ``StoreUnavailable``.
        """
        since, until, label = report_period(kind, now)
        to = list(recipients) if recipients is not None else report_recipients(account)
        if not to:
            if (account.name, label) not in self._unaddressed:
                self._unaddressed.add((account.name, label))
                log.warning(
                    "account %s: the %s report for %s is not sent: nobody would get it (set report_to or notify_extra)",
                    account.name,
                    kind,
                    label,
                )
            return None
        stale = timedelta(seconds=REPORT_CLAIM_SECONDS)
        if not force and not await self._store.claim_report(account.name, label, now, stale_after=stale):
            return None
        try:
            jobs = await self._store.report_jobs(account.name, since, until)
            inbound = await self._store.inbound_counts(since, until)
            report = build_report(account.name, jobs, inbound, since, until, label)
            message = compose_report(
                report,
                from_address=self._settings.mail.from_address,
                to=to,
                hostname=self._settings.smtp.hostname,
                now=now,
                language=account.language,
                timezone=account.timezone,
                templates=load_templates(self._settings),
            )
            await self._mailer.deliver(message, to)
        except Exception:
            if not force:
                try:
                    await self._store.finish_report(account.name, label, now, sent=False)
                except BridgeError as exc:
                    # The claim then expires by itself after REPORT_CLAIM_SECONDS.
                    log.warning("account %s: the claim on the %s report stays: %s", account.name, label, exc)
            raise
        if recipients is None:
            await self._store.finish_report(account.name, label, now, sent=True)
        log.info(
            "account %s: %s report for %s (%s) mailed to %s",
            account.name,
            kind,
            label,
            _plural(report.faxes, "fax", "faxes"),
            ", ".join(to),
        )
        return SentReport(account.name, label, tuple(to), report.faxes)

    # -- retention --------------------------------------------------------------------------------------

    def cutoffs(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """The retention cutoffs at ``now``: ``(documents_before, messages_before)``; ``None`` keeps that kind."""
        retention = self._settings.retention
        documents = None if retention.documents_days is None else now - timedelta(days=retention.documents_days)
        messages = None if retention.messages_days is None else now - timedelta(days=retention.messages_days)
        return documents, messages

    async def purge(self, now: datetime | None = None) -> PurgeResult:
        """Delete the documents, previews and raw mails that ``[retention]`` lets go at ``now``."""
        moment = now or self._clock()
        documents_before, messages_before = self.cutoffs(moment)
        if documents_before is None and messages_before is None:
            return PurgeResult()
        result = await self._store.purge(documents_before=documents_before, messages_before=messages_before)
        if result.documents or result.previews or result.messages:
            log.info(
                "retention: deleted %s, %s and %s",
                _plural(result.documents, "document"),
                _plural(result.previews, "preview"),
                _plural(result.messages, "raw mail"),
            )
        return result
