"""A fake Sipwise C5 (NGCP) REST API: ``/api/faxes/``, the fax journal, fax recordings and the fax settings.

What it reproduces (providers.md §4):

* HTTP Basic, realm ``api_admin_http`` (default login ``administrator``/``administrator``, the NGCP's own
  default); a wrong or missing login gets 401 with the challenge and a plain-text body. Without the ``fax``
  licence (``fax_licence=False``) every fax resource answers 403 ``{"code":403,"message":"Invalid license"}``.
* ``POST /api/faxes/``: ``multipart/form-data`` with a *form field* ``json`` (the resource as JSON text) and an
  optional *file part* ``faxfile``; or ``application/json`` with the text in ``data`` (``accept_json``). The
  shape is enforced as the NGCP does: ``json`` sent as a file part or missing is "not a well-formed
  'application/json' document" (400); a file under another name is not seen, so neither ``faxfile`` nor ``data``
  is there (422 "You need to specify a file to fax…"); another content type is 415; ``subscriber_id`` must be a
  positive integer, ``destination`` non-empty, ``quality`` one of normal/fine/super, the file a TXT, PDF, PS or
  TIFF of at most 64 MiB (422 "Validation failed. field='…', input='…', errors='…'"). An unknown subscriber is
  422 "Fax subscriber not found." (404 with ``subscriber_not_found_status=404``, as older versions), a subscriber
  whose fax is not active 422 "Invalid subscriber fax preferences", the fax server switched off
  (``faxserver_feature=False``) 422 "Faxserver feature is not active.". Success is **201 with an empty body and no
  Location** (``location_header=True`` adds one, a variant the adapter also accepts).
* The fax is then *spooled*, invisible to the API, and only ``processing_seconds`` (default 40) of the fake's
  clock later (``FakeState.advance``) does its journal entry appear, with ``direction`` ``out``, the subscriber's
  number as ``caller`` and the destination's digits (without ``+`` or ``00``) as ``callee``.
* ``GET /api/faxes/`` is the journal as a HAL collection: ``subscriber_id`` filter, ``page``/``rows`` (defaults
  1 and 10), ``order_by``/``order_by_direction``, ``tz``; ``total_count``, ``self``/``next``/``prev`` links, and
  Data::HAL's quirk: ``_embedded."ngcp:faxes"`` (and the ``ngcp:faxes`` links) is an **object when there is one
  item**, a list for more, absent for none. ``GET /api/faxes/{id}`` is one entry (404 "Entity 'faxe' not
  found."), ``DELETE`` removes it (``allow_delete``, else 405).
* ``GET /api/faxrecordings/{id}?format=ps|pdf|pdf14``: the document (the fake keeps what it was given and does
  not convert), 422 "Unknown fax recording format" for any other format, and the NGCP's
  ``Content-Disposition`` whose closing quote is missing.
* ``GET``/``PATCH /api/faxserversettings/{id}`` and ``/api/mailtofaxsettings/{id}`` (JSON Patch ``add``,
  ``replace``, ``remove``, ``copy`` on top-level fields; ``Prefer: return=representation`` gives 200 with the
  item, otherwise 204 ``Preference-Applied: return=minimal``). Deactivating fax makes sends fail as above.
* Variants of older versions: ``numbers_as_strings=True`` writes ``duration``/``pages``/``signal_rate`` as strings;
  ``legacy_peer_fields=True`` writes ``peer_number``/``peer_name`` instead of ``caller``/``callee``;
  ``honour_tz=False`` ignores ``tz`` and writes times in ``owner_tz``.

Outcome of a sent fax by the destination's last four digits:

====  ===============  ============================================================
0001  busy             ``FAILED``, "User Busy / SIP 486 Busy Here [3/3]"
0002  no answer        ``FAILED``, "No Answer / SIP 480 Temporarily Unavailable [3/3]"
0003  invalid number   ``FAILED``, "Unallocated Number / SIP 404 Not Found [1/3]"
0004  fax error        ``FAILED``, "Normal Clearing / SIP 200 OK [3/3]" (answered, no fax)
0005  declined         ``FAILED``, "Call Rejected / SIP 603 Decline [1/3]"
0009  lost             the fax server never writes a journal entry
else  delivered        ``SUCCESS``, "Normal Clearing / SIP 200 OK [1/3]"
====  ===============  ============================================================

``SUCCESS`` is the one status value documented; ``FAILED`` is this fake's assumption (the NGCP's vocabulary is
not public). ``SipwiseFakeState.set_outcome(job_id_or_spool_id, outcome)`` chooses another outcome for a fax
still in the spool (also ``POST /_fake/outcome {"fax": …, "outcome": …}``), ``inject_inbound`` adds a received fax
(also ``POST /_fake/inbound {"caller", "called", "document_base64", "subscriber_id"?}``), ``GET /_fake/spool``
lists the spooled and sent faxes.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.fakes.base import FakeApp, FakeState, basic_credentials, build, json_body

__all__ = ["OUTCOMES", "FakeSubscriber", "JournalRow", "SipwiseFakeState", "SpooledFax", "create_app"]

Outcome = Literal["delivered", "busy", "no_answer", "invalid_number", "fax_error", "declined", "lost"]

OUTCOMES: dict[str, tuple[str, str]] = {
    "delivered": ("SUCCESS", "Normal Clearing / SIP 200 OK [1/3]"),
    "busy": ("FAILED", "User Busy / SIP 486 Busy Here [3/3]"),
    "no_answer": ("FAILED", "No Answer / SIP 480 Temporarily Unavailable [3/3]"),
    "invalid_number": ("FAILED", "Unallocated Number / SIP 404 Not Found [1/3]"),
    "fax_error": ("FAILED", "Normal Clearing / SIP 200 OK [3/3]"),
    "declined": ("FAILED", "Call Rejected / SIP 603 Decline [1/3]"),
}
_BY_SUFFIX: dict[str, Outcome] = {
    "0001": "busy",
    "0002": "no_answer",
    "0003": "invalid_number",
    "0004": "fax_error",
    "0005": "declined",
    "0009": "lost",
}
_HAL_TYPE = 'application/hal+json; profile="http://purl.org/sipwise/ngcp-api/"'
_CURIES = {"href": "http://purl.org/sipwise/ngcp-api/#rel-{rel}", "name": "ngcp", "templated": True}
_PROFILE = {"href": "http://purl.org/sipwise/ngcp-api/"}
_MAX_FILE = 64 * 1024 * 1024
_MAX_DATA = 1024 * 1024
_RENEW = ("never", "daily", "weekly", "monthly")


def outcome_for(destination: str) -> Outcome:
    """The outcome the number rules give ``destination``."""
    return _BY_SUFFIX.get(re.sub(r"\D", "", destination)[-4:], "delivered")


@dataclass
class FakeSubscriber:
    """An NGCP subscriber with its primary number and fax settings."""

    id: int
    number: str
    faxserver: dict[str, Any]
    mailtofax: dict[str, Any]


@dataclass
class SpooledFax:
    """A fax the API accepted: in the fax server's spool until ``due``, then in the journal."""

    spool_id: int
    subscriber_id: int
    destination: str
    resource: dict[str, Any]
    upload_name: str | None
    document: bytes
    submitted_at: float
    due: float
    outcome: Outcome
    journal_id: int | None = None
    reserved_id: int | None = None
    """The journal id announced in a ``Location`` header (``location_header=True``)."""


