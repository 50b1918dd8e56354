"""Retarus Faxolution for Applications (Fax4A) REST v1, and its inbound queue Fax2WSPull (providers.md §3).

What it does
------------

``send`` posts one ``FaxJobRequest`` to ``POST {send_url}/{customer_number}/fax`` with HTTP Basic auth (the
Retarus Login ID and its password). The request carries our job id as ``reference.customerDefinedId``, the
destination in E.164 as ``recipients[0].number``, the PDF base64-encoded as ``documents[0].data`` (named
``<job id>.pdf``), ``renderingOptions.paperFormat``/``resolution``, and the sender identity where the API has
fields for it: ``OutboundFax.caller_id`` → ``transportOptions.csid`` (the sender id the receiving machine shows,
at most 20 characters) and ``OutboundFax.header`` → ``renderingOptions.header`` (the header line; written
through ``header_template``, with every ``%`` removed from the sender's text so that it cannot smuggle Retarus
header placeholders such as ``%C`` or ``%tz=``). ``billing_code`` and the account name go into
``reference.billingCode``/``billingInfo``; ``valid_for_minutes`` adds ``meta.jobValid`` with time-zone-aware
UTC timestamps (Retarus answers ``400`` to a start without a zone). Retarus answers ``200`` or ``201`` with
``{"jobId": "FJ…"}``: the receipt's ``provider_fax_id``.

Status comes from the reports of **both data centres of the region, never from the HA address** (Retarus'
rule: a job submitted through ``faxws-ha.de…`` lives in DE1 *or* DE2). ``status`` asks every data centre in
``report_urls`` concurrently for ``GET /{customer_number}/fax/reports/{jobId}`` and takes the one that has it;
an address whose host is an HA name (``faxws-ha.…``) is refused in ``report_urls`` at start-up. A ``404`` from
every data centre means "no report (yet)": ``UNKNOWN``, asked again later. When one data centre fails and no
other has the report, the error is raised (temporary): the adapter never concludes "absent" from a data centre
that did not answer.

A finished report is **deleted after it is read**: it is first written to a small journal on disk
(``report_journal``, default ``<state_dir>/retarus/<provider name>/``, one JSON file per job, fsynced), then
``DELETE /{customer_number}/fax/reports/{jobId}`` goes to the data centre that had it. If faxbridge stops
between reading and recording the outcome, the next ``status`` answers from the journal instead of finding
nothing. A failed delete is retried on later ``status`` calls (and otherwise Retarus drops the report after its
retention time, 30 days by default). Journal files are pruned after ``journal_days``.

``409 Conflict`` ("Duplicate job") to a send means Retarus already has a job with this ``customerDefinedId``:
``send`` returns a receipt instead of failing (exactly one fax exists), looking the job id up in the journal
and in the finished-report lists of both data centres; while the job is still running that id is not yet
listed, so the receipt may carry ``provider_fax_id = None`` and ``status`` then finds the report by our
reference once it is finished.

Inbound faxes come from the separate Fax2WSPull API, configured in ``[providers.NAME.inbound]`` (its own
password, tied to the inbound numbers; the user is the customer number). ``poll_incoming`` posts
``POST {url}/topics/{topic}?fetch=N&timeout=lease_seconds`` to every data centre in ``inbound.urls`` and merges
the results; Retarus hides a fetched fax for ``lease_seconds`` and shows it again if it is not acknowledged, so
a crash before the fax is stored loses nothing. ``download`` fetches the document URL of the result (only from
the data centre that listed it: a URL pointing anywhere else is not followed with our credentials, the file
name is fetched from that data centre's ``/files/`` instead). ``acknowledge`` posts the same topic with
``fetch=0&ids=<id>`` to that data centre, after which Retarus never lists the fax again (custody passes to
us). The ``next``/``exit`` URLs of a batch are never called: they would acknowledge the whole batch at once,
before each fax is stored. Without an ``inbound`` section ``poll_incoming`` lists nothing.

Capabilities: ``STATUS_POLL``, ``INBOUND_POLL``, ``INBOUND_DOWNLOAD``, ``INBOUND_ACK``. Not
``CLIENT_REFERENCE``: Retarus can look a job up by our reference only among *finished* reports (the list is
"completed jobs, oldest 1000"), so a fax that is still being sent cannot be found and "certainly absent" can
never be answered; ``find_submission`` returns the receipt when the finished report is found and raises
``SubmissionUnknown`` otherwise, and the worker quarantines an interrupted send. Releasing such a job by hand
is still safe: its second send is answered ``409`` and becomes a receipt, not a second fax. Not ``WEBHOOK``
(see below).

Errors. Retarus' error answers have no documented body ("No Content"); the reason says what the HTTP status
means in Retarus' documentation and quotes any text body. ``401``/``403`` → ``AuthenticationFailed``; ``400``
and ``404`` → permanent (nothing was accepted); ``429``, and ``503`` with ``Retry-After`` → ``RateLimited``
with the wait; ``500``, ``503``, ``520`` and other ``5xx`` → temporary, and "maybe accepted" for a send (a
``5xx`` may come after the job was stored). A ``2xx`` to a send without a usable ``jobId`` →
``MalformedResponse``, maybe accepted. No quota headers are documented. The deletion answer
``{"deleted": false, "reason": "INTERNAL_ERROR"}`` (a 2xx that says error) is retried later;
``"NOT_FOUND"`` means there is nothing left to delete.

Recipient statuses (``RECIPIENT_STATUSES``) map into ``FaxStatus`` with a plain reason and Retarus' code in
``StatusReport.code``: ``PENDING`` → sending; ``OK`` → delivered; ``CANCELLED`` → cancelled; every other code
(``BUSY``, ``NOFAX``, ``NOFAX_DIS``, ``NOFAX_TO``, ``RING_TO``, ``WRONG_NO``, ``DIAL_NC``, ``REM_DIS``, …) →
failed. The vendor's table (docs.retarus.com "Transmission status codes") is only available up to ``RING_TO``;
the rest of the vocabulary is what third-party clients of the same Retarus backend handle.

Open questions (providers.md §7) and the reading chosen; each fails safe:

* *Complete recipient status list?* Unknown. Every code seen in the documentation and in third-party clients is
  mapped; any other code is a failure that quotes Retarus' own code and ``reason`` (providers.md: "treat
  unknown values as failures"). Retarus reports a code only once it has given up (after up to 10 retries), so
  an unknown code is never read as delivered. A recipient without any status is ``UNKNOWN`` (asked again) and
  its report is not deleted.
* *JSON status-push layout and retries?* Undocumented (only an XML excerpt exists). The adapter does not use
  the push: it never sends ``statusReportOptions`` and polls the reports, which Retarus documents fully. No
  ``WEBHOOK`` capability, so nothing depends on a guessed layout.
* *Fax2WSPull result fields?* Only ``id`` and ``documents[].url`` are known. Caller, called number, time of
  receipt and pages are read from the first of several plausible names, at the top level or one level down
  (``INBOUND_CALLER_KEYS`` …); a missing value is ``None`` (the time: the moment of the poll, in UTC), and a
  result is never dropped for lacking them. Numbers are made E.164 where possible (``0049…`` → ``+49…``).
* *``paperFormat`` spelling (``LETTER`` Java/docs vs ``Letter`` Go)?* The default ``A4`` is spelled the same
  everywhere; ``paper_format = "LETTER"`` sends the documented spelling. ``paperFormat`` is always sent with
  ``resolution``, since the Go SDK marks it required inside ``renderingOptions``.
* *``OAUTH`` (Java) vs ``OAUTH2`` (docs, Go)?* Only used by the status push, which is never requested.
* *``/{custNr}/fax/jobs`` vs ``/{custNr}/fax``?* ``/{custNr}/fax``, as the docs and every SDK use it.
* *Seed's ``{"value": {"reports": …}}`` vs ``{"reports": …}``?* Both are read wherever a report list is
  parsed (``reports_of``).

Other undocumented points, read the same way: duplicates are refused with ``409`` (treated as "already
submitted" — our ``customerDefinedId`` is unique per fax, and a ``409`` never sends again nor reports a fax
failed that may be out); ``200`` and ``201`` to a send are both success; an empty report list may be ``200
{"reports": []}`` or ``404`` (both mean "none"); a single delete of a report already gone may be ``404`` or
``{"deleted": false, "reason": "NOT_FOUND"}`` (both fine); Switzerland and Singapore have no documented HA
address ("n/a"), so their single data centre is used for sending too. The adapter accepts every documented
variant listed here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge._files import fsync_dir
from bridge.errors import (
    AuthenticationFailed,
    MalformedResponse,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    SubmissionUnknown,
)
from bridge.models import FaxStatus, InboundRef, OutboundFax, SendReceipt, StatusReport
from bridge.providers import _http
from bridge.providers._http import HttpTimeouts
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings

__all__ = [
    "HTTP_MEANINGS",
    "RECIPIENT_STATUSES",
    "REGIONS",
    "Region",
    "RetarusInboundSettings",
    "RetarusProvider",
    "RetarusSettings",
    "document_name",
    "is_ha_url",
    "map_report",
    "parse_inbound",
    "reports_of",
    "to_e164",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


# -- regions and hosts ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    """Where a Retarus region takes jobs, serves reports and queues inbound faxes."""

    send_url: str
    """Where jobs are submitted: the HA address where one exists (Retarus routes to a healthy data centre)."""
    report_urls: tuple[str, ...]
    """Every data centre of the region: reports are read from all of them, never from the HA address."""
    inbound_urls: tuple[str, ...]


REGIONS: Mapping[str, Region] = {
    "de": Region(
        send_url="https://faxws-ha.de.retarus.com/rest/v1",
        report_urls=("https://faxws.de1.retarus.com/rest/v1", "https://faxws.de2.retarus.com/rest/v1"),
        inbound_urls=("https://api.de1.retarus.com/faxin/rest/v1", "https://api.de2.retarus.com/faxin/rest/v1"),
    ),
    "us": Region(
        send_url="https://faxws-ha.us.retarus.com/rest/v1",
        report_urls=("https://faxws.us1.retarus.com/rest/v1", "https://faxws.us2.retarus.com/rest/v1"),
        inbound_urls=("https://api.us1.retarus.com/faxin/rest/v1", "https://api.us2.retarus.com/faxin/rest/v1"),
    ),
    # docs.retarus.com lists the HA address of CH and SG as "n/a"; the SDKs' HA names are not relied on.
    "ch": Region(
        send_url="https://faxws.ch1.retarus.com/rest/v1",
        report_urls=("https://faxws.ch1.retarus.com/rest/v1",),
        inbound_urls=("https://api.ch1.retarus.com/faxin/rest/v1",),
    ),
    "sg": Region(
        send_url="https://faxws.sg1.retarus.com/rest/v1",
        report_urls=("https://faxws.sg1.retarus.com/rest/v1",),
        inbound_urls=("https://api.sg1.retarus.com/faxin/rest/v1",),
    ),
}


def is_ha_url(url: str) -> bool:
    """Whether ``url`` names a Retarus high-availability address (``faxws-ha.de.retarus.com`` and the like)."""
    host = (urlsplit(url).hostname or "").lower()
    return host.split(".", 1)[0].endswith("-ha")


def _http_url(value: str) -> str:
    value = value.strip()
    if not value.startswith(("https://", "http://")) or not urlsplit(value).hostname:
        raise ValueError(f"{value!r} is not an http(s) URL such as https://faxws.de1.retarus.com/rest/v1")
    return value.rstrip("/")


# -- settings ------------------------------------------------------------------------------------------------


def _one_secret(secret: SecretStr | None, path: Path | None, where: str) -> None:
    if (secret is None) == (path is None):
        raise ValueError(
            f"set exactly one of {where}password_file (a file holding the password) or {where}password "
            f"(only from the environment: FAXBRIDGE_PROVIDERS__<NAME>__{where.upper().replace('.', '__')}PASSWORD)"
        )


class RetarusInboundSettings(BaseModel):
    """``[providers.NAME.inbound]``: the Fax2WSPull queue of incoming faxes."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1)
    """The topic configured in the Retarus EAS portal for the inbound numbers."""
    username: str | None = None
    """Defaults to the customer number, as Fax2WSPull expects."""
    password: SecretStr | None = None
    password_file: Path | None = None
    urls: list[str] | None = None
    """Every data centre to poll; defaults to the region's (``https://api.de1.retarus.com/faxin/rest/v1`` …)."""
    fetch: int = Field(default=10, ge=1, le=100)
    lease_seconds: int = Field(default=300, ge=10, le=3600)
    """How long Retarus hides a fetched, unacknowledged fax; longer than a download plus storing it."""

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        urls = [_http_url(url) for url in value]
        if not urls or len(set(urls)) != len(urls):
            raise ValueError("list each inbound data centre once, e.g. the region's api.de1 and api.de2 URLs")
        return urls

    @model_validator(mode="after")
    def _secret(self) -> RetarusInboundSettings:
        _one_secret(self.password, self.password_file, "inbound.")
        return self


