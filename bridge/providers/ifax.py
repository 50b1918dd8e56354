"""iFax (ifaxapp.com): send faxes, poll their outcome, list and download received faxes, read iFax's webhooks.

The API (``https://api.ifaxapp.com/v1``) takes every operation as ``POST /customer/<operation>`` with a JSON body
and the API key in an ``accessToken`` header (not ``Authorization``). Every answer is an envelope
``{"status": …, "message": "…", "data": …}``: ``status == 1`` is success, anything else an error whose numeric
``code`` (top level, or inside ``data``) comes from iFax's error table. The operations used here:

``fax-send``                 ``{faxNumber, callerId?, from_name?, faxQuality, faxData: [{fileName, fileData}]}``
                             → ``data.jobId`` (a number; stored as text in ``provider_fax_id``)
``fax-status``               ``{jobId}`` → the Fax Object (``faxStatus`` ``sending``/``delivered``/``failed``/
                             ``canceled``, ``code``, ``message``, ``faxTransferredPages``…)
``inbound/fax-list-all``     ``{startDate, endDate (MM/DD/YYYY), sortBy: "newest", lastFaxId?}`` → a page of
                             received faxes; the cursor is the last row's ``jobId``, until ``data`` is empty
``inbound/fax-download``     ``{jobId, transactionId}`` → the received PDF (base64 in ``data`` per the docs)

What the bridge's fields become: our job id is not sent as a reference (iFax has no client-reference field);
it names the uploaded file (``faxData[0].fileName = "<job id>.pdf"``) so that a person can find the fax in the
iFax dashboard. ``OutboundFax.caller_id`` goes into ``callerId`` ("used as From number"; iFax refuses caller IDs
not verified in its dashboard, codes 120103/120104; ``send_caller_id = false`` leaves it out).
``OutboundFax.header`` goes into ``from_name``, the only sender-name field iFax has (the cover-page sender
name; iFax has no TSI/header-line field); ``send_header = false`` leaves it out. ``SendReceipt.client_reference``
is always our job id.

Capabilities and why:

* ``STATUS_POLL``: ``fax-status``.
* No ``CLIENT_REFERENCE``: iFax has no client reference and no documented way to look a fax up by anything we
  chose, so after an interrupted send ``find_submission`` cannot say "certainly absent"; it raises
  ``SubmissionUnknown`` and the worker quarantines the job instead of risking a second fax.
* ``INBOUND_POLL``/``INBOUND_DOWNLOAD``: ``inbound/fax-list-all`` and ``inbound/fax-download``.
* ``INBOUND_ACK``: iFax has no "mark as fetched" call, so custody is kept here: ``acknowledge`` records the fax
  in a ledger under ``inbound_dir`` and ``poll_incoming`` no longer lists it (also not after a restart). The
  fax stays at iFax; delete it there per your retention rules.
* ``WEBHOOK``: iFax posts the Fax Object when a sent fax completes and a notification when a fax is received
  (global URLs set in the dashboard; optional Basic auth, which ``webhook_username``/``webhook_password*``
  check here; iFax does not sign webhooks).

Open questions from the API notes (providers.md §7) and the reading chosen, always the one that fails safe:

* *Which HTTP status accompanies ``status != 1``?* Undocumented. Only ``status == 1`` (as iFax clients test it:
  ``1``, ``"1"``, ``true``) is success, whatever the HTTP status. A 2xx with another status is classified by its
  code: a bad number is ``InvalidNumber``, a bad key ``AuthenticationFailed``, credit/trial/test-key limits are
  temporary (the operator tops up and the fax goes out), iFax's own internal failures are temporary and, for
  ``fax-send``, "maybe accepted" (like a 5xx), other known request errors are permanent. A code iFax does not
  document (or none) in an answer to ``fax-send`` is temporary *and* "maybe accepted": the worker checks
  instead of sending again. A non-2xx answer goes through ``_http.check_response`` (429 with ``Retry-After``,
  5xx, 401/403), except a 4xx whose envelope carries a documented code, which is classified by that code.
* *Received-fax webhook: multipart with a file part ``filename`` (docs) or JSON without a file (an integrator,
  2026)?* Both are accepted, and also form-encoded fields, a body wrapped in ``data`` or in the whole envelope,
  and a list of objects. A PDF that came with the webhook is kept under ``inbound_dir`` (so ``download`` needs
  no second request); without one, ``download`` fetches it with ``inbound/fax-download``.
* *Exact shape of ``inbound/fax-download``'s ``data``?* Every variant seen is accepted: base64 in ``data``
  (with or without a ``data:`` URI prefix), nested one or two levels (``data.data``, ``data.file``,
  ``data.fileData``, ``data.pdf``, ``data.base64``, ``data.content``), a URL in ``data`` or in
  ``data.url``/``fileUrl``/``downloadUrl`` (fetched; the access token is only sent to iFax's own host), and a
  raw ``application/pdf`` body. Anything that does not decode to a PDF or TIFF is ``MalformedResponse``.
* *Webhook success criterion / retries (16 stated, 5 tabulated)?* Undocumented. ``parse_webhook`` is
  idempotent (a repeated notification yields the same ``provider_fax_id``), raises ``ProviderPermanentError``
  only for requests that are not iFax notifications, and a temporary error when a received PDF cannot be
  stored, so that the caller answers non-2xx and iFax tries again.
* *Cancel path, outbound download path*: unknown; the adapter needs neither (the contract has no cancel).
* *``jobId`` as number or string?* The docs' tables say Integer for ``fax-status``, the Ruby gem sends a string:
  a numeric id is sent as a number; the fake accepts both. ``fax-download`` takes both ids as strings (docs).

Statuses: ``sending`` is ``QUEUED`` while iFax pre-processes (code -11) and ``SENDING`` after; ``delivered`` is
``DELIVERED``; ``failed``, ``failed_chargeable`` and ``blocked`` are ``FAILED`` with a plain reason from the
code table (``_CODES``); ``canceled``/``cancelled``/``partially_cancelled`` are ``CANCELLED``; any other status
is ``UNKNOWN`` (the worker keeps asking) rather than a guess at an outcome. iFax's own code is in
``StatusReport.code`` and the whole answer in ``raw``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.parser
import email.policy
import email.utils
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import httpx
import phonenumbers
from pydantic import Field, SecretStr, field_validator, model_validator

from bridge._files import write_atomically
from bridge.errors import (
    AuthenticationFailed,
    InvalidNumber,
    MalformedResponse,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    SubmissionUnknown,
)
from bridge.models import FaxStatus, InboundRef, OutboundFax, SendReceipt, StatusReport, StatusUpdate
from bridge.providers import _http
from bridge.providers._http import HttpTimeouts
from bridge.providers._ledger import AcknowledgedLedger
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings

__all__ = ["IFaxProvider", "IFaxSettings", "describe_code", "map_fax_object"]

DEFAULT_BASE_URL = "https://api.ifaxapp.com/v1"

# -- iFax's error-code table, in plain words ------------------------------------------------------------------

_Kind = Literal[
    "progress",  # the fax is still being worked on
    "ok",  # delivered
    "outcome",  # how a transmission ended (line busy, no answer…)
    "number",  # the destination is not a valid fax number
    "auth",  # the API key or the account is refused
    "server",  # iFax failed on its side: try again; for a send, iFax may have kept the fax
    "account",  # credit, trial or test-key limits: the operator can fix it, the fax itself is fine
    "caller_id",  # the caller ID is refused
    "document",  # the file cannot be faxed
    "request",  # anything else iFax refuses in the request
    "missing",  # iFax does not know the fax
]

_CODES: dict[int, tuple[str, _Kind]] = {
    # progress and success
    -11: ("iFax is preparing the document", "progress"),
    -3: ("iFax is sending the fax", "progress"),
    0: ("the fax was delivered", "ok"),
    # transmission outcomes
    256: ("the fax service had an internal error", "server"),
    261: ("the line was busy (busy trunk line)", "outcome"),
    263: ("the line was busy", "outcome"),
    403: ("the fax was cancelled", "outcome"),
    1111: ("iFax updated this old fax record by hand; its outcome is not known", "outcome"),
    3072: ("a telephone network error ended the call", "outcome"),
    3211: ("the receiving fax machine is not compatible", "outcome"),
    3230: ("the receiving fax machine sent an unexpected message", "outcome"),
    3912: ("the number is not a valid fax number: it is not in service", "number"),
    3931: ("the line was busy", "outcome"),
    3935: ("no fax machine answered (it may be out of paper)", "outcome"),
    3937: ("the line was busy (it rang busy)", "outcome"),
    6002: ("the number cannot be reached: the telephone network has no route to it", "number"),
    6021: ("the receiving side rejected the call", "outcome"),
    6022: ("the number has changed", "number"),
    6099: ("the receiving line is out of order", "outcome"),
    6100: ("the receiving side is not a compatible fax machine", "outcome"),
    7200: ("a temporary telephone network failure ended the call", "outcome"),
    8021: ("no fax machine answered", "outcome"),
    9000: ("the telephone network refused the call", "outcome"),
    9001: ("the telephone network was congested", "outcome"),
    9002: ("the call took longer than allowed and was ended", "outcome"),
    9005: ("the connection to the receiving fax machine could not be established", "outcome"),
    9006: ("the number is not a working fax number: the receiving line is not operational", "number"),
    9007: ("the telephone network is out of order", "outcome"),
    9008: ("the remote carrier had a problem", "outcome"),
    9009: ("the two fax machines could not communicate", "outcome"),
    9010: ("the receiving fax machine cannot take pages of this size", "outcome"),
    9011: ("no fax machine answered (no response)", "outcome"),
    9012: ("the call was dropped after the permitted retries", "outcome"),
    9013: ("the receiving fax machine did not answer the fax handshake", "outcome"),
    9014: ("the receiving fax machine did not send its first message in time", "outcome"),
    9015: ("no fax machine answered in time", "outcome"),
    9016: ("the receiving fax machine sent an unexpected message", "outcome"),
    9024: ("no fax machine answered (the receiving machine may be out of paper)", "outcome"),
    9028: ("the receiving fax machine is not compatible", "outcome"),
    9030: ("the fax was already cancelled", "outcome"),
    12049: ("the call was answered elsewhere", "outcome"),
    12050: ("the receiving line is not available", "outcome"),
    12051: ("the number has changed", "number"),
    12052: ("the call was redirected to a new destination", "outcome"),
    12053: ("the telephone exchange could not route the call", "outcome"),
    12054: ("the telephone network rejected the call", "outcome"),
    12055: ("the telephone network ended the call", "outcome"),
    12056: ("the call ended without a reason given by the network", "outcome"),
    12057: ("the telephone network was congested", "outcome"),
    12058: ("the telephone network discarded call information", "outcome"),
    12059: ("no telephone line was available", "outcome"),
    12060: ("the telephone network pre-empted the call", "outcome"),
    12061: ("the telephone network does not offer this call to the account", "outcome"),
    12062: ("calls to this number are barred", "outcome"),
    12063: ("the receiving line does not accept incoming calls", "outcome"),
    12064: ("the telephone network does not allow a fax call to this number", "outcome"),
    12065: ("the telephone network cannot carry a fax call to this number", "outcome"),
    12066: ("the telephone network does not support this call", "outcome"),
    12067: ("the telephone network does not support this call", "outcome"),
    12068: ("the telephone network does not support this call", "outcome"),
    12069: ("a telephone network protocol error ended the call", "outcome"),
    12071: ("a telephone network protocol error ended the call", "outcome"),
    12072: ("a telephone network protocol error ended the call", "outcome"),
    12073: ("a telephone network protocol error ended the call", "outcome"),
    12074: ("a telephone network protocol error ended the call", "outcome"),
    12075: ("a telephone network protocol error ended the call", "outcome"),
    12076: ("two telephone networks could not work together on the call", "outcome"),
    12077: ("the call was cancelled by the sending side", "outcome"),
    12078: ("the fax server failed during the call", "outcome"),
    12079: ("the call was lost to a competing call", "outcome"),
    12080: ("the fax service's operator ended the call", "outcome"),
    12081: ("the call was transferred", "outcome"),
    12082: ("the call was transferred", "outcome"),
    12083: ("the call was challenged and ended", "outcome"),
    12084: ("the fax transmission stalled", "outcome"),
    12085: ("another line picked the call up", "outcome"),
    12086: ("no fax machine answered in time", "outcome"),
    12087: ("the fax service's telephone gateway was down", "outcome"),
    204000: ("iFax could not render the document", "document"),
    205001: ("iFax had an internal error while routing the fax", "server"),
    206001: ("iFax had an internal error while sending the fax", "server"),
    # the destination
    120100: ("the number is not a valid fax number", "number"),
    -2075: ("the number is not a valid fax number", "number"),
    -2028: ("the number is not a valid fax number: iFax knows no country code for it", "number"),
    120101: ("this iFax plan can only fax to the US and Canada", "request"),
    -111: ("this iFax developer account may only fax its designated number", "request"),
    12020: ("iFax got no destination number", "request"),
    # the caller ID
    120103: ("the caller ID is not a valid number", "caller_id"),
    120104: ("the caller ID is not verified at iFax", "caller_id"),
    # the documents
    -123: ("iFax found no valid document in the fax", "document"),
    -1063: ("the document is too large for iFax", "document"),
    -1008: ("iFax counted a different number of files than it was given", "document"),
    -1004: ("iFax cannot find or use the fax file", "document"),
    -3004: ("the TIFF file is empty", "document"),
    -3003: ("the image does not exist", "document"),
    9042: ("iFax could not convert the document", "document"),
    120107: ("iFax refused the file name", "document"),
    120108: ("iFax refused the file URL", "document"),
    120109: ("iFax does not accept this file format", "document"),
    # the account: credit and limits
    -22: ("the iFax account has not enough credit", "account"),
    -2037: ("the iFax account has no credit", "account"),
    9023: ("the iFax account has not enough credit and its card could not be charged", "account"),
    9040: ("the iFax account has not enough credit and could not be recharged", "account"),
    12012: ("the iFax account has not enough credit", "account"),
    205000: ("the iFax prepaid credit is used up", "account"),
    120105: ("the iFax free trial limit is reached", "account"),
    120106: ("the iFax test key's page limit is reached; use the live key", "account"),
    # credentials and the account itself
    -310: ("iFax found no active user for this access token", "auth"),
    -2014: ("iFax got no credentials", "auth"),
    11009: ("iFax says the account is invalid", "auth"),
    12001: ("the iFax account is blocked", "auth"),
    12015: ("iFax refused the credentials", "auth"),
    12016: ("iFax refused the credentials", "auth"),
    12033: ("the iFax user is not registered", "auth"),
    12035: ("iFax refused the credentials", "auth"),
    12046: ("iFax does not know the customer", "auth"),
    12120: ("iFax cannot find the user", "auth"),
    -3007: ("the iFax user has no permission for this", "auth"),
    # iFax's own failures
    11013: ("iFax had a processing error", "server"),
    -2036: ("the iFax service is unavailable", "server"),
    -150: ("the iFax system is shutting down", "server"),
    9036: ("iFax could not pass the document to its fax server", "server"),
    12096: ("iFax could not answer the status request", "server"),
    12099: ("iFax could not answer the list request", "server"),
    # the fax is not known, or not ours
    12021: ("iFax has no fax with this id", "missing"),
    12091: ("iFax cannot find the fax", "missing"),
    12130: ("iFax cannot find the fax", "missing"),
    12092: ("iFax no longer has the fax file", "missing"),
    12093: ("iFax has no data for this fax", "missing"),
    12006: ("iFax found no record", "missing"),
    12097: ("iFax has no details for this fax", "missing"),
    12098: ("iFax has no details for this fax", "missing"),
    -1011: ("the fax image is no longer available at iFax (deleted after completion)", "missing"),
    -1005: ("iFax cannot find the fax", "missing"),
    -311: ("the fax belongs to another iFax user", "missing"),
    # other request errors
    12009: ("iFax refused a parameter of the request", "request"),
    12010: ("iFax refused the request method", "request"),
    -2040: ("iFax refused the date range", "request"),
    -162: ("the fax can no longer be cancelled", "request"),
    12048: ("iFax could not cancel the fax", "request"),
}

_PERMANENT_KINDS: frozenset[_Kind] = frozenset({"outcome", "caller_id", "document", "request", "missing"})


def describe_code(code: int | None) -> str | None:
    """iFax's numeric code in plain words, or ``None`` for a code the table does not have."""
    if code is None:
        return None
    entry = _CODES.get(code)
    return entry[0] if entry else None