@dataclass
class JournalRow:
    """One row of ``voip_fax_journal``."""

    id: int
    subscriber_id: int
    time: float
    """Epoch seconds (the fake's wall clock)."""
    direction: str
    caller: str
    callee: str
    status: str
    reason: str
    pages: int
    document: bytes
    filename: str
    duration: int = 0
    signal_rate: int = 14400
    quality: str = "204x196"


def _default_faxserver(number: str) -> dict[str, Any]:
    return {
        "active": True,
        "name": "Example GmbH",
        "password": None,
        "t38": True,
        "ecm": True,
        "destinations": [
            {"destination": "fax@example.com", "filetype": "PDF14", "incoming": True, "outgoing": False, "status": True}
        ],
    }


def _default_mailtofax() -> dict[str, Any]:
    return {
        "active": False,
        "secret_key": "secretkeypassword",
        "last_secret_key_modify": "2024-01-31 10:00:00",
        "secret_key_renew": "daily",
        "secret_renew_notify": [{"destination": "user1@company.com"}],
        "acl": [],
    }


def _pages(document: bytes) -> int:
    if document.startswith(b"%PDF"):
        try:
            from pypdf import PdfReader

            return max(1, len(PdfReader(io.BytesIO(document)).pages))
        except Exception:
            return max(1, document.count(b"/Type /Page") - document.count(b"/Type /Pages"))
    return 1