class RetarusSettings(ProviderSettings):
    """``[providers.NAME]`` with ``type = "retarus"``; see ``config/provider-retarus.toml``."""

    customer_number: str = Field(pattern=r"^[A-Za-z0-9]+$")
    """The Retarus customer number, e.g. ``99999TE`` (the ``{custNr}`` of every path)."""
    username: str = Field(min_length=1)
    """The Login ID from the Retarus EAS portal; jobs of one Login ID are invisible to another."""
    password: SecretStr | None = None
    """Only from the environment (``FAXBRIDGE_PROVIDERS__NAME__PASSWORD``), never in a file."""
    password_file: Path | None = None
    """A file holding the password; relative to ``state_dir``; read at every operation (rotation)."""
    region: Literal["de", "us", "ch", "sg"] = "de"
    send_url: str | None = None
    """Where jobs go; defaults to the region's HA address."""
    report_urls: list[str] | None = None
    """Every data centre of the region; defaults to the region's. Never an HA address."""
    timeouts: HttpTimeouts = HttpTimeouts()
    paper_format: Literal["A4", "LETTER"] = "A4"
    resolution: Literal["LOW", "HIGH"] = "HIGH"
    header_template: str = Field(default="{header}", max_length=200)
    """The fax header line; ``{header}`` is the sender's header text, Retarus placeholders (``%C`` …) allowed."""
    blocklist_check: bool | None = None
    """``transportOptions.isBlacklistEnabled``; unset: the account's default."""
    express: bool | None = None
    """``transportOptions.isExpress``; unset: the account's default."""
    billing_code: str | None = Field(default=None, max_length=80)
    valid_for_minutes: int | None = Field(default=None, ge=1, le=44640)
    """Give up a job Retarus could not send within this time; unset: Retarus' default (one month)."""
    report_journal: Path | None = None
    """Directory of the read-report journal; default ``retarus/<provider name>`` under ``state_dir``."""
    journal_days: int = Field(default=35, ge=1)
    inbound: RetarusInboundSettings | None = None

    @field_validator("send_url")
    @classmethod
    def _send_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("report_urls")
    @classmethod
    def _report_urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        urls = [_http_url(url) for url in value]
        if not urls:
            raise ValueError("list every data centre of the region, e.g. faxws.de1 and faxws.de2")
        if len(set(urls)) != len(urls):
            raise ValueError("each data centre must be listed once")
        for url in urls:
            if is_ha_url(url):
                raise ValueError(
                    f"{url} is a high-availability address; Retarus requires status reports to be read from each "
                    "data centre (e.g. https://faxws.de1.retarus.com/rest/v1 and https://faxws.de2.retarus.com/"
                    "rest/v1), never from an HA address"
                )
        return urls

    @model_validator(mode="after")
    def _secret(self) -> RetarusSettings:
        _one_secret(self.password, self.password_file, "")
        return self


