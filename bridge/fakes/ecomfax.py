"""A fake of the KPN eComFax Cloud Fax API and the KPN API Store token endpoint (docs/providers.md §1).

The operations, the auth flow and the gateway behaviour follow the KPN documentation; **the request and
response bodies are this fake's own reading** (no SwaggerHub copy of the spec was available) and match what
``bridge.providers.ecomfax`` writes. Where the real API may differ, the fake can be switched to the other
documented variant (``id_style``, ``infax_format``) so the adapter is tried against each.

Token endpoint, ``POST /oauth/client_credential/accesstoken?grant_type=client_credentials`` with the form
body ``client_id=…&client_secret=…``: answers the Apigee document in which every value is a string
(``"expires_in": "3599"``). ``grant_type`` only counts in the query string (``400 invalid_request
"Required param : grant_type"`` otherwise); unknown credentials get ``401 {"ErrorCode": "invalid_client",
…}``. API calls need ``Authorization: Bearer <token>``; a missing, unknown (revoked) or expired token gets
``401`` with an Apigee fault (``oauth.v2.InvalidAccessToken``, ``keymanagement.service.invalid_access_token``,
``keymanagement.service.access_token_expired``).

Every API answer carries ``sunset``, ``api-version`` and the quota headers ``quota-limit``, ``quota-used``,
``quota-reset-UTC`` (ISO 8601, UTC), ``quota-interval``, ``quota-time-unit``. Past ``quota_limit`` calls in
a ``quota_period`` window the answer is ``429`` with the Apigee ``policies.ratelimit.QuotaViolation`` fault
and no ``Retry-After``. (``FakeState.rate_limit`` and injected faults still work as for every fake.)

API under ``/data/cws/fax``:

``POST /sendfax``            JSON ``{"recipients": [{"faxNumber": "+31…"}] (or plain strings),
                             "documents": [{"fileName", "contentType", "content": <base64>}], "reference",
                             "subject", "customFaxNumber"}`` → ``201 {"jobid", "status", "reference"}``
``POST /sendfax/raw``        multipart: fields ``recipients`` (repeated, comma separated or a JSON list),
                             ``reference``, ``subject``, ``customFaxNumber``, and file parts → the same answer
``GET /jobstatus``           ``{"jobid", "status", "statusDescription"}``
``GET /jobdetails``          the job with ``recipients``: ``faxNumber``, ``status``, ``result``,
                             ``resultDescription``, ``pagesSent``, ``attempts``, ``completed``
``GET /jobhistory``          ``{"jobid", "events": [{"date", "status", "description"}]}``
``GET /messages[/{id}]``     ``?query=&page=&pagecount=``: jobs whose reference, id, subject or number contains
                             ``query``
``GET /injobs``              ``{"injobs": [{"key", "callerId", "did", "date", "pages"}]}`` (pending only)
``GET /infax``               the fax, and it is processed (gone from ``/injobs``): JSON with base64
                             ``content`` (``infax_format="json"``), the PDF itself (``"binary"``) or ``302`` to
                             an unauthenticated ``/files/{token}`` link (``"redirect"``)
``PATCH /resetincomingjob``  pending again; ``412`` unless the Custody Service is on (``custody=True``)
``GET/PUT/DELETE /customfaxnumber`` (optional ``did``) and ``GET/PUT /timezone``

``jobid``/``key`` travel as query parameters (``?jobid=1``, ``id_style="query"``, the default) or as a path
segment (``/jobstatus/1``, ``id_style="path"``); the other form gets ``404``. Times are written without an
offset in the subscriber's time zone (``timezone``, default ``UTC``), as KPN's ``/timezone`` setting suggests;
caller and DID numbers of incoming faxes are written ``00…``. Errors are ``{"code", "message"}``.

A sent fax is ``PENDING`` for 5 s, ``SENDING`` until 35 s, then ``SENT`` (result ``OK``) or ``FAILED`` with a
result; ``advance`` moves time. The outcome comes from the destination number's last four digits:

    …0001  BUSY                 the line is busy
    …0002  NO_ANSWER            nobody answers
    …0003  INVALID_NUMBER       not a fax number (accepted first, fails after dialling)
    …0004  NO_FAX_DEVICE        a voice line answers
    …0005  COMMUNICATION_ERROR  the transmission breaks off
    other  SENT / OK            delivered

A number that is not 6 to 16 digits (with an optional ``+`` or ``00``) is refused at once with ``400
INVALID_RECIPIENT``. ``EcomfaxState.set_outcome(jobid, outcome)`` overrides the rule for one job,
``cancel(jobid)`` cancels it, ``inject_inbound(...)`` delivers an incoming fax, ``revoke_tokens()`` makes the
next API call get ``401``. Out of process: ``POST /_fake/inbound`` (``{"caller", "called", "document":
<base64 PDF, optional>}``), ``POST /_fake/outcome`` (``{"jobid", "outcome"}``), ``POST /_fake/revoke-tokens``.

Default credentials: ``client_id = "faxbridge-fake"``, ``client_secret = "fake-secret"``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.fakes.base import FakeApp, FakeState, build, json_body

__all__ = ["OUTCOMES", "EcomfaxState", "FakeIncoming", "FakeJob", "create_app"]

PREFIX = "/data/cws/fax"
TOKEN_PATH = "/oauth/client_credential/accesstoken"
QUEUED_SECONDS = 5.0
SENDING_SECONDS = 30.0

Outcome = Literal["delivered", "busy", "no_answer", "invalid_number", "no_fax", "line_error", "cancelled"]

OUTCOMES: dict[str, tuple[str, str, str]] = {
    "delivered": ("SENT", "OK", "Fax delivered"),
    "busy": ("FAILED", "BUSY", "Line busy"),
    "no_answer": ("FAILED", "NO_ANSWER", "No answer"),
    "invalid_number": ("FAILED", "INVALID_NUMBER", "The number is not a valid fax number"),
    "no_fax": ("FAILED", "NO_FAX_DEVICE", "No fax tone detected"),
    "line_error": ("FAILED", "COMMUNICATION_ERROR", "Communication error during transmission"),
    "cancelled": ("CANCELLED", "CANCELLED", "Cancelled by the user"),
}
"""Outcome → (job status, result code, description)."""

NUMBER_RULES: dict[str, Outcome] = {
    "0001": "busy",
    "0002": "no_answer",
    "0003": "invalid_number",
    "0004": "no_fax",
    "0005": "line_error",
}
_NUMBER = re.compile(r"(\+|00)?[0-9]{6,16}")


def outcome_for(number: str) -> Outcome:
    """The outcome the number rules give ``number``."""
    return NUMBER_RULES.get(re.sub(r"\D", "", number)[-4:], "delivered")


def count_pages(document: bytes) -> int:
    return max(1, len(re.findall(rb"/Type\s*/Page(?![s\w])", document)))


@dataclass
class FakeRecipient:
    number: str
    outcome: Outcome


@dataclass
class FakeJob:
    jobid: str
    recipients: list[FakeRecipient]
    documents: list[tuple[str, bytes]]
    reference: str | None
    subject: str | None
    custom_fax_number: str | None
    submitted: float
    upload: Literal["json", "raw"]
    cancelled_at: float | None = None

    @property
    def pages(self) -> int:
        return sum(count_pages(data) for _, data in self.documents)


@dataclass
class FakeIncoming:
    key: str
    caller: str | None
    called: str | None
    document: bytes
    received: float
    pages: int
    content_type: str = "application/pdf"
    processed: bool = False


@dataclass
class EcomfaxState(FakeState):
    """The fake's accounts, tokens, jobs and incoming faxes; ``now()`` is epoch seconds plus ``advance``."""

    client_id: str = "faxbridge-fake"
    client_secret: str = "fake-secret"
    token_lifetime: int = 3599
    id_style: Literal["query", "path"] = "query"
    custody: bool = True
    quota_limit: int = 10_000
    quota_period: float = 60.0
    timezone: str = "UTC"
    infax_format: Literal["json", "binary", "redirect"] = "json"
    clock: Callable[[], float] = time.time
    tokens: dict[str, float] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    incoming: dict[str, FakeIncoming] = field(default_factory=dict)
    custom_fax_numbers: dict[str, str] = field(default_factory=dict)
    """``""`` is the account's own, others are per DID."""
    files: dict[str, str] = field(default_factory=dict)
    quota_used: int = 0
    quota_window: float = 0.0
    control: dict[str, Callable[[Request], Awaitable[Response]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        FakeState.__init__(self, clock=self.clock)

    # -- tokens --------------------------------------------------------------------------------------------

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(21)
        self.tokens[token] = self.now() + self.token_lifetime
        return token

    def revoke_tokens(self) -> None:
        """Every token issued so far becomes unknown: the next API call gets ``401``."""
        self.tokens.clear()

    # -- outgoing ------------------------------------------------------------------------------------------

    def submit(
        self,
        numbers: list[str],
        documents: list[tuple[str, bytes]],
        *,
        reference: str | None,
        subject: str | None,
        custom_fax_number: str | None,
        upload: Literal["json", "raw"],
    ) -> FakeJob:
        jobid = str(4_000_000 + self.next_id())
        job = FakeJob(
            jobid=jobid,
            recipients=[FakeRecipient(number, outcome_for(number)) for number in numbers],
            documents=documents,
            reference=reference,
            subject=subject,
            custom_fax_number=custom_fax_number,
            submitted=self.now(),
            upload=upload,
        )
        self.jobs[jobid] = job
        return job

    def set_outcome(self, jobid: str, outcome: Outcome) -> None:
        """Make every recipient of the job end with ``outcome`` instead of what the number rules say."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
        for recipient in self.jobs[jobid].recipients:
            recipient.outcome = outcome

    def cancel(self, jobid: str) -> None:
        self.jobs[jobid].cancelled_at = self.now()

    def recipient_state(self, job: FakeJob, recipient: FakeRecipient) -> tuple[str, str | None, str]:
        """``(status, result, description)`` of one recipient now."""
        now = self.now()
        if job.cancelled_at is not None and job.cancelled_at <= now:
            return OUTCOMES["cancelled"]
        elapsed = now - job.submitted
        if elapsed < QUEUED_SECONDS:
            return "PENDING", None, "Waiting to be sent"
        if elapsed < QUEUED_SECONDS + SENDING_SECONDS:
            return "SENDING", None, "Transmitting"
        return OUTCOMES[recipient.outcome]

    def job_state(self, job: FakeJob) -> tuple[str, str]:
        states = {self.recipient_state(job, r)[0] for r in job.recipients}
        if len(states) == 1:
            status = states.pop()
        elif states <= {"SENT", "FAILED"}:
            status = "PARTIAL"
        else:
            status = "SENDING"
        descriptions = {
            "PENDING": "Waiting to be sent",
            "SENDING": "Transmitting",
            "SENT": "Sent",
            "FAILED": "Failed",
            "PARTIAL": "Partially sent",
            "CANCELLED": "Cancelled",
        }
        return status, descriptions[status]

    # -- incoming ------------------------------------------------------------------------------------------

    def inject_inbound(
        self,
        document: bytes,
        *,
        caller: str | None,
        called: str | None,
        pages: int | None = None,
        content_type: str = "application/pdf",
    ) -> str:
        """An incoming fax arrives; returns its key."""
        key = f"IN{self.next_id():08d}"
        self.incoming[key] = FakeIncoming(
            key=key,
            caller=caller,
            called=called,
            document=document,
            received=self.now(),
            pages=pages or count_pages(document),
            content_type=content_type,
        )
        return key

    def pending_inbound(self) -> list[FakeIncoming]:
        return [fax for fax in self.incoming.values() if not fax.processed]

    # -- presentation --------------------------------------------------------------------------------------

    def local_time(self, epoch: float) -> str:
        """A time as eComFax writes it here: no offset, in the subscriber's time zone."""
        return datetime.fromtimestamp(epoch, UTC).astimezone(ZoneInfo(self.timezone)).strftime("%Y-%m-%dT%H:%M:%S")

    def quota(self) -> tuple[bool, dict[str, str]]:
        """Count one call: whether it is within the quota, and the quota headers to send."""
        now = self.now()
        window = (now // self.quota_period) * self.quota_period
        if window != self.quota_window:
            self.quota_window, self.quota_used = window, 0
        allowed = self.quota_used < self.quota_limit
        if allowed:
            self.quota_used += 1
        reset = datetime.fromtimestamp(window + self.quota_period, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "quota-interval": "1",
            "quota-time-unit": "minute" if self.quota_period == 60 else "second",
            "quota-limit": str(self.quota_limit),
            "quota-used": str(self.quota_used),
            "quota-reset-UTC": reset,
        }
        return allowed, headers


def _international(number: str | None) -> str | None:
    return "00" + number[1:] if number and number.startswith("+") else number


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _fault(status: int, text: str, code: str) -> JSONResponse:
    return JSONResponse({"fault": {"faultstring": text, "detail": {"errorcode": code}}}, status_code=status)


_STATIC_HEADERS = {
    "sunset": "n/a",
    "api-version": "1.0.0",
    "strict-transport-security": "max-age=31536000; includeSubDomains; preload",
}

Handler = Callable[[Request], Awaitable[Response]]


def _routes(state: EcomfaxState) -> list[BaseRoute]:
    def authorized(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            response: Response
            if scheme.lower() != "bearer" or not token.strip():
                response = _fault(401, "Invalid access token", "oauth.v2.InvalidAccessToken")
            elif token.strip() not in state.tokens:
                response = _fault(401, "Invalid Access Token", "keymanagement.service.invalid_access_token")
            elif state.tokens[token.strip()] <= state.now():
                response = _fault(401, "Access Token expired", "keymanagement.service.access_token_expired")
            else:
                allowed, quota = state.quota()
                if allowed:
                    response = await handler(request)
                else:
                    response = _fault(
                        429,
                        "Rate limit quota violation. Quota limit exceeded. Identifier : _default",
                        "policies.ratelimit.QuotaViolation",
                    )
                response.headers.update(quota)
            response.headers.update(_STATIC_HEADERS)
            return response

        return endpoint

    def ident(request: Request, name: str) -> str | Response:
        """The job id or key in the configured style; the other style is a route that does not exist."""
        in_path = request.path_params.get(name)
        if (state.id_style == "path") != (in_path is not None):
            return _error(404, "NOT_FOUND", "Resource not found")
        value = in_path if in_path is not None else request.query_params.get(name)
        if not value:
            return _error(400, "MISSING_PARAMETER", f"{name} is required")
        return str(value)

    def job_or_error(request: Request) -> FakeJob | Response:
        jobid = ident(request, "jobid")
        if isinstance(jobid, Response):
            return jobid
        job = state.jobs.get(jobid)
        return job if job is not None else _error(404, "JOB_NOT_FOUND", f"Job {jobid} not found")

    async def token(request: Request) -> Response:
        grant = request.query_params.get("grant_type")
        if grant is None:
            return JSONResponse({"ErrorCode": "invalid_request", "Error": "Required param : grant_type"}, 400)
        if grant != "client_credentials":
            return JSONResponse({"ErrorCode": "invalid_request", "Error": f"Unsupported grant type : {grant}"}, 400)
        client_id = client_secret = None
        if "form-urlencoded" in request.headers.get("content-type", ""):
            async with request.form() as form:
                client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not client_id:
            return JSONResponse({"ErrorCode": "invalid_client", "Error": "Client identifier is required"}, 401)
        if client_id != state.client_id or client_secret != state.client_secret:
            return JSONResponse({"ErrorCode": "invalid_client", "Error": "ClientId is Invalid"}, 401)
        access_token = state.issue_token()
        issued = int(state.now() * 1000)
        return JSONResponse(
            {
                "refresh_token_expires_in": "0",
                "api_product_list": "[eComFax]",
                "api_product_list_json": ["eComFax"],
                "organization_name": "kpn",
                "developer_email": "fake@example.com",
                "token_type": "Bearer",
                "issued_at": str(issued),
                "client_id": state.client_id,
                "access_token": access_token,
                "application_name": "faxbridge-fake",
                "scope": "",
                "expires_in": str(state.token_lifetime),
                "refresh_count": "0",
                "status": "approved",
            }
        )

    def check_numbers(numbers: list[str]) -> Response | None:
        if not numbers:
            return _error(400, "INVALID_RECIPIENT", "At least one recipient is required")
        for number in numbers:
            if not _NUMBER.fullmatch(number):
                return _error(400, "INVALID_RECIPIENT", f"Invalid fax number: {number!r}")
        return None

    def accepted(job: FakeJob) -> Response:
        status, _ = state.job_state(job)
        return JSONResponse({"jobid": job.jobid, "status": status, "reference": job.reference}, status_code=201)

    def optional_text(value: object, name: str) -> str | Response | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            return _error(400, "INVALID_REQUEST", f"{name} must be a string")
        return value

    async def sendfax(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _error(
                400, "INVALID_REQUEST", "Content-Type must be application/json; use /sendfax/raw for form-data"
            )
        body = json_body(await request.body())
        if not isinstance(body, dict):
            return _error(400, "INVALID_REQUEST", "The body must be a JSON object")
        recipients = body.get("recipients")
        if not isinstance(recipients, list):
            return _error(400, "INVALID_RECIPIENT", "recipients must be a list")
        numbers: list[str] = []
        for entry in recipients:
            number = entry.get("faxNumber") if isinstance(entry, dict) else entry
            if not isinstance(number, str):
                return _error(400, "INVALID_RECIPIENT", "each recipient needs a faxNumber")
            numbers.append(number)
        if (bad := check_numbers(numbers)) is not None:
            return bad
        documents_in = body.get("documents")
        if not isinstance(documents_in, list) or not documents_in:
            return _error(400, "INVALID_DOCUMENT", "documents must be a non-empty list")
        documents: list[tuple[str, bytes]] = []
        for index, document in enumerate(documents_in):
            content = document.get("content") if isinstance(document, dict) else None
            if not isinstance(content, str):
                return _error(400, "INVALID_DOCUMENT", f"documents[{index}].content must be base64 text")
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                return _error(400, "INVALID_DOCUMENT", f"documents[{index}].content is not valid base64")
            if not data:
                return _error(400, "INVALID_DOCUMENT", f"documents[{index}] is empty")
            documents.append((str(document.get("fileName") or f"document{index}.pdf"), data))
        fields: dict[str, str | None] = {}
        for name in ("reference", "subject", "customFaxNumber"):
            value = optional_text(body.get(name), name)
            if isinstance(value, Response):
                return value
            fields[name] = value
        if fields["customFaxNumber"] and not _NUMBER.fullmatch(fields["customFaxNumber"]):
            return _error(400, "INVALID_CUSTOM_FAX_NUMBER", "customFaxNumber must be a fax number")
        job = state.submit(
            numbers,
            documents,
            reference=fields["reference"],
            subject=fields["subject"],
            custom_fax_number=fields["customFaxNumber"],
            upload="json",
        )
        return accepted(job)

    async def sendfax_raw(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(400, "INVALID_REQUEST", "Content-Type must be multipart/form-data")
        # The context closes the uploads' temporary files.
        async with request.form() as form:
            return await raw_job(form)

    async def raw_job(form: FormData) -> Response:
        numbers: list[str] = []
        for value in form.getlist("recipients"):
            if not isinstance(value, str):
                return _error(400, "INVALID_RECIPIENT", "recipients must be text")
            text = value.strip()
            parsed = json_body(text.encode()) if text.startswith("[") else None
            parts = parsed if isinstance(parsed, list) else text.split(",")
            numbers.extend(str(part).strip() for part in parts if str(part).strip())
        if (bad := check_numbers(numbers)) is not None:
            return bad
        documents: list[tuple[str, bytes]] = []
        for _, part in form.multi_items():
            if isinstance(part, UploadFile):
                data = await part.read()
                if not data:
                    return _error(400, "INVALID_DOCUMENT", f"file {part.filename!r} is empty")
                documents.append((part.filename or "document.pdf", data))
        if not documents:
            return _error(400, "INVALID_DOCUMENT", "at least one file part is required")
        fields: dict[str, str | None] = {}
        for name in ("reference", "subject", "customFaxNumber"):
            given = form.get(name)
            fields[name] = given if isinstance(given, str) and given else None
        if fields["customFaxNumber"] and not _NUMBER.fullmatch(fields["customFaxNumber"]):
            return _error(400, "INVALID_CUSTOM_FAX_NUMBER", "customFaxNumber must be a fax number")
        job = state.submit(
            numbers,
            documents,
            reference=fields["reference"],
            subject=fields["subject"],
            custom_fax_number=fields["customFaxNumber"],
            upload="raw",
        )
        return accepted(job)

    async def jobstatus(request: Request) -> Response:
        job = job_or_error(request)
        if isinstance(job, Response):
            return job
        status, description = state.job_state(job)
        return JSONResponse({"jobid": job.jobid, "status": status, "statusDescription": description})

    def details(job: FakeJob) -> dict[str, Any]:
        status, description = state.job_state(job)
        recipients = []
        for recipient in job.recipients:
            r_status, result, r_description = state.recipient_state(job, recipient)
            ended = result is not None
            recipients.append(
                {
                    "faxNumber": recipient.number,
                    "status": r_status,
                    "result": result,
                    "resultDescription": r_description,
                    "pagesSent": job.pages if result == "OK" else 0,
                    "attempts": 3 if result in ("BUSY", "NO_ANSWER") else (1 if ended or r_status == "SENDING" else 0),
                    "completed": state.local_time(job.submitted + QUEUED_SECONDS + SENDING_SECONDS)
                    if ended and result != "CANCELLED"
                    else None,
                }
            )
        return {
            "jobid": job.jobid,
            "reference": job.reference,
            "subject": job.subject,
            "customFaxNumber": job.custom_fax_number or state.custom_fax_numbers.get(""),
            "submitted": state.local_time(job.submitted),
            "status": status,
            "statusDescription": description,
            "pages": job.pages,
            "documents": [name for name, _ in job.documents],
            "recipients": recipients,
        }

    async def jobdetails(request: Request) -> Response:
        job = job_or_error(request)
        if isinstance(job, Response):
            return job
        return JSONResponse(details(job))

    async def jobhistory(request: Request) -> Response:
        job = job_or_error(request)
        if isinstance(job, Response):
            return job
        events = [{"date": state.local_time(job.submitted), "status": "PENDING", "description": "Job created"}]
        now = state.now()
        if now >= job.submitted + QUEUED_SECONDS:
            events.append(
                {
                    "date": state.local_time(job.submitted + QUEUED_SECONDS),
                    "status": "SENDING",
                    "description": "Dialling",
                }
            )
        status, description = state.job_state(job)
        if status not in ("PENDING", "SENDING"):
            when = job.cancelled_at or job.submitted + QUEUED_SECONDS + SENDING_SECONDS
            events.append({"date": state.local_time(when), "status": status, "description": description})
        return JSONResponse({"jobid": job.jobid, "events": events})

    def message(job: FakeJob) -> dict[str, Any]:
        status, _ = state.job_state(job)
        return {
            "id": job.jobid,
            "jobid": job.jobid,
            "type": "FAX",
            "direction": "OUT",
            "reference": job.reference,
            "subject": job.subject,
            "recipient": job.recipients[0].number,
            "status": status,
            "date": state.local_time(job.submitted),
            "pages": job.pages,
        }

    async def messages(request: Request) -> Response:
        query = request.query_params.get("query", "").lower()
        try:
            page = max(1, int(request.query_params.get("page", "1")))
            pagecount = min(100, max(1, int(request.query_params.get("pagecount", "20"))))
        except ValueError:
            return _error(400, "INVALID_PARAMETER", "page and pagecount must be numbers")
        found = [
            message(job)
            for job in state.jobs.values()
            if not query
            or any(query in (text or "").lower() for text in (job.reference, job.jobid, job.subject))
            or any(query in r.number for r in job.recipients)
        ]
        chunk = found[(page - 1) * pagecount : page * pagecount]
        return JSONResponse({"messages": chunk, "page": page, "pagecount": pagecount, "total": len(found)})

    async def one_message(request: Request) -> Response:
        job = state.jobs.get(request.path_params["id"])
        if job is None:
            return _error(404, "NOT_FOUND", "Message not found")
        return JSONResponse(message(job))

    def inbound_meta(fax: FakeIncoming) -> dict[str, Any]:
        return {
            "key": fax.key,
            "callerId": _international(fax.caller),
            "did": _international(fax.called),
            "date": state.local_time(fax.received),
            "pages": fax.pages,
        }

    async def injobs(request: Request) -> Response:
        return JSONResponse({"injobs": [inbound_meta(fax) for fax in state.pending_inbound()]})

    async def infax(request: Request) -> Response:
        key = ident(request, "key")
        if isinstance(key, Response):
            return key
        fax = state.incoming.get(key)
        if fax is None or fax.processed:
            return _error(404, "NOT_FOUND", f"Incoming job {key} not found or already processed")
        fax.processed = True
        if state.infax_format == "binary":
            return Response(fax.document, media_type=fax.content_type)
        if state.infax_format == "redirect":
            link = secrets.token_urlsafe(16)
            state.files[link] = key
            return RedirectResponse(f"/files/{link}", status_code=302)
        extension = "pdf" if fax.content_type == "application/pdf" else "tif"
        return JSONResponse(
            {
                **inbound_meta(fax),
                "fileName": f"{fax.key}.{extension}",
                "contentType": fax.content_type,
                "content": base64.b64encode(fax.document).decode("ascii"),
            }
        )

    async def download(request: Request) -> Response:
        key = state.files.get(request.path_params["token"])
        if key is None:
            return _error(404, "NOT_FOUND", "Link expired")
        fax = state.incoming[key]
        return Response(fax.document, media_type=fax.content_type)

    async def reset(request: Request) -> Response:
        key = ident(request, "key")
        if isinstance(key, Response):
            return key
        if not state.custody:
            return _error(
                412,
                "CUSTODY_SERVICE_DISABLED",
                "This feature requires the Custody Service enabled for incoming faxes.",
            )
        fax = state.incoming.get(key)
        if fax is None:
            return _error(404, "NOT_FOUND", f"Incoming job {key} not found")
        fax.processed = False
        return JSONResponse({"key": key, "status": "NEW"})

    async def customfaxnumber(request: Request) -> Response:
        body = json_body(await request.body()) if request.method == "PUT" else None
        params = {**request.query_params, **(body if isinstance(body, dict) else {})}
        did = str(params.get("did") or "")
        if request.method == "GET":
            if did not in state.custom_fax_numbers:
                return _error(404, "NOT_FOUND", "No custom fax number configured")
            return JSONResponse({"did": did or None, "customFaxNumber": state.custom_fax_numbers[did]})
        if request.method == "DELETE":
            state.custom_fax_numbers.pop(did, None)
            return JSONResponse({})
        number = params.get("customFaxNumber")
        if not isinstance(number, str) or not _NUMBER.fullmatch(number):
            return _error(400, "INVALID_CUSTOM_FAX_NUMBER", "customFaxNumber must be a fax number")
        state.custom_fax_numbers[did] = number
        return JSONResponse({"did": did or None, "customFaxNumber": number})

    async def timezone(request: Request) -> Response:
        if request.method == "PUT":
            body = json_body(await request.body())
            name = request.query_params.get("timeZone") or (body.get("timeZone") if isinstance(body, dict) else None)
            try:
                ZoneInfo(str(name))
            except (ValueError, KeyError):
                return _error(400, "INVALID_TIMEZONE", f"Unknown time zone {name!r}")
            state.timezone = str(name)
        return JSONResponse({"timeZone": state.timezone})

    return [
        Route(TOKEN_PATH, token, methods=["POST"]),
        Route(f"{PREFIX}/sendfax", authorized(sendfax), methods=["POST"]),
        Route(f"{PREFIX}/sendfax/raw", authorized(sendfax_raw), methods=["POST"]),
        Route(f"{PREFIX}/jobstatus", authorized(jobstatus), methods=["GET"]),
        Route(f"{PREFIX}/jobstatus/{{jobid}}", authorized(jobstatus), methods=["GET"]),
        Route(f"{PREFIX}/jobdetails", authorized(jobdetails), methods=["GET"]),
        Route(f"{PREFIX}/jobdetails/{{jobid}}", authorized(jobdetails), methods=["GET"]),
        Route(f"{PREFIX}/jobhistory", authorized(jobhistory), methods=["GET"]),
        Route(f"{PREFIX}/jobhistory/{{jobid}}", authorized(jobhistory), methods=["GET"]),
        Route(f"{PREFIX}/messages", authorized(messages), methods=["GET"]),
        Route(f"{PREFIX}/messages/{{id}}", authorized(one_message), methods=["GET"]),
        Route(f"{PREFIX}/injobs", authorized(injobs), methods=["GET"]),
        Route(f"{PREFIX}/infax", authorized(infax), methods=["GET"]),
        Route(f"{PREFIX}/infax/{{key}}", authorized(infax), methods=["GET"]),
        Route(f"{PREFIX}/resetincomingjob", authorized(reset), methods=["PATCH"]),
        Route(f"{PREFIX}/resetincomingjob/{{key}}", authorized(reset), methods=["PATCH"]),
        Route(f"{PREFIX}/customfaxnumber", authorized(customfaxnumber), methods=["GET", "PUT", "DELETE"]),
        Route(f"{PREFIX}/timezone", authorized(timezone), methods=["GET", "PUT"]),
        Route("/files/{token}", download, methods=["GET"]),
    ]


def _controls(state: EcomfaxState) -> dict[str, Callable[[Request], Awaitable[Response]]]:
    async def inbound(request: Request) -> Response:
        data = json_body(await request.body()) or {}
        if data.get("document"):
            document = base64.b64decode(str(data["document"]))
        else:
            from fpdf import FPDF

            pdf = FPDF()
            pdf.set_font("helvetica", size=16)
            pdf.add_page()
            pdf.text(20, 30, str(data.get("text") or "Incoming fax (eComFax fake)"))
            document = bytes(pdf.output())
        key = state.inject_inbound(document, caller=data.get("caller"), called=data.get("called"))
        return JSONResponse({"key": key})

    async def outcome(request: Request) -> Response:
        data = json_body(await request.body()) or {}
        try:
            state.set_outcome(str(data.get("jobid")), data.get("outcome", "delivered"))
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"jobid": data.get("jobid"), "outcome": data.get("outcome")})

    async def revoke(request: Request) -> Response:
        state.revoke_tokens()
        return JSONResponse({"revoked": True})

    async def jobs(request: Request) -> Response:
        return JSONResponse([{"upload": job.upload, **_dump(job, state)} for job in state.jobs.values()])

    return {"inbound": inbound, "outcome": outcome, "revoke-tokens": revoke, "jobs": jobs}


def _dump(job: FakeJob, state: EcomfaxState) -> dict[str, Any]:
    status, _ = state.job_state(job)
    return {
        "jobid": job.jobid,
        "reference": job.reference,
        "recipients": [r.number for r in job.recipients],
        "status": status,
        "customFaxNumber": job.custom_fax_number,
        "bytes": sum(len(data) for _, data in job.documents),
    }


def create_app(**options: Any) -> FakeApp:
    """The fake; ``options`` set ``EcomfaxState`` fields (credentials, ``id_style``, ``custody``, quota…)."""
    state = EcomfaxState(**options)
    state.control = _controls(state)
    return build("ecomfax", state, _routes(state))
