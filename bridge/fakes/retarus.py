"""A fake Retarus region: Fax4A REST v1 in two data centres behind an HA address, and Fax2WSPull inbound.

One app serves the whole region (providers.md §3). It tells the data centres apart by the ``Host`` of the
request, as the real hosts do, or, for a fake on loopback where every request has the same host, by a first
path segment:

====================================  ==========================  =============================================
real host (region ``de``)             loopback path prefix        role
====================================  ==========================  =============================================
``faxws-ha.de.retarus.com``           ``/ha/rest/v1/…``           HA: takes jobs and places each in ONE data
                                                                  centre (``placement``)
``faxws.de1.retarus.com``             ``/de1/rest/v1/…``          data centre 1: jobs, reports
``faxws.de2.retarus.com``             ``/de2/rest/v1/…``          data centre 2: jobs, reports
``api.de1.retarus.com``               ``/de1/faxin/rest/v1/…``    Fax2WSPull of data centre 1
``api.de2.retarus.com``               ``/de2/faxin/rest/v1/…``    Fax2WSPull of data centre 2
====================================  ==========================  =============================================

(``region="us"`` gives ``faxws.us1`` … and ``/us1``, ``/us2``.) So on loopback, point ``send_url`` at
``http://127.0.0.1:PORT/ha/rest/v1``, ``report_urls`` at ``…/de1/rest/v1`` and ``…/de2/rest/v1``, and
``inbound.urls`` at ``…/de1/faxin/rest/v1`` and ``…/de2/faxin/rest/v1``.

What it reproduces:

* **HTTP Basic auth** on every request: Fax4A with ``username``/``password`` and the path's customer number;
  Fax2WSPull with ``customer_number``/``inbound_password``. Anything else is ``401`` with no body.
* ``POST /{custNr}/fax``: the ``FaxJobRequest`` is validated (JSON object; non-empty ``recipients`` with string
  ``number``; ``documents`` with names of at most 32 ``[A-Za-z0-9-_.]`` characters and base64 ``data`` or a
  ``reference`` URL, or a cover page; ``reference`` lengths; ``csid`` ≤ 20; ``paperFormat`` ``A4``/``LETTER``;
  ``resolution`` ``LOW``/``HIGH``; ``meta.jobValid.start`` with a time zone or an ISO duration; push
  ``authMethod``). A bad request is ``400`` with **no content**, as documented; the reason is appended to
  ``state.rejections`` for tests. A second job with the same ``reference.customerDefinedId`` anywhere in the
  region is ``409`` with no content (counted in ``state.duplicates_refused``). Success is ``send_status``
  (``201`` by default, ``200`` possible) with ``{"jobId": "FJ…"}``.
* The job lives in exactly one data centre: the one addressed, or for the HA address the one ``placement``
  names (``"alternate"``: DC1, DC2, DC1 …; or ``"de1"``/``"de2"``). The other data centre answers ``404`` for it.
* Reports move with the fake's clock: ``PENDING`` with ``pages`` 0 until ``send_seconds`` have passed, then the
  final status (see the number rules) with ``pages``, ``sentTs``, ``durationInSecs``, ``sentToNumber``,
  ``remoteCsid``. ``GET /{custNr}/fax/reports`` lists finished reports only, oldest first, at most
  ``list_limit`` (1000); an empty list is ``200 {"reports": []}`` or, with ``empty_list_status=404``, ``404``.
  ``GET``/``DELETE /{custNr}/fax/reports/{jobId}`` (``404`` when not in this data centre), ``DELETE
  /{custNr}/fax/reports`` (the oldest finished, up to 1000) and the bulk ``POST /{custNr}/fax/reports``
  (``{"action": "GET"|"DELETE", "jobIds": [≤1000]}``, action case-insensitive; ``NOT_FOUND`` items for jobs
  elsewhere). Reports vanish ``retention_seconds`` (30 days) after they finish.
* Report queries sent to the **HA address** are answered from the first data centre only — what a load balancer
  in front of two data centres would do — and counted in ``state.ha_report_requests``: a client that polls
  the HA address misses every job of the second data centre.
* Fax2WSPull: ``POST /topics/{topic}?fetch=N&timeout=S&ids=a,b`` acknowledges ``ids`` (gone for good), then
  returns up to ``N`` unacknowledged faxes that are not hidden and hides them for ``S`` seconds (default 60);
  ``meta`` carries ``next`` (same call acknowledging this batch) and ``exit`` (``fetch=0``). Each result has
  ``id`` and ``documents[{name, url}]`` (documented) and ``sender``, ``recipient``, ``receivedTs``, ``pages``
  (field names guessed: the real names are not documented). ``GET /files/{name}`` returns the PDF for 7 days.
  ``state.inject_inbound(pdf, caller=…, called=…, data_centre=…)`` or ``POST /_fake/inbound`` (JSON
  ``{"pdf_base64", "caller", "called", "data_centre"?, "topic"?}``) adds an incoming fax.

Number rules (the destination's last four digits decide the outcome):

=========  ================================================================
``0001``   ``BUSY`` — the line was busy
``0002``   ``RING_TO`` — no answer
``0003``   ``WRONG_NO`` — not a valid fax number
``0004``   ``NOFAX`` — a person or a modem answered
``0005``   ``REM_DIS`` — the receiving machine hung up
``0009``   stays ``PENDING`` for ever
otherwise  ``OK`` — delivered
=========  ================================================================

``state.set_outcome(job_id, "BUSY")`` (or ``POST /_fake/outcome`` with ``{"job_id", "status"}``) overrides the
rule for one job; ``state.finish(job_id)`` ends it now. Rate limits and faults come from ``FakeState`` /
``FaultMiddleware``; ``advance(seconds)`` moves the clock.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.fakes.base import FakeApp, FakeState, basic_credentials, build, json_body

__all__ = ["NUMBER_RULES", "FakeFaxJob", "FakeInboundFax", "RetarusFakeState", "create_app"]

NUMBER_RULES: dict[str, str | None] = {
    "0001": "BUSY",
    "0002": "RING_TO",
    "0003": "WRONG_NO",
    "0004": "NOFAX",
    "0005": "REM_DIS",
    "0009": None,
}
"""Last four digits of the destination -> final recipient status (``None``: never finishes)."""

STATUS_TEXT: dict[str, str] = {
    "OK": "OK",
    "BUSY": "Destination number busy",
    "RING_TO": "Ring timeout: the fax device does not answer",
    "WRONG_NO": "Wrong or unassigned number",
    "NOFAX": "No fax device: answered by a person or modem",
    "NOFAX_DIS": "Fax disconnect",
    "NOFAX_TO": "Fax timeout",
    "REM_DIS": "simulated",
    "DIAL_NC": "Number invalid or incomplete",
    "CANCELLED": "Cancelled in the EAS portal",
}

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_AUTH_METHODS = frozenset({"NONE", "HTTP_BASIC", "HTTP_DIGEST", "OAUTH2", "OAUTH"})
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_SECONDS_PER_PAGE = 20


def _now_utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeFaxJob:
    """One accepted fax job, in one data centre."""

    job_id: str
    data_centre: str
    request: dict[str, Any]
    numbers: list[str]
    pages: int
    submitted_at: float
    finish_at: float | None
    """Fake-clock time when the job ends; ``None``: it stays pending."""
    outcome: str | None = None
    """A status set with ``set_outcome``; otherwise the number rules decide."""
    deleted: bool = False

    @property
    def customer_defined_id(self) -> str | None:
        reference = self.request.get("reference")
        value = reference.get("customerDefinedId") if isinstance(reference, dict) else None
        return value if isinstance(value, str) else None


@dataclass
class FakeInboundFax:
    """One fax received for a topic, waiting in one data centre's Fax2WSPull queue."""

    fax_id: str
    data_centre: str
    topic: str
    document: bytes
    caller: str
    called: str
    received_at: datetime
    arrived: float
    pages: int
    hidden_until: float = float("-inf")
    acknowledged: bool = False

    @property
    def document_name(self) -> str:
        return f"{self.fax_id}.pdf"