def _file_type(document: bytes) -> str | None:
    """What the NGCP's form would call the upload: PDF, PS, TIFF, TXT, or ``None`` (refused)."""
    if document.startswith(b"%PDF"):
        return "pdf"
    if document.startswith(b"%!"):
        return "ps"
    if document.startswith((b"II*\x00", b"MM\x00*")):
        return "tif"
    try:
        document.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "txt" if b"\x00" not in document else None


def _media_type(document: bytes) -> str:
    kind = _file_type(document)
    return {
        "pdf": "application/pdf",
        "ps": "application/postscript",
        "tif": "image/tiff",
        "txt": "text/plain",
    }.get(kind or "", "application/octet-stream")


def _callee(destination: str) -> str:
    # The NGCP's rewrite rules leave E.164 without "+": 004930… and +4930… both become 4930….
    digits = re.sub(r"\D", "", destination)
    return digits[2:] if digits.startswith("00") else digits


class SipwiseFakeState(FakeState):
    """The NGCP's records: subscribers, the fax spool and the fax journal."""

    def __init__(
        self,
        *,
        username: str = "administrator",
        password: str = "administrator",
        subscribers: Mapping[int, str] | None = None,
        processing_seconds: float = 40.0,
        fax_licence: bool = True,
        faxserver_feature: bool = True,
        accept_json: bool = True,
        location_header: bool = False,
        numbers_as_strings: bool = False,
        legacy_peer_fields: bool = False,
        owner_tz: str = "UTC",
        honour_tz: bool = True,
        allow_delete: bool = True,
        subscriber_not_found_status: int = 422,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        self.username = username
        self.password = password
        self.subscribers: dict[int, FakeSubscriber] = {
            sid: FakeSubscriber(sid, number, _default_faxserver(number), _default_mailtofax())
            for sid, number in (subscribers or {3: "4930999000"}).items()
        }
        self.processing_seconds = processing_seconds
        self.fax_licence = fax_licence
        self.faxserver_feature = faxserver_feature
        self.accept_json = accept_json
        self.location_header = location_header
        self.numbers_as_strings = numbers_as_strings
        self.legacy_peer_fields = legacy_peer_fields
        self.owner_tz = ZoneInfo(owner_tz)
        self.honour_tz = honour_tz
        self.allow_delete = allow_delete
        self.subscriber_not_found_status = subscriber_not_found_status
        self.spool: list[SpooledFax] = []
        self.journal: dict[int, JournalRow] = {}
        self.rejected: list[tuple[int, str]] = []
        """(HTTP status, message) of every refused ``POST /api/faxes/``."""
        self._epoch = time.time()
        self._started = self.now()
        self._spool_ids = iter(range(1, 1 << 30))
        self.control: dict[str, Callable[[Request], Awaitable[Response]]] = {}
        """Extra ``/_fake/`` routes (``build`` picks them up)."""

    # -- time ----------------------------------------------------------------------------------------------

    def wall_time(self) -> float:
        """Epoch seconds on the fake's clock (real time at start, moved on by ``advance``)."""
        return self._epoch + (self.now() - self._started)

    # -- the fax server ----------------------------------------------------------------------------------

    @property
    def faxes_accepted(self) -> int:
        """Faxes ``POST /api/faxes/`` accepted (spooled or in the journal)."""
        return len(self.spool)

    def find(self, fax: str | int) -> SpooledFax | None:
        """A spooled or sent fax by spool id, job id (the uploaded ``<job id>.pdf``) or upload name."""
        for spooled in self.spool:
            if fax in (spooled.spool_id, str(spooled.spool_id), spooled.upload_name) or (
                isinstance(fax, str) and spooled.upload_name == f"{fax}.pdf"
            ):
                return spooled
        return None

    def set_outcome(self, fax: str | int, outcome: Outcome) -> SpooledFax:
        """Make a fax still in the spool end with ``outcome`` (see the number rules)."""
        spooled = self.find(fax)
        if spooled is None:
            raise LookupError(f"no fax {fax!r} in the fake's spool")
        if spooled.journal_id is not None:
            raise ValueError(f"fax {fax!r} already has its journal entry {spooled.journal_id}")
        if outcome != "lost" and outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join([*OUTCOMES, 'lost'])}")
        spooled.outcome = outcome
        return spooled

    def settle(self) -> None:
        """Write the journal entries of the faxes whose time has come, in the order the fax server finished."""
        now = self.now()
        due = sorted((f for f in self.spool if f.journal_id is None and f.due <= now), key=lambda f: f.due)
        for spooled in due:
            if spooled.outcome == "lost":
                continue
            status, reason = OUTCOMES[spooled.outcome]
            delivered = status == "SUCCESS"
            pages = _pages(spooled.document) if delivered else 0
            subscriber = self.subscribers.get(spooled.subscriber_id)
            row = JournalRow(
                id=spooled.reserved_id if spooled.reserved_id is not None else self.next_id(),
                subscriber_id=spooled.subscriber_id,
                time=self.wall_time() - (now - spooled.due),
                direction="out",
                caller=subscriber.number if subscriber else "webfax",
                callee=_callee(spooled.destination),
                status=status,
                reason=reason,
                pages=pages,
                document=spooled.document,
                filename=f"{uuid.uuid4()}.tif",
                duration=25 * pages if delivered else 0,
            )
            self.journal[row.id] = row
            spooled.journal_id = row.id

    def inject_inbound(
        self,
        document: bytes,
        *,
        caller: str,
        called: str,
        subscriber_id: int | None = None,
        status: str = "SUCCESS",
        reason: str = "Normal Clearing / SIP 200 OK [1/1]",
    ) -> JournalRow:
        """A fax received for a subscriber (numbers given in E.164 are written the NGCP's way, without ``+``)."""
        sid = subscriber_id if subscriber_id is not None else next(iter(self.subscribers))
        if sid not in self.subscribers:
            raise LookupError(f"no subscriber {sid} in the fake")
        received = status == "SUCCESS"
        row = JournalRow(
            id=self.next_id(),
            subscriber_id=sid,
            time=self.wall_time(),
            direction="in",
            caller=_callee(caller) if caller.startswith("+") else caller,
            callee=_callee(called) if called.startswith("+") else called,
            status=status,
            reason=reason,
            pages=_pages(document) if received else 0,
            document=document,
            filename=f"{uuid.uuid4()}.tif" if document else "",
            duration=20,
        )
        self.journal[row.id] = row
        return row

    def set_fax_active(self, subscriber_id: int, active: bool) -> None:
        self.subscribers[subscriber_id].faxserver["active"] = active

    # -- representations ---------------------------------------------------------------------------------

    def render_time(self, when: float, zone: ZoneInfo) -> str:
        return datetime.fromtimestamp(when, UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    def journal_item(self, row: JournalRow, zone: ZoneInfo) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "id": row.id,
            "time": self.render_time(row.time, zone),
            "subscriber_id": row.subscriber_id,
            "direction": row.direction,
            "status": row.status,
            "reason": row.reason,
            "quality": row.quality,
            "filename": row.filename,
            "duration": row.duration,
            "pages": row.pages,
            "signal_rate": row.signal_rate,
        }
        if self.legacy_peer_fields:
            resource["peer_number"] = row.callee if row.direction == "out" else row.caller
            resource["peer_name"] = ""
        else:
            resource["caller"] = row.caller
            resource["callee"] = row.callee
        if self.numbers_as_strings:
            for name in ("duration", "pages", "signal_rate"):
                resource[name] = str(resource[name])
        resource["_links"] = {
            "collection": {"href": "/api/faxes/"},
            "curies": _CURIES,
            "ngcp:faxrecordings": {"href": f"/api/faxrecordings/{row.id}"},
            "ngcp:subscribers": {"href": f"/api/subscribers/{row.subscriber_id}"},
            "profile": _PROFILE,
            "self": {"href": f"/api/faxes/{row.id}"},
        }
        return resource