# -- mappings ------------------------------------------------------------------------------------------------

# Retarus recipient status -> (our status, a reason a person understands). Sources: docs.retarus.com
# "Transmission status codes - Outbound Fax" (OK … RING_TO; the table is cut after them), the vendor fixture
# (REM_DIS), the vendor daemon (PENDING), and third-party clients of the same backend for the rest.
RECIPIENT_STATUSES: Mapping[str, tuple[FaxStatus, str | None]] = {
    "PENDING": (FaxStatus.SENDING, None),
    "OK": (FaxStatus.DELIVERED, None),
    "CANCELLED": (FaxStatus.CANCELLED, "the fax job was cancelled at Retarus (in the EAS portal)"),
    "BUSY": (FaxStatus.FAILED, "the line was busy every time Retarus tried"),
    "NOFAX": (
        FaxStatus.FAILED,
        "no fax machine answered: a person, an answering machine or a modem took the call",
    ),
    "NOFAX_DIS": (FaxStatus.FAILED, "no fax machine answered: the call was picked up and hung up again"),
    "NOFAX_TO": (FaxStatus.FAILED, "no fax machine answered: the call was taken but no fax signal came"),
    "RING_TO": (
        FaxStatus.FAILED,
        "no fax machine answered: it rang without answer (switched off, out of paper, or diverted to a phone)",
    ),
    "WRONG_NO": (FaxStatus.FAILED, "the number is not a valid fax number: it is wrong or not assigned"),
    "DIAL_NC": (
        FaxStatus.FAILED,
        "the number is not a valid fax number: the phone network refused it as invalid or incomplete",
    ),
    "CHANGED_NO": (FaxStatus.FAILED, "the number has changed: the network announced a new number"),
    "WOUT_TO": (
        FaxStatus.FAILED,
        "nothing happened after dialling the number (often a number without direct dial to the fax machine)",
    ),
    "BLACKLIST": (
        FaxStatus.FAILED,
        "the number is on a do-not-fax list (Robinson list, ECOFAX or Retarus' own) and was not dialled",
    ),
    "PBLACKLIST": (FaxStatus.FAILED, "the number is on your own block list at Retarus and was not dialled"),
    "REM_DIS": (FaxStatus.FAILED, "the receiving machine hung up during the transmission"),
    "NO_REMOTEINFO": (
        FaxStatus.FAILED,
        "the receiving machine hung up before the two machines agreed on how to transmit",
    ),
    "NO_TRAIN": (FaxStatus.FAILED, "the two fax machines could not agree on a connection (training failed)"),
    "FANS_GF": (FaxStatus.FAILED, "the connection broke off because of protocol errors of the receiving machine"),
    "DIAL_GF": (FaxStatus.FAILED, "the call could not be set up (a telephone network error)"),
    "BAD_LINES": (FaxStatus.FAILED, "the line had too many errors; the fax would have been unreadable"),
    "PAGE_SEND_ERR": (
        FaxStatus.FAILED,
        "the transmission broke off during a page (the receiving machine may be out of paper, or the line dropped)",
    ),
    "PAGE_SEND_ERROR": (
        FaxStatus.FAILED,
        "the transmission broke off during a page (the receiving machine may be out of paper, or the line dropped)",
    ),
    "EOD_FAILED": (
        FaxStatus.FAILED,
        "the receiving machine did not confirm the end of the fax; it has often arrived anyway, so check with the "
        "recipient before sending it again",
    ),
    "COMERROR": (FaxStatus.FAILED, "a communication error with the receiving fax machine"),
    "MISSING_FAX_FILE": (FaxStatus.FAILED, "Retarus found no document to fax in the job"),
    "UNKNOWN_FAX_FILE": (FaxStatus.FAILED, "Retarus could not read the document's file type"),
    "TIFF_PAGE_ERR": (FaxStatus.FAILED, "the fax document was damaged"),
    "RENDERING_ERROR": (
        FaxStatus.FAILED,
        "Retarus could not convert the document into a fax (for example a protected PDF)",
    ),
}