# -- fax statuses ---------------------------------------------------------------------------------------------

_DELIVERED = frozenset({"delivered"})
_IN_PROGRESS = frozenset({"sending", "processing", "in_progress", "inprogress", "pending", "processed"})
_QUEUED = frozenset({"queued", "scheduled", "pre-processing", "preprocessing", "waiting"})
_FAILED = frozenset({"failed", "failed_chargeable", "blocked", "error"})
_CANCELLED = frozenset({"canceled", "cancelled", "partially_cancelled", "partially_canceled"})

_INBOUND_DIRECTIONS = frozenset({"inbound", "in", "ib", "received", "receive", "incoming"})
_OUTBOUND_DIRECTIONS = frozenset({"outbound", "out", "ob", "sent", "send", "outgoing"})


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
    return None


def _succeeded(payload: Mapping[str, Any]) -> bool:
    # iFax clients test `Number(status) === 1`: 1, 1.0, "1" and true all count, nothing else does.
    value = payload.get("status")
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    if isinstance(value, str):
        try:
            return float(value.strip()) == 1
        except ValueError:
            return False
    return False


def _envelope_code(payload: Mapping[str, Any]) -> int | None:
    for key in ("code", "errorCode", "error_code"):
        code = _as_int(payload.get(key))
        if code is not None:
            return code
    data = payload.get("data")
    if isinstance(data, Mapping):
        return _as_int(data.get("code"))
    return None


