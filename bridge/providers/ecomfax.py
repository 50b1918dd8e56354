"""KPN eComFax Cloud Fax API (``https://api-prd.kpn.com/data/cws/fax``), contract in docs/providers.md §1.

What the adapter does:

* **Auth**: OAuth2 client credentials against the KPN API Store token endpoint
  (``POST /oauth/client_credential/accesstoken?grant_type=client_credentials``; ``grant_type`` in the query,
  ``client_id``/``client_secret`` in the form body). The answer is an Apigee document in which every value is
  a string, ``expires_in`` too (``"3599"``). There is no refresh token: the access token is cached until
  ``expires_in`` minus a margin, then a new one is fetched. A ``401`` from the API (token revoked or expired
  early) drops the token, fetches a new one and repeats the request **once**; a second ``401`` is
  ``AuthenticationFailed``. Repeating a send after a ``401`` is safe: the gateway refuses before the backend.
* **Send**: ``POST /sendfax`` (JSON, document base64) or, with ``upload = "multipart"``, ``POST /sendfax/raw``
  (``multipart/form-data``, document unencoded). Fields written (a reading, see question 1)::

      {"recipients": [{"faxNumber": "+4930123456"}],
       "documents": [{"fileName": "<job>.pdf", "contentType": "application/pdf", "content": "<base64>"}],
       "reference": "<our job id>", "subject": "...", "customFaxNumber": "+31201234567"}

  ``/sendfax/raw`` carries the same as form fields (``recipients``, ``reference``, ``subject``,
  ``customFaxNumber``) and the PDF as file part ``file``.
* **Sender identity**: eComFax calls the number that identifies the sender on the cover sheet its *custom fax
  number* (``/customfaxnumber``, per account or per DID). ``OutboundFax.caller_id`` travels with each fax as
  ``customFaxNumber``; the account-wide ``PUT /customfaxnumber`` is never called, because it would change the
  sender of every other fax in flight. ``OutboundFax.header`` is not sent: eComFax documents no per-fax field
  for header text.
* **Status**: ``GET /jobstatus`` for the job's state and, once it has ended, ``GET /jobdetails`` for the
  recipient's result code and pages; both payloads are kept in ``StatusReport.raw``.
* **Inbound**: ``GET /injobs`` lists pending incoming faxes, ``GET /infax`` fetches one (and, as far as
  known, marks it processed), ``PATCH /resetincomingjob`` makes it pending again (needs the eComFax Custody
  Service). Custody is kept in a small journal file (``custody_journal``): a fax is written to it *before*
  ``/infax`` is asked, and leaves it only on ``acknowledge``. A fax fetched but never acknowledged (a crash, a
  failed store) stays listed by ``poll_incoming``; fetching it again resets it at eComFax first. So no
  incoming fax is lost between eComFax and our store; the worst case is one delivered twice.
* **Limits**: ``429`` and ``Retry-After`` as everywhere (``_http.check_response``). Every KPN answer carries
  ``quota-limit``/``quota-used``/``quota-reset-UTC``: once ``quota-used`` reaches ``quota-limit`` the adapter
  stops calling the API and raises ``RateLimited`` with the time left to the reset, and a ``429`` without
  ``Retry-After`` waits until ``quota-reset-UTC``.

Open questions (providers.md §7, KPN) and the reading chosen; where several readings exist the adapter
accepts every documented variant, and where it must choose it takes the one that fails safe:

1. *All request and response schemas are unknown* (no SwaggerHub copy). The send body above is a guess that
   the sandbox must confirm. Answers are read leniently: the job id from ``jobid``/``jobId``/``id``/``key``
   (also inside ``data``/``job``/``result`` or a one-element list); status from ``status``/``state``/
   ``jobStatus``; the result from ``result``/``resultCode``/``errorCode``… A ``2xx`` answer to a send that
   names no job id is ``MalformedResponse`` with ``maybe_accepted`` (the fax may be there); one that carries
   an explicit error (``fault``, ``error``, ``success: false``) is classified by its code.
2. *``jobid``/``key`` as path segment or query parameter* (the seed says "in path" for paths without a
   placeholder): ``id_style = "auto"`` tries ``?jobid=`` first and ``/jobstatus/{jobid}`` after a ``404``/
   ``405``, and keeps whichever answered; ``"query"``/``"path"`` fix one.
3. *Job status values*: mapped broadly (table in ``JOB_STATUSES`` and ``RESULT_REASONS``); a status the
   table does not know is ``FaxStatus.UNKNOWN`` with the raw payload, never "delivered". A "completed" status
   is decided by the result code; a "sent" status with a failure result is "failed" (a lost fax reported
   delivered is worse than a delivered one reported failed).
4. *Error body*: Apigee faults (``{"fault": {"faultstring", "detail": {"errorcode"}}}``), OAuth errors
   (``{"ErrorCode", "Error"}``), ``{"code", "message"}``, ``{"errorCode", "errorMessage"}``,
   ``{"error": {"code", "message"}}``, ``{"error", "error_description"}`` and RFC 7807 are all read. Unknown
   ``4xx`` are permanent, ``5xx`` temporary and, for a send, "maybe accepted".
5. *302 "Link in location header"*: followed once for ``/infax`` (the document download); the bearer token
   goes along only when the link stays under the API root. A ``3xx`` answer to a send is "maybe accepted".
6. *Push notifications*: none documented; no ``WEBHOOK`` capability.
7. *Whether ``/infax`` consumes the fax* (providers.md says so, ``[derived]``): the journal handles both:
   acknowledged keys are filtered out of ``/injobs`` (in case ``/infax`` does not consume), and unacknowledged
   ones are listed from the journal (in case it does).
8. *A client reference*: unknown whether eComFax stores ours or can search by it. ``find_submission`` looks
   for it through ``GET /messages?query=<job id>`` and returns the receipt when a message carries it exactly,
   but a miss cannot prove absence, so it raises ``SubmissionUnknown`` then and the adapter does **not**
   declare ``CLIENT_REFERENCE``: an interrupted send is quarantined for a person, never sent twice.
9. *Time stamps*: KPN has a per-subscriber ``/timezone`` setting; a time without an offset is read in the
   ``timezone`` setting (set it to the same zone), then converted to UTC. Epoch seconds/milliseconds too.
10. *``quota-reset-UTC`` format*: epoch milliseconds, epoch seconds, ISO 8601 and HTTP dates are read; an
    unreadable value never blocks calls (the server's ``429`` still does).
11. *Numbers*: destinations are written E.164 (``dial_prefix = "+"``) or with ``"00"``; incoming caller and
    DID numbers in ``+``, ``00`` or national form (read with ``country``) become E.164 where possible.

``context.extra["clock"]`` (a callable returning seconds, default ``time.monotonic``) drives the token cache
and the quota block; only its progress counts, added to the wall time at start-up, so tests move time
without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import phonenumbers
from pydantic import Field, SecretStr, field_validator, model_validator

from bridge._files import fsync_dir
from bridge.errors import (
    AuthenticationFailed,
    InvalidNumber,
    MalformedResponse,
    ProviderPermanentError,
    ProviderTemporaryError,
    ProviderUnavailable,
    RateLimited,
    SubmissionUnknown,
)
from bridge.models import FaxStatus, InboundRef, OutboundFax, SendReceipt, StatusReport
from bridge.providers import _http
from bridge.providers._http import HttpTimeouts
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api-prd.kpn.com"
DEFAULT_API_PATH = "/data/cws/fax"
TOKEN_PATH = "/oauth/client_credential/accesstoken"
DEFAULT_TOKEN_LIFETIME = 300.0
"""Seconds a token is trusted when the answer has no readable ``expires_in``; a ``401`` refreshes it anyway."""

IdStyle = Literal["query", "path"]


# -- settings ------------------------------------------------------------------------------------------------


class EcomfaxSettings(ProviderSettings):
    """``[providers.NAME]`` with ``type = "ecomfax"``."""

    base_url: str = DEFAULT_BASE_URL
    """The KPN API Store gateway, home of the token endpoint and the API; point it at the fake
    (``http://127.0.0.1:8025``) to try a configuration. The documented API root (``…/data/cws/fax``) works too."""
    api_path: str = DEFAULT_API_PATH
    """Where the eComFax API lives on the gateway."""
    token_url: str | None = None
    """The OAuth token endpoint; default: ``/oauth/client_credential/accesstoken`` on ``base_url``."""
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    """Better from the environment (``FAXBRIDGE_PROVIDERS__NAME__CLIENT_SECRET``) or ``client_secret_file``."""
    client_secret_file: Path | None = None
    """Read on every token fetch, so a rotated secret is used without a restart; relative to ``state_dir``."""
    upload: Literal["json", "multipart"] = "json"
    """``json``: ``POST /sendfax`` with the document base64; ``multipart``: ``POST /sendfax/raw``."""
    id_style: Literal["auto", "query", "path"] = "auto"
    """How ``jobid``/``key`` travel: ``?jobid=1`` or ``/jobstatus/1``; ``auto`` finds out and remembers."""
    dial_prefix: Literal["+", "00"] = "+"
    """How destinations are written: ``+4930123456`` or ``004930123456``."""
    country: str = "NL"
    """ISO 3166 region for reading national numbers of incoming callers (KPN's ``/callingcodes``)."""
    timezone: str = "UTC"
    """The zone of eComFax times without an offset: the subscriber's ``/timezone`` setting."""
    inbound: bool = True
    """List incoming faxes; ``false`` for a send-only account saves a ``/injobs`` call (and quota) per poll."""
    custody_journal: Path | None = None
    """Incoming faxes fetched but not yet acknowledged; default ``ecomfax-<NAME>-custody.json`` in state_dir."""
    token_margin_seconds: float = Field(default=60.0, ge=0)
    """Fetch a new token this long before the old one expires (at most half its lifetime)."""
    timeouts: HttpTimeouts = HttpTimeouts()

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("api_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"{value!r} is not a path such as /data/cws/fax")
        return value.rstrip("/")

    @field_validator("country")
    @classmethod
    def _region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not an ISO 3166 region such as NL or DE")
        return region

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name such as Europe/Amsterdam or UTC") from None
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> EcomfaxSettings:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError(
                "set exactly one of client_secret_file or client_secret "
                "(the latter from FAXBRIDGE_PROVIDERS__<NAME>__CLIENT_SECRET, never in the file)"
            )
        return self

    def gateway(self) -> str:
        """``base_url`` without the API path, should it have been given as the documented API root."""
        if self.api_path and self.base_url.endswith(self.api_path):
            return self.base_url[: -len(self.api_path)]
        return self.base_url

    def api_root(self) -> str:
        return self.gateway() + self.api_path

    def resolved_token_url(self) -> str:
        return self.token_url or self.gateway() + TOKEN_PATH


# -- mapping tables ------------------------------------------------------------------------------------------


def norm(value: object) -> str:
    """A status or code reduced to capitals and digits: ``"no-answer"``, ``"No Answer"`` → ``NOANSWER``."""
    return re.sub(r"[^A-Z0-9]", "", str(value).upper())


_ENDED = "ended"
"""A status that says the job is over without saying how: the result code decides."""

JOB_STATUSES: Mapping[str, FaxStatus | str] = {
    **dict.fromkeys(
        ["PENDING", "QUEUED", "SCHEDULED", "WAITING", "CREATED", "NEW", "ACCEPTED", "SUBMITTED", "RECEIVED"],
        FaxStatus.QUEUED,
    ),
    **dict.fromkeys(
        ["SENDING", "PROCESSING", "INPROGRESS", "RETRYING", "RETRY", "DIALING", "TRANSMITTING", "ACTIVE", "RUNNING"],
        FaxStatus.SENDING,
    ),
    **dict.fromkeys(["SENT", "DELIVERED", "SUCCESS", "SUCCEEDED", "OK", "TRANSMITTED"], FaxStatus.DELIVERED),
    **dict.fromkeys(
        ["FAILED", "FAILURE", "ERROR", "UNDELIVERED", "NOTSENT", "NOTDELIVERED", "ABORTED", "PARTIAL", "EXPIRED"],
        FaxStatus.FAILED,
    ),
    **dict.fromkeys(["CANCELLED", "CANCELED", "DELETED", "STOPPED"], FaxStatus.CANCELLED),
    **dict.fromkeys(["COMPLETED", "COMPLETE", "FINISHED", "DONE", "PROCESSED", "ENDED", "CLOSED"], _ENDED),
}
"""eComFax job statuses (normalised by ``norm``) → our status. The real vocabulary is unknown (question 3)."""

SUCCESS_RESULTS = frozenset({"OK", "SUCCESS", "SENT", "DELIVERED", "0", "NOERROR", "NONE"})

RESULT_REASONS: Mapping[str, str] = {
    **dict.fromkeys(["BUSY", "LINEBUSY", "USERBUSY", "ENGAGED"], "the line was busy"),
    **dict.fromkeys(
        ["NOANSWER", "NOREPLY", "NORESPONSE", "RINGNOANSWER", "NOTANSWERED", "ANSWERTIMEOUT"],
        "no fax machine answered",
    ),
    **dict.fromkeys(
        [
            "INVALIDNUMBER",
            "WRONGNUMBER",
            "BADNUMBER",
            "NUMBERINVALID",
            "NUMBERNOTVALID",
            "UNALLOCATEDNUMBER",
            "UNKNOWNNUMBER",
            "INVALIDRECIPIENT",
            "INVALIDFAXNUMBER",
            "NOTAFAXNUMBER",
        ],
        "the number is not a valid fax number",
    ),
    **dict.fromkeys(
        ["NOFAXDEVICE", "NOFAXTONE", "NOFAX", "NOTFAX", "NOCARRIER", "VOICEANSWER", "VOICE", "HUMANANSWER"],
        "the number answered, but not with a fax machine (a person or a voice line)",
    ),
    **dict.fromkeys(
        [
            "COMMUNICATIONERROR",
            "LINEERROR",
            "TRANSMISSIONERROR",
            "PROTOCOLERROR",
            "DISCONNECTED",
            "HANGUP",
            "CALLDROPPED",
            "NOISE",
        ],
        "the connection broke off during the transmission",
    ),
    **dict.fromkeys(
        ["REJECTED", "CALLREJECTED", "BLOCKED", "REFUSED", "BLACKLISTED", "BARRED"],
        "the receiving side refused the call",
    ),
    **dict.fromkeys(
        ["DOCUMENTERROR", "CONVERSIONERROR", "INVALIDDOCUMENT", "FILEERROR", "RENDERERROR"],
        "eComFax could not read the document",
    ),
    **dict.fromkeys(
        ["NOCREDIT", "INSUFFICIENTCREDIT", "INSUFFICIENTBALANCE", "NOBALANCE", "CREDITEXHAUSTED"],
        "the eComFax account has no credit left",
    ),
    **dict.fromkeys(["EXPIRED", "MAXRETRIES", "RETRIESEXHAUSTED"], "eComFax gave up after its retries"),
    "PARTIAL": "only part of the fax was sent",
}
"""eComFax result/error codes (normalised) → a reason a person understands."""

_INVALID_NUMBER_CODES = frozenset(
    code for code, reason in RESULT_REASONS.items() if reason == "the number is not a valid fax number"
) | {"INVALIDDESTINATION", "INVALIDRECIPIENTS", "INVALIDFAX"}
_TRANSIENT_MARKERS = ("TEMP", "TIMEOUT", "UNAVAILABLE", "INTERNAL", "TRYAGAIN", "THROTTL", "QUOTA", "RATELIMIT")


def failure_reason(code: str | None, description: str | None = None) -> str:
    """A plain reason for an eComFax failure code, with the provider's words when we do not know the code."""
    if code and norm(code) in RESULT_REASONS:
        return RESULT_REASONS[norm(code)]
    if code and description:
        return f"eComFax reported a failure ({code}: {description})"
    if code or description:
        return f"eComFax reported a failure ({code or description})"
    return "eComFax reported a failure without a reason"


def map_status(
    status: str | None, result: str | None = None, description: str | None = None
) -> tuple[FaxStatus, str | None, str | None]:
    """``(status, reason, code)`` for an eComFax job status and its result code."""
    key = norm(status) if status is not None else ""
    result_key = norm(result) if result not in (None, "") else ""
    mapped = JOB_STATUSES.get(key)
    failed_result = bool(result_key) and result_key not in SUCCESS_RESULTS
    if mapped is None and key in RESULT_REASONS:
        # Some APIs put the failure itself in the status field ("BUSY").
        return FaxStatus.FAILED, failure_reason(status, description), status
    if mapped in (FaxStatus.QUEUED, FaxStatus.SENDING):
        return FaxStatus(mapped), None, status
    if mapped == FaxStatus.CANCELLED:
        return FaxStatus.CANCELLED, "the fax was cancelled at eComFax", status
    if mapped == FaxStatus.DELIVERED:
        if failed_result:
            return FaxStatus.FAILED, failure_reason(result, description), result
        return FaxStatus.DELIVERED, None, result or status
    if mapped == FaxStatus.FAILED:
        code = result if failed_result else status
        return FaxStatus.FAILED, failure_reason(code, description), code
    if mapped == _ENDED:
        if failed_result:
            return FaxStatus.FAILED, failure_reason(result, description), result
        if result_key in SUCCESS_RESULTS:
            return FaxStatus.DELIVERED, None, result
        return (
            FaxStatus.UNKNOWN,
            f"eComFax says the job ended ({status}) but not how; check it in the eComFax portal",
            status,
        )
    return (
        FaxStatus.UNKNOWN,
        f"eComFax reported the status {status!r}, which faxbridge does not know",
        status,
    )


# -- reading lenient JSON ------------------------------------------------------------------------------------


def pick(data: object, *names: str) -> Any:
    """The first present, non-empty value among ``names`` in a JSON object, keys compared case-insensitively."""
    if not isinstance(data, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in data.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, "", [], {}):
            return value
    return None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


_WRAPPERS = ("data", "result", "job", "response", "payload", "content", "item")


def unwrap(data: object) -> object:
    """Step into a one-element list or a ``{"data": …}`` style wrapper, as far as they go."""
    for _ in range(4):
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
            continue
        inner = pick(data, *_WRAPPERS)
        if isinstance(inner, (dict, list)) and isinstance(data, Mapping) and len(data) <= 3:
            data = inner
            continue
        break
    return data


def job_id_of(data: object) -> str | None:
    """The eComFax job id in a send answer, wherever the variants put it."""
    for candidate in (data, unwrap(data)):
        value = pick(candidate, "jobid", "jobId", "job_id", "id", "key", "messageId", "faxId")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return None


def error_info(body: object) -> tuple[str | None, str | None]:
    """``(reason, code)`` from any of the error bodies eComFax and its Apigee gateway may send."""
    if not isinstance(body, Mapping):
        return None, None
    fault = pick(body, "fault")
    if isinstance(fault, Mapping):
        detail = pick(fault, "detail")
        return _text(pick(fault, "faultstring")), _text(pick(detail, "errorcode"))
    error = pick(body, "error")
    if isinstance(error, Mapping):
        return _text(pick(error, "message", "description", "detail")), _text(pick(error, "code", "errorCode"))
    errors = pick(body, "errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return _text(pick(errors[0], "message", "description", "detail")), _text(pick(errors[0], "code"))
    reason = _text(
        pick(body, "errorMessage", "message", "error_description", "Error", "detail", "title", "description")
    )
    code = _text(pick(body, "errorCode", "ErrorCode", "code", "error", "type"))
    if isinstance(error, str) and code is None:
        code = error
    return reason, code


def envelope_error(body: object) -> bool:
    """Whether a ``2xx`` body says the call failed (an envelope-style answer)."""
    if not isinstance(body, Mapping):
        return False
    if pick(body, "fault") is not None or pick(body, "errors"):
        return True
    if isinstance(pick(body, "error"), (Mapping, str)):
        return True
    return any(pick(body, name) is False for name in ("success", "ok", "succeeded"))


def parse_time(value: object, zone: ZoneInfo) -> datetime | None:
    """A timezone-aware UTC time from ISO 8601 (read in ``zone`` without offset), epoch s/ms or an HTTP date."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    when = _local_formats(text)
    if when is None and re.fullmatch(r"\d{9,13}(\.\d+)?", text):
        number = float(text)
        return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
    if when is None and isinstance(value, str):
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(UTC)


_LOCAL_FORMATS = ("%Y%m%d%H%M%S", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d-%m-%Y %H:%M:%S")


def _local_formats(text: str) -> datetime | None:
    # Formats that fromisoformat does not read: compact (yyyyMMddHHmmss) and day-first, as Spanish systems write.
    # strptime takes fewer digits than a field has, so only exactly 14 digits may be the compact form.
    if text.isdigit() and len(text) != 14:
        return None
    for layout in _LOCAL_FORMATS:
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    return None


def e164(number: object, region: str) -> str | None:
    """A caller or called number in E.164 where it can be read, else as eComFax gave it; ``None`` if hidden."""
    text = _text(number)
    if text is None or norm(text) in ("ANONYMOUS", "UNKNOWN", "PRIVATE", "RESTRICTED", "UNAVAILABLE"):
        return None
    cleaned = re.sub(r"[\s()./-]", "", text)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    candidates = [cleaned] if cleaned.startswith("+") else [cleaned, "+" + cleaned]
    for index, candidate in enumerate(candidates):
        try:
            parsed = phonenumbers.parse(candidate, None if candidate.startswith("+") else region)
        except phonenumbers.NumberParseException:
            continue
        # National reading first; international without "+" ("31201234567") only when it is a real number.
        ok = phonenumbers.is_valid_number(parsed) if index else phonenumbers.is_possible_number(parsed)
        if ok:
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return text


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


# -- custody journal -----------------------------------------------------------------------------------------


@dataclass
class _Journal:
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Incoming faxes asked from ``/infax`` but not acknowledged, with what ``poll_incoming`` needs to list them."""
    done: dict[str, str] = field(default_factory=dict)
    """Acknowledged keys (and when), hidden from ``/injobs`` until eComFax stops listing them."""


def _is_document(data: bytes) -> bool:
    return data.startswith((b"%PDF", b"II*\x00", b"MM\x00*"))


# -- the adapter ---------------------------------------------------------------------------------------------


class EcomfaxProvider(FaxProvider):
    """KPN eComFax: OAuth client credentials, ``/sendfax``, ``/jobstatus``, ``/injobs`` → ``/infax``."""

    type_name: ClassVar[str] = "ecomfax"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.STATUS_POLL, Capability.INBOUND_POLL, Capability.INBOUND_DOWNLOAD, Capability.INBOUND_ACK}
    )
    settings_model: ClassVar[type[ProviderSettings]] = EcomfaxSettings

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, EcomfaxSettings)
        self.config = settings
        self._client = _http.make_client(
            context, base_url=settings.api_root(), timeouts=settings.timeouts, headers={"Accept": "application/json"}
        )
        clock = context.extra.get("clock")
        self._tick: Callable[[], float] = clock if callable(clock) else time.monotonic
        # Only the injected clock's progress counts, anchored to the wall clock: quota resets are wall times,
        # and a monotonic test clock must not turn them into waits of years.
        self._tick_origin, self._wall_origin = self._tick(), time.time()
        self._zone = ZoneInfo(settings.timezone)
        self._token: str | None = None
        self._token_expires = 0.0
        # One token fetch at a time: concurrent jobs wait for it instead of each asking KPN.
        self._token_lock = asyncio.Lock()
        self._quota_blocked_until: float | None = None
        self._styles: dict[str, IdStyle] = {}
        self._secret_file = context.path(settings.client_secret_file) if settings.client_secret_file else None
        self._journal_path = context.path(settings.custody_journal or Path(f"ecomfax-{context.name}-custody.json"))
        self._journal_data: _Journal | None = None
        self._custody_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _clock(self) -> float:
        """Epoch seconds, moving as ``context.extra["clock"]`` moves."""
        return self._wall_origin + (self._tick() - self._tick_origin)

    # -- token ---------------------------------------------------------------------------------------------

    async def _client_secret(self) -> str:
        if self.config.client_secret is not None:
            return self.config.client_secret.get_secret_value()
        assert self._secret_file is not None
        try:
            text = await asyncio.to_thread(self._secret_file.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise AuthenticationFailed(
                f"{self.name}: cannot read the KPN client secret from {self._secret_file}: {reason}; "
                "check client_secret_file and that the faxbridge user may read it",
                provider=self.name,
            ) from exc
        # Editors and `echo` end files with a newline that is not part of the secret.
        return text.strip()

    async def _bearer(self) -> str:
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_expires:
                return self._token
            token, lifetime = await self._fetch_token()
            margin = min(self.config.token_margin_seconds, lifetime / 2)
            self._token, self._token_expires = token, self._clock() + lifetime - margin
            return token

    def _forget(self, token: str) -> None:
        # Only the token that was refused: another job may already have fetched a newer one.
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        url = self.config.resolved_token_url()
        response = await _http.request(
            self._client,
            "POST",
            url,
            provider=self.name,
            # KPN's quirk: grant_type in the query string, the credentials in the form body.
            params={"grant_type": "client_credentials"},
            data={"client_id": self.config.client_id, "client_secret": await self._client_secret()},
        )
        body = _json(response)
        reason, code = error_info(body)
        if response.status_code in (400, 401, 403):
            raise AuthenticationFailed(
                f"{self.name}: the KPN token endpoint {url} refused our client credentials "
                f"({reason or f'HTTP {response.status_code}'}); check client_id and the client secret "
                "(sandbox and production have different ones)",
                provider=self.name,
                code=code or str(response.status_code),
            )
        _http.check_response(response, provider=self.name, reason=reason, code=code)
        token = _text(pick(body, "access_token"))
        if token is None:
            raise MalformedResponse(
                f"{self.name}: the KPN token endpoint answered without an access_token "
                f"(HTTP {response.status_code}); the token service may be misbehaving, try again later",
                provider=self.name,
            )
        return token, token_lifetime(pick(body, "expires_in"))

    # -- requests --------------------------------------------------------------------------------------------

    def _check_quota(self) -> None:
        if self._quota_blocked_until is None:
            return
        wait = self._quota_blocked_until - self._clock()
        if wait <= 0:
            self._quota_blocked_until = None
            return
        raise RateLimited(
            f"{self.name}: the KPN API quota is used up until {_utc_text(self._quota_blocked_until)}; "
            "nothing was sent, faxbridge tries again after the reset",
            retry_after=wait,
            provider=self.name,
            code="quota",
        )

    def _note_quota(self, response: httpx.Response) -> None:
        headers = response.headers
        reset = quota_reset(headers.get("quota-reset-utc"))
        try:
            limit, used = int(headers["quota-limit"]), int(headers["quota-used"])
        except (KeyError, ValueError):
            return
        if used >= limit and reset is not None and reset > self._clock():
            log.warning("%s: KPN API quota of %d calls used up until %s", self.name, limit, _utc_text(reset))
            self._quota_blocked_until = reset

    async def _api(self, method: str, path: str, *, sending: bool = False, **kwargs: Any) -> httpx.Response:
        """One API call with the bearer token; a ``401`` refreshes the token and repeats the call once."""
        self._check_quota()
        response: httpx.Response | None = None
        for attempt in (1, 2):
            token = await self._bearer()
            response = await _http.request(
                self._client,
                method,
                path,
                provider=self.name,
                sending=sending,
                headers={"Authorization": f"Bearer {token}"},
                **kwargs,
            )
            self._note_quota(response)
            if response.status_code != 401 or attempt == 2:
                break
            reason, code = error_info(_json(response))
            log.info("%s: KPN refused the access token (%s, %s); fetching a new one", self.name, code, reason)
            self._forget(token)
        assert response is not None
        return response

    def _raise_for(self, response: httpx.Response, *, sending: bool = False, what: str = "") -> None:
        """Classify a non-2xx answer (and ``3xx``, which ``check_response`` would call permanent)."""
        status = response.status_code
        if 200 <= status < 300:
            return
        reason, code = error_info(_json(response))
        if reason is None and status in (404, 405):
            reason = f"HTTP {status}: the API has no such operation; check base_url and api_path"
        detail = f"{what}: {reason or f'HTTP {status}'}" if what else reason
        if 300 <= status < 400:
            # A redirect answer to a send may be a "created, see Location": the fax may be there.
            raise MalformedResponse(
                f"{self.name}: eComFax answered HTTP {status} ({response.headers.get('location', 'no Location')})"
                f"{' to ' + what if what else ''}, which faxbridge does not expect",
                provider=self.name,
                code=str(status),
                maybe_accepted=sending,
            )
        if status == 429 and response.headers.get("retry-after") is None:
            reset = quota_reset(response.headers.get("quota-reset-utc"))
            if reset is not None:
                raise RateLimited(
                    f"{self.name}: the KPN API quota is used up ({detail or 'HTTP 429'}); "
                    f"it resets at {_utc_text(reset)}",
                    retry_after=max(0.0, reset - self._clock()),
                    provider=self.name,
                    code=code or "429",
                )
        if 400 <= status < 500 and status not in (401, 403, 408, 429) and code and _is_invalid_number(code):
            raise InvalidNumber(
                f"{self.name}: eComFax says the number is not a valid fax number ({detail or code})",
                provider=self.name,
                code=code,
            )
        _http.check_response(response, provider=self.name, sending=sending, reason=detail, code=code)

    def _raise_envelope(self, body: object, *, what: str) -> None:
        """Classify a ``2xx`` that says error: temporary when its code says so, otherwise permanent."""
        reason, code = error_info(body)
        text = f"{self.name}: eComFax refused {what} ({reason or code or 'no reason given'})"
        if code and _is_invalid_number(code):
            raise InvalidNumber(text, provider=self.name, code=code)
        if code and any(marker in norm(code) for marker in _TRANSIENT_MARKERS):
            raise ProviderTemporaryError(text, provider=self.name, code=code)
        raise ProviderPermanentError(text, provider=self.name, code=code or "error")

    async def _by_id(self, method: str, operation: str, param: str, value: str, **kwargs: Any) -> httpx.Response:
        """Call ``/operation`` with ``value`` as ``?param=`` or as a path segment (question 2)."""
        fixed = self.config.id_style
        styles: list[IdStyle]
        if fixed != "auto":
            styles = [fixed]
        elif operation in self._styles:
            styles = [self._styles[operation]]
        else:
            styles = ["query", "path"]
        first: httpx.Response | None = None
        for style in styles:
            if style == "query":
                response = await self._api(method, f"/{operation}", params={param: value}, **kwargs)
            else:
                response = await self._api(method, f"/{operation}/{value}", **kwargs)
            if response.is_success or response.status_code not in (404, 405):
                if response.is_success and fixed == "auto":
                    self._styles[operation] = style
                return response
            first = first or response
        assert first is not None
        return first

    # -- send ------------------------------------------------------------------------------------------------

    def _destination(self, number: str) -> str:
        digits = number.lstrip("+")
        return f"{self.config.dial_prefix}{digits}"

    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Hand the fax to ``/sendfax`` (or ``/sendfax/raw``); the receipt carries eComFax's job id."""
        to = self._destination(fax.to)
        filename = f"{fax.job_id}.pdf"
        if self.config.upload == "json":
            payload: dict[str, Any] = {
                "recipients": [{"faxNumber": to}],
                "documents": [
                    {
                        "fileName": filename,
                        "contentType": "application/pdf",
                        "content": base64.b64encode(fax.document).decode("ascii"),
                    }
                ],
                "reference": fax.job_id,
                "subject": fax.subject,
            }
            if fax.caller_id:
                payload["customFaxNumber"] = fax.caller_id
            response = await self._api("POST", "/sendfax", sending=True, json=payload)
        else:
            form: dict[str, str] = {"recipients": to, "reference": fax.job_id, "subject": fax.subject}
            if fax.caller_id:
                form["customFaxNumber"] = fax.caller_id
            response = await self._api(
                "POST",
                "/sendfax/raw",
                sending=True,
                data=form,
                files=[("file", (filename, fax.document, "application/pdf"))],
            )
        self._raise_for(response, sending=True, what=f"the fax to {fax.to}")
        body = _json(response)
        job_id = job_id_of(body)
        if job_id is None:
            if envelope_error(body):
                self._raise_envelope(body, what=f"the fax to {fax.to}")
            raise MalformedResponse(
                f"{self.name}: eComFax accepted the request (HTTP {response.status_code}) but its answer names no "
                "job id; the fax may have been taken, so it is not sent again until someone checks",
                provider=self.name,
                maybe_accepted=True,
            )
        raw = body if isinstance(body, dict) else {"body": body}
        return SendReceipt(
            provider_fax_id=job_id,
            client_reference=fax.job_id,
            accepted_at=datetime.now(UTC),
            raw={**raw, "upload": self.config.upload},
        )

    # -- status ----------------------------------------------------------------------------------------------

    async def _job_call(self, operation: str, job_id: str) -> tuple[httpx.Response, Any]:
        response = await self._by_id("GET", operation, "jobid", job_id)
        if response.status_code == 404:
            return response, None
        self._raise_for(response, what=f"{operation} of job {job_id}")
        body = _json(response)
        if body is None:
            raise MalformedResponse(
                f"{self.name}: eComFax's {operation} answer for job {job_id} is not JSON; trying again later",
                provider=self.name,
            )
        if envelope_error(body) and pick(unwrap(body), "status", "state", "jobStatus") is None:
            self._raise_envelope(body, what=f"the {operation} query for job {job_id}")
        return response, body

    async def status(self, receipt: SendReceipt) -> StatusReport:
        """``/jobstatus``, and ``/jobdetails`` once the job has ended, mapped into ``FaxStatus``."""
        job_id = receipt.provider_fax_id
        if not job_id:
            return StatusReport(status=FaxStatus.UNKNOWN, reason="the send receipt has no eComFax job id")
        _, body = await self._job_call("jobstatus", job_id)
        if body is None:
            return StatusReport(
                status=FaxStatus.UNKNOWN,
                reason=f"eComFax no longer knows job {job_id} (expired from its retention?)",
                code="404",
            )
        data = unwrap(body)
        status_text = _text(pick(data, "status", "state", "jobStatus", "jobState"))
        result = _text(pick(data, "result", "resultCode", "errorCode", "error", "reasonCode"))
        description = _text(pick(data, "resultDescription", "statusDescription", "errorMessage", "description"))
        raw: dict[str, Any] = {"jobstatus": body}
        pages: int | None = None
        mapped, _, _ = map_status(status_text, result, description)
        if mapped not in (FaxStatus.QUEUED, FaxStatus.SENDING):
            _, details = await self._job_call("jobdetails", job_id)
            if details is not None:
                raw["jobdetails"] = details
                job = unwrap(details)
                recipient = _first_recipient(job)
                for source in (recipient, job):
                    result = result or _text(pick(source, "result", "resultCode", "errorCode", "error", "reasonCode"))
                    description = description or _text(
                        pick(source, "resultDescription", "errorMessage", "statusDescription", "description")
                    )
                # "pages" of the job counts the document; only a recipient's own count says what was sent.
                pages = _int(pick(recipient, "pagesSent", "sentPages", "pages")) or _int(
                    pick(job, "pagesSent", "sentPages")
                )
                # The recipient's own status is the precise one for a single-recipient job.
                status_text = _text(pick(recipient, "status", "state")) or status_text
        final, reason, code = map_status(status_text, result, description)
        if final == FaxStatus.FAILED and pages is None:
            pages = 0
        return StatusReport(status=final, reason=reason, code=code, pages_sent=pages, raw=raw)

    # -- interrupted sends -----------------------------------------------------------------------------------

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """Search ``/messages`` for our reference; a hit is the receipt, a miss proves nothing (question 8)."""
        response = await self._api("GET", "/messages", params={"query": fax.job_id, "page": 1, "pagecount": 50})
        self._raise_for(response, what=f"the search for job {fax.job_id}")
        body = _json(response)
        for message in _items(body, "messages", "items", "results", "data", "content"):
            reference = _text(pick(message, "reference", "clientReference", "customerReference", "externalId"))
            job_id = job_id_of(message)
            if reference == fax.job_id and job_id is not None:
                return SendReceipt(
                    provider_fax_id=job_id,
                    client_reference=fax.job_id,
                    accepted_at=parse_time(pick(message, "date", "submitted", "created"), self._zone)
                    or datetime.now(UTC),
                    raw={"message": message, "found_by": "messages"},
                )
        raise SubmissionUnknown(
            f"{self.name}: eComFax's message search does not list job {fax.job_id}, but it is not known to search "
            "our reference, so that does not prove the fax was not taken; look for it in the eComFax portal "
            "before sending it again",
            provider=self.name,
            maybe_accepted=True,
        )

    # -- inbound ---------------------------------------------------------------------------------------------

    async def poll_incoming(self) -> list[InboundRef]:
        """Pending faxes from ``/injobs`` plus those fetched but never acknowledged, oldest first."""
        if not self.config.inbound:
            return []
        response = await self._api("GET", "/injobs")
        self._raise_for(response, what="the list of incoming faxes")
        body = _json(response)
        if response.content.strip() and body is None:
            raise MalformedResponse(f"{self.name}: eComFax's /injobs answer is not JSON", provider=self.name)
        if envelope_error(body):
            self._raise_envelope(body, what="the list of incoming faxes")
        listed: dict[str, InboundRef] = {}
        for entry in _items(body, "injobs", "jobs", "incoming", "items", "results", "data", "faxes", "keys"):
            ref = self._inbound_ref(entry)
            if ref is not None:
                listed.setdefault(ref.provider_fax_id, ref)
        async with self._custody_lock:
            journal = await self._journal()
            refs = [ref for key, ref in listed.items() if key not in journal.done]
            refs += [self._held_ref(key, data) for key, data in journal.held.items() if key not in listed]
            # eComFax no longer lists an acknowledged fax: forget it, so the journal stays small.
            stale = [key for key in journal.done if key not in listed]
            for key in stale:
                del journal.done[key]
            if stale:
                await self._save(journal)
        return sorted(refs, key=lambda ref: (ref.received_at, ref.provider_fax_id))

    def _inbound_ref(self, entry: object) -> InboundRef | None:
        if isinstance(entry, (str, int)) and not isinstance(entry, bool):
            # A bare key: the metadata comes with /infax only.
            return InboundRef(
                provider=self.name,
                provider_fax_id=str(entry),
                caller=None,
                called=None,
                received_at=datetime.now(UTC),
                token=str(entry),
            )
        key = _text(pick(entry, "key", "jobid", "jobId", "id", "faxId"))
        if key is None:
            log.warning("%s: an /injobs entry without a key was skipped: %r", self.name, entry)
            return None
        caller = pick(entry, "callerId", "caller", "callerNumber", "from", "sender", "ani", "remoteNumber", "csid")
        called = pick(entry, "did", "called", "calledNumber", "to", "destination", "faxNumber", "dnis")
        received = pick(entry, "date", "receivedAt", "received", "receptionDate", "timestamp", "created", "dateTime")
        return InboundRef(
            provider=self.name,
            provider_fax_id=key,
            caller=e164(caller, self.config.country),
            called=e164(called, self.config.country),
            received_at=parse_time(received, self._zone) or datetime.now(UTC),
            pages=_int(pick(entry, "pages", "pageCount", "numPages", "numberOfPages")),
            token=key,
        )

    def _held_ref(self, key: str, data: Mapping[str, Any]) -> InboundRef:
        return InboundRef(
            provider=self.name,
            provider_fax_id=key,
            caller=data.get("caller"),
            called=data.get("called"),
            received_at=parse_time(data.get("received_at"), self._zone) or datetime.now(UTC),
            pages=data.get("pages"),
            token=key,
        )

    async def download(self, ref: InboundRef) -> bytes:
        """Fetch the fax from ``/infax``; the journal keeps it ours until ``acknowledge``."""
        key = ref.provider_fax_id
        async with self._custody_lock:
            journal = await self._journal()
            fetched_before = key in journal.held
            if not fetched_before:
                # Written before the request: if we die while /infax consumes it, the next run resets it.
                journal.held[key] = {
                    "caller": ref.caller,
                    "called": ref.called,
                    "received_at": ref.received_at.isoformat(),
                    "pages": ref.pages,
                    "fetched_at": datetime.now(UTC).isoformat(),
                }
                await self._save(journal)
        document = await self._infax(key)
        if document is not None:
            return document
        if not fetched_before:
            async with self._custody_lock:
                journal = await self._journal()
                journal.held.pop(key, None)
                await self._save(journal)
            raise ProviderPermanentError(
                f"{self.name}: eComFax no longer holds incoming fax {key}; another client (the portal, a second "
                "bridge) may have fetched it",
                provider=self.name,
                code="404",
            )
        # We fetched it before and never stored it: ask eComFax to hand it out again.
        await self._reset(key)
        document = await self._infax(key)
        if document is None:
            raise ProviderPermanentError(
                f"{self.name}: eComFax reset incoming fax {key} but still does not hand it out; check the "
                "eComFax portal for it",
                provider=self.name,
                code="404",
            )
        return document

    async def _infax(self, key: str) -> bytes | None:
        """The fax behind ``key``, or ``None`` when eComFax does not have it (any more)."""
        response = await self._by_id("GET", "infax", "key", key)
        if response.status_code == 404:
            return None
        if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("location"):
            return await self._follow(key, response.headers["location"])
        self._raise_for(response, what=f"incoming fax {key}")
        return await self._document(key, response)

    async def _follow(self, key: str, location: str) -> bytes:
        url = str(self._client.base_url.join(location))
        base = str(self._client.base_url).rstrip("/")
        # The token is ours for the API only; a signed storage link must not receive it.
        if url.startswith(base + "/"):
            response = await self._api("GET", url)
        else:
            response = await _http.request(self._client, "GET", url, provider=self.name)
        self._raise_for(response, what=f"the document of incoming fax {key}")
        return await self._document(key, response, followed=True)

    async def _document(self, key: str, response: httpx.Response, *, followed: bool = False) -> bytes:
        if _is_document(response.content):
            return response.content
        body = _json(response)
        if body is not None:
            if envelope_error(body) and _find_base64(body) is None:
                self._raise_envelope(body, what=f"incoming fax {key}")
            found = _find_base64(body)
            if found is not None:
                return found
            link = _text(pick(unwrap(body), "url", "link", "href", "downloadUrl", "location"))
            if link and not followed:
                return await self._follow(key, link)
        content_type = response.headers.get("content-type", "")
        if response.content and not content_type.startswith(("application/json", "text/")):
            return response.content
        raise MalformedResponse(
            f"{self.name}: eComFax's answer for incoming fax {key} holds no document faxbridge can find "
            f"(content type {content_type or 'none'}); the fax stays in custody and is asked for again",
            provider=self.name,
        )

    async def _reset(self, key: str) -> None:
        response = await self._by_id("PATCH", "resetincomingjob", "key", key)
        if response.status_code == 412:
            reason, code = error_info(_json(response))
            raise ProviderPermanentError(
                f"{self.name}: incoming fax {key} was fetched from eComFax earlier but not stored, and eComFax "
                f"cannot hand it out again without the Custody Service ({reason or 'HTTP 412'}); enable the "
                "Custody Service for incoming faxes, or fetch the fax from the eComFax portal",
                provider=self.name,
                code=code or "412",
            )
        self._raise_for(response, what=f"resetting incoming fax {key}")

    async def acknowledge(self, ref: InboundRef) -> None:
        """The fax is stored: it leaves the journal, and is hidden from ``/injobs`` should eComFax still list it."""
        async with self._custody_lock:
            journal = await self._journal()
            journal.held.pop(ref.provider_fax_id, None)
            journal.done[ref.provider_fax_id] = datetime.now(UTC).isoformat()
            await self._save(journal)

    async def _journal(self) -> _Journal:
        if self._journal_data is None:
            self._journal_data = await asyncio.to_thread(self._load_journal)
        return self._journal_data

    def _load_journal(self) -> _Journal:
        try:
            data = json.loads(self._journal_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _Journal()
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable(
                f"{self.name}: cannot read the custody journal {self._journal_path}: {exc}; it lists incoming "
                "faxes fetched but not yet stored, so repair or move it by hand before incoming faxes continue",
                provider=self.name,
            ) from exc
        held = data.get("held") if isinstance(data, dict) else None
        done = data.get("done") if isinstance(data, dict) else None
        return _Journal(
            held=dict(held) if isinstance(held, dict) else {},
            done=dict(done) if isinstance(done, dict) else {},
        )

    async def _save(self, journal: _Journal) -> None:
        text = json.dumps({"held": journal.held, "done": journal.done}, indent=2, sort_keys=True) + "\n"
        try:
            await asyncio.to_thread(self._write_journal, text)
        except OSError as exc:
            raise ProviderUnavailable(
                f"{self.name}: cannot write the custody journal {self._journal_path}: {exc.strerror}; check the "
                "state directory's permissions and free space",
                provider=self.name,
            ) from exc

    def _write_journal(self, text: str) -> None:
        path = self._journal_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)


# -- helpers -------------------------------------------------------------------------------------------------


def token_lifetime(value: object) -> float:
    """Seconds from KPN's ``expires_in``, which arrives as a string (``"3599"``); a default when unreadable."""
    if isinstance(value, bool):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(str(value).strip()) if value is not None else DEFAULT_TOKEN_LIFETIME
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME
    return seconds if seconds > 0 else DEFAULT_TOKEN_LIFETIME


def quota_reset(value: str | None) -> float | None:
    """``quota-reset-UTC`` as epoch seconds: epoch ms or s, ISO 8601 (UTC without offset), HTTP date."""
    if not value:
        return None
    when = parse_time(value.strip(), ZoneInfo("UTC"))
    return when.timestamp() if when is not None else None


def _utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_invalid_number(code: str) -> bool:
    key = norm(code)
    return key in _INVALID_NUMBER_CODES or ("NUMBER" in key and "INVALID" in key)


def _first_recipient(job: object) -> object:
    # faxbridge sends one recipient per job, so the first is ours.
    recipients = pick(job, "recipients", "destinations", "targets")
    return recipients[0] if isinstance(recipients, list) and recipients else None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _items(body: object, *names: str) -> list[Any]:
    """The list in an answer: the body itself, or under one of ``names`` (also one level further in)."""
    if isinstance(body, list):
        return body
    for candidate in (body, pick(body, "data", "result")):
        found = pick(candidate, *names)
        if isinstance(found, list):
            return found
        if isinstance(found, Mapping):
            inner = pick(found, *names, "items")
            if isinstance(inner, list):
                return inner
    return []


def _walk(value: object, depth: int = 0) -> Iterator[tuple[str, object]]:
    if depth > 4:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield str(key).lower(), inner
            yield from _walk(inner, depth + 1)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk(inner, depth + 1)


_DOCUMENT_KEYS = ("content", "document", "file", "fax", "pdf", "tiff", "data", "base64", "body", "filecontent")


def _find_base64(body: object) -> bytes | None:
    """The first base64 string under a document-like key that decodes to a PDF or TIFF."""
    for key, value in _walk(body):
        if key not in _DOCUMENT_KEYS or not isinstance(value, str) or len(value) < 8:
            continue
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            decoded = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            continue
        if _is_document(decoded):
            return decoded
    return None