_FINAL = frozenset({FaxStatus.DELIVERED, FaxStatus.FAILED, FaxStatus.CANCELLED})

# What each HTTP status means in Retarus' documentation (the error answers themselves carry no body).
HTTP_MEANINGS: Mapping[int, str] = {
    400: "Retarus could not process the request (HTTP 400: missing authorization, or JSON it cannot read, such as "
    "a job start time without a time zone)",
    401: "Retarus refused the login (HTTP 401: bad or missing authentication)",
    403: "Retarus refused access (HTTP 403; an IP allow-list of the Login ID may exclude this host)",
    404: "Retarus has no such resource (HTTP 404; check customer_number and the configured URLs)",
    409: "Retarus already has this job (HTTP 409: duplicate job)",
    500: "Retarus could not handle the request (HTTP 500, e.g. it cannot accept the job or cannot transliterate "
    "its text)",
    503: "Retarus is overloaded or in maintenance (HTTP 503)",
    520: "Retarus reported an unknown error in its backend (HTTP 520)",
}

_SNIPPET = 200


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        return ""
    return " ".join(text.split())[:_SNIPPET]


def _meaning(response: httpx.Response) -> str:
    status = response.status_code
    meaning = HTTP_MEANINGS.get(status, f"Retarus answered HTTP {status}")
    body = _snippet(response)
    return f"{meaning}: {body}" if body else meaning


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def map_report(report: Mapping[str, Any]) -> StatusReport:
    """A Retarus ``FaxReport`` as a ``StatusReport``; the report is kept verbatim in ``raw``."""
    raw = dict(report)
    recipients = [r for r in report.get("recipientStatus") or [] if isinstance(r, Mapping)]
    if not recipients:
        return StatusReport(
            status=FaxStatus.UNKNOWN, reason="Retarus sent a report without a recipient status", raw=raw
        )
    codes = [str(r.get("status") or "").strip().upper() for r in recipients]
    if any(not code for code in codes):
        return StatusReport(status=FaxStatus.UNKNOWN, reason="Retarus sent a recipient without a status", raw=raw)
    if "PENDING" in codes:
        return StatusReport(status=FaxStatus.SENDING, code="PENDING", raw=raw)
    pages = report.get("pages")
    if all(code == "OK" for code in codes):
        return StatusReport(
            status=FaxStatus.DELIVERED,
            code="OK",
            pages_sent=pages if isinstance(pages, int) and not isinstance(pages, bool) else None,
            raw=raw,
        )
    code, recipient = next((c, r) for c, r in zip(codes, recipients, strict=True) if c != "OK")
    theirs = _text(recipient.get("reason"))
    status, reason = RECIPIENT_STATUSES.get(code, (FaxStatus.FAILED, None))
    if reason is None:
        # An unknown code is a failure Retarus gave up on after its retries, never a delivery.
        reason = f"Retarus could not deliver the fax (status {code}{': ' + theirs if theirs else ''})"
    elif theirs and theirs.upper() != code:
        reason = f"{reason} (Retarus: {theirs})"
    if len(recipients) > 1:
        reason = f"{reason}; recipient {recipient.get('number') or '?'}"
    return StatusReport(status=status, reason=reason, code=code, raw=raw)


def reports_of(body: Any) -> list[dict[str, Any]] | None:
    """The report list of a list/bulk answer: ``{"reports": […]}`` or the docs' ``{"value": {"reports": […]}}``."""
    if isinstance(body, Mapping) and isinstance(body.get("value"), Mapping) and "reports" not in body:
        body = body["value"]
    if not isinstance(body, Mapping):
        return None
    reports = body.get("reports")
    if reports is None:
        return []
    if not isinstance(reports, list):
        return None
    return [dict(r) for r in reports if isinstance(r, Mapping)]


def _reference_of(report: Mapping[str, Any]) -> str | None:
    reference = report.get("reference")
    if isinstance(reference, Mapping):
        value = reference.get("customerDefinedId")
        return value if isinstance(value, str) else None
    return None