def _envelope_message(payload: Mapping[str, Any]) -> str:
    message = payload.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip()
    data = payload.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("message"), str):
        return str(data["message"]).strip()
    return ""


def _failure_reason(code: int | None, message: str, status: str) -> str:
    known = describe_code(code)
    if known is not None and code not in (0, -3, -11):
        return known
    if status == "blocked":
        return "iFax blocked the fax" + (f" ({message})" if message else "")
    if message:
        return f"the fax failed; iFax says: {message}"
    return "the fax failed and iFax gave no reason"


def map_fax_object(fax: Mapping[str, Any], *, raw: Mapping[str, Any] | None = None) -> StatusReport:
    """Map an iFax Fax Object (from ``fax-status`` or the sent-fax webhook) into a ``StatusReport``."""
    status = str(fax.get("faxStatus") or fax.get("status") or "").strip().lower()
    code = _as_int(fax.get("code"))
    message = str(fax.get("message") or "").strip()
    pages = _as_int(fax.get("faxTransferredPages"))
    own_code = str(code) if code is not None else (status or None)
    kept = dict(raw if raw is not None else fax)
    if not status:
        # Some notifications carry only `success` and `code`; trust them only when both agree.
        success = _as_bool(fax.get("success"))
        if success is True and code == 0:
            status = "delivered"
        elif success is False and code is not None and code > 0:
            status = "failed"
    if status in _DELIVERED:
        return StatusReport(status=FaxStatus.DELIVERED, code=own_code, pages_sent=pages, raw=kept)
    if status in _QUEUED or (status in _IN_PROGRESS and code == -11):
        return StatusReport(status=FaxStatus.QUEUED, code=own_code, pages_sent=pages, raw=kept)
    if status in _IN_PROGRESS:
        return StatusReport(status=FaxStatus.SENDING, code=own_code, pages_sent=pages, raw=kept)
    if status in _FAILED:
        return StatusReport(
            status=FaxStatus.FAILED,
            reason=_failure_reason(code, message, status),
            code=own_code,
            pages_sent=pages,
            raw=kept,
        )
    if status in _CANCELLED:
        reason = "the fax was cancelled before it was completely sent"
        if status.startswith("partially"):
            reason = "the fax was cancelled part-way; some pages may have been received"
        return StatusReport(status=FaxStatus.CANCELLED, reason=reason, code=own_code, pages_sent=pages, raw=kept)
    # An outcome iFax did not document: reported as unknown, so that the worker keeps asking instead of
    # telling the sender something that may be wrong.
    shown = status or "none"
    return StatusReport(
        status=FaxStatus.UNKNOWN,
        reason=f"iFax reported the status {shown!r}, which faxbridge does not know"
        + (f" ({message})" if message else ""),
        code=own_code,
        pages_sent=pages,
        raw=kept,
    )


