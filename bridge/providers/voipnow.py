"""4PSA VoipNow UnifiedAPI: faxes sent from one VoipNow extension (providers.md §5).

What it does. ``send`` gets an OAuth 2.0 access token with the App's client credentials
(``POST {base_url}/oauth/token.php``, form ``grant_type=client_credentials``, ``client_id``, ``client_secret``,
plus ``type=unifiedapi`` and the ``redirect_uri`` the vendor's own clients send), keeps it until shortly before
it expires, and posts the fax to ``POST {base_url}/uapi/faxes/{user_id}/{extension}`` as ``multipart/form-data``:
one part ``files`` (the PDF, ``application/octet-stream``, named ``<job id>.pdf``) and one part ``request``
(JSON ``{"recipients": ["<number>"]}``). VoipNow answers ``200 {"id": …, "uid": …}``; ``id`` becomes the
receipt's ``provider_fax_id``, the whole body its ``raw``.

What VoipNow does not have, and what follows from it:

* **No status call** (§5.4): the adapter does not declare ``STATUS_POLL``. The worker tells the sender that the
  fax was handed to VoipNow, not that it was delivered. ``FAX_STATES``/``state_report`` map the states the
  VoipNow interface shows (Pre-Approved … Sent, Partially Sent, Send Failed), for a person reading them and for
  any status source a later VoipNow version offers; the fake moves its faxes through the same states.
* **No client reference and no fax list**: nothing can answer "did an interrupted send arrive?". The adapter
  does not declare ``CLIENT_REFERENCE``; ``find_submission`` raises ``SubmissionUnknown``, so an interrupted
  send ends as uncertain (quarantined) and is never sent again by itself. Our job id travels as the file name
  (``<job id>.pdf``) so that a person can find the fax in VoipNow's fax list before releasing the job.
* **No inbound API and no webhooks**: no ``INBOUND_*``, no ``WEBHOOK``.
* **No sender-identity field**: the ``request`` part documents only ``recipients``. ``OutboundFax.caller_id``
  and ``OutboundFax.header`` are not sent; the caller id and fax header are those configured in VoipNow for
  the sending ``extension``. Sending undocumented fields could make VoipNow refuse every fax. The first fax
  that carries either is logged once (INFO), so an operator who set ``caller_id``/``fax_header`` on the
  account learns why they do not appear.
* **No quota headers** are documented; ``429`` (and ``503`` with ``Retry-After``) become ``RateLimited``.

Errors. VoipNow's error body is ``{"error": {"code": "…", "message": "…"}}``; the OAuth endpoint answers
``{"error": "invalid_client"}``. Both shapes are read (``ERRORS`` maps every documented code): invalid
recipients → ``InvalidNumber``; invalid files and too many files → permanent; ``internal_server_error``
(documented with HTTP 400 *and* 500) → temporary and, for a send, "maybe accepted"; ``access_denied`` (and the
3.0 docs' spelling ``access_denided``) and OAuth client errors → ``AuthenticationFailed``; ``user_invalid`` /
``extension_invalid`` / ``request_not_implemented`` → permanent, naming the setting to fix. A ``401``/``403``
to a request made with a cached token drops the token and repeats the request once with a new one (a refusal
of the token means VoipNow did not take the fax, so this cannot duplicate it). A ``2xx`` whose body carries an
``error`` is classified the same way.

Open questions (providers.md §7) and the reading chosen (each one fails safe):

* *Any fax status/list/download endpoint?* None is documented: no status polling, no lookup, no inbound (see
  above). Failing safe means never guessing an undocumented endpoint and never resending an interrupted fax.
* *``/uapi/`` or ``/unifiedapi/`` base path per VoipNow version?* ``api_path`` chooses, default ``/uapi`` (the
  current docs and the 2026 vendor client); ``/unifiedapi`` for older servers. A ``404`` is a permanent error
  that says to check ``api_path``; no automatic second try on the other path, so one send is one request.
* *Several ``files`` parts?* The adapter sends exactly one (one PDF per fax), so it does not depend on how
  several are treated; the fake accepts several (and, like the server the click2fax app talks to, any part
  that carries a file name).
* *Must ``*`` in the extension be percent-encoded?* It is sent raw (``/uapi/faxes/@me/0003*210``) as the
  vendor's own client does; ``*`` is legal in a URL path. A server that disagreed would answer
  ``extension_invalid``: a permanent error before any fax exists, never a duplicate.
* *Token lifetime 1 h or 2 h?* Neither is assumed: the token is kept for the ``expires_in`` VoipNow returns
  (a number or a numeric string), minus ``token_refresh_margin`` (at most half the lifetime). Without a
  usable ``expires_in`` the shorter documented lifetime, one hour, is assumed. A token refused earlier than
  that is replaced on the ``401``.
* *``200`` or ``204`` on success?* ``204`` "There are no faxes to be sent" means VoipNow created nothing for a
  fax we sent; since we cannot check, it raises ``SubmissionUnknown`` with ``maybe_accepted`` (a person
  looks) rather than reporting the fax handed over or sending it again. A ``2xx`` without an ``id``/``uid``
  is treated the same way (``MalformedResponse``, maybe accepted). ``id`` may be a number or a string.
* *How are recipients written?* (not in §7, but undocumented too) The docs show local numbers (``7778888``)
  and extensions. ``recipient_format`` chooses ``e164`` (``+4930123456``, the default) or ``digits``
  (``4930123456``, with an optional ``dial_prefix`` in front: ``00`` gives ``004930123456``) to match the
  dial plan of the sending extension; VoipNow refuses a format it cannot route with ``fx_recipients_invalid``
  (permanent, nothing sent).

The adapter accepts every documented variant of VoipNow's answers: ``id`` as number or string, ``expires_in``
as number or string, both error body shapes, both spellings of ``access_denied``, ``200`` and ``204``.

Tests and the fake: ``context.extra["transport"]`` replaces the network (see ``_http.make_client``) and
``context.extra["clock"]`` (a callable returning seconds, like ``time.monotonic``) replaces the clock that
decides when the cached token is renewed, so that token expiry can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.errors import (
    AuthenticationFailed,
    InvalidNumber,
    MalformedResponse,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    SubmissionUnknown,
)
from bridge.models import FaxStatus, OutboundFax, SendReceipt, StatusReport
from bridge.providers import _http
from bridge.providers._http import HttpTimeouts
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings

__all__ = [
    "ERRORS",
    "FAX_STATES",
    "ErrorRule",
    "VoipNowProvider",
    "VoipNowSettings",
    "classify_error",
    "format_recipient",
    "parse_error_body",
    "state_report",
    "token_lifetime",
]

log = logging.getLogger(__name__)

# The vendor's own client checks extensions with this: extended ("0003*210") or short ("210").
EXTENSION_PATTERN = re.compile(r"^(?:\d{4}\*\d{3}|\d{3})$")
_USER_ID_PATTERN = re.compile(r"^(?:@me|@viewer|@owner|\d+)$")
# Used when VoipNow gives no usable expires_in: the shorter of the two documented lifetimes.
DEFAULT_TOKEN_LIFETIME = 3600.0
# Kept from the vendor clients, which send this redirect_uri (with its typo) "for compatibility".
_REDIRECT_PATH = "/ouath/token.php"


class VoipNowSettings(ProviderSettings):
    """``[providers.NAME]`` with ``type = "voipnow"``; see ``config/provider-voipnow.toml``."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    base_url: str
    """The VoipNow server, e.g. ``https://voipnow.example.com`` (a path prefix is kept)."""
    api_path: Literal["/uapi", "/unifiedapi"] = "/uapi"
    token_path: str = "/oauth/token.php"
    client_id: str = Field(min_length=1)
    """The App ID of a *trusted* VoipNow App (client credentials need one)."""
    client_secret: SecretStr | None = None
    """Only from the environment (``FAXBRIDGE_PROVIDERS__NAME__CLIENT_SECRET``), never in a file."""
    client_secret_file: Path | None = None
    """A file holding the App secret; relative to ``state_dir``; read at every token request."""
    user_id: str = "@me"
    extension: str
    recipient_format: Literal["e164", "digits"] = "e164"
    dial_prefix: str = ""
    token_refresh_margin: float = Field(default=300.0, ge=0)
    timeouts: HttpTimeouts = HttpTimeouts()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://voipnow.example.com")
        return value.rstrip("/")

    @field_validator("token_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with / (the default is /oauth/token.php)")
        return value

    @field_validator("extension")
    @classmethod
    def _extension(cls, value: str) -> str:
        if not EXTENSION_PATTERN.fullmatch(value):
            raise ValueError("must be a VoipNow extension number: extended like 0003*210 or short like 210 (not @self)")
        return value

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if not _USER_ID_PATTERN.fullmatch(value):
            raise ValueError("must be @me, @viewer, @owner or a numeric VoipNow user id")
        return value

    @field_validator("dial_prefix")
    @classmethod
    def _dial_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9*#]*", value):
            raise ValueError("may contain only digits, * and #, e.g. 00")
        return value

    @model_validator(mode="after")
    def _prefix_needs_digits(self) -> VoipNowSettings:
        if self.dial_prefix and self.recipient_format != "digits":
            raise ValueError('dial_prefix needs recipient_format = "digits" (a prefix in front of "+" dials nothing)')
        return self

    @model_validator(mode="after")
    def _one_secret(self) -> VoipNowSettings:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError(
                "set exactly one of client_secret_file (a file with the App secret) or client_secret "
                "(from the environment: FAXBRIDGE_PROVIDERS__<NAME>__CLIENT_SECRET)"
            )
        return self