def document_name(job_id: str) -> str:
    """A document name Retarus accepts (≤ 32 characters of ``[A-Za-z0-9-_.]``); the extension sets the type."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", job_id)[:28] or "fax"
    return f"{safe}.pdf"


def _header_text(header: str) -> str:
    # "%" starts a Retarus placeholder (%C, %tz=…): the sender's text must not be able to add any.
    return " ".join(header.replace("%", " ").split())


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- inbound parsing -----------------------------------------------------------------------------------------

# Fax2WSPull documents only "id" and "documents[].url"; the other fields are read from the first of these names.
INBOUND_CALLER_KEYS = ("sender", "senderNumber", "callerNumber", "callingNumber", "caller", "from", "fromNumber", "ani")
INBOUND_CALLED_KEYS = ("recipient", "recipientNumber", "calledNumber", "called", "to", "toNumber", "dnis", "number")
INBOUND_TIME_KEYS = ("receivedTs", "receivedAt", "received", "receiveTs", "timestamp", "ts", "createdTs", "date")
INBOUND_PAGE_KEYS = ("pages", "pageCount", "numberOfPages")


def _lookup(record: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if record.get(key) not in (None, ""):
            return record[key]
    for value in record.values():
        if isinstance(value, Mapping):
            for key in keys:
                if value.get(key) not in (None, ""):
                    return value[key]
    return None


def to_e164(value: Any) -> str | None:
    """A phone number as E.164 where it can be read as one; otherwise as Retarus gave it; ``None`` if empty."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = re.sub(r"[\s\-/().]", "", str(value))
    if not text:
        return None
    if re.fullmatch(r"\+[1-9]\d{5,14}", text):
        return text
    if re.fullmatch(r"00[1-9]\d{5,14}", text):
        return "+" + text[2:]
    return text


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds or seconds
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


def parse_inbound(provider: str, base_url: str, result: Mapping[str, Any], *, now: datetime) -> InboundRef | None:
    """One Fax2WSPull result as an ``InboundRef``; ``None`` without an id (it could never be acknowledged)."""
    fax_id = result.get("id")
    if isinstance(fax_id, int) and not isinstance(fax_id, bool):
        fax_id = str(fax_id)
    if not isinstance(fax_id, str) or not fax_id:
        return None
    document = None
    documents = result.get("documents")
    if isinstance(documents, list):
        document = next(
            (d["url"] for d in documents if isinstance(d, Mapping) and isinstance(d.get("url"), str) and d["url"]),
            None,
        )
    pages = _lookup(result, INBOUND_PAGE_KEYS)
    token = json.dumps({"base": base_url, "id": fax_id, "url": document}, separators=(",", ":"))
    return InboundRef(
        provider=provider,
        provider_fax_id=fax_id,
        caller=to_e164(_lookup(result, INBOUND_CALLER_KEYS)),
        called=to_e164(_lookup(result, INBOUND_CALLED_KEYS)),
        received_at=_timestamp(_lookup(result, INBOUND_TIME_KEYS)) or now,
        pages=pages if isinstance(pages, int) and not isinstance(pages, bool) and pages >= 0 else None,
        token=token,
    )


def _document_url(base_url: str, url: str | None, fax_id: str) -> str:
    """The URL to fetch an inbound document from: never a host other than the data centre that listed it."""
    base = urlsplit(base_url)
    if url:
        target = urlsplit(url if "://" in url else f"{base_url}/{url.lstrip('/')}")
        same_origin = (target.scheme, target.netloc) == (base.scheme, base.netloc)
        if same_origin and target.path.startswith(base.path.rstrip("/") + "/"):
            return target.geturl()
        name = target.path.rsplit("/", 1)[-1]
    else:
        name = f"{fax_id}.pdf"
    return f"{base_url}/files/{quote(name, safe='')}"


# -- the report journal --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    job_id: str
    data_centre: str
    report: dict[str, Any]