# -- settings -------------------------------------------------------------------------------------------------


class IFaxSettings(ProviderSettings):
    """``[providers.NAME]`` with ``type = "ifax"``. See ``config/provider-ifax.toml`` for every key."""

    base_url: str = DEFAULT_BASE_URL
    access_token: SecretStr | None = None
    """The API key. Prefer ``access_token_file``, or the environment (``FAXBRIDGE_PROVIDERS__NAME__ACCESS_TOKEN``)."""
    access_token_file: Path | None = None
    """A file holding the API key (read at each request, so a new key needs no restart)."""
    timeouts: HttpTimeouts = HttpTimeouts()
    fax_quality: Literal["Low", "Standard", "HD"] = "Standard"
    send_caller_id: bool = True
    """Pass ``OutboundFax.caller_id`` as ``callerId`` (it must be verified in the iFax dashboard)."""
    send_header: bool = True
    """Pass ``OutboundFax.header`` as ``from_name`` (the cover-page sender name)."""
    template_id: str | None = None
    """An iFax cover-page template (``templateId``); with it, the fax's subject is the cover's subject."""
    poll_inbound: bool = True
    """List received faxes with ``inbound/fax-list-all``; off when they come only by webhook, or not at all."""
    inbound_lookback_days: int = Field(default=3, ge=1, le=90)
    inbound_list_pages: int = Field(default=20, ge=1, le=1000)
    """At most this many pages of ``fax-list-all`` per poll."""
    inbound_dir: Path | None = None
    """Where received faxes are tracked (acknowledged ones; PDFs that came with webhooks)."""
    number_region: str = "US"
    """How to read numbers iFax reports without a country code (iFax serves mostly US and Canada)."""
    webhook_username: str | None = None
    webhook_password: SecretStr | None = None
    webhook_password_file: Path | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"(?i)^https?://[^/\s]+", value):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.rstrip("/")

    @field_validator("number_region")
    @classmethod
    def _region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"not a region code such as US or CA: {value!r}")
        return region

    @model_validator(mode="after")
    def _secrets(self) -> IFaxSettings:
        if (self.access_token is None) == (self.access_token_file is None):
            raise ValueError(
                "set exactly one of access_token_file or access_token (the latter only through the environment, "
                "FAXBRIDGE_PROVIDERS__<NAME>__ACCESS_TOKEN)"
            )
        if self.access_token is not None and not self.access_token.get_secret_value().strip():
            raise ValueError("access_token is empty")
        has_password = self.webhook_password is not None or self.webhook_password_file is not None
        if self.webhook_password is not None and self.webhook_password_file is not None:
            raise ValueError("set only one of webhook_password_file or webhook_password")
        if (self.webhook_username is None) != (not has_password):
            raise ValueError("webhook_username and a webhook password (webhook_password_file) go together")
        return self


# -- helpers --------------------------------------------------------------------------------------------------


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _snippet(response: httpx.Response) -> str:
    text = response.content[:160].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "an empty body"


def _is_document(data: bytes) -> bool:
    return data.startswith((b"%PDF", b"II*\x00", b"MM\x00*"))


def _decode_base64(text: str) -> bytes | None:
    cleaned = re.sub(r"^data:[^,]*;base64,", "", text.strip(), flags=re.IGNORECASE)
    cleaned = re.sub(r"\s+", "", cleaned)
    if not cleaned:
        return None
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            return None


_DOCUMENT_KEYS = ("fileData", "data", "file", "pdf", "base64", "content", "document", "fax")
_URL_KEYS = ("url", "fileUrl", "downloadUrl", "link", "file_url", "download_url")


def _find_document(value: Any, depth: int = 0) -> bytes | str | None:
    """The fax in a ``fax-download`` answer: its bytes, or a URL to fetch them from."""
    if depth > 4:
        return None
    if isinstance(value, str):
        text = value.strip()
        if re.match(r"(?i)^https?://", text):
            return text
        decoded = _decode_base64(text)
        return decoded if decoded is not None and _is_document(decoded) else None
    if isinstance(value, Mapping):
        for key in _DOCUMENT_KEYS:
            if key in value:
                found = _find_document(value[key], depth + 1)
                if found is not None:
                    return found
        for key in _URL_KEYS:
            candidate = value.get(key)
            if isinstance(candidate, str) and re.match(r"(?i)^https?://", candidate.strip()):
                return candidate.strip()
        return None
    if isinstance(value, list):
        for item in value:
            found = _find_document(item, depth + 1)
            if found is not None:
                return found
    return None


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    number: float | None = None
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value)):
        number = float(value)
    if number is not None:
        if number <= 0:
            return None
        if number > 1e11:  # milliseconds
            number /= 1000
        return datetime.fromtimestamp(number, UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        for pattern in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y"):
            try:
                when = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
        if when is None:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return None
    # iFax documents Unix times; a text time without a zone is taken as UTC, its API's zone for send_at.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _ifax_date(day: date) -> str:
    return day.strftime("%m/%d/%Y")


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:120] or "fax"


