"""A fake 4PSA VoipNow UnifiedAPI: the OAuth token endpoint and "Create Faxes" (providers.md §5, §6).

Endpoints:

``POST /oauth/token.php``
    Form ``grant_type=client_credentials&client_id=…&client_secret=…`` (``type`` and ``redirect_uri`` are
    accepted and ignored). Answers ``200 {"access_token", "token_type": "Bearer", "expires_in"}``; wrong
    credentials ``401 {"error": "invalid_client"}``; another grant type ``400 {"error":
    "unsupported_grant_type"}``. Tokens expire ``token_lifetime`` seconds later on the fake's clock.
``POST /uapi/faxes/{userId}/{extension}`` (also under the older ``/unifiedapi/``)
    The token as ``Authorization: Bearer …`` or as query ``accessRequestToken=Bearer …``; missing, unknown or
    expired: ``401 {"error": {"code": "access_denied", …}}`` (``access_denied_code`` chooses the spelling, the
    3.0 docs have ``access_denided``). ``userId`` must be ``@me``, ``@viewer``, ``@owner`` or ``user_id``
    (else ``400 user_invalid``); ``extension`` one of ``extensions`` (else, and for ``@self``, ``400
    extension_invalid``; ``*`` may arrive raw or as ``%2A``). The body must be ``multipart/form-data`` with a
    part ``request`` holding JSON ``{"recipients": [...]}`` (1 to ``max_recipients`` phone numbers, optionally
    with ``+``, or extension numbers) else ``400 fx_recipients_invalid``, and 1 to ``max_files`` file parts
    (``files`` in the docs; like the server click2fax talks to, any part with a file name counts) else ``400
    fx_file_invalid`` / ``400 fx_max_files_reached``. A file must be jpg, tif, pdf or txt by name, not empty,
    and a ``.pdf``/``.tif``/``.jpg`` must start like one (``fx_file_invalid``). Success: ``200 {"id": "1",
    "uid": "<32 hex>"}``.

There is no status, list or download call, as at VoipNow. Each fax still moves through the states the VoipNow
interface shows as the fake's clock advances (``FakeState.advance``): ``Pre-Approved`` (faxes created through
UnifiedAPI need no approval), ``Scheduled For Sending`` after ``SCHEDULE_AFTER`` seconds, and after
``FINISH_AFTER`` seconds ``Sent``, ``Send Failed`` (every recipient failed) or ``Partially Sent``. Tests read
them with ``state.status_of(fax_id)``; out of process ``GET /_fake/faxes`` lists them.

Outcome by destination number (the digits of a recipient, ignoring ``+``):

* ending in ``0001``: the line is busy → ``Send Failed`` (cause ``busy``)
* ending in ``0002``: no fax machine answers → ``Send Failed`` (cause ``no_answer``)
* ending in ``0003``: refused at once with ``400 fx_recipients_invalid``; nothing is created
* anything else: delivered → ``Sent``

``state.set_outcome(fax_id, outcome)`` (or ``POST /_fake/outcome`` with ``{"id", "outcome"}``) sets the outcome
of every recipient of a fax: ``delivered``, ``busy``, ``no_answer`` or ``invalid_number`` (found out while
dialling). ``state.revoke_tokens()`` (``POST /_fake/revoke-tokens``) makes every issued token invalid, as a
restart or a revoked App would. Faults and rate limits come from ``bridge.fakes.base``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.fakes.base import FakeApp, FakeState, build, json_body

__all__ = ["FakeFax", "FakeFile", "VoipNowState", "create_app"]

Outcome = Literal["delivered", "busy", "no_answer", "invalid_number"]
OUTCOMES: frozenset[str] = frozenset({"delivered", "busy", "no_answer", "invalid_number"})
SCHEDULE_AFTER = 5.0
FINISH_AFTER = 30.0
ALLOWED_SUFFIXES = frozenset({".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".txt"})
_MAGIC = {
    ".pdf": (b"%PDF",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
}
_RECIPIENT = re.compile(r"^(?:\+?\d{3,20}|\d{4}\*\d{3})$")
_USER_ALIASES = frozenset({"@me", "@viewer", "@owner"})


@dataclass(frozen=True)
class FakeFile:
    """One file part as it arrived."""

    part: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class FakeFax:
    """One fax created through the API."""

    id: str
    uid: str
    user_id: str
    extension: str
    recipients: list[str]
    files: list[FakeFile]
    request: dict[str, Any]
    """The ``request`` part as parsed."""
    created_at: float
    raw_path: str
    """The path as the client wrote it (to see whether ``*`` came raw or percent-encoded)."""
    token_via: Literal["header", "query"]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """Per recipient, when set by ``set_outcome``; otherwise the number rules decide."""


def number_outcome(recipient: str) -> Outcome:
    """The outcome the number rules give ``recipient``."""
    digits = recipient.lstrip("+")
    if digits.endswith("0001"):
        return "busy"
    if digits.endswith("0002"):
        return "no_answer"
    if digits.endswith("0003"):
        return "invalid_number"
    return "delivered"


class VoipNowState(FakeState):
    """Tokens, faxes and their outcomes."""

    def __init__(
        self,
        *,
        client_id: str = "faxbridge-app",
        client_secret: str = "fake-app-secret",
        user_id: str = "1",
        extensions: Iterable[str] = ("0003*210", "210"),
        token_lifetime: int = 3600,
        max_files: int = 10,
        max_recipients: int = 10,
        access_denied_code: str = "access_denied",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client_id = client_id
        self.client_secret = client_secret
        self.user_id = user_id
        self.extensions = frozenset(extensions)
        self.token_lifetime = token_lifetime
        self.max_files = max_files
        self.max_recipients = max_recipients
        self.access_denied_code = access_denied_code
        self.tokens: dict[str, float] = {}
        """Issued tokens and when (fake clock) each expires."""
        self.tokens_issued = 0
        self.faxes: dict[str, FakeFax] = {}
        self.control = {"faxes": self._control_faxes, "outcome": self._control_outcome, "revoke-tokens": self._revoke}

    # -- tokens -------------------------------------------------------------------------------------------

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = self.now() + self.token_lifetime
        self.tokens_issued += 1
        return token

    def token_valid(self, token: str) -> bool:
        expires = self.tokens.get(token)
        return expires is not None and self.now() < expires

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working."""
        self.tokens.clear()

    # -- faxes --------------------------------------------------------------------------------------------

    def create_fax(
        self,
        *,
        user_id: str,
        extension: str,
        recipients: list[str],
        files: list[FakeFile],
        request: dict[str, Any],
        raw_path: str,
        token_via: Literal["header", "query"],
    ) -> FakeFax:
        fax_id = str(self.next_id())
        fax = FakeFax(
            id=fax_id,
            uid=secrets.token_hex(16),
            user_id=user_id,
            extension=extension,
            recipients=recipients,
            files=files,
            request=request,
            created_at=self.now(),
            raw_path=raw_path,
            token_via=token_via,
        )
        self.faxes[fax_id] = fax
        return fax

    def set_outcome(self, fax_id: str, outcome: Outcome) -> None:
        """Make every recipient of the fax end with ``outcome``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; use one of {', '.join(sorted(OUTCOMES))}")
        fax = self.faxes[fax_id]
        fax.outcomes = dict.fromkeys(fax.recipients, outcome)

    def outcome_of(self, fax: FakeFax, recipient: str) -> Outcome:
        return fax.outcomes.get(recipient) or number_outcome(recipient)

    def status_of(self, fax_id: str) -> str:
        """The state VoipNow's interface would show for the fax now."""
        fax = self.faxes[fax_id]
        age = self.now() - fax.created_at
        if age < SCHEDULE_AFTER:
            return "Pre-Approved"
        if age < FINISH_AFTER:
            return "Scheduled For Sending"
        delivered = [self.outcome_of(fax, r) == "delivered" for r in fax.recipients]
        if all(delivered):
            return "Sent"
        return "Partially Sent" if any(delivered) else "Send Failed"

    def describe(self, fax: FakeFax) -> dict[str, Any]:
        status = self.status_of(fax.id)
        finished = status in ("Sent", "Partially Sent", "Send Failed")
        return {
            "id": fax.id,
            "uid": fax.uid,
            "userId": fax.user_id,
            "extension": fax.extension,
            "recipients": fax.recipients,
            "files": [{"part": f.part, "filename": f.filename, "bytes": len(f.data)} for f in fax.files],
            "status": status,
            "results": {r: self.outcome_of(fax, r) for r in fax.recipients} if finished else {},
        }

    # -- control routes -----------------------------------------------------------------------------------

    async def _control_faxes(self, request: Request) -> Response:
        return JSONResponse([self.describe(fax) for fax in self.faxes.values()])

    async def _control_outcome(self, request: Request) -> Response:
        data = json_body(await request.body())
        if not isinstance(data, dict) or str(data.get("id")) not in self.faxes or data.get("outcome") not in OUTCOMES:
            return JSONResponse({"error": "send {'id': <fax id>, 'outcome': one of " + str(sorted(OUTCOMES))}, 400)
        self.set_outcome(str(data["id"]), data["outcome"])
        return JSONResponse(self.describe(self.faxes[str(data["id"])]))

    async def _revoke(self, request: Request) -> Response:
        self.revoke_tokens()
        return JSONResponse({"revoked": True})


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _bearer(value: str | None) -> str | None:
    scheme, _, token = (value or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _routes(state: VoipNowState) -> list[BaseRoute]:
    async def token(request: Request) -> Response:
        try:
            async with request.form() as form:
                fields = {key: value for key, value in form.items() if isinstance(value, str)}
        except MultiPartException:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if fields.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "only client_credentials is faked"}, 400
            )
        if fields.get("client_id") != state.client_id or fields.get("client_secret") != state.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "The client credentials are invalid"}, 401
            )
        return JSONResponse(
            {"access_token": state.issue_token(), "token_type": "Bearer", "expires_in": state.token_lifetime}
        )

    async def create_fax(request: Request) -> Response:
        via: Literal["header", "query"] = "header"
        access = _bearer(request.headers.get("authorization"))
        if access is None and "accessRequestToken" in request.query_params:
            access, via = _bearer(request.query_params["accessRequestToken"]), "query"
        if access is None or not state.token_valid(access):
            return _error(401, state.access_denied_code, "You are not authorized to use this request.")
        user_id = request.path_params["user_id"]
        extension = request.path_params["extension"]
        if user_id not in _USER_ALIASES and user_id != state.user_id:
            return _error(400, "user_invalid", "The user is invalid.")
        if extension == "@self" or extension not in state.extensions:
            return _error(400, "extension_invalid", "The extension is invalid.")
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return _error(400, "fx_recipients_invalid", "Value supplied in the Recipients parameter is missing.")
        try:
            async with request.form() as form:
                request_part = form.get("request")
                if isinstance(request_part, UploadFile):
                    request_text: str | None = (await request_part.read()).decode("utf-8", "replace")
                else:
                    request_text = request_part
                files = [
                    FakeFile(key, value.filename or "", value.headers.get("content-type"), await value.read())
                    for key, value in form.multi_items()
                    if isinstance(value, UploadFile) and key != "request" and value.filename
                ]
        except MultiPartException as exc:
            return _error(400, "fx_recipients_invalid", f"The request could not be read: {exc}")
        payload = json_body(request_text.encode()) if request_text is not None else None
        recipients = payload.get("recipients") if isinstance(payload, dict) else None
        if (
            not isinstance(recipients, list)
            or not 1 <= len(recipients) <= state.max_recipients
            or not all(isinstance(r, str) and _RECIPIENT.match(r) for r in recipients)
            or any(number_outcome(r) == "invalid_number" for r in recipients)
        ):
            return _error(
                400,
                "fx_recipients_invalid",
                "Value supplied in the Recipients parameter is missing or invalid.",
            )
        if len(files) > state.max_files:
            return _error(400, "fx_max_files_reached", "The number of files that can be sent was exceeded.")
        if not files or not all(_valid_file(f) for f in files):
            return _error(
                400, "fx_file_invalid", "One of the files is invalid. Allowed file types are: jpg, tif, pdf and txt."
            )
        assert isinstance(payload, dict)
        fax = state.create_fax(
            user_id=user_id,
            extension=extension,
            recipients=list(recipients),
            files=files,
            request=payload,
            raw_path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            token_via=via,
        )
        return JSONResponse({"id": fax.id, "uid": fax.uid})

    return [
        Route("/oauth/token.php", token, methods=["POST"]),
        Route("/uapi/faxes/{user_id}/{extension}", create_fax, methods=["POST"]),
        Route("/unifiedapi/faxes/{user_id}/{extension}", create_fax, methods=["POST"]),
    ]


def _valid_file(file: FakeFile) -> bool:
    name = file.filename.rsplit("/", 1)[-1].lower()
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in ALLOWED_SUFFIXES or not file.data:
        return False
    magic = _MAGIC.get(suffix)
    return magic is None or file.data.startswith(magic)


def create_app(**options: Any) -> FakeApp:
    """The fake VoipNow; ``options`` go to ``VoipNowState`` (credentials, user, extensions, limits)."""
    state = VoipNowState(**options)
    return build("voipnow", state, _routes(state))