# -- mappings -------------------------------------------------------------------------------------------------

ErrorKind = Literal["invalid_number", "permanent", "temporary", "auth"]


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one VoipNow error code is classified, and the plain reason given for it."""

    kind: ErrorKind
    reason: str


ERRORS: Mapping[str, ErrorRule] = {
    # Create Faxes [seed:VoIPNow]
    "fx_recipients_invalid": ErrorRule(
        "invalid_number",
        "the number is not a valid fax number for VoipNow (check providers.{name}.recipient_format and "
        "dial_prefix if every number is refused)",
    ),
    "fx_file_invalid": ErrorRule(
        "permanent", "VoipNow refused the document as an invalid file (it takes PDF, TIFF, JPEG and text)"
    ),
    "fx_max_files_reached": ErrorRule("permanent", "the fax has more files than VoipNow allows in one fax"),
    # Listed with 400 for this call and with 500 in the common codes; either way the server failed midway.
    "internal_server_error": ErrorRule("temporary", "VoipNow failed with an internal error"),
    # Common codes [page: wiki.4psa.com HTTP Return Codes]; "access_denided" is the 3.0 page's spelling.
    "access_denied": ErrorRule(
        "auth", "VoipNow refused the App's access (it must be trusted and allowed to send faxes from the extension)"
    ),
    "access_denided": ErrorRule(
        "auth", "VoipNow refused the App's access (it must be trusted and allowed to send faxes from the extension)"
    ),
    "user_invalid": ErrorRule("permanent", "VoipNow does not know the user; check providers.{name}.user_id"),
    "extension_invalid": ErrorRule(
        "permanent", "VoipNow does not accept the sending extension; check providers.{name}.extension"
    ),
    "request_not_implemented": ErrorRule(
        "permanent", "this VoipNow server does not offer fax sending through UnifiedAPI; check api_path"
    ),
    # OAuth token endpoint (RFC 6749 §5.2; "invalid_client" seen from VoipNow)
    "invalid_client": ErrorRule(
        "auth", "VoipNow refused the App credentials; check providers.{name}.client_id and the client secret"
    ),
    "unauthorized_client": ErrorRule(
        "auth", "VoipNow does not let this App use client credentials; make the App trusted in VoipNow"
    ),
    "invalid_grant": ErrorRule("auth", "VoipNow refused the App credentials grant"),
    "invalid_scope": ErrorRule("auth", "VoipNow refused the token scope requested for the App"),
    "unsupported_grant_type": ErrorRule("auth", "VoipNow does not offer client credentials to this App"),
    "invalid_request": ErrorRule("permanent", "VoipNow refused the token request as malformed"),
}

# The states VoipNow's interface shows for a fax (no API reports them; see the module docstring).
FAX_STATES: Mapping[str, tuple[FaxStatus, str | None]] = {
    "not approved": (FaxStatus.QUEUED, None),
    "pre-approved": (FaxStatus.QUEUED, None),
    "approved": (FaxStatus.QUEUED, None),
    "scheduled for sending": (FaxStatus.QUEUED, None),
    "sending": (FaxStatus.SENDING, None),
    "sent": (FaxStatus.DELIVERED, None),
    "partially sent": (FaxStatus.FAILED, "only part of the fax reached the recipient"),
    "send failed": (FaxStatus.FAILED, "VoipNow could not send the fax"),
}

# Plain reasons for the causes a failed fax may carry.
_FAILURE_CAUSES: Mapping[str, str] = {
    "busy": "the line was busy",
    "no_answer": "no fax machine answered",
    "invalid_number": "the number is not a valid fax number",
}


def state_report(state: str, raw: Mapping[str, Any] | None = None, *, cause: str | None = None) -> StatusReport:
    """Map a VoipNow fax state (as its interface names it) into a ``StatusReport``; unknown states stay unknown."""
    key = " ".join(state.replace("_", " ").lower().split())
    status, reason = FAX_STATES.get(key, (FaxStatus.UNKNOWN, None))
    if status == FaxStatus.FAILED and cause:
        reason = _FAILURE_CAUSES.get(cause, reason)
    if status == FaxStatus.UNKNOWN:
        reason = f"VoipNow reports the fax as {state!r}, a state faxbridge does not know"
    return StatusReport(status=status, reason=reason, code=state, raw=dict(raw or {}))


def parse_error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(code, message)`` from VoipNow's ``{"error": {"code", "message"}}`` or OAuth's ``{"error": "…"}``."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        return (str(code) if code not in (None, "") else None), (str(message) if message else None)
    if isinstance(error, str) and error:
        message = body.get("error_description") or body.get("message")
        return error, (str(message) if message else None)
    return None, None


def classify_error(
    response: httpx.Response, *, provider: str, sending: bool, hint: str | None = None
) -> ProviderError | None:
    """The error a VoipNow answer means, or ``None`` for a plain success.

    Known codes are classified by code whatever the HTTP status (VoipNow lists ``internal_server_error`` with
    both 400 and 500); a ``429`` (or ``503`` with ``Retry-After``) stays a rate limit; anything else is
    classified by its HTTP status (``_http.check_response``).
    """
    code, message = parse_error_body(response)
    status = response.status_code
    success = 200 <= status < 300
    if success and code is None:
        return None
    detail = f"{code}: {message}" if code and message else (code or message)
    rule = ERRORS.get(code) if code else None
    rate_limited = status == 429 or (
        status == 503 and _http.retry_after_seconds(response.headers.get("retry-after")) is not None
    )
    if rule is not None and not rate_limited:
        reason = rule.reason.format(name=provider)
        text = f"{provider}: {reason} ({detail}, HTTP {status})"
        if rule.kind == "invalid_number":
            return InvalidNumber(text, provider=provider, code=code)
        if rule.kind == "auth":
            return AuthenticationFailed(text, provider=provider, code=code)
        if rule.kind == "temporary":
            return ProviderTemporaryError(text, provider=provider, code=code, maybe_accepted=sending)
        return ProviderPermanentError(text, provider=provider, code=code)
    if success:
        # A 2xx that says "error" with a code we do not know: we cannot tell whether the fax was taken.
        return ProviderTemporaryError(
            f"{provider}: VoipNow answered HTTP {status} with an unknown error ({detail})",
            provider=provider,
            code=code,
            maybe_accepted=sending,
        )
    explained = hint if status == 404 and hint else None
    if detail:
        explained = f"{explained} ({detail})" if explained else detail
    try:
        _http.check_response(response, provider=provider, sending=sending, reason=explained, code=code)
    except ProviderError as exc:
        return exc
    raise AssertionError(f"check_response accepted HTTP {status}")  # pragma: no cover - status is not 2xx here


def token_lifetime(value: object) -> float:
    """Seconds from ``expires_in`` (a number or a numeric string); the shorter documented lifetime otherwise."""
    if isinstance(value, bool):
        return DEFAULT_TOKEN_LIFETIME
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return DEFAULT_TOKEN_LIFETIME
    else:
        return DEFAULT_TOKEN_LIFETIME
    return seconds if seconds > 0 else DEFAULT_TOKEN_LIFETIME


def format_recipient(number: str, *, recipient_format: Literal["e164", "digits"], dial_prefix: str = "") -> str:
    """Write an E.164 number the way the sending extension dials it."""
    digits = number.strip().lstrip("+")
    if not digits.isdigit():
        raise InvalidNumber(f"{number!r} is not a number in E.164 form (+ and digits)")
    if recipient_format == "e164":
        return f"+{digits}"
    return f"{dial_prefix}{digits}"


def _file_name(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", job_id) + ".pdf"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float


class VoipNowProvider(FaxProvider):
    """Sends faxes through VoipNow's UnifiedAPI; the outcome is not reported back (no status call)."""

    type_name: ClassVar[str] = "voipnow"
    service_name: ClassVar[str] = "VoipNow"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    settings_model: ClassVar[type[ProviderSettings]] = VoipNowSettings

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, VoipNowSettings)
        self._settings = settings
        self._client = _http.make_client(context, base_url=settings.base_url, timeouts=settings.timeouts)
        self._secret_file = context.path(settings.client_secret_file) if settings.client_secret_file else None
        clock = context.extra.get("clock")
        self._clock: Callable[[], float] = clock if callable(clock) else time.monotonic
        self._token: _Token | None = None
        # Concurrent sends with no valid token must fetch one token, not one each.
        self._token_lock = asyncio.Lock()
        self._identity_noted = False
        self.send_url = f"{settings.api_path}/faxes/{settings.user_id}/{settings.extension}"

    # -- token --------------------------------------------------------------------------------------------

    async def _client_secret(self) -> str:
        if self._settings.client_secret is not None:
            return self._settings.client_secret.get_secret_value()
        assert self._secret_file is not None
        # Read at every token request so that a rotated secret is used without a restart.
        try:
            text = await asyncio.to_thread(self._secret_file.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProviderTemporaryError(
                f"{self.name}: cannot read the VoipNow App secret from {self._secret_file}: {why}; "
                f"fix providers.{self.name}.client_secret_file (faxes wait until it is readable)",
                provider=self.name,
                code="client_secret_unreadable",
            ) from exc
        secret = text.strip()
        if not secret:
            raise ProviderTemporaryError(
                f"{self.name}: the VoipNow App secret file {self._secret_file} is empty; write the secret into it",
                provider=self.name,
                code="client_secret_unreadable",
            )
        return secret

    async def _fetch_token(self) -> _Token:
        settings = self._settings
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": await self._client_secret(),
            "type": "unifiedapi",
            "redirect_uri": f"{settings.base_url}{_REDIRECT_PATH}",
        }
        started = self._clock()
        response = await _http.request(self._client, "POST", settings.token_path, provider=self.name, data=form)
        error = classify_error(
            response,
            provider=self.name,
            sending=False,
            hint=f"no VoipNow token endpoint at {settings.base_url}{settings.token_path}; check base_url",
        )
        if error is not None:
            raise error
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedResponse(
                f"{self.name}: VoipNow's token endpoint answered HTTP {response.status_code} without an "
                "access_token; check base_url points at the VoipNow server",
                provider=self.name,
            )
        lifetime = token_lifetime(body.get("expires_in") if isinstance(body, dict) else None)
        # Renew early (the vendor client uses five minutes), but never after less than half the lifetime.
        margin = min(settings.token_refresh_margin, lifetime / 2)
        return _Token(value=token, renew_at=started + lifetime - margin)

    async def _access_token(self, refused: str | None = None) -> str:
        """A valid token; ``refused`` is one VoipNow just refused, which is never handed out again."""
        async with self._token_lock:
            token = self._token
            if token is not None and token.value != refused and self._clock() < token.renew_at:
                return token.value
            self._token = None
            self._token = await self._fetch_token()
            return self._token.value

    # -- send ---------------------------------------------------------------------------------------------

    def _recipient(self, fax: OutboundFax) -> str:
        try:
            return format_recipient(
                fax.to, recipient_format=self._settings.recipient_format, dial_prefix=self._settings.dial_prefix
            )
        except InvalidNumber as exc:
            raise InvalidNumber(f"{self.name}: {exc}", provider=self.name, code="number_format") from None

    async def _post_fax(self, fax: OutboundFax, token: str, recipient: str) -> httpx.Response:
        return await _http.request(
            self._client,
            "POST",
            self.send_url,
            provider=self.name,
            sending=True,
            headers={"Authorization": f"Bearer {token}"},
            data={"request": json.dumps({"recipients": [recipient]})},
            files=[("files", (_file_name(fax.job_id), fax.document, "application/octet-stream"))],
        )

    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Post the fax; return VoipNow's fax id. Raises classified errors (see the module docstring)."""
        recipient = self._recipient(fax)
        if (fax.caller_id or fax.header) and not self._identity_noted:
            self._identity_noted = True
            log.info(
                "%s: VoipNow's API takes no caller ID or fax header; faxes show those of extension %s as set in "
                "VoipNow (the account's caller_id / fax_header are not used)",
                self.name,
                self._settings.extension,
            )
        token = await self._access_token()
        response = await self._post_fax(fax, token, recipient)
        if response.status_code in (401, 403):
            # The token was refused, so the fax was not taken: a fresh token and one more try cannot duplicate it.
            token = await self._access_token(refused=token)
            response = await self._post_fax(fax, token, recipient)
        hint = (
            f"VoipNow has no fax API at {self._settings.base_url}{self.send_url}; check base_url, and api_path "
            '("/unifiedapi" on older VoipNow versions)'
        )
        error = classify_error(response, provider=self.name, sending=True, hint=hint)
        if error is not None:
            if isinstance(error, AuthenticationFailed):
                self._token = None
            raise error
        return self._receipt(fax, response)

    def _receipt(self, fax: OutboundFax, response: httpx.Response) -> SendReceipt:
        accepted_at = datetime.now(UTC)
        if response.status_code == 204:
            raise SubmissionUnknown(
                f"{self.name}: VoipNow answered 204 'There are no faxes to be sent' for job {fax.job_id}; it may "
                f"not have created the fax. Check the fax list of extension {self._settings.extension} in VoipNow "
                f"for {_file_name(fax.job_id)} before sending it again",
                provider=self.name,
                code="204",
                maybe_accepted=True,
            )
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        fax_id = body.get("id") if isinstance(body, dict) else None
        uid = body.get("uid") if isinstance(body, dict) else None
        if not isinstance(body, dict) or (fax_id in (None, "") and uid in (None, "")):
            raise MalformedResponse(
                f"{self.name}: VoipNow answered HTTP {response.status_code} without a fax id "
                f"({response.text[:200]!r}); the fax may have been taken, so it is not sent again. Check the fax "
                f"list of extension {self._settings.extension} for {_file_name(fax.job_id)}",
                provider=self.name,
                maybe_accepted=True,
            )
        provider_fax_id = str(fax_id) if fax_id not in (None, "") else str(uid)
        return SendReceipt(
            provider_fax_id=provider_fax_id,
            client_reference=fax.job_id,
            accepted_at=accepted_at,
            raw=body,
        )

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """VoipNow has no lookup: an interrupted send stays uncertain (the worker never calls this)."""
        raise SubmissionUnknown(
            f"{self.name}: VoipNow's API cannot look a fax up, so it is unknown whether job {fax.job_id} reached "
            f"it. Check the fax list of extension {self._settings.extension} in VoipNow for "
            f"{_file_name(fax.job_id)} before releasing the job",
            provider=self.name,
            maybe_accepted=True,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