def _unwrap(payload: Any) -> list[Mapping[str, Any]]:
    """The Fax Objects in a webhook body: plain, wrapped in ``data`` (or the envelope), or a list."""
    if isinstance(payload, list):
        found: list[Mapping[str, Any]] = []
        for item in payload:
            found.extend(_unwrap(item))
        return found
    if not isinstance(payload, Mapping):
        return []
    fax_keys = ("jobId", "transactionId", "faxStatus", "fromNumber", "toNumber")
    if any(key in payload for key in fax_keys):
        return [payload]
    for key in ("data", "fax", "payload"):
        inner = payload.get(key)
        if isinstance(inner, str):
            try:
                inner = json.loads(inner)
            except ValueError:
                continue
        if isinstance(inner, Mapping | list):
            found = _unwrap(inner)
            if found:
                return found
    return []


def _form_fields(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str | None, bytes]]]:
    """The text fields and the file parts of a ``multipart/form-data`` body."""
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ValueError("the multipart body has no parts (wrong boundary?)")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = part.get_param("name", header="content-disposition")
        name = email.utils.collapse_rfc2231_value(name) if name else ""
        filename = part.get_filename()
        content = part.get_payload(decode=True)
        data = content if isinstance(content, bytes) else b""
        if filename is not None or (part.get_content_type() not in ("text/plain",) and name == "filename"):
            files[str(name)] = (filename, data)
        else:
            fields[str(name)] = data.decode(part.get_content_charset() or "utf-8", "replace")
    return fields, files


# -- the adapter ----------------------------------------------------------------------------------------------


