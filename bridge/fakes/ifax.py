"""A fake of iFax's REST API (``https://api.ifaxapp.com/v1``), as documented in ``shared/docs/providers.md`` §2.

Every operation is ``POST /v1/customer/<operation>`` with ``Content-Type: application/json`` and the API key in
the ``accessToken`` header; every answer is the envelope ``{"status", "message", "data"}`` with ``status: 1``
on success and ``status: 0`` plus a numeric ``code`` from iFax's error table otherwise. Which HTTP status goes
with an error is not documented: the fake answers **200** by default (the quirk an adapter must handle) and
``error_http_status`` changes it. A missing or wrong key gets ``auth_http_status`` (401 by default) with
``{"status": 0, "code": -310, "message": "Active user not found for this request."}`` (code from the table; the
real answer to a bad key is not documented).

Operations:

``fax-send``              validates ``faxNumber`` (12020 missing, 120100 not E.164), ``callerId`` (120103 not
                          E.164, 120104 not in ``verified_caller_ids`` when that is given), ``faxQuality`` and
                          ``send_at`` (12009), ``faxData`` (-123 none, 120107 no file name, 120109 bad extension
                          or content, 120108 bad ``fileUrl``, -1063 over ``max_total_bytes``), credit (9040 when
                          ``credit_pages`` is exhausted) → ``{"data": {"jobId": <int>}}``
``fax-status``            ``{jobId}`` (number or numeric string; 12009 missing, 12021 unknown) → the Fax Object
``fax-cancel``            ``{jobId}`` (path guessed): ``canceled``/403, or -162 when finished, 9030 when cancelled
``fax-lists``             ``{}`` → every fax of the account (what integrations use as a credentials check)
``inbound/fax-list-all``  ``{startDate?, endDate? (MM/DD/YYYY), sortBy?: newest|oldest, lastFaxId?}`` → pages of
                          ``page_size`` received faxes; the cursor is the last row's ``jobId`` (12009 bad date,
                          -2040 start after end)
``inbound/fax-download``  ``{jobId, transactionId}`` (12009 missing, 12130 unknown, -311 wrong transaction) → the
                          PDF in the shape ``download_shape`` names: ``base64`` (docs: base64 in ``data``),
                          ``nested`` (``data.data``), ``url`` (``data.url``, served at ``GET /files/<token>``)
                          or ``raw`` (an ``application/pdf`` body)
other methods than POST   12010 "Invalid request method" (also a ``_method`` other than POST in the body)

A sent fax moves as the fake's clock advances (``state.advance(seconds)``; nothing sleeps): ``sending`` with
code -11 (pre-processing) for ``preprocess_seconds``, then ``sending`` with -3 until ``transmit_seconds`` after
the send, then its outcome. The outcome is chosen by the destination number's last four digits:

======== =================================================================
``0001`` ``failed``, 3931 "Busy" (the line was busy)
``0002`` ``failed``, 8021 "NO_ANSWER" (no fax machine answered)
``0003`` ``failed``, 3912 "UNALLOCATED_NUMBER" (not a valid fax number)
``0004`` ``failed``, 6021 "CALL_REJECTED"
``0005`` ``canceled``, 403 "Fax canceled."
other    ``delivered``, 0 "NORMAL_CLEARING"
======== =================================================================

``state.set_outcome(job_id, outcome)`` overrides it (a name above or a ``(faxStatus, code, message)`` tuple);
``state.finish(job_id, outcome)`` also lets the time pass.

Webhooks: when a sent fax finishes, the state records the sent-fax webhook iFax would post (the Fax Object as
JSON, plus ``transactionId``, ``direction``, ``success``, ``retryAttempt``); ``state.inject_inbound(pdf, caller,
called)`` records the received-fax webhook in the shape ``received_webhook`` names: ``multipart`` (docs: form
fields and the PDF in a file part named ``filename``) or ``json`` (the 2026 integrator's JSON without a file).
They are in ``state.webhooks`` (``WebhookCall``: URL, headers, body), with Basic credentials when
``webhook_auth=(user, password)``; ``sent_webhook(job_id, wrapped=True)`` and ``received_webhook(job_id, mode)``
build any variant on demand.

Control routes besides the common ones (``/_fake/faults``, ``/advance``, ``/rate-limit``, ``/requests``):
``POST /_fake/inbound`` ``{"pdf_base64", "caller", "called"}`` injects a received fax; ``POST /_fake/outcome``
``{"jobId", "outcome"}`` sets an outcome; ``GET /_fake/webhooks`` lists the recorded webhooks.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from pypdf import PdfReader
from pypdf.errors import PdfReadError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.fakes.base import FakeApp, FakeState, build, json_body

__all__ = ["IFaxFakeState", "ReceivedFax", "SentFax", "WebhookCall", "create_app"]

NAME = "ifax"
API_PREFIX = "/v1/customer"
DEFAULT_ACCESS_TOKEN = "test-ifax-access-token"
ACCOUNT_NUMBER = "+12025550100"
"""The fromNumber of faxes sent without a callerId."""

OUTCOMES: dict[str, tuple[str, int, str]] = {
    "delivered": ("delivered", 0, "NORMAL_CLEARING"),
    "busy": ("failed", 3931, "Busy"),
    "no_answer": ("failed", 8021, "NO_ANSWER"),
    "invalid_number": ("failed", 3912, "UNALLOCATED_NUMBER"),
    "rejected": ("failed", 6021, "CALL_REJECTED"),
    "cancelled": ("canceled", 403, "Fax canceled."),
}
NUMBER_RULES: dict[str, str] = {
    "0001": "busy",
    "0002": "no_answer",
    "0003": "invalid_number",
    "0004": "rejected",
    "0005": "cancelled",
}

_E164 = re.compile(r"\+?[1-9][0-9]{6,14}")
_EXTENSIONS = frozenset({"pdf", "doc", "docx", "jpg", "jpeg", "png", "gif", "tif", "tiff", "bmp", "txt"})
_PAGE_RANGE = re.compile(r"\d+(-\d+)?")
_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{4})")

Outcome = tuple[str, int, str]


@dataclass
class SentFax:
    """One fax taken by ``fax-send``."""

    job_id: int
    transaction_id: int
    to: str
    from_number: str
    caller_id: str | None
    from_name: str | None
    pages: int
    files: list[tuple[str, bytes]]
    request: dict[str, Any]
    """The request body without the file contents."""
    created: float
    created_epoch: float
    outcome: Outcome
    cancelled_at: float | None = None
    webhook_sent: bool = False


@dataclass
class ReceivedFax:
    """One fax received for the account (injected by a test)."""

    job_id: int
    transaction_id: int
    caller: str
    called: str
    pdf: bytes
    pages: int
    received_epoch: float
    download_token: str = field(default_factory=lambda: secrets.token_urlsafe(12))


@dataclass(frozen=True)
class WebhookCall:
    """A webhook request iFax would have sent."""

    kind: Literal["sent", "received"]
    url: str | None
    headers: dict[str, str]
    body: bytes


def _count_pages(data: bytes) -> int | None:
    if data.startswith(b"%PDF"):
        try:
            return len(PdfReader(io.BytesIO(data)).pages)
        except (PdfReadError, ValueError, KeyError, OSError):
            return None
    return 1


def _content_ok(extension: str, data: bytes) -> bool:
    if extension == "pdf":
        return data.startswith(b"%PDF")
    if extension in ("tif", "tiff"):
        return data.startswith((b"II*\x00", b"MM\x00*"))
    if extension in ("jpg", "jpeg"):
        return data.startswith(b"\xff\xd8")
    if extension == "png":
        return data.startswith(b"\x89PNG")
    return bool(data)


def _ifax_day(text: Any) -> date | None:
    match = _DATE.fullmatch(str(text)) if isinstance(text, str) else None
    if match is None:
        return None
    try:
        return date(int(match.group(3)), int(match.group(1)), int(match.group(2)))
    except ValueError:
        return None


class IFaxFakeState(FakeState):
    """The iFax account: sent faxes, received faxes, the webhooks iFax would have sent."""

    def __init__(
        self,
        *,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        error_http_status: int = 200,
        auth_http_status: int = 401,
        verified_caller_ids: set[str] | None = None,
        credit_pages: int | None = None,
        max_total_bytes: int = 20 * 1024 * 1024,
        preprocess_seconds: float = 2.0,
        transmit_seconds: float = 60.0,
        page_size: int = 20,
        download_shape: Literal["base64", "nested", "url", "raw"] = "base64",
        received_webhook: Literal["multipart", "json"] = "multipart",
        sent_webhook_url: str | None = "https://bridge.example/webhooks/ifax/sent",
        received_webhook_url: str | None = "https://bridge.example/webhooks/ifax/received",
        webhook_auth: tuple[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        self.access_token = access_token
        self.error_http_status = error_http_status
        self.auth_http_status = auth_http_status
        self.verified_caller_ids = verified_caller_ids
        self.credit_pages = credit_pages
        self.max_total_bytes = max_total_bytes
        self.preprocess_seconds = preprocess_seconds
        self.transmit_seconds = transmit_seconds
        self.page_size = page_size
        self.download_shape = download_shape
        self.received_webhook_mode = received_webhook
        self.sent_webhook_url = sent_webhook_url
        self.received_webhook_url = received_webhook_url
        self.webhook_auth = webhook_auth
        self.sent: dict[int, SentFax] = {}
        self.received: dict[int, ReceivedFax] = {}
        self.webhooks: list[WebhookCall] = []
        self._epoch_base = time.time() - self.now()
        self._next_job = 7_067_845
        self._next_transaction = 8_660_564
        self.control: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "inbound": self._control_inbound,
            "outcome": self._control_outcome,
            "webhooks": self._control_webhooks,
        }

    # -- time ----------------------------------------------------------------------------------------------

    def epoch(self) -> float:
        """The fake's wall clock (Unix time), moved by ``advance`` like ``now``."""
        return self._epoch_base + self.now()

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self.settle()

    def settle(self) -> None:
        """Record the webhooks of faxes that have finished by now."""
        for fax in self.sent.values():
            if not fax.webhook_sent and self.finished(fax):
                fax.webhook_sent = True
                self.webhooks.append(self.sent_webhook(fax.job_id))

    def new_ids(self) -> tuple[int, int]:
        self._next_job += 1
        self._next_transaction += 1
        return self._next_job, self._next_transaction

    # -- sent faxes ----------------------------------------------------------------------------------------

    def finished(self, fax: SentFax) -> bool:
        return fax.cancelled_at is not None or self.now() >= fax.created + self.transmit_seconds

    def fax_object(self, fax: SentFax) -> dict[str, Any]:
        """The documented Fax Object of a sent fax, as of now."""
        now = self.now()
        end_epoch: int | None = None
        if fax.cancelled_at is not None:
            status, code, message = "canceled", 403, "Fax canceled."
            transferred = 0
            end_epoch = int(self._epoch_base + fax.cancelled_at)
        elif now < fax.created + self.preprocess_seconds:
            status, code, message, transferred = "sending", -11, "Pre-processing", 0
        elif now < fax.created + self.transmit_seconds:
            status, code, message, transferred = "sending", -3, "Fax processed for sending", 0
        else:
            status, code, message = fax.outcome
            transferred = fax.pages if status == "delivered" else 0
            end_epoch = int(fax.created_epoch + self.transmit_seconds)
        return {
            "jobId": fax.job_id,
            "fromNumber": fax.from_number,
            "toNumber": fax.to,
            "faxCallLength": (end_epoch - int(fax.created_epoch)) if end_epoch else int(now - fax.created),
            "faxCallStart": int(fax.created_epoch),
            "faxCallEnd": end_epoch,
            "faxTotalPages": fax.pages,
            "faxTransferredPages": transferred,
            "faxStatus": status,
            "message": message,
            "code": code,
        }

    def find(self, job_id: int | str) -> SentFax:
        return self.sent[int(job_id)]

    def set_outcome(self, job_id: int | str, outcome: str | Outcome) -> None:
        """Choose how a sent fax ends: a name of ``OUTCOMES`` or ``(faxStatus, code, message)``."""
        self.find(job_id).outcome = OUTCOMES[outcome] if isinstance(outcome, str) else outcome

    def finish(self, job_id: int | str, outcome: str | Outcome | None = None) -> None:
        """Set the outcome (if given) and let the time pass until the fax is done."""
        fax = self.find(job_id)
        if outcome is not None:
            self.set_outcome(job_id, outcome)
        remaining = fax.created + self.transmit_seconds - self.now()
        self.advance(max(remaining, 0.0) + 1.0)

    def sent_webhook(self, job_id: int | str, *, wrapped: bool = False) -> WebhookCall:
        """The sent-fax webhook (the Fax Object, as integrators observed it); ``wrapped`` puts it in ``data``."""
        fax = self.find(job_id)
        body: dict[str, Any] = {
            **self.fax_object(fax),
            "transactionId": fax.transaction_id,
            "direction": "outbound",
            "success": self.fax_object(fax)["faxStatus"] == "delivered",
            "retryAttempt": 0,
        }
        payload: dict[str, Any] = {"data": body} if wrapped else body
        return WebhookCall("sent", self.sent_webhook_url, self._webhook_headers("application/json"), _json(payload))

    # -- received faxes ------------------------------------------------------------------------------------

    def inject_inbound(
        self, pdf: bytes, caller: str, called: str, *, pages: int | None = None, received_epoch: float | None = None
    ) -> ReceivedFax:
        """A fax arrives for the account: listed by ``fax-list-all`` and announced by a webhook."""
        job_id, transaction_id = self.new_ids()
        fax = ReceivedFax(
            job_id=job_id,
            transaction_id=transaction_id,
            caller=caller,
            called=called,
            pdf=pdf,
            pages=pages if pages is not None else (_count_pages(pdf) or 1),
            received_epoch=received_epoch if received_epoch is not None else self.epoch(),
        )
        self.received[job_id] = fax
        self.webhooks.append(self.received_webhook(job_id))
        return fax

    def received_object(self, fax: ReceivedFax) -> dict[str, Any]:
        """A received fax as the list and the JSON webhook show it."""
        start = int(fax.received_epoch) - 30 * fax.pages
        return {
            "jobId": fax.job_id,
            "transactionId": fax.transaction_id,
            "direction": "inbound",
            "fromNumber": fax.caller,
            "toNumber": fax.called,
            "faxCallLength": int(fax.received_epoch) - start,
            "faxCallStart": start,
            "faxCallEnd": int(fax.received_epoch),
            "faxTotalPages": fax.pages,
            "faxReceivedPages": fax.pages,
            "faxStatus": "received",
            "success": True,
            "code": 0,
            "message": "NORMAL_CLEARING",
        }

    def received_webhook(
        self, job_id: int | str, mode: Literal["multipart", "json"] | None = None, *, wrapped: bool = False
    ) -> WebhookCall:
        """The received-fax webhook: ``multipart`` (docs, PDF in part ``filename``) or ``json`` (no file)."""
        fax = self.received[int(job_id)]
        fields = self.received_object(fax)
        if (mode or self.received_webhook_mode) == "json":
            payload: dict[str, Any] = {"data": fields} if wrapped else fields
            headers = self._webhook_headers("application/json")
            return WebhookCall("received", self.received_webhook_url, headers, _json(payload))
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for key, value in fields.items():
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{text}\r\n'.encode())
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="filename"; filename="fax-{fax.job_id}.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n".encode()
            + fax.pdf
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        headers = self._webhook_headers(f"multipart/form-data; boundary={boundary}")
        return WebhookCall("received", self.received_webhook_url, headers, b"".join(parts))

    def _webhook_headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "User-Agent": "iFax-Webhook (fake)"}
        if self.webhook_auth is not None:
            user, password = self.webhook_auth
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return headers

    # -- control routes ------------------------------------------------------------------------------------

    async def _control_inbound(self, request: Request) -> Response:
        data = await request.json()
        try:
            pdf = base64.b64decode(str(data["pdf_base64"]), validate=True)
        except (KeyError, binascii.Error, ValueError):
            return JSONResponse({"error": "give pdf_base64, caller and called"}, status_code=400)
        fax = self.inject_inbound(pdf, str(data.get("caller", "+15550000000")), str(data.get("called", ACCOUNT_NUMBER)))
        return JSONResponse({"jobId": fax.job_id, "transactionId": fax.transaction_id})

    async def _control_outcome(self, request: Request) -> Response:
        data = await request.json()
        try:
            self.set_outcome(data["jobId"], str(data["outcome"]))
        except (KeyError, ValueError):
            return JSONResponse({"error": f"give jobId and an outcome of {sorted(OUTCOMES)}"}, status_code=400)
        return JSONResponse({"jobId": int(data["jobId"]), "outcome": data["outcome"]})

    async def _control_webhooks(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"kind": w.kind, "url": w.url, "headers": w.headers, "body_base64": base64.b64encode(w.body).decode()}
                for w in self.webhooks
            ]
        )


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class _Refusal(Exception):
    """An iFax application error: ``status: 0`` with a code from the table."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _job_id(body: Mapping[str, Any], key: str = "jobId") -> int:
    value = body.get(key)
    if isinstance(value, bool) or value is None:
        raise _Refusal(12009, f"Invalid parameter: {key} is required")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise _Refusal(12009, f"Invalid parameter: {key}")


Handler = Callable[[IFaxFakeState, dict[str, Any], Request], Response | dict[str, Any]]


def _send(state: IFaxFakeState, body: dict[str, Any], request: Request) -> dict[str, Any]:
    number = body.get("faxNumber")
    if not isinstance(number, str) or not number.strip():
        raise _Refusal(12020, "to_number not found in request data.")
    if not _E164.fullmatch(number.strip()):
        raise _Refusal(120100, "Invalid faxNumber")
    to = "+" + number.strip().lstrip("+")
    caller_id = body.get("callerId")
    if caller_id not in (None, ""):
        if not isinstance(caller_id, str) or not _E164.fullmatch(caller_id):
            raise _Refusal(120103, "Invalid caller ID")
        caller_id = "+" + caller_id.lstrip("+")
        if state.verified_caller_ids is not None and caller_id not in state.verified_caller_ids:
            raise _Refusal(120104, "Provided caller ID is not verified")
    else:
        caller_id = None
    if body.get("faxQuality", "Standard") not in ("Low", "Standard", "HD"):
        raise _Refusal(12009, "Invalid parameter: faxQuality must be Low, Standard or HD")
    send_at = body.get("send_at")
    if send_at is not None:
        try:
            datetime.fromisoformat(str(send_at))
        except ValueError:
            raise _Refusal(12009, "Invalid parameter: send_at must be a UTC date-time") from None
    for key in ("from_name", "to_name", "subject", "message", "templateId"):
        if key in body and not isinstance(body[key], str):
            raise _Refusal(12009, f"Invalid parameter: {key} must be a string")
    items = body.get("faxData")
    if not isinstance(items, list) or not items:
        raise _Refusal(-123, "No valid documents attached")
    files: list[tuple[str, bytes]] = []
    pages = 0
    total = 0
    for item in items:
        if not isinstance(item, dict):
            raise _Refusal(-123, "No valid documents attached")
        name = item.get("fileName")
        if not isinstance(name, str) or not name.strip():
            raise _Refusal(120107, "Invalid fileName")
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if extension not in _EXTENSIONS:
            raise _Refusal(120109, "Invalid file format")
        ranges = item.get("pages")
        if ranges is not None and (
            not isinstance(ranges, list) or not all(isinstance(r, str) and _PAGE_RANGE.fullmatch(r) for r in ranges)
        ):
            raise _Refusal(12009, "Invalid parameter: pages")
        if "fileData" in item:
            try:
                data = base64.b64decode(str(item["fileData"]), validate=True)
            except (binascii.Error, ValueError):
                raise _Refusal(120109, "Invalid file format") from None
            if not _content_ok(extension, data):
                raise _Refusal(120109, "Invalid file format")
            counted = _count_pages(data)
            if counted is None:
                raise _Refusal(120109, "Invalid file format")
            total += len(data)
            pages += counted
            files.append((name, data))
        elif "fileUrl" in item:
            url = item["fileUrl"]
            if not isinstance(url, str) or not re.match(r"(?i)^https?://[^/\s]+", url):
                raise _Refusal(120108, "Invalid fileUrl")
            pages += 1  # the fake does not fetch URLs
            files.append((name, b""))
        else:
            raise _Refusal(-123, "No valid documents attached")
    if total > state.max_total_bytes:
        raise _Refusal(-1063, "Total file size is too big")
    if state.credit_pages is not None:
        if pages > state.credit_pages:
            raise _Refusal(9040, "Insufficient funds to send fax and not able to auto recharge.")
        state.credit_pages -= pages
    job_id, transaction_id = state.new_ids()
    outcome = OUTCOMES[NUMBER_RULES.get(to[-4:], "delivered")]
    kept = {k: v for k, v in body.items() if k != "faxData"}
    kept["faxData"] = [{k: v for k, v in item.items() if k != "fileData"} for item in items]
    state.sent[job_id] = SentFax(
        job_id=job_id,
        transaction_id=transaction_id,
        to=to,
        from_number=caller_id or ACCOUNT_NUMBER,
        caller_id=caller_id,
        from_name=body.get("from_name"),
        pages=pages,
        files=files,
        request=kept,
        created=state.now(),
        created_epoch=state.epoch(),
        outcome=outcome,
    )
    return {"status": 1, "message": "Fax queued for sending", "data": {"jobId": job_id}}


def _status(state: IFaxFakeState, body: dict[str, Any], request: Request) -> dict[str, Any]:
    job_id = _job_id(body)
    if job_id not in state.sent:
        raise _Refusal(12021, "Fax with this id does not exist")
    return {"status": 1, "message": "Fax status response", "data": state.fax_object(state.sent[job_id])}


def _cancel(state: IFaxFakeState, body: dict[str, Any], request: Request) -> dict[str, Any]:
    job_id = _job_id(body)
    if job_id not in state.sent:
        raise _Refusal(12021, "Fax with this id does not exist")
    fax = state.sent[job_id]
    if fax.cancelled_at is not None:
        raise _Refusal(9030, "Fax is already canceled.")
    if state.finished(fax):
        raise _Refusal(-162, "Fax can not be cancel now.")
    fax.cancelled_at = state.now()
    state.settle()
    return {"status": 1, "message": "Fax canceled.", "data": {"jobId": job_id}}


def _lists(state: IFaxFakeState, body: dict[str, Any], request: Request) -> dict[str, Any]:
    rows = [{**state.fax_object(f), "direction": "outbound"} for f in state.sent.values()]
    rows += [state.received_object(f) for f in state.received.values()]
    return {"status": 1, "message": "Fax list response", "data": rows}


def _list_all(state: IFaxFakeState, body: dict[str, Any], request: Request) -> dict[str, Any]:
    start = end = None
    if body.get("startDate") not in (None, ""):
        start = _ifax_day(body["startDate"])
        if start is None:
            raise _Refusal(12009, "Invalid parameter: startDate must be MM/DD/YYYY")
    if body.get("endDate") not in (None, ""):
        end = _ifax_day(body["endDate"])
        if end is None:
            raise _Refusal(12009, "Invalid parameter: endDate must be MM/DD/YYYY")
    if start and end and start > end:
        raise _Refusal(-2040, "Invalid date range")
    order = body.get("sortBy", "newest")
    if order not in ("newest", "oldest"):
        raise _Refusal(12009, "Invalid parameter: sortBy")
    cursor = _job_id(body, "lastFaxId") if body.get("lastFaxId") not in (None, "") else None
    newest = order == "newest"
    faxes = sorted(state.received.values(), key=lambda f: f.job_id, reverse=newest)
    rows = []
    for fax in faxes:
        day = datetime.fromtimestamp(fax.received_epoch, UTC).date()
        if (start and day < start) or (end and day > end):
            continue
        if cursor is not None and (fax.job_id >= cursor if newest else fax.job_id <= cursor):
            continue
        rows.append(state.received_object(fax))
        if len(rows) >= state.page_size:
            break
    return {"status": 1, "message": "Fax list response", "data": rows}


def _download(state: IFaxFakeState, body: dict[str, Any], request: Request) -> Response | dict[str, Any]:
    if body.get("jobId") in (None, "") or body.get("transactionId") in (None, ""):
        raise _Refusal(12009, "Invalid parameter: jobId and transactionId are required")
    job_id = _job_id(body)
    transaction_id = _job_id(body, "transactionId")
    fax = state.received.get(job_id)
    if fax is None:
        raise _Refusal(12130, "Can not find Fax.")
    if fax.transaction_id != transaction_id:
        raise _Refusal(-311, "Transaction does not belong to requested user")
    encoded = base64.b64encode(fax.pdf).decode("ascii")
    shape = state.download_shape
    if shape == "raw":
        return Response(fax.pdf, media_type="application/pdf")
    if shape == "nested":
        data: Any = {"fileName": f"fax-{fax.job_id}.pdf", "data": encoded}
    elif shape == "url":
        data = {"url": f"{str(request.base_url).rstrip('/')}/files/{fax.download_token}"}
    else:
        data = encoded
    return {"status": 1, "message": "Download Fax Response", "data": data}


_OPERATIONS: dict[str, Handler] = {
    "fax-send": _send,
    "fax-status": _status,
    "fax-cancel": _cancel,
    "fax-lists": _lists,
    "inbound/fax-list-all": _list_all,
    "inbound/fax-download": _download,
}


def _routes(state: IFaxFakeState) -> list[BaseRoute]:
    def refuse(code: int, message: str, status_code: int | None = None) -> Response:
        return JSONResponse(
            {"status": 0, "message": message, "code": code, "data": None},
            status_code=status_code or state.error_http_status,
        )

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            if request.headers.get("accesstoken") != state.access_token:
                return refuse(-310, "Active user not found for this request.", state.auth_http_status)
            raw = await request.body()
            body = json_body(raw) if raw else {}
            method = request.method
            if isinstance(body, dict) and isinstance(body.get("_method"), str):
                method = body.pop("_method").upper()
            if method != "POST":
                return refuse(12010, "Invalid request method")
            if "application/json" not in request.headers.get("content-type", "").lower():
                return refuse(12009, "Invalid parameter: the Content-Type header must be application/json")
            if not isinstance(body, dict):
                return refuse(12009, "Invalid parameter: the body must be a JSON object")
            state.settle()
            try:
                answer = handler(state, body, request)
            except _Refusal as refusal:
                return refuse(refusal.code, refusal.message)
            state.settle()
            return answer if isinstance(answer, Response) else JSONResponse(answer)

        return run

    async def files(request: Request) -> Response:
        token = request.path_params["token"]
        for fax in state.received.values():
            if secrets.compare_digest(fax.download_token, token):
                return Response(fax.pdf, media_type="application/pdf")
        return Response(b"Not Found", status_code=404, media_type="text/plain")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes: list[BaseRoute] = [
        Route(f"{API_PREFIX}/{operation}", endpoint(handler), methods=methods)
        for operation, handler in _OPERATIONS.items()
    ]
    routes.append(Route("/files/{token}", files, methods=["GET"]))
    return routes


def create_app(**options: Any) -> FakeApp:
    """The iFax fake; ``options`` are ``IFaxFakeState``'s keyword arguments."""
    state = IFaxFakeState(**options)
    return build(NAME, state, _routes(state))