# -- HTTP helpers -----------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    return Response(json.dumps({"code": status, "message": message}) + "\n", status, media_type="application/json")


def _hal(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # Data::HAL's as_json: canonical (sorted keys) and pretty.
    text = json.dumps(body, sort_keys=True, indent=3, ensure_ascii=False) + "\n"
    return Response(text, status, headers=dict(headers or {}), media_type=_HAL_TYPE)


def _one_or_many(values: list[Any]) -> Any:
    # Data::HAL's _to_nested: a single value is not wrapped in a list.
    return values[0] if len(values) == 1 else values


def _validation(name: str, value: Any, errors: str) -> Response:
    shown = "" if value is None else value
    return _error(422, f"Validation failed. field='{name}', input='{shown}', errors='{errors}'")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    return None


def _guard(state: SipwiseFakeState, request: Request) -> Response | None:
    """Authentication, then the fax licence, as the NGCP checks them before any fax resource."""
    if basic_credentials(request) != (state.username, state.password):
        return Response(
            "Authorization required.",
            401,
            headers={"WWW-Authenticate": 'Basic realm="api_admin_http"'},
            media_type="text/plain",
        )
    if not state.fax_licence:
        return _error(403, "Invalid license")
    return None


def _zone(state: SipwiseFakeState, request: Request) -> ZoneInfo | Response:
    name = request.query_params.get("tz")
    if not name or not state.honour_tz:
        return state.owner_tz
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _error(400, f"Invalid timezone value '{name}'")


# -- /api/faxes/ --------------------------------------------------------------------------------------------


async def _read_submission(
    state: SipwiseFakeState, request: Request
) -> tuple[dict[str, Any], bytes | None, str | None] | Response:
    """The resource, the uploaded file and its name from a POST, or the NGCP's answer to a malformed one."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form()
        try:
            text = form.get("json")
            if not isinstance(text, str):
                # A "json" part sent as a file is an upload, not a parameter: the NGCP does not see it.
                return _error(400, "The entity is not a well-formed 'application/json' document. Missing 'json' field.")
            resource = json_body(text.encode("utf-8"))
            if not isinstance(resource, dict):
                return _error(400, "The entity is not a well-formed 'application/json' document. malformed JSON string")
            upload = form.get("faxfile")
            if isinstance(upload, UploadFile):
                return resource, await upload.read(), upload.filename
            return resource, None, None
        finally:
            await form.close()
    if media == "application/json" and state.accept_json:
        resource = json_body(await request.body())
        if not isinstance(resource, dict):
            return _error(400, "The entity is not a well-formed 'application/json' document. malformed JSON string")
        return resource, None, None
    accepted = "multipart/form-data, application/json" if state.accept_json else "multipart/form-data"
    return _error(415, f"Unsupported media type '{content_type}', accepting {accepted} only.")


async def _send(state: SipwiseFakeState, request: Request) -> Response:
    if not state.faxserver_feature:
        return _error(422, "Faxserver feature is not active.")
    if request.headers.get("link"):
        return _error(400, "Invalid 'Link' header, not allowed in POST requests.")
    read = await _read_submission(state, request)
    if isinstance(read, Response):
        return read
    resource, document, upload_name = read
    subscriber_id = _positive_int(resource.get("subscriber_id"))
    if subscriber_id is None:
        return _validation("subscriber_id", resource.get("subscriber_id"), "Value must be a positive integer")
    destination = resource.get("destination")
    if not isinstance(destination, str) or not destination.strip():
        return _validation("destination", destination, "Destination field is required")
    quality = resource.get("quality")
    if quality is not None and quality not in ("normal", "fine", "super"):
        return _validation("quality", quality, "'" + str(quality) + "' is not a valid value")
    data = resource.get("data")
    if data is not None and (not isinstance(data, str) or len(data.encode("utf-8")) > _MAX_DATA):
        return _validation("data", "…", "Text to fax must be a string of at most 1 MiB")
    if document is None and not data:
        return _validation(
            "faxfile", None, "You need to specify a file to fax, if no text is entered in the content field"
        )
    if document is not None and len(document) > _MAX_FILE:
        return _validation("faxfile", upload_name, "File is too big (at most 64 MiB)")
    if document is not None and _file_type(document) is None:
        return _validation("faxfile", upload_name, "Supported File Types are TXT, PDF, PS, TIFF")
    subscriber = state.subscribers.get(subscriber_id)
    if subscriber is None:
        return _error(state.subscriber_not_found_status, "Fax subscriber not found.")
    if not subscriber.faxserver.get("active"):
        return _error(422, "Invalid subscriber fax preferences")
    now = state.now()
    spooled = SpooledFax(
        spool_id=next(state._spool_ids),
        subscriber_id=subscriber_id,
        destination=destination.strip(),
        resource=resource,
        upload_name=upload_name,
        document=document if document is not None else str(data).encode("utf-8"),
        submitted_at=now,
        due=now + state.processing_seconds,
        outcome=outcome_for(destination),
    )
    state.spool.append(spooled)
    headers: dict[str, str] = {}
    if state.location_header:
        # Not what the NGCP does (creation is asynchronous); a variant the adapter accepts. The entry's id is
        # reserved now and used when the fax server writes it.
        spooled.reserved_id = state.next_id()
        headers["Location"] = f"/api/faxes/{spooled.reserved_id}"
    return Response(b"", 201, headers=headers)


def _collection_links(path: str, params: Mapping[str, str], page: int, rows: int, total: int) -> dict[str, Any]:
    def href(number: int) -> str:
        query = {k: v for k, v in params.items() if k not in ("page", "rows")}
        return f"{path}?" + urlencode({"page": number, "rows": rows, **query})

    links: dict[str, Any] = {"curies": _CURIES, "profile": _PROFILE, "self": {"href": href(page)}}
    if total / rows > page:
        links["next"] = {"href": href(page + 1)}
    if page > 1:
        links["prev"] = {"href": href(page - 1)}
    return links


async def _journal(state: SipwiseFakeState, request: Request) -> Response:
    params = request.query_params
    page, rows = _positive_int(params.get("page", "1")), _positive_int(params.get("rows", "10"))
    if page is None or rows is None:
        return _error(400, "Invalid page or rows parameter, must be a positive integer.")
    zone = _zone(state, request)
    if isinstance(zone, Response):
        return zone
    state.settle()
    found: Iterable[JournalRow] = state.journal.values()
    if "subscriber_id" in params:
        wanted = _positive_int(params["subscriber_id"])
        found = [row for row in found if row.subscriber_id == wanted]
    order_by = params.get("order_by", "id")
    descending = params.get("order_by_direction", "asc").lower() == "desc"
    key: Callable[[JournalRow], Any] = {"time": lambda r: (r.time, r.id)}.get(order_by, lambda r: r.id)
    ordered = sorted(found, key=key, reverse=descending)
    chosen = ordered[(page - 1) * rows : page * rows]
    body: dict[str, Any] = {"total_count": len(ordered)}
    links = _collection_links("/api/faxes/", params, page, rows, len(ordered))
    if chosen:
        body["_embedded"] = {"ngcp:faxes": _one_or_many([state.journal_item(row, zone) for row in chosen])}
        links["ngcp:faxes"] = _one_or_many([{"href": f"/api/faxes/{row.id}"} for row in chosen])
    body["_links"] = links
    return _hal(body)


async def faxes(state: SipwiseFakeState, request: Request) -> Response:
    refused = _guard(state, request)
    if refused is not None:
        return refused
    if request.method == "POST":
        answer = await _send(state, request)
        if answer.status_code >= 400:
            state.rejected.append((answer.status_code, json.loads(bytes(answer.body))["message"]))
        return answer
    return await _journal(state, request)


async def fax_item(state: SipwiseFakeState, request: Request) -> Response:
    refused = _guard(state, request)
    if refused is not None:
        return refused
    raw_id = request.path_params["fax_id"]
    if not raw_id.isdigit():
        return _error(400, "Invalid id in request URI")
    state.settle()
    row = state.journal.get(int(raw_id))
    if row is None:
        return _error(404, "Entity 'faxe' not found.")
    if request.method == "DELETE":
        if not state.allow_delete:
            return _error(405, "Method not allowed")
        del state.journal[row.id]
        return Response(b"", 204)
    zone = _zone(state, request)
    if isinstance(zone, Response):
        return zone
    return _hal(state.journal_item(row, zone))


async def recording(state: SipwiseFakeState, request: Request) -> Response:
    refused = _guard(state, request)
    if refused is not None:
        return refused
    raw_id = request.path_params["fax_id"]
    if not raw_id.isdigit():
        return _error(400, "Invalid id in request URI")
    state.settle()
    row = state.journal.get(int(raw_id))
    if row is None:
        return _error(404, f"Fax recording {raw_id} was not found.")
    fmt = request.query_params.get("format")
    if fmt is not None and fmt not in ("ps", "pdf", "pdf14"):
        return _error(422, "Unknown fax recording format")
    if not row.document or not row.filename:
        return _error(500, f"Error processing fax recording {raw_id}")
    ext = {"ps": "ps", "pdf": "pdf", "pdf14": "pdf"}.get(fmt or "", "tif")
    basename = row.filename.rsplit(".", 1)[0]
    # The NGCP's header lacks its closing quote; reproduced as it is.
    disposition = f'attachment; filename="{row.id}-{basename}.{ext}'
    return Response(
        row.document, 200, headers={"Content-Disposition": disposition}, media_type=_media_type(row.document)
    )


# -- settings -------------------------------------------------------------------------------------------------

_BOOLEANS = {"faxserver": ("active", "t38", "ecm"), "mailtofax": ("active",)}


def _settings_item(kind: str, subscriber: FakeSubscriber) -> dict[str, Any]:
    if kind == "faxserver":
        item = {"id": subscriber.id, **subscriber.faxserver}
        path = "faxserversettings"
    else:
        item = dict(subscriber.mailtofax)  # the NGCP emits no id here
        path = "mailtofaxsettings"
    item["_links"] = {
        "collection": {"href": f"/api/{path}/"},
        "curies": _CURIES,
        "ngcp:subscribers": {"href": f"/api/subscribers/{subscriber.id}"},
        "profile": _PROFILE,
        "self": {"href": f"/api/{path}/{subscriber.id}"},
    }
    return item


def _apply_patch(document: dict[str, Any], operations: Any) -> dict[str, Any] | str:
    if not isinstance(operations, list) or not operations:
        return "The entity is not a well-formed 'application/json-patch+json' document."
    result: dict[str, Any] = json.loads(json.dumps(document))
    for operation in operations:
        if not isinstance(operation, dict) or not isinstance(operation.get("path"), str):
            return "Invalid PATCH operation, need 'op' and 'path'."
        op, path = operation.get("op"), operation["path"]
        name = path.lstrip("/")
        if not name or "/" in name:
            return f"Invalid PATCH path '{path}' (the fake changes top-level fields only)."
        if op in ("add", "replace"):
            if "value" not in operation:
                return f"Invalid PATCH operation '{op}', missing 'value'."
            if op == "replace" and name not in result:
                return f"Invalid PATCH path '{path}'."
            result[name] = operation["value"]
        elif op == "remove":
            result.pop(name, None)
        elif op == "copy":
            source = str(operation.get("from", "")).lstrip("/")
            if source not in result:
                return f"Invalid PATCH 'from' path '{operation.get('from')}'."
            result[name] = json.loads(json.dumps(result[source]))
        else:
            return f"Invalid PATCH op '{op}', must be one of add, replace, remove, copy."
    return result


def _store_settings(state: SipwiseFakeState, kind: str, subscriber: FakeSubscriber, new: dict[str, Any]) -> str | None:
    for name in _BOOLEANS[kind]:
        if name in new:
            new[name] = bool(new[name]) if not isinstance(new[name], str) else new[name].lower() in ("1", "true")
    if kind == "faxserver":
        destinations = new.get("destinations", [])
        if not isinstance(destinations, list):
            return "Invalid field 'destinations'. Must be an array."
        subscriber.faxserver = {**_default_faxserver(subscriber.number), **new, "destinations": destinations}
        return None
    for name in ("acl", "secret_renew_notify"):
        if not isinstance(new.get(name, []), list):
            return f"Invalid field '{name}'. Must be an array."
    if new.get("secret_key_renew") not in _RENEW:
        return f"Validation failed. field='secret_key_renew', input='{new.get('secret_key_renew')}'"
    if "secret_key" in new:
        new["last_secret_key_modify"] = state.render_time(state.wall_time(), state.owner_tz)
    subscriber.mailtofax = new
    return None


async def settings(state: SipwiseFakeState, request: Request) -> Response:
    refused = _guard(state, request)
    if refused is not None:
        return refused
    kind = "faxserver" if request.url.path.startswith("/api/faxserversettings/") else "mailtofax"
    raw_id = request.path_params["subscriber_id"]
    if not raw_id.isdigit():
        return _error(400, "Invalid id in request URI")
    subscriber = state.subscribers.get(int(raw_id))
    if subscriber is None:
        return _error(
            404,
            "Entity 'faxserversetting' not found." if kind == "faxserver" else "Entity 'mailtofaxsettings' not found.",
        )
    if request.method == "GET":
        return _hal(_settings_item(kind, subscriber))
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json-patch+json":
        return _error(415, f"Unsupported media type '{media}', accepting application/json-patch+json only.")
    current = {k: v for k, v in _settings_item(kind, subscriber).items() if k not in ("_links", "id")}
    patched = _apply_patch(current, json_body(await request.body()))
    if isinstance(patched, str):
        return _error(400, patched)
    problem = _store_settings(state, kind, subscriber, patched)
    if problem is not None:
        return _error(422, problem)
    if "return=representation" in request.headers.get("prefer", ""):
        return _hal(_settings_item(kind, subscriber), headers={"Preference-Applied": "return=representation"})
    return Response(b"", 204, headers={"Preference-Applied": "return=minimal"})


# -- the app ------------------------------------------------------------------------------------------------


def create_app(**options: Any) -> FakeApp:
    """The fake NGCP; ``options`` are ``SipwiseFakeState``'s (login, subscribers, timing, version variants)."""
    state = SipwiseFakeState(**options)

    async def inbound(request: Request) -> Response:
        data = json_body(await request.body())
        if not isinstance(data, dict) or not {"caller", "called"} <= data.keys():
            return JSONResponse({"error": 'need {"caller", "called", "document_base64"}'}, status_code=400)
        document = base64.b64decode(str(data.get("document_base64", "")))
        row = state.inject_inbound(
            document, caller=str(data["caller"]), called=str(data["called"]), subscriber_id=data.get("subscriber_id")
        )
        return JSONResponse({"id": row.id})

    async def outcome(request: Request) -> Response:
        data = json_body(await request.body())
        if not isinstance(data, dict) or "fax" not in data or "outcome" not in data:
            return JSONResponse({"error": 'need {"fax": job id or spool id, "outcome": …}'}, status_code=400)
        try:
            spooled = state.set_outcome(data["fax"], data["outcome"])
        except (LookupError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"spool_id": spooled.spool_id, "outcome": spooled.outcome})

    async def spool(request: Request) -> Response:
        state.settle()
        return JSONResponse(
            [
                {
                    "spool_id": f.spool_id,
                    "subscriber_id": f.subscriber_id,
                    "destination": f.destination,
                    "upload_name": f.upload_name,
                    "outcome": f.outcome,
                    "journal_id": f.journal_id,
                }
                for f in state.spool
            ]
        )

    def bound(
        handler: Callable[[SipwiseFakeState, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(state, request)

        return endpoint

    state.control = {"inbound": inbound, "outcome": outcome, "spool": spool}
    routes: list[BaseRoute] = [
        Route("/api/faxes/", bound(faxes), methods=["GET", "POST"]),
        Route("/api/faxes/{fax_id}", bound(fax_item), methods=["GET", "DELETE"]),
        Route("/api/faxrecordings/{fax_id}", bound(recording), methods=["GET"]),
        Route("/api/faxserversettings/{subscriber_id}", bound(settings), methods=["GET", "PATCH"]),
        Route("/api/mailtofaxsettings/{subscriber_id}", bound(settings), methods=["GET", "PATCH"]),
    ]
    return build("sipwise", state, routes)