class IFaxProvider(FaxProvider):
    """iFax's REST API: send, status, inbound list/download (custody kept locally) and webhooks."""

    type_name: ClassVar[str] = "ifax"
    service_name: ClassVar[str] = "iFax"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.STATUS_POLL,
            Capability.INBOUND_POLL,
            Capability.INBOUND_DOWNLOAD,
            Capability.INBOUND_ACK,
            Capability.WEBHOOK,
        }
    )
    settings_model: ClassVar[type[ProviderSettings]] = IFaxSettings

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, IFaxSettings)
        self._settings = settings
        self._client = _http.make_client(
            context,
            base_url=settings.base_url,
            timeouts=settings.timeouts,
            headers={"Accept": "application/json"},
        )
        self._api_host = httpx.URL(settings.base_url).host
        self._token_file = context.path(settings.access_token_file) if settings.access_token_file else None
        self._webhook_password_file = (
            context.path(settings.webhook_password_file) if settings.webhook_password_file else None
        )
        self.inbound_dir = context.path(settings.inbound_dir or Path(f"ifax-{_safe_name(context.name)}"))
        self._spool = self.inbound_dir / "received"
        self._ledger = AcknowledgedLedger(
            self.inbound_dir / "acknowledged.json",
            provider=context.name,
            window=f"{settings.inbound_lookback_days} days",
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- requests ---------------------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._settings.access_token is not None:
            return self._settings.access_token.get_secret_value().strip()
        assert self._token_file is not None
        try:
            text = await asyncio.to_thread(self._token_file.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            # A configuration mistake, not a property of this fax: temporary, so faxes wait for the fix.
            raise ProviderTemporaryError(
                f"{self.name}: cannot read the iFax access token from {self._token_file}: {reason}; "
                "fix access_token_file (faxes wait and are retried)",
                provider=self.name,
            ) from exc
        token = text.strip()
        if not token:
            raise ProviderTemporaryError(
                f"{self.name}: the iFax access token file {self._token_file} is empty; put the API key from the "
                "iFax dashboard in it (faxes wait and are retried)",
                provider=self.name,
            )
        return token

    async def _post(self, operation: str, body: Mapping[str, Any], *, sending: bool = False) -> httpx.Response:
        token = await self._access_token()
        return await _http.request(
            self._client,
            "POST",
            f"customer/{operation}",
            provider=self.name,
            sending=sending,
            json=dict(body),
            headers={"accessToken": token},
        )

    def _error(self, payload: Mapping[str, Any], *, operation: str, sending: bool) -> ProviderError:
        """Classify an envelope whose ``status`` is not 1."""
        code = _envelope_code(payload)
        message = _envelope_message(payload)
        entry = _CODES.get(code) if code is not None else None
        said = f"iFax code {code}" if code is not None else "no iFax code"
        if message:
            said += f": {message}"
        error_code = str(code) if code is not None else None
        if entry is None or entry[1] in ("progress", "ok"):
            if code is None and re.search(r"(?i)access ?token|api ?key|unauthori[sz]ed|unauthenticated", message):
                return AuthenticationFailed(
                    f"{self.name}: iFax refused the access token ({said}); check access_token_file "
                    "(or FAXBRIDGE_PROVIDERS__<NAME>__ACCESS_TOKEN)",
                    provider=self.name,
                )
            if sending:
                return ProviderTemporaryError(
                    f"{self.name}: iFax answered fax-send with an error faxbridge does not know ({said}); as it "
                    "cannot tell whether iFax kept the fax, the job is checked before anything is sent again",
                    provider=self.name,
                    code=error_code,
                    maybe_accepted=True,
                )
            return ProviderTemporaryError(
                f"{self.name}: iFax answered {operation} with an error faxbridge does not know ({said})",
                provider=self.name,
                code=error_code,
            )
        reason, kind = entry
        if kind == "number":
            return InvalidNumber(f"{self.name}: {reason} ({said})", provider=self.name, code=error_code)
        if kind == "auth":
            return AuthenticationFailed(
                f"{self.name}: {reason} ({said}); check the API key in access_token_file and the account in the "
                "iFax dashboard",
                provider=self.name,
                code=error_code,
            )
        if kind == "server":
            return ProviderTemporaryError(
                f"{self.name}: {reason} ({said}); "
                + (
                    "iFax may have kept the fax, so the job is checked before anything is sent again"
                    if sending
                    else "it is tried again later"
                ),
                provider=self.name,
                code=error_code,
                maybe_accepted=sending,
            )
        if kind == "account":
            return ProviderTemporaryError(
                f"{self.name}: {reason} ({said}); top the account up or raise its limit in the iFax dashboard, "
                "the fax is tried again until then",
                provider=self.name,
                code=error_code,
            )
        if kind == "caller_id":
            return ProviderPermanentError(
                f"{self.name}: {reason} ({said}); verify the caller ID in the iFax dashboard, or set "
                "send_caller_id = false in [providers.NAME]",
                provider=self.name,
                code=error_code,
            )
        assert kind in _PERMANENT_KINDS
        return ProviderPermanentError(f"{self.name}: {reason} ({said})", provider=self.name, code=error_code)

    def _checked(self, response: httpx.Response, *, operation: str, sending: bool = False) -> dict[str, Any]:
        """The envelope of a successful answer; every other answer raises a classified error."""
        payload = _json_body(response)
        envelope = payload if isinstance(payload, dict) else None
        if not response.is_success:
            code = _envelope_code(envelope) if envelope is not None else None
            status = response.status_code
            classified_by_http = status in (401, 403, 408, 429) or status >= 500
            if envelope is not None and code in _CODES and not classified_by_http:
                raise self._error(envelope, operation=operation, sending=sending)
            reason = None
            if envelope is not None:
                message = _envelope_message(envelope)
                plain = describe_code(code)
                reason = "; ".join(part for part in (plain, message) if part) or None
            _http.check_response(
                response,
                provider=self.name,
                sending=sending,
                reason=reason or f"HTTP {status} to {operation}: {_snippet(response)}",
                code=str(code) if code is not None else None,
            )
        if envelope is None:
            raise MalformedResponse(
                f"{self.name}: iFax answered {operation} with something that is not its JSON envelope "
                f"({_snippet(response)})",
                provider=self.name,
                maybe_accepted=sending,
            )
        if not _succeeded(envelope):
            raise self._error(envelope, operation=operation, sending=sending)
        return envelope

    # -- sending ----------------------------------------------------------------------------------------------

    def _send_body(self, fax: OutboundFax) -> dict[str, Any]:
        settings = self._settings
        body: dict[str, Any] = {
            "faxNumber": fax.to,
            "faxQuality": settings.fax_quality,
            "faxData": [
                {
                    # Our job id names the file: the one trace of it a person can search for at iFax.
                    "fileName": f"{_safe_name(fax.job_id)}.pdf",
                    "fileData": base64.b64encode(fax.document).decode("ascii"),
                }
            ],
        }
        if settings.send_caller_id and fax.caller_id:
            body["callerId"] = fax.caller_id
        if settings.send_header and fax.header:
            body["from_name"] = fax.header
        if settings.template_id:
            body["templateId"] = settings.template_id
            if fax.subject:
                body["subject"] = fax.subject
        return body

    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Hand the fax to ``fax-send``; the receipt's ``provider_fax_id`` is iFax's ``jobId``."""
        response = await self._post("fax-send", self._send_body(fax), sending=True)
        envelope = self._checked(response, operation="fax-send", sending=True)
        data = envelope.get("data")
        job = None
        if isinstance(data, Mapping):
            job = data.get("jobId", data.get("id"))
        elif isinstance(data, int | str) and not isinstance(data, bool):
            job = data
        if job is None or str(job).strip() == "" or isinstance(job, bool):
            raise MalformedResponse(
                f"{self.name}: iFax accepted the fax but its answer has no jobId ({_snippet(response)}); the job is "
                "checked before anything is sent again",
                provider=self.name,
                maybe_accepted=True,
            )
        return SendReceipt(
            provider_fax_id=str(job).strip(),
            client_reference=fax.job_id,
            accepted_at=datetime.now(UTC),
            raw=envelope,
        )

    async def status(self, receipt: SendReceipt) -> StatusReport:
        """Ask ``fax-status`` and map the Fax Object."""
        job = receipt.provider_fax_id
        if not job:
            raise ProviderPermanentError(
                f"{self.name}: job {receipt.client_reference} has no iFax jobId, so its status cannot be asked",
                provider=self.name,
            )
        response = await self._post("fax-status", {"jobId": _job_value(job)})
        envelope = self._checked(response, operation="fax-status")
        data = envelope.get("data")
        if isinstance(data, list) and data and isinstance(data[0], Mapping):
            data = data[0]
        if not isinstance(data, Mapping):
            raise MalformedResponse(
                f"{self.name}: iFax's fax-status answer for jobId {job} has no fax object ({_snippet(response)})",
                provider=self.name,
            )
        return map_fax_object(data, raw=envelope)

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """iFax cannot tell: it has no client reference and no lookup by anything we chose."""
        raise SubmissionUnknown(
            f"{self.name}: iFax has no client reference, so whether the interrupted send of job {fax.job_id} "
            f"reached it cannot be checked; look for a fax to {fax.to} with the file {_safe_name(fax.job_id)}.pdf "
            "in the iFax dashboard before sending it again",
            provider=self.name,
        )

    # -- inbound ----------------------------------------------------------------------------------------------

    def _number(self, value: Any) -> str | None:
        if value is None:
            return None
        text = str(value).strip()
        if not text or text.lower() in ("anonymous", "unknown", "restricted", "private", "null", "none"):
            return None
        try:
            parsed = phonenumbers.parse(text, self._settings.number_region)
        except phonenumbers.NumberParseException:
            return text
        if not phonenumbers.is_possible_number(parsed):
            return text
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    def _inbound_ref(self, fax: Mapping[str, Any], *, fallback_id: str | None = None) -> InboundRef | None:
        job = fax.get("jobId", fax.get("job_id", fax.get("faxId")))
        transaction = fax.get("transactionId", fax.get("transaction_id"))
        fax_id = str(job).strip() if job not in (None, "") else None
        fax_id = fax_id or (str(transaction).strip() if transaction not in (None, "") else None) or fallback_id
        if not fax_id:
            return None
        received = None
        for key in ("receivedTime", "faxCallEnd", "faxCallStart", "receivedAt", "createdAt", "created_at", "date"):
            received = _parse_time(fax.get(key))
            if received is not None:
                break
        pages = _as_int(fax.get("faxReceivedPages"))
        if pages is None:
            pages = _as_int(fax.get("faxTotalPages", fax.get("pages")))
        return InboundRef(
            provider=self.name,
            provider_fax_id=fax_id,
            caller=self._number(fax.get("fromNumber", fax.get("from"))),
            called=self._number(fax.get("toNumber", fax.get("to"))),
            # Without a time from iFax, the time we learnt of the fax is the best there is.
            received_at=received or datetime.now(UTC),
            pages=pages,
            token=str(transaction).strip() if transaction not in (None, "") else None,
        )

    @staticmethod
    def _nothing_received(fax: Mapping[str, Any]) -> bool:
        # A reception that failed before any page arrived has no document to deliver; one that failed part-way
        # still has pages and is delivered, so that nothing that arrived is dropped.
        status = str(fax.get("faxStatus") or "").strip().lower()
        failed = status in _FAILED or _as_bool(fax.get("success")) is False
        pages = _as_int(fax.get("faxReceivedPages"))
        return failed and pages == 0

    def _spooled(self) -> list[InboundRef]:
        refs: list[InboundRef] = []
        if not self._spool.is_dir():
            return refs
        for meta_path in sorted(self._spool.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(meta, dict) or not (self._spool / f"{meta_path.stem}.pdf").is_file():
                continue
            ref = self._inbound_ref(meta, fallback_id=meta_path.stem)
            if ref is not None:
                refs.append(ref)
        return refs

    async def _list_received(self, *, until_id: str | None = None) -> list[Mapping[str, Any]]:
        today = datetime.now(UTC).date()
        # endDate is tomorrow: iFax's own day boundary (its time zone is not documented) may lie ahead of ours.
        body: dict[str, Any] = {
            "startDate": _ifax_date(today - timedelta(days=self._settings.inbound_lookback_days)),
            "endDate": _ifax_date(today + timedelta(days=1)),
            "sortBy": "newest",
        }
        rows: list[Mapping[str, Any]] = []
        cursor: str | None = None
        for _ in range(self._settings.inbound_list_pages):
            request = dict(body, lastFaxId=cursor) if cursor else body
            response = await self._post("inbound/fax-list-all", request)
            envelope = self._checked(response, operation="inbound/fax-list-all")
            data = envelope.get("data")
            if data is None:
                data = []
            if isinstance(data, Mapping):
                data = next((v for k, v in data.items() if k in ("data", "faxes", "list", "rows")), None)
            if not isinstance(data, list):
                raise MalformedResponse(
                    f"{self.name}: iFax's fax-list-all answer has no list of faxes ({_snippet(response)})",
                    provider=self.name,
                )
            page = [row for row in data if isinstance(row, Mapping)]
            if not page:
                break
            rows.extend(page)
            if until_id is not None and any(str(row.get("jobId")) == until_id for row in page):
                break
            last = page[-1].get("jobId", page[-1].get("job_id"))
            if last is None or str(last) == cursor:
                break
            cursor = str(last)
        return rows

    async def poll_incoming(self) -> list[InboundRef]:
        """Received faxes not acknowledged yet: those that came with a webhook, then iFax's list."""
        acknowledged = await self._ledger.entries()
        found: dict[str, InboundRef] = {}
        for ref in await asyncio.to_thread(self._spooled):
            if ref.provider_fax_id not in acknowledged:
                found[ref.provider_fax_id] = ref
        if self._settings.poll_inbound:
            for row in await self._list_received():
                if self._nothing_received(row):
                    continue
                listed = self._inbound_ref(row)
                if listed is None or listed.provider_fax_id in acknowledged:
                    continue
                found.setdefault(listed.provider_fax_id, listed)
        return sorted(found.values(), key=lambda ref: (ref.received_at, ref.provider_fax_id))

    async def download(self, ref: InboundRef) -> bytes:
        """The received fax: kept from its webhook, else fetched with ``inbound/fax-download``."""
        spooled = self._spool / f"{_safe_name(ref.provider_fax_id)}.pdf"
        try:
            return await asyncio.to_thread(spooled.read_bytes)
        except FileNotFoundError:
            pass
        transaction = ref.token
        if not transaction:
            # A reference from a webhook without transactionId: iFax's list has it.
            for row in await self._list_received(until_id=ref.provider_fax_id):
                if str(row.get("jobId")) == ref.provider_fax_id and row.get("transactionId") not in (None, ""):
                    transaction = str(row["transactionId"])
                    break
        if not transaction:
            raise ProviderPermanentError(
                f"{self.name}: received fax {ref.provider_fax_id} has no transactionId and is not in iFax's list of "
                f"the last {self._settings.inbound_lookback_days} days, so it cannot be downloaded; fetch it from "
                "the iFax dashboard",
                provider=self.name,
            )
        response = await self._post(
            "inbound/fax-download", {"jobId": ref.provider_fax_id, "transactionId": str(transaction)}
        )
        content_type = response.headers.get("content-type", "").lower()
        if response.is_success and not content_type.startswith("application/json") and _is_document(response.content):
            return response.content
        envelope = self._checked(response, operation="inbound/fax-download")
        found = _find_document(envelope.get("data"))
        if found is None:
            found = _find_document({k: v for k, v in envelope.items() if k not in ("status", "message", "code")})
        if isinstance(found, str):
            found = await self._fetch(found, ref)
        if found is None:
            shape = (
                sorted(envelope["data"]) if isinstance(envelope.get("data"), Mapping) else type(envelope.get("data"))
            )
            raise MalformedResponse(
                f"{self.name}: iFax's fax-download answer for fax {ref.provider_fax_id} holds no PDF or TIFF "
                f"(data: {shape}); it is tried again later",
                provider=self.name,
            )
        return found

    async def _fetch(self, url: str, ref: InboundRef) -> bytes:
        # The access token goes only to iFax's own host, never to a storage host named in an answer.
        headers = {"accessToken": await self._access_token()} if httpx.URL(url).host == self._api_host else {}
        response = await _http.request(self._client, "GET", url, provider=self.name, headers=headers)
        _http.check_response(response, provider=self.name, reason=f"HTTP {response.status_code} from {url}")
        if not _is_document(response.content):
            raise MalformedResponse(
                f"{self.name}: the file iFax named for fax {ref.provider_fax_id} is not a PDF or TIFF "
                f"({_snippet(response)})",
                provider=self.name,
            )
        return response.content

    async def acknowledge(self, ref: InboundRef) -> None:
        """Record the fax as delivered here (iFax has no such call): it is no longer listed, also after a restart."""
        now = datetime.now(UTC)
        # A fax acknowledged before the listing window can no longer come back: forget it then.
        await self._ledger.record(
            ref.provider_fax_id, now, forget_before=now - timedelta(days=self._settings.inbound_lookback_days + 2)
        )
        try:
            await asyncio.to_thread(self._unspool, ref.provider_fax_id)
        except OSError as exc:
            # The ledger already hides the fax; a stale spool file only costs disk space until removed.
            logging.getLogger(__name__).warning(
                "%s: cannot remove the spooled copy of fax %s: %s", self.name, ref.provider_fax_id, exc
            )

    def _unspool(self, fax_id: str) -> None:
        for suffix in (".pdf", ".json"):
            (self._spool / f"{_safe_name(fax_id)}{suffix}").unlink(missing_ok=True)

    # -- webhooks ---------------------------------------------------------------------------------------------

    def _check_webhook_auth(self, headers: Mapping[str, str]) -> None:
        settings = self._settings
        if settings.webhook_username is None:
            return
        if settings.webhook_password is not None:
            password = settings.webhook_password.get_secret_value()
        else:
            assert self._webhook_password_file is not None
            try:
                password = self._webhook_password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProviderTemporaryError(
                    f"{self.name}: cannot read the webhook password from {self._webhook_password_file}: {exc}; "
                    "fix webhook_password_file (iFax retries its webhooks)",
                    provider=self.name,
                ) from exc
        expected = base64.b64encode(f"{settings.webhook_username}:{password}".encode()).decode("ascii")
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise AuthenticationFailed(
                f"{self.name}: a webhook request without the Basic credentials set in the iFax dashboard was "
                "refused; check webhook_username and the password on both sides",
                provider=self.name,
            )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[StatusUpdate | InboundRef]:
        """Read iFax's sent-fax (Fax Object) or received-fax (multipart with ``filename``, or JSON) webhook."""
        lowered = {key.lower(): value for key, value in headers.items()}
        self._check_webhook_auth(lowered)
        content_type = lowered.get("content-type", "")
        document: bytes | None = None
        payload: Any
        try:
            if content_type.lower().startswith("multipart/"):
                fields, files = _form_fields(content_type, body)
                chosen = files.get("filename") or next((item for item in files.values() if _is_document(item[1])), None)
                if chosen is not None and chosen[1]:
                    document = chosen[1]
                payload = fields
            elif content_type.lower().startswith("application/x-www-form-urlencoded"):
                payload = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            else:
                payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProviderPermanentError(
                f"{self.name}: a webhook request that is not an iFax notification ({content_type or 'no type'}: {exc})",
                provider=self.name,
            ) from exc
        if document is not None and not _is_document(document):
            raise ProviderPermanentError(
                f"{self.name}: the received-fax webhook's file is not a PDF or TIFF", provider=self.name
            )
        faxes = _unwrap(payload)
        if not faxes and document is not None:
            faxes = [{}]
        if not faxes:
            raise ProviderPermanentError(
                f"{self.name}: a webhook request without an iFax fax object (keys: "
                f"{sorted(payload) if isinstance(payload, Mapping) else type(payload).__name__})",
                provider=self.name,
            )
        results: list[StatusUpdate | InboundRef] = []
        for fax in faxes:
            direction = self._direction(fax, has_file=document is not None)
            if direction == "outbound":
                job = fax.get("jobId")
                results.append(
                    StatusUpdate(
                        provider_fax_id=str(job).strip() if job not in (None, "") else None,
                        client_reference=None,
                        report=map_fax_object(fax),
                    )
                )
                continue
            if self._nothing_received(fax) and document is None:
                continue
            fallback = "sha256-" + hashlib.sha256(document).hexdigest()[:24] if document is not None else None
            ref = self._inbound_ref(fax, fallback_id=fallback)
            if ref is None:
                raise ProviderPermanentError(
                    f"{self.name}: a received-fax webhook without jobId or transactionId", provider=self.name
                )
            if document is not None:
                self._keep(ref, fax, document)
            results.append(ref)
        return results

    def _direction(self, fax: Mapping[str, Any], *, has_file: bool) -> Literal["inbound", "outbound"]:
        if has_file:
            return "inbound"
        direction = str(fax.get("direction") or fax.get("faxType") or "").strip().lower()
        if direction in _INBOUND_DIRECTIONS:
            return "inbound"
        if direction in _OUTBOUND_DIRECTIONS:
            return "outbound"
        status = str(fax.get("faxStatus") or "").strip().lower()
        if "faxReceivedPages" in fax or status == "received":
            return "inbound"
        if "faxTransferredPages" in fax or status in _DELIVERED | _IN_PROGRESS | _FAILED | _CANCELLED:
            return "outbound"
        raise ProviderPermanentError(
            f"{self.name}: cannot tell whether this iFax webhook is about a sent or a received fax "
            f"(direction {direction or 'missing'}, faxStatus {status or 'missing'})",
            provider=self.name,
        )

    def _keep(self, ref: InboundRef, fax: Mapping[str, Any], document: bytes) -> None:
        """Store a PDF that came with its webhook until it is acknowledged."""
        name = _safe_name(ref.provider_fax_id)
        meta = {
            "jobId": ref.provider_fax_id,
            "transactionId": ref.token,
            "fromNumber": ref.caller,
            "toNumber": ref.called,
            "receivedTime": ref.received_at.isoformat(),
            "faxReceivedPages": ref.pages,
            "webhook": {k: v for k, v in fax.items() if isinstance(v, str | int | float | bool) or v is None},
        }
        try:
            self._spool.mkdir(parents=True, exist_ok=True)
            write_atomically(self._spool / f"{name}.pdf", document, sync_dir=True)
            # The sidecar last: a fax is listed only once its PDF is complete.
            write_atomically(self._spool / f"{name}.json", json.dumps(meta, indent=1).encode() + b"\n", sync_dir=True)
        except OSError as exc:
            raise ProviderTemporaryError(
                f"{self.name}: cannot store received fax {ref.provider_fax_id} in {self._spool}: "
                f"{exc.strerror or exc}; answer iFax with an error so that it sends the webhook again",
                provider=self.name,
            ) from exc


def _job_value(job: str) -> int | str:
    # The docs' tables type jobId as Integer for fax-status; a non-numeric id is passed on as it is.
    return int(job) if re.fullmatch(r"\d{1,18}", job) else job