class _ReportJournal:
    """Finished reports, kept on disk before Retarus deletes them: the outcome survives a crash in between."""

    _PRUNE_EVERY = 3600.0

    def __init__(self, directory: Path, keep_days: int) -> None:
        self.directory = directory
        self.keep_seconds = keep_days * 86400.0
        self._last_prune = float("-inf")

    def _path(self, reference: str) -> Path:
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", reference)[:200] + ".json")

    async def read(self, reference: str) -> _Found | None:
        return await asyncio.to_thread(self._read, reference)

    def _read(self, reference: str) -> _Found | None:
        try:
            entry = json.loads(self._path(reference).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cannot read the Retarus report journal entry for %s: %s; asking Retarus", reference, exc)
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("reference") != reference
            or not isinstance(entry.get("jobId"), str)
            or not isinstance(entry.get("report"), dict)
        ):
            return None
        return _Found(entry["jobId"], str(entry.get("dataCentre", "")), entry["report"])

    async def write(self, reference: str, found: _Found) -> None:
        await asyncio.to_thread(self._write, reference, found)

    def _write(self, reference: str, found: _Found) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(reference)
        entry = {
            "reference": reference,
            "jobId": found.job_id,
            "dataCentre": found.data_centre,
            "readAt": _iso_utc(datetime.now(UTC)),
            "report": found.report,
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as handle:
            handle.write(json.dumps(entry, separators=(",", ":")).encode())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fsync_dir(self.directory)
        self._prune()

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self._PRUNE_EVERY:
            return
        self._last_prune = now
        oldest = time.time() - self.keep_seconds
        for path in self.directory.glob("*.json"):
            try:
                if path.stat().st_mtime < oldest:
                    path.unlink()
            except OSError:
                continue


# -- the adapter ---------------------------------------------------------------------------------------------


class RetarusProvider(FaxProvider):
    """Retarus Fax4A: send through the region, read and delete reports in every data centre, Fax2WSPull inbound."""

    type_name: ClassVar[str] = "retarus"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.STATUS_POLL, Capability.INBOUND_POLL, Capability.INBOUND_DOWNLOAD, Capability.INBOUND_ACK}
    )
    settings_model: ClassVar[type[ProviderSettings]] = RetarusSettings

    _DELETE_RETRIES_PER_CALL = 20

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, RetarusSettings)
        self._settings = settings
        region = REGIONS[settings.region]
        self.send_url = settings.send_url or region.send_url
        self.report_urls: tuple[str, ...] = tuple(settings.report_urls or region.report_urls)
        inbound = settings.inbound
        self.inbound_urls: tuple[str, ...] = tuple(inbound.urls or region.inbound_urls) if inbound is not None else ()
        self._password_file = context.path(settings.password_file) if settings.password_file else None
        self._inbound_password_file = (
            context.path(inbound.password_file) if inbound is not None and inbound.password_file else None
        )
        journal = context.path(settings.report_journal) if settings.report_journal else None
        self._journal = _ReportJournal(
            journal or context.state_dir / "retarus" / context.name, keep_days=settings.journal_days
        )
        # Reports read and journaled whose deletion at Retarus failed: job id -> data centre.
        self._undeleted: dict[str, str] = {}
        self._client = _http.make_client(
            context, base_url=self.send_url, timeouts=settings.timeouts, headers={"Accept": "application/json"}
        )

    # -- credentials -------------------------------------------------------------------------------------

    async def _secret(self, secret: SecretStr | None, path: Path | None, what: str) -> str:
        if secret is not None:
            return secret.get_secret_value()
        assert path is not None
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            # A configuration problem, not a property of this fax: temporary, so faxes wait for the fix.
            raise ProviderTemporaryError(
                f"{self.name}: cannot read the {what} from {path}: {reason}; check that the file exists and that "
                "faxbridge may read it",
                provider=self.name,
                code="password_file",
            ) from exc
        # Files written by editors and `echo` end with a newline that is not part of the password.
        value = text.rstrip("\r\n")
        if not value:
            raise ProviderTemporaryError(
                f"{self.name}: the {what} file {path} is empty; write the password into it",
                provider=self.name,
                code="password_file",
            )
        return value

    async def _auth(self) -> httpx.BasicAuth:
        password = await self._secret(self._settings.password, self._password_file, "Retarus password")
        return httpx.BasicAuth(self._settings.username, password)

    async def _inbound_auth(self) -> httpx.BasicAuth:
        inbound = self._settings.inbound
        assert inbound is not None
        password = await self._secret(inbound.password, self._inbound_password_file, "Retarus inbound password")
        return httpx.BasicAuth(inbound.username or self._settings.customer_number, password)

    # -- HTTP helpers ------------------------------------------------------------------------------------

    def _check(self, response: httpx.Response, *, sending: bool = False) -> httpx.Response:
        if response.is_success:
            return response
        detail = _meaning(response)
        if response.status_code in (401, 403):
            detail = f"{detail}; login {self._settings.username!r}, customer number {self._settings.customer_number}"
        return _http.check_response(response, provider=self.name, sending=sending, reason=detail)

    def _json(self, response: httpx.Response, what: str, *, sending: bool = False) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedResponse(
                f"{self.name}: Retarus answered {what} with HTTP {response.status_code} and a body that is not JSON "
                f"({_snippet(response) or 'empty'})",
                provider=self.name,
                code=str(response.status_code),
                maybe_accepted=sending,
            ) from exc

    def _jobs_url(self, base: str, *parts: str) -> str:
        return "/".join([base, self._settings.customer_number, "fax", *(quote(p, safe="") for p in parts)])

    async def _across(
        self, urls: Sequence[str], call: Callable[[str], Awaitable[T]]
    ) -> list[tuple[str, T | ProviderError]]:
        """Run ``call`` against every data centre at once; a ``ProviderError`` is that data centre's answer."""
        results = await asyncio.gather(*(call(url) for url in urls), return_exceptions=True)
        merged: list[tuple[str, T | ProviderError]] = []
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, ProviderError):
                raise result
            merged.append((url, result))
        return merged

    @staticmethod
    def _worst(errors: Iterable[ProviderError]) -> ProviderError:
        # A refused login is what the operator must act on; report it rather than a passing outage.
        errors = list(errors)
        return next((e for e in errors if isinstance(e, AuthenticationFailed)), errors[0])

    # -- send --------------------------------------------------------------------------------------------

    def job_request(self, fax: OutboundFax, *, now: datetime | None = None) -> dict[str, Any]:
        """The ``FaxJobRequest`` for ``fax`` (field names as the vendor SDKs serialise them)."""
        settings = self._settings
        reference: dict[str, Any] = {"customerDefinedId": fax.job_id}
        if settings.billing_code:
            reference["billingCode"] = settings.billing_code
        if fax.account:
            reference["billingInfo"] = fax.account[:80]
        rendering: dict[str, Any] = {"paperFormat": settings.paper_format, "resolution": settings.resolution}
        if fax.header and _header_text(fax.header):
            rendering["header"] = settings.header_template.replace("{header}", _header_text(fax.header))
        transport: dict[str, Any] = {}
        if fax.caller_id:
            if len(fax.caller_id) <= 20:
                transport["csid"] = fax.caller_id
            else:
                log.warning(
                    "%s: caller id %r is longer than Retarus' 20-character CSID; not sent", self.name, fax.caller_id
                )
        if settings.blocklist_check is not None:
            transport["isBlacklistEnabled"] = settings.blocklist_check
        if settings.express is not None:
            transport["isExpress"] = settings.express
        job: dict[str, Any] = {
            "reference": reference,
            "recipients": [{"number": fax.to}],
            "documents": [{"name": document_name(fax.job_id), "data": base64.b64encode(fax.document).decode("ascii")}],
            "renderingOptions": rendering,
        }
        if transport:
            job["transportOptions"] = transport
        if settings.valid_for_minutes is not None:
            start = now or datetime.now(UTC)
            job["meta"] = {
                "jobValid": {
                    "start": _iso_utc(start),
                    "end": _iso_utc(start + timedelta(minutes=settings.valid_for_minutes)),
                }
            }
        return job

    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Submit the fax; a ``409`` (Retarus has this job already) is a receipt, never a second fax."""
        now = datetime.now(UTC)
        auth = await self._auth()
        response = await _http.request(
            self._client,
            "POST",
            self._jobs_url(self.send_url),
            provider=self.name,
            sending=True,
            json=self.job_request(fax, now=now),
            auth=auth,
        )
        if response.status_code == 409:
            return await self._duplicate_receipt(fax, response, now)
        self._check(response, sending=True)
        body = self._json(response, "the fax job", sending=True)
        job_id = body.get("jobId") if isinstance(body, dict) else None
        if not isinstance(job_id, str) or not job_id.strip():
            raise MalformedResponse(
                f"{self.name}: Retarus accepted job {fax.job_id} (HTTP {response.status_code}) but gave no jobId "
                f"({_snippet(response) or 'empty body'}); it may hold the fax, so it is not sent again",
                provider=self.name,
                code=str(response.status_code),
                maybe_accepted=True,
            )
        return SendReceipt(provider_fax_id=job_id.strip(), client_reference=fax.job_id, accepted_at=now, raw=body)

    async def _duplicate_receipt(self, fax: OutboundFax, response: httpx.Response, now: datetime) -> SendReceipt:
        log.warning(
            "%s: Retarus already has job %s (409 duplicate); it was not sent again, its report will be followed",
            self.name,
            fax.job_id,
        )
        raw: dict[str, Any] = {"httpStatus": 409, "duplicate": True, "customerDefinedId": fax.job_id}
        body = _snippet(response)
        if body:
            raw["body"] = body
        job_id: str | None = None
        try:
            found = await self._find_by_reference(fax.job_id)
        except ProviderError as exc:
            # The fax is at Retarus either way; status() looks the job id up again later.
            log.info("%s: cannot look up the job id of duplicate %s yet: %s", self.name, fax.job_id, exc)
            found = None
        if found is not None:
            job_id = raw["jobId"] = found.job_id
        return SendReceipt(provider_fax_id=job_id, client_reference=fax.job_id, accepted_at=now, raw=raw)

    # -- reports -----------------------------------------------------------------------------------------

    async def _get_report(self, url: str, job_id: str, auth: httpx.BasicAuth) -> dict[str, Any] | None:
        response = await _http.request(
            self._client, "GET", self._jobs_url(url, "reports", job_id), provider=self.name, auth=auth
        )
        if response.status_code == 404:
            return None
        self._check(response)
        body = self._json(response, f"the report of {job_id}")
        if not isinstance(body, dict) or not isinstance(body.get("recipientStatus"), list):
            raise MalformedResponse(
                f"{self.name}: Retarus answered the report of {job_id} without a recipientStatus list "
                f"({_snippet(response)})",
                provider=self.name,
                code=str(response.status_code),
            )
        if body.get("jobId") not in (None, job_id):
            raise MalformedResponse(
                f"{self.name}: asked Retarus for the report of {job_id} and got one of {body.get('jobId')!r}",
                provider=self.name,
            )
        return body

    async def _list_reports(self, url: str, auth: httpx.BasicAuth) -> list[dict[str, Any]]:
        response = await _http.request(
            self._client, "GET", self._jobs_url(url, "reports"), provider=self.name, auth=auth
        )
        if response.status_code == 404:
            return []  # "No job report available": an empty data centre may say so with 404
        self._check(response)
        reports = reports_of(self._json(response, "the report list"))
        if reports is None:
            raise MalformedResponse(
                f"{self.name}: Retarus answered the report list without a reports array ({_snippet(response)})",
                provider=self.name,
                code=str(response.status_code),
            )
        return reports

    async def _report_by_job_id(self, job_id: str) -> _Found | None:
        auth = await self._auth()
        answers = await self._across(self.report_urls, lambda url: self._get_report(url, job_id, auth))
        found = [(url, answer) for url, answer in answers if isinstance(answer, dict)]
        if found:
            # One job lives in one data centre; should two answer, a finished report outranks a pending one.
            found.sort(key=lambda item: map_report(item[1]).status not in _FINAL)
            url, report = found[0]
            return _Found(job_id, url, report)
        errors = [answer for _, answer in answers if isinstance(answer, ProviderError)]
        if errors:
            raise self._worst(errors)
        return None

    async def _find_by_reference(self, reference: str) -> _Found | None:
        """Our reference among the journal and the *finished* reports of every data centre."""
        journaled = await self._journal.read(reference)
        if journaled is not None:
            return journaled
        auth = await self._auth()
        answers = await self._across(self.report_urls, lambda url: self._list_reports(url, auth))
        errors: list[ProviderError] = []
        for url, answer in answers:
            if isinstance(answer, ProviderError):
                errors.append(answer)
                continue
            for report in answer:
                job_id = report.get("jobId")
                if _reference_of(report) == reference and isinstance(job_id, str):
                    return _Found(job_id, url, report)
        if errors:
            raise self._worst(errors)
        return None

    async def _delete_report(self, url: str, job_id: str, auth: httpx.BasicAuth) -> bool:
        """Delete a report at its data centre; ``True`` once nothing is left there to delete."""
        try:
            response = await _http.request(
                self._client, "DELETE", self._jobs_url(url, "reports", job_id), provider=self.name, auth=auth
            )
            if response.status_code == 404:
                return True
            self._check(response)
            body = self._json(response, f"the deletion of {job_id}")
        except ProviderError as exc:
            log.warning("%s: cannot delete the report of %s at %s yet: %s", self.name, job_id, url, exc)
            return False
        if isinstance(body, dict) and body.get("deleted") is False and body.get("reason") != "NOT_FOUND":
            log.warning("%s: Retarus did not delete the report of %s at %s: %s", self.name, job_id, url, body)
            return False
        return True

    async def _retry_deletions(self, auth: httpx.BasicAuth) -> None:
        for job_id, url in list(self._undeleted.items())[: self._DELETE_RETRIES_PER_CALL]:
            if await self._delete_report(url, job_id, auth):
                self._undeleted.pop(job_id, None)

    async def _keep_and_delete(self, reference: str, found: _Found) -> None:
        try:
            await self._journal.write(reference, found)
        except OSError as exc:
            # Without the journal copy the report stays at Retarus: the outcome must not exist nowhere.
            log.warning(
                "%s: cannot write the report of %s to the journal %s (%s); it is left at Retarus",
                self.name,
                found.job_id,
                self._journal.directory,
                exc,
            )
            return
        if not await self._delete_report(found.data_centre, found.job_id, await self._auth()):
            self._undeleted[found.job_id] = found.data_centre

    async def status(self, receipt: SendReceipt) -> StatusReport:
        """The report from whichever data centre has the job; a finished one is journaled, then deleted."""
        reference = receipt.client_reference
        journaled = await self._journal.read(reference)
        if self._undeleted:
            await self._retry_deletions(await self._auth())
        if journaled is not None:
            return map_report(journaled.report)
        if receipt.provider_fax_id:
            found = await self._report_by_job_id(receipt.provider_fax_id)
            if found is None:
                return StatusReport(
                    status=FaxStatus.UNKNOWN,
                    reason=f"no Retarus data centre has a report for job {receipt.provider_fax_id} (yet)",
                    raw={"jobId": receipt.provider_fax_id, "dataCentres": list(self.report_urls)},
                )
        else:
            found = await self._find_by_reference(reference)
            if found is None:
                return StatusReport(
                    status=FaxStatus.QUEUED,
                    reason="Retarus took this fax as a duplicate of an earlier submission; its report is listed "
                    "once the fax is finished",
                    raw={"customerDefinedId": reference},
                )
        report = map_report(found.report)
        if report.status in _FINAL:
            await self._keep_and_delete(reference, found)
        return report

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """The receipt if a *finished* report carries our reference; otherwise Retarus cannot tell.

        Never returns ``None``: a job still being sent is not listed by Retarus, so absence is never certain.
        """
        found = await self._find_by_reference(fax.job_id)
        if found is None:
            raise SubmissionUnknown(
                f"{self.name}: Retarus lists only finished faxes, and none of them is job {fax.job_id}; it may still "
                "be sending it. Not sent again. Check the job in the Retarus EAS portal; releasing it is safe, a "
                "second submission is refused by Retarus as a duplicate",
                provider=self.name,
            )
        recipients = found.report.get("recipientStatus")
        first = recipients[0] if isinstance(recipients, list) and recipients else None
        sent = _timestamp(first.get("sentTs")) if isinstance(first, Mapping) else None
        return SendReceipt(
            provider_fax_id=found.job_id,
            client_reference=fax.job_id,
            accepted_at=sent or datetime.now(UTC),
            raw={"jobId": found.job_id, "found": "report", "dataCentre": found.data_centre},
        )

    # -- inbound (Fax2WSPull) ----------------------------------------------------------------------------

    def _topic_url(self, base: str) -> str:
        inbound = self._settings.inbound
        assert inbound is not None
        return f"{base}/topics/{quote(inbound.topic, safe='')}"

    async def _fetch_topic(self, url: str, auth: httpx.BasicAuth) -> list[InboundRef]:
        inbound = self._settings.inbound
        assert inbound is not None
        response = await _http.request(
            self._client,
            "POST",
            self._topic_url(url),
            provider=self.name,
            params={"fetch": inbound.fetch, "timeout": inbound.lease_seconds},
            auth=auth,
        )
        self._check(response)
        body = self._json(response, "the inbound poll")
        results = body.get("results") if isinstance(body, dict) else None
        if results is None and isinstance(body, dict):
            return []
        if not isinstance(results, list):
            raise MalformedResponse(
                f"{self.name}: Retarus answered the inbound poll without a results list ({_snippet(response)})",
                provider=self.name,
            )
        now = datetime.now(UTC)
        refs = []
        for result in results:
            ref = parse_inbound(self.name, url, result, now=now) if isinstance(result, Mapping) else None
            if ref is None:
                log.warning(
                    "%s: Retarus listed an incoming fax without an id at %s; skipped: %r", self.name, url, result
                )
                continue
            refs.append(ref)
        return refs

    async def poll_incoming(self) -> list[InboundRef]:
        """Faxes waiting in the topic at every inbound data centre; nothing without an ``inbound`` section."""
        if self._settings.inbound is None:
            return []
        auth = await self._inbound_auth()
        answers = await self._across(self.inbound_urls, lambda url: self._fetch_topic(url, auth))
        refs: list[InboundRef] = []
        errors: list[ProviderError] = []
        for url, answer in answers:
            if isinstance(answer, ProviderError):
                # What that data centre holds stays there for the next poll.
                log.warning("%s: cannot poll incoming faxes at %s: %s", self.name, url, answer)
                errors.append(answer)
            else:
                refs.extend(answer)
        if errors and len(errors) == len(answers):
            raise self._worst(errors)
        return sorted(refs, key=lambda ref: ref.received_at)

    def _token(self, ref: InboundRef) -> tuple[str, str | None]:
        try:
            token = json.loads(ref.token or "")
            base, url = token["base"], token.get("url")
        except (ValueError, TypeError, KeyError) as exc:
            raise ProviderPermanentError(
                f"{self.name}: incoming fax {ref.provider_fax_id} has no usable Retarus token; poll it again",
                provider=self.name,
            ) from exc
        if base not in self.inbound_urls:
            raise ProviderPermanentError(
                f"{self.name}: incoming fax {ref.provider_fax_id} came from {base}, which is not among the "
                "configured inbound data centres; poll it again",
                provider=self.name,
            )
        return base, url if isinstance(url, str) else None

    async def download(self, ref: InboundRef) -> bytes:
        """The fax's document, from the data centre that listed it."""
        if self._settings.inbound is None:
            raise ProviderPermanentError(f"{self.name}: no [providers.{self.name}.inbound] section", provider=self.name)
        base, url = self._token(ref)
        response = await _http.request(
            self._client,
            "GET",
            _document_url(base, url, ref.provider_fax_id),
            provider=self.name,
            auth=await self._inbound_auth(),
            headers={"Accept": "application/pdf, image/tiff, */*"},
        )
        if response.status_code == 404:
            raise ProviderPermanentError(
                f"{self.name}: Retarus no longer has the document of incoming fax {ref.provider_fax_id} (it deletes "
                "them 7 days after receipt)",
                provider=self.name,
                code="404",
            )
        self._check(response)
        if not response.content:
            raise MalformedResponse(
                f"{self.name}: Retarus sent an empty document for incoming fax {ref.provider_fax_id}",
                provider=self.name,
            )
        return response.content

    async def acknowledge(self, ref: InboundRef) -> None:
        """Acknowledge one fax at its data centre (``fetch=0&ids=<id>``): Retarus never lists it again."""
        if self._settings.inbound is None:
            raise ProviderPermanentError(f"{self.name}: no [providers.{self.name}.inbound] section", provider=self.name)
        base, _ = self._token(ref)
        response = await _http.request(
            self._client,
            "POST",
            self._topic_url(base),
            provider=self.name,
            params={"fetch": 0, "ids": ref.provider_fax_id},
            auth=await self._inbound_auth(),
        )
        if response.status_code == 404:
            log.info("%s: incoming fax %s was already gone when acknowledged", self.name, ref.provider_fax_id)
            return
        self._check(response)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