def _count_pages(data: bytes, name: str) -> int:
    if name.lower().endswith(".pdf"):
        return max(1, len(_PDF_PAGE.findall(data)))
    return 1


def _valid_time(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    if value.startswith("P"):
        return re.fullmatch(r"P(?:\d+[YMWD])*(?:T(?:\d+[HMS])+)?", value) is not None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return False
    return moment.tzinfo is not None


def validate_job(body: Any) -> str | None:
    """Why Retarus would answer ``400`` to this ``FaxJobRequest``; ``None`` when it is acceptable."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    recipients = body.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        return "recipients is missing or empty"
    for recipient in recipients:
        if not isinstance(recipient, dict) or not isinstance(recipient.get("number"), str) or not recipient["number"]:
            return "a recipient has no number"
        for prop in recipient.get("properties") or []:
            if (
                not isinstance(prop, dict)
                or not isinstance(prop.get("key"), str)
                or not isinstance(prop.get("value"), str)
            ):
                return "a recipient property lacks key or value"
    documents = body.get("documents") or []
    rendering = body.get("renderingOptions") or {}
    if not isinstance(documents, list) or not isinstance(rendering, dict):
        return "documents must be an array and renderingOptions an object"
    if not documents and not rendering.get("coverpageTemplate"):
        return "a job needs documents or a cover page"
    for document in documents:
        if not isinstance(document, dict) or not isinstance(document.get("name"), str):
            return "a document has no name"
        if not _NAME.fullmatch(document["name"]):
            return f"document name {document['name']!r} is longer than 32 characters or not [a-zA-Z0-9-_.]"
        data, reference = document.get("data"), document.get("reference")
        if reference is None:
            if not isinstance(data, str):
                return f"document {document['name']!r} has neither data nor reference"
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return f"document {document['name']!r}: data is not base64"
    reference = body.get("reference") or {}
    if not isinstance(reference, dict):
        return "reference must be an object"
    for key, limit in (("customerDefinedId", 256), ("billingCode", 80), ("billingInfo", 80)):
        value = reference.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            return f"reference.{key} must be a string of at most {limit} characters"
    transport = body.get("transportOptions") or {}
    if not isinstance(transport, dict):
        return "transportOptions must be an object"
    csid = transport.get("csid")
    if csid is not None and (not isinstance(csid, str) or len(csid) > 20):
        return "transportOptions.csid must be at most 20 characters"
    for key in ("isExpress", "isBlacklistEnabled"):
        if key in transport and not isinstance(transport[key], bool):
            return f"transportOptions.{key} must be a boolean"
    if rendering.get("paperFormat", "A4") not in ("A4", "LETTER"):
        return "renderingOptions.paperFormat must be A4 or LETTER"
    if rendering.get("resolution", "HIGH") not in ("LOW", "HIGH"):
        return "renderingOptions.resolution must be LOW or HIGH"
    meta = body.get("meta") or {}
    if not isinstance(meta, dict):
        return "meta must be an object"
    valid = meta.get("jobValid")
    if valid is not None:
        if not isinstance(valid, dict):
            return "meta.jobValid must be an object"
        if "start" in valid and not _valid_time(valid["start"]):
            return "meta.jobValid.start must carry a time zone (or be an ISO duration)"
        if "end" in valid and not _valid_time(valid["end"]):
            return "meta.jobValid.end must carry a time zone (or be an ISO duration)"
    options = body.get("statusReportOptions") or {}
    push = options.get("httpStatusPush") if isinstance(options, dict) else None
    if push is not None:
        if not isinstance(push, dict) or not isinstance(push.get("targetUrl"), str):
            return "statusReportOptions.httpStatusPush needs a targetUrl"
        if push.get("authMethod", "NONE") not in _AUTH_METHODS:
            return "statusReportOptions.httpStatusPush.authMethod is not a known method"
    return None


class RetarusFakeState(FakeState):
    """Jobs, reports and inbound faxes of one fake Retarus region (two data centres)."""

    def __init__(
        self,
        *,
        customer_number: str = "99999TE",
        username: str = "faxuser",
        password: str = "secret",
        inbound_password: str = "inbound-secret",
        topics: tuple[str, ...] = ("faxbridge",),
        region: str = "de",
        placement: str = "alternate",
        send_seconds: float = 60.0,
        send_status: int = 201,
        retention_seconds: float = 30 * 86400.0,
        list_limit: int = 1000,
        empty_list_status: int = 200,
        inbound_document_seconds: float = 7 * 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        if send_status not in (200, 201) or empty_list_status not in (200, 404):
            raise ValueError("send_status is 200 or 201; empty_list_status is 200 or 404")
        self.customer_number = customer_number
        self.username = username
        self.password = password
        self.inbound_password = inbound_password
        self.topics = tuple(topics)
        self.region = region
        self.data_centres = (f"{region}1", f"{region}2")
        self.placement = placement
        """``"alternate"`` or a data centre name: where a job sent to the HA address is placed."""
        self.send_seconds = send_seconds
        self.send_status = send_status
        self.retention_seconds = retention_seconds
        self.list_limit = list_limit
        self.empty_list_status = empty_list_status
        self.inbound_document_seconds = inbound_document_seconds
        self.jobs: dict[str, FakeFaxJob] = {}
        """Every job ever accepted (deleted reports included): the faxes the fake has."""
        self.inbound: dict[str, FakeInboundFax] = {}
        self.rejections: list[str] = []
        self.duplicates_refused = 0
        self.ha_report_requests = 0
        self._alternate: Iterator[str] = itertools.cycle(self.data_centres)
        self._wall_start = datetime.now(UTC)
        self._clock_start = self.now()
        self.fax_hosts = {
            f"faxws.{region}1.retarus.com": f"{region}1",
            f"faxws.{region}2.retarus.com": f"{region}2",
            f"faxws-ha.{region}.retarus.com": "ha",
        }
        self.inbound_hosts = {f"api.{region}1.retarus.com": f"{region}1", f"api.{region}2.retarus.com": f"{region}2"}
        self.control = {"inbound": self._control_inbound, "outcome": self._control_outcome}

    # -- time and ids ------------------------------------------------------------------------------------

    def wall(self, moment: float) -> datetime:
        """The wall-clock time of a fake-clock moment."""
        return self._wall_start + timedelta(seconds=moment - self._clock_start)

    def _job_id(self) -> str:
        return f"FJFAKE{self.next_id():016d}"

    # -- outbound ----------------------------------------------------------------------------------------

    def place(self) -> str:
        """The data centre for a job submitted to the HA address."""
        if self.placement == "alternate":
            return next(self._alternate)
        if self.placement not in self.data_centres:
            raise ValueError(f"placement must be 'alternate' or one of {self.data_centres}")
        return self.placement

    def accept(self, data_centre: str, body: dict[str, Any]) -> FakeFaxJob:
        numbers = [str(r["number"]) for r in body["recipients"]]
        pages = 0
        for document in body.get("documents") or []:
            data = base64.b64decode(document["data"]) if isinstance(document.get("data"), str) else b""
            pages += _count_pages(data, document["name"])
        now = self.now()
        never = any(NUMBER_RULES.get(re.sub(r"\D", "", n)[-4:], "OK") is None for n in numbers)
        job = FakeFaxJob(
            job_id=self._job_id(),
            data_centre=data_centre,
            request=body,
            numbers=numbers,
            pages=max(pages, 1),
            submitted_at=now,
            finish_at=None if never else now + self.send_seconds,
        )
        self.jobs[job.job_id] = job
        return job

    def by_reference(self, customer_defined_id: str) -> FakeFaxJob | None:
        return next((j for j in self.jobs.values() if j.customer_defined_id == customer_defined_id), None)

    def set_outcome(self, job_id: str, status: str) -> None:
        """End ``job_id`` with ``status`` (``OK``, ``BUSY`` …) once its time has come."""
        job = self.jobs[job_id]
        job.outcome = status
        if job.finish_at is None:
            job.finish_at = job.submitted_at + self.send_seconds

    def finish(self, job_id: str, status: str | None = None) -> None:
        """End ``job_id`` now (with ``status`` if given)."""
        job = self.jobs[job_id]
        if status is not None:
            job.outcome = status
        job.finish_at = min(job.finish_at or self.now(), self.now())

    def outcome_of(self, job: FakeFaxJob, number: str) -> str:
        if job.outcome is not None:
            return job.outcome
        digits = re.sub(r"\D", "", number)
        if len(digits) < 6:
            return "WRONG_NO"
        return NUMBER_RULES.get(digits[-4:]) or "OK"

    def finished(self, job: FakeFaxJob) -> bool:
        return job.finish_at is not None and self.now() >= job.finish_at

    def visible(self, job: FakeFaxJob, data_centre: str) -> bool:
        """Whether ``data_centre`` still holds the report of ``job``."""
        if job.deleted or job.data_centre != data_centre:
            return False
        return not (
            self.finished(job) and job.finish_at is not None and self.now() - job.finish_at > self.retention_seconds
        )

    def report(self, job: FakeFaxJob) -> dict[str, Any]:
        """The ``FaxReport`` of ``job`` as it stands now."""
        done = self.finished(job)
        recipients = []
        for raw, number in zip(job.request["recipients"], job.numbers, strict=True):
            entry: dict[str, Any] = {
                "number": number,
                "alternativeNumbers": raw.get("alternativeNumbers"),
                "properties": raw.get("properties"),
            }
            if not done:
                entry.update(status="PENDING", reason="PENDING", durationInSecs=0)
            else:
                assert job.finish_at is not None
                status = self.outcome_of(job, number)
                digits = re.sub(r"\D", "", number)
                entry.update(
                    status=status,
                    reason=STATUS_TEXT.get(status, status),
                    sentTs=_now_utc_text(self.wall(job.finish_at)),
                    durationInSecs=job.pages * _SECONDS_PER_PAGE if status == "OK" else 0,
                    sentToNumber=("00" + digits[2:] if number.startswith("00") else "00" + digits),
                    remoteCsid=("+" + digits if status == "OK" else ""),
                )
            recipients.append(entry)
        reference = job.request.get("reference") or {}
        return {
            "jobId": job.job_id,
            "recipientStatus": recipients,
            "pages": job.pages if done else 0,
            "reference": {k: reference.get(k) for k in ("customerDefinedId", "billingCode", "billingInfo")},
        }

    def finished_in(self, data_centre: str) -> list[FakeFaxJob]:
        """Finished reports still held by ``data_centre``, oldest first."""
        jobs = [j for j in self.jobs.values() if self.visible(j, data_centre) and self.finished(j)]
        return sorted(jobs, key=lambda j: (j.finish_at or 0.0, j.job_id))

    # -- inbound -----------------------------------------------------------------------------------------

    def inject_inbound(
        self,
        document: bytes,
        *,
        caller: str,
        called: str,
        data_centre: str | None = None,
        topic: str | None = None,
        pages: int | None = None,
    ) -> FakeInboundFax:
        """A fax arrives for ``topic`` (the first one by default) at ``data_centre`` (DC1 by default)."""
        now = self.now()
        fax = FakeInboundFax(
            fax_id=f"FIFAKE{self.next_id():016d}",
            data_centre=data_centre or self.data_centres[0],
            topic=topic or self.topics[0],
            document=document,
            caller=caller,
            called=called,
            received_at=self.wall(now),
            arrived=now,
            pages=pages if pages is not None else _count_pages(document, "fax.pdf"),
        )
        if fax.data_centre not in self.data_centres:
            raise ValueError(f"data_centre must be one of {self.data_centres}")
        self.inbound[fax.fax_id] = fax
        return fax

    def document_available(self, fax: FakeInboundFax) -> bool:
        return self.now() - fax.arrived <= self.inbound_document_seconds

    async def _control_inbound(self, request: Request) -> Response:
        data = json_body(await request.body())
        if not isinstance(data, dict) or not isinstance(data.get("pdf_base64"), str):
            return JSONResponse({"error": "send {pdf_base64, caller, called, data_centre?, topic?}"}, status_code=400)
        fax = self.inject_inbound(
            base64.b64decode(data["pdf_base64"]),
            caller=str(data.get("caller", "")),
            called=str(data.get("called", "")),
            data_centre=data.get("data_centre"),
            topic=data.get("topic"),
        )
        return JSONResponse({"id": fax.fax_id, "data_centre": fax.data_centre, "topic": fax.topic})

    async def _control_outcome(self, request: Request) -> Response:
        data = json_body(await request.body())
        if not isinstance(data, dict) or data.get("job_id") not in self.jobs or not isinstance(data.get("status"), str):
            return JSONResponse({"error": "send {job_id, status} for a job the fake has"}, status_code=400)
        self.set_outcome(data["job_id"], data["status"])
        return JSONResponse({"job_id": data["job_id"], "status": data["status"]})


def _empty(status: int) -> Response:
    # Retarus documents its error answers as "No Content".
    return Response(status_code=status)


@dataclass
class _Handlers:
    state: RetarusFakeState

    # -- routing -----------------------------------------------------------------------------------------

    def fax_site(self, request: Request) -> str | None:
        prefix = request.path_params.get("site")
        if prefix is not None:
            return prefix if prefix in (*self.state.data_centres, "ha") else None
        return self.state.fax_hosts.get((request.url.hostname or "").lower())

    def inbound_site(self, request: Request) -> str | None:
        prefix = request.path_params.get("site")
        if prefix is not None:
            return prefix if prefix in self.state.data_centres else None
        return self.state.inbound_hosts.get((request.url.hostname or "").lower())

    def fax_authorised(self, request: Request) -> bool:
        state = self.state
        return (
            basic_credentials(request) == (state.username, state.password)
            and request.path_params.get("cust") == state.customer_number
        )

    def inbound_authorised(self, request: Request) -> bool:
        return basic_credentials(request) == (self.state.customer_number, self.state.inbound_password)

    def report_site(self, site: str) -> str:
        if site == "ha":
            # A balancer in front of both data centres: it asks one of them and never merges.
            self.state.ha_report_requests += 1
            return self.state.data_centres[0]
        return site

    # -- Fax4A -------------------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        state = self.state
        site = self.fax_site(request)
        if site is None:
            return _empty(404)
        if not self.fax_authorised(request):
            return _empty(401)
        body = json_body(await request.body())
        problem = validate_job(body)
        if problem is not None:
            state.rejections.append(problem)
            return _empty(400)
        reference = (body.get("reference") or {}).get("customerDefinedId")
        if isinstance(reference, str) and state.by_reference(reference) is not None:
            state.duplicates_refused += 1
            return _empty(409)
        job = state.accept(state.place() if site == "ha" else site, body)
        return JSONResponse({"jobId": job.job_id}, status_code=state.send_status)

    def reports_site(self, request: Request) -> str | Response:
        """The data centre whose reports a request may read, or the refusal (unknown host 404, bad login 401)."""
        site = self.fax_site(request)
        if site is None:
            return _empty(404)
        if not self.fax_authorised(request):
            return _empty(401)
        return self.report_site(site)

    async def reports(self, request: Request) -> Response:
        state = self.state
        site = self.reports_site(request)
        if isinstance(site, Response):
            return site
        if request.method == "GET":
            listed = state.finished_in(site)[: state.list_limit]
            if not listed and state.empty_list_status == 404:
                return _empty(404)
            return JSONResponse({"reports": [state.report(job) for job in listed]})
        if request.method == "DELETE":
            deleted = state.finished_in(site)[:1000]
            for job in deleted:
                job.deleted = True
            return JSONResponse({"reports": [{"jobId": job.job_id, "deleted": True} for job in deleted]})
        data = json_body(await request.body())
        action = data.get("action") if isinstance(data, dict) else None
        job_ids = data.get("jobIds") if isinstance(data, dict) else None
        if (
            not isinstance(action, str)
            or action.upper() not in ("GET", "DELETE")
            or not isinstance(job_ids, list)
            or not 1 <= len(job_ids) <= 1000
            or not all(isinstance(j, str) for j in job_ids)
        ):
            state.rejections.append("bulk request needs action GET|DELETE and 1..1000 jobIds")
            return _empty(400)
        found = {j: state.jobs[j] for j in job_ids if j in state.jobs and state.visible(state.jobs[j], site)}
        if action.upper() == "GET":
            return JSONResponse({"reports": [state.report(job) for job in found.values()]})
        items: list[dict[str, Any]] = []
        for job_id in job_ids:
            if job_id in found:
                found[job_id].deleted = True
                items.append({"jobId": job_id, "deleted": True})
            else:
                items.append({"jobId": job_id, "deleted": False, "reason": "NOT_FOUND"})
        return JSONResponse({"reports": items})

    async def report(self, request: Request) -> Response:
        state = self.state
        site = self.reports_site(request)
        if isinstance(site, Response):
            return site
        job = state.jobs.get(request.path_params["job_id"])
        if job is None or not state.visible(job, site):
            return _empty(404)
        if request.method == "DELETE":
            job.deleted = True
            return JSONResponse({"jobId": job.job_id, "deleted": True})
        return JSONResponse(state.report(job))

    # -- Fax2WSPull --------------------------------------------------------------------------------------

    def _inbound_base(self, request: Request) -> str:
        prefix = request.path_params.get("site")
        return f"{request.url.scheme}://{request.url.netloc}{'/' + prefix if prefix else ''}/faxin/rest/v1"

    async def topic(self, request: Request) -> Response:
        state = self.state
        site = self.inbound_site(request)
        if site is None:
            return _empty(404)
        if not self.inbound_authorised(request):
            return _empty(401)
        topic = request.path_params["topic"]
        if topic not in state.topics:
            return _empty(404)
        try:
            fetch = int(request.query_params.get("fetch", "10"))
            lease = int(request.query_params.get("timeout", "60"))
        except ValueError:
            return _empty(400)
        if fetch < 0 or lease < 0:
            return _empty(400)
        for fax_id in filter(None, request.query_params.get("ids", "").split(",")):
            fax = state.inbound.get(fax_id.strip())
            if fax is not None and fax.data_centre == site and fax.topic == topic:
                fax.acknowledged = True
        now = state.now()
        waiting = sorted(
            (
                f
                for f in state.inbound.values()
                if f.data_centre == site and f.topic == topic and not f.acknowledged and f.hidden_until <= now
            ),
            key=lambda f: f.arrived,
        )[:fetch]
        base = self._inbound_base(request)
        results = []
        for fax in waiting:
            fax.hidden_until = now + lease
            results.append(
                {
                    "id": fax.fax_id,
                    "documents": [{"name": fax.document_name, "url": f"{base}/files/{fax.document_name}"}],
                    "sender": fax.caller,
                    "recipient": fax.called,
                    "receivedTs": _now_utc_text(fax.received_at),
                    "pages": fax.pages,
                }
            )
        ids = ",".join(fax.fax_id for fax in waiting)
        here = f"{base}/topics/{topic}"
        meta = {
            "topic": topic,
            "fetch": fetch,
            "timeout": lease,
            "count": len(results),
            "next": f"{here}?fetch={fetch}&timeout={lease}&ids={ids}",
            "exit": f"{here}?fetch=0&timeout={lease}&ids={ids}",
        }
        return JSONResponse({"meta": meta, "results": results})

    async def file(self, request: Request) -> Response:
        state = self.state
        site = self.inbound_site(request)
        if site is None:
            return _empty(404)
        if not self.inbound_authorised(request):
            return _empty(401)
        name = request.path_params["name"]
        fax = next(
            (f for f in state.inbound.values() if f.document_name == name and f.data_centre == site),
            None,
        )
        if fax is None or not state.document_available(fax):
            return _empty(404)
        return Response(fax.document, media_type="application/pdf")


def create_app(**options: Any) -> FakeApp:
    """The fake region; ``options`` are ``RetarusFakeState``'s (``placement``, ``send_seconds``, …)."""
    state = RetarusFakeState(**options)
    handlers = _Handlers(state)
    routes: list[BaseRoute] = []
    for prefix in ("", "/{site}"):
        routes += [
            Route(prefix + "/rest/v1/{cust}/fax", handlers.send, methods=["POST"]),
            Route(prefix + "/rest/v1/{cust}/fax/reports", handlers.reports, methods=["GET", "POST", "DELETE"]),
            Route(prefix + "/rest/v1/{cust}/fax/reports/{job_id}", handlers.report, methods=["GET", "DELETE"]),
            Route(prefix + "/faxin/rest/v1/topics/{topic}", handlers.topic, methods=["POST"]),
            Route(prefix + "/faxin/rest/v1/files/{name}", handlers.file, methods=["GET"]),
        ]
    return build("retarus", state, routes)
