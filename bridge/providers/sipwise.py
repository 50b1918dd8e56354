"""Sipwise C5 (NGCP) REST API: send faxes, read their outcome from the fax journal, list and fetch received faxes.

The NGCP serves its API at ``https://<ngcp>:1443/api/`` with HTTP Basic (an admin or reseller login, realm
``api_admin_http``). Representations are HAL+JSON; errors are ``{"code": <http status>, "message": "…"}``. The
operations used here:

``POST /api/faxes/``                    ``multipart/form-data``: a part ``json`` (the JSON text
                                        ``{"subscriber_id", "destination", "pageheader"?}``) and a file part
                                        ``faxfile`` (our PDF, named ``<job id>.pdf``) → **201 with an empty body**
``GET /api/faxes/?subscriber_id=…``     the fax journal, a HAL collection (``order_by=id``, ``desc``, paged)
``GET /api/faxes/{id}``                 one journal entry
``DELETE /api/faxes/{id}``              removes a journal entry (NGCP ≥ 2023-08; only with ``inbound_ack = "delete"``)
``GET /api/faxrecordings/{id}``         the fax image; ``?format=pdf14`` converts it to PDF
``GET /api/faxserversettings/{sid}``    and ``/api/mailtofaxsettings/{sid}``: read by ``import_settings``

How a sent fax is found again. Sipwise creates faxes asynchronously: the 201 carries no id (the controller says
"There is no Location header in the POST method response, as creation is asynchronous"), and the journal entry
is written by the fax server only once it has finished with the fax. So:

* If a ``Location`` header naming ``/api/faxes/{id}`` is present (no known version sends one, but it is the HAL
  way), that id is ``provider_fax_id`` and ``status`` reads that entry.
* Otherwise the receipt keeps a *journal mark*: the highest journal id of the subscriber known when the fax was
  handed over (from a journal read at most 10 s before the send, such as the inbound poll, or read right after
  the 201). ``status`` looks for entries of the subscriber with ``direction`` ``out``, a ``callee`` that is our
  number (compared on digits, national forms accepted) and an id above the mark. Should the mark be missing,
  entries written after ``accepted_at`` (minus two minutes of clock skew) count instead.
* Sipwise has no client reference, so two faxes to the same number in flight at once cannot be told apart.
  ``one_fax_per_number`` (default on) therefore refuses, with a temporary error the worker retries later, a
  second fax to a number while this adapter still waits for the journal entry of the first; the first matching
  entry after the mark is then this fax, and later ones belong to later faxes. What it cannot cover: entries
  from elsewhere (the NGCP web UI, mail2fax, another bridge host) and faxes sent before a restart of this
  process (the guard lives in memory). With ``one_fax_per_number = false``, when several entries match and their
  outcomes agree, that outcome is reported; when they disagree, the fax is reported failed with a reason that
  says the journal was ambiguous (``AMBIGUOUS``) — never delivered without proof.
* No entry after ``journal_timeout_hours``: reported failed (``NO_JOURNAL_ENTRY``), asking a person to check the
  NGCP's journal before sending the fax again.

Sender identity: the NGCP dials out with the subscriber's primary number as caller; ``POST /api/faxes/`` has no
caller-id field, so ``OutboundFax.caller_id`` is not sent (set the subscriber's number on the NGCP).
``OutboundFax.header`` goes into ``pageheader``, a field of the web-fax form the API accepts (with
``send_pageheader = false`` it is left out); the NGCP versions read ignore it and print the header configured as
``name`` ("Name in Fax Header") in the subscriber's faxserversettings instead.

Capabilities and why:

* ``STATUS_POLL``: the fax journal, as above.
* No ``CLIENT_REFERENCE``: ``find_submission`` looks the journal up (entries to our number above the mark of the
  interrupted send) and returns the receipt when it finds one, but the entry is written only when the fax
  server has finished, so a missing entry never proves the fax was not accepted: it raises
  ``SubmissionUnknown`` then, and the capability is not declared (the worker quarantines interrupted sends rather
  than risk a second fax).
* ``INBOUND_POLL``: journal entries with ``direction`` ``in`` of ``inbound_subscriber_ids`` (default: the sending
  subscriber) received in the last ``inbound_lookback_hours``.
* ``INBOUND_DOWNLOAD``: ``/api/faxrecordings/{id}?format=pdf14`` (``inbound_format``).
* ``INBOUND_ACK``: Sipwise has no "fetched" flag. ``inbound_ack = "remember"`` (default) records the entry in a
  ledger under ``inbound_dir`` so it is not listed again (also after a restart) and leaves the NGCP's journal
  untouched; ``"delete"`` removes the journal entry with ``DELETE /api/faxes/{id}``.
* No ``WEBHOOK``: the NGCP pushes faxes only by e-mail.

Open questions from the API notes (providers.md §7) and the reading chosen, always the one that fails safe:

* *Full ``status`` vocabulary of the fax journal (only ``SUCCESS`` seen).* Only ``SUCCESS`` (any case) is
  ``DELIVERED``. An empty status and words that say "not yet" (``PENDING``, ``QUEUED``, ``SENDING``,
  ``RETRY``…) are ``SENDING`` and polled again (until ``journal_timeout_hours``, then failed). ``CANCELLED`` is
  ``CANCELLED``. Every other value is ``FAILED``: the entry is written when the fax server is done, so another
  word is a final "not delivered". The reason is read from the entry's ``reason`` text ("User Busy / SIP 486
  Busy Here [3/3]"): the SIP code first, then the Q.850 cause words; the code is ``<status>/SIP <code>``.
* *The form accepts ``quality``/``pageheader`` but the API ignores them.* ``quality`` is never sent;
  ``pageheader`` is sent (harmless where ignored, used where a version honours it) and can be switched off.
* *Handbook typos.* ``/api/faxerecordings/5`` is ``/api/faxrecordings/5``; ``GET /api/faxes/3`` is the journal
  *entry* 3, so the journal is filtered with ``?subscriber_id=``; the mail2fax secret-key PATCH examples that
  point at ``/api/faxserversettings/3`` belong to ``/api/mailtofaxsettings/3`` — this adapter only *reads*
  both settings resources (``import_settings``) and never writes them.
* *Numbers as strings in old versions* (``"pages":"1"``, ``"duration":"0"``). Every number field (``id``,
  ``subscriber_id``, ``pages``, ``duration``, ``signal_rate``, ``total_count``) is accepted as a number or as
  a numeric string.

Every documented variant is accepted: ``_embedded."ngcp:faxes"`` as an object when there is one entry (Data::HAL's
quirk), as a list for more, absent for none (and the key without the ``ngcp:`` prefix); the older journal fields
``peer_number``/``peer_name`` instead of ``caller``/``callee``; ``time`` as ``YYYY-MM-DD HH:MM:SS`` (in the owner's
time zone: ``tz`` is sent, older versions ignore it, so ``journal_timezone`` says how to read it), with a
fraction or an offset, or as epoch seconds; "Fax subscriber not found." as 404 (older) or 422 (newer); "Invalid
subscriber fax preferences" with one or two spaces; a ``Content-Disposition`` without its closing quote on
recordings (not read at all); errors as JSON or as plain text (the 401 challenge).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import re
import ssl
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.errors import (
    ConfigError,
    InvalidNumber,
    MalformedResponse,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    SubmissionUnknown,
)
from bridge.models import FaxStatus, InboundRef, OutboundFax, SendReceipt, StatusReport
from bridge.providers import _http
from bridge.providers._http import HttpTimeouts
from bridge.providers._ledger import AcknowledgedLedger
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings

__all__ = [
    "FaxDestination",
    "JournalEntry",
    "MailToFaxRule",
    "SipwiseProvider",
    "SipwiseSettings",
    "SubscriberFaxSettings",
    "describe_failure",
    "hal_items",
    "map_journal_entry",
    "parse_journal_entry",
]

log = logging.getLogger(__name__)

FAXES = "/api/faxes/"
RECORDINGS = "/api/faxrecordings/"
MAX_FAXFILE = 64 * 1024 * 1024
"""The NGCP's web-fax form refuses larger uploads."""
MARK_FRESH = timedelta(seconds=10)
"""A journal mark read this recently may stand for "the journal before this send" without reading it again."""
CLOCK_SKEW = timedelta(minutes=2)
"""Slack between our clock and the NGCP's when entries must be told apart by time (no journal mark)."""
_HAL = "application/hal+json, application/json;q=0.9"


# -- settings -------------------------------------------------------------------------------------------------


class SipwiseSettings(ProviderSettings):
    """``[providers.NAME]`` with ``type = "sipwise"``. See ``config/provider-sipwise.toml`` for every key."""

    base_url: str
    """The NGCP's API address without ``/api``, e.g. ``https://ngcp.example.com:1443``."""
    username: str = Field(min_length=1)
    """An NGCP admin or reseller login allowed to use ``/api/faxes/`` for the subscribers below."""
    password: SecretStr | None = None
    """Prefer ``password_file``, or the environment (``FAXBRIDGE_PROVIDERS__NAME__PASSWORD``)."""
    password_file: Path | None = None
    """A file holding the password (read again when it changes, so a new password needs no restart)."""
    ca_file: Path | None = None
    """A PEM bundle to trust for the NGCP's certificate (port 1443 often has a self-signed one)."""
    subscriber_id: int = Field(gt=0)
    """The NGCP subscriber the faxes are sent from (its fax server settings must be active)."""
    destination_prefix: str = Field(default="", pattern=r"^\+?[0-9]{0,4}$")
    """Written before the E.164 digits of the destination: "" gives 4930123456, "+" +4930123456, "00" 004930…"""
    send_pageheader: bool = True
    """Pass ``OutboundFax.header`` as ``pageheader`` (accepted, but ignored by the NGCP versions known)."""
    one_fax_per_number: bool = True
    """Hold back a second fax to a number until the first one's journal entry appears (see the module notes)."""
    journal_timezone: str = "UTC"
    """The time zone the journal's times are written in; sent as ``tz`` (older NGCPs ignore it and use theirs)."""
    journal_rows: int = Field(default=50, ge=1, le=1000)
    journal_max_pages: int = Field(default=20, ge=1, le=1000)
    """At most this many pages of the journal are read per look-up."""
    journal_timeout_hours: float = Field(default=24.0, gt=0)
    """A sent fax with no final journal entry after this long is reported failed."""
    inbound: bool = True
    """List received faxes from the journal."""
    inbound_subscriber_ids: list[int] = Field(default_factory=list)
    """Whose received faxes to list; empty means ``subscriber_id``."""
    inbound_format: Literal["pdf14", "pdf"] = "pdf14"
    inbound_lookback_hours: float = Field(default=24.0, gt=0)
    """Received faxes older than this are not listed (the first start does not deliver the whole history)."""
    inbound_ack: Literal["remember", "delete"] = "remember"
    inbound_dir: Path | None = None
    """Where the ledger of acknowledged received faxes is kept; default ``sipwise-<NAME>`` in the state directory."""
    timeouts: HttpTimeouts = HttpTimeouts()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"(?i)^https?://[^/\s]+", value):
            raise ValueError(f"not an http(s) URL: {value!r}")
        value = value.rstrip("/")
        # Paths are written as /api/…; a base URL that already ends in /api would double it.
        return value[: -len("/api")] if value.lower().endswith("/api") else value

    @field_validator("journal_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not a time zone name such as UTC or Europe/Vienna: {value!r}") from None
        return value

    @field_validator("inbound_subscriber_ids")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(item <= 0 for item in value):
            raise ValueError("subscriber ids are positive numbers")
        return value

    @model_validator(mode="after")
    def _secret(self) -> SipwiseSettings:
        if (self.password is None) == (self.password_file is None):
            raise ValueError(
                "set exactly one of password_file or password (the latter only through the environment, "
                "FAXBRIDGE_PROVIDERS__<NAME>__PASSWORD)"
            )
        if self.password is not None and not self.password.get_secret_value():
            raise ValueError("password is empty")
        return self


# -- journal entries and their meaning -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of the fax journal, read leniently (see the module notes for the variants)."""

    id: int
    time: datetime | None
    """In UTC; ``None`` when the NGCP's text could not be read."""
    subscriber_id: int | None
    direction: str
    """``in``, ``out`` or ``mtf`` (mail to fax), lower case."""
    caller: str
    callee: str
    status: str
    reason: str
    pages: int | None
    filename: str
    recording: str | None
    """The ``ngcp:faxrecordings`` link, when it points into ``/api/faxrecordings/``."""
    raw: Mapping[str, Any]


_DELIVERED = frozenset({"SUCCESS"})
_NOT_YET = frozenset(
    {
        "",
        "NEW",
        "PENDING",
        "QUEUED",
        "SCHEDULED",
        "SENDING",
        "PROCESSING",
        "RETRY",
        "RETRYING",
        "ACTIVE",
        "RUNNING",
        "WAITING",
        "INPROGRESS",
        "IN_PROGRESS",
        "IN PROGRESS",
    }
)
_CANCELLED = frozenset({"CANCELLED", "CANCELED"})

_BUSY = "the line was busy"
_NO_ANSWER = "no fax machine answered"
_BAD_NUMBER = "the number is not a valid fax number"
_REFUSED = "the receiving side refused the call"

# SIP final responses (RFC 3261 §21) as a sender understands them.
_SIP_REASONS: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({486, 600}), _BUSY),
    (frozenset({408, 480, 487}), _NO_ANSWER),
    (frozenset({404, 410, 484, 485, 604}), _BAD_NUMBER),
    (frozenset({403, 433, 603, 606}), _REFUSED),
    (frozenset({402}), "the call was refused for lack of credit on the NGCP account"),
    (frozenset({406, 415, 488}), "the receiving side does not take fax calls (the call could not be set up for fax)"),
)
# Q.850 cause texts, for reasons that carry no SIP code.
_CAUSE_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("busy",), _BUSY),
    (("no answer", "no user responding", "noanswer", "no_answer", "not answer"), _NO_ANSWER),
    (("unallocated", "invalid number", "number changed", "no route", "unassigned"), _BAD_NUMBER),
    (("rejected", "declined", "decline"), _REFUSED),
)
_SIP_IN_REASON = re.compile(r"\bSIP\s+(?P<code>[1-6]\d\d)\b(?P<phrase>[^\[/]*)", re.IGNORECASE)


def describe_failure(status: str, reason: str) -> tuple[str, int | None]:
    """A plain reason for a journal entry that is not a success, and the SIP code found in its ``reason``."""
    text = reason.strip()
    found = _SIP_IN_REASON.search(text)
    sip = int(found.group("code")) if found else None
    plain: str | None = None
    if sip is not None:
        plain = next((words for codes, words in _SIP_REASONS if sip in codes), None)
        if plain is None and sip == 200:
            plain = "the call was answered, but the fax could not be transmitted"
        elif plain is None and sip >= 500:
            plain = "the telephone network could not connect the call"
    if plain is None:
        lowered = f"{status} {text}".lower()
        plain = next((words for keys, words in _CAUSE_WORDS if any(key in lowered for key in keys)), None)
    if plain is None:
        plain = f"the fax server reported {status or 'no status'}"
    return (f"{plain} ({text})" if text else plain), sip


def map_journal_entry(entry: JournalEntry) -> StatusReport:
    """The journal entry of a sent fax in the bridge's vocabulary (see the module notes for the reading)."""
    status = entry.status.strip().upper()
    raw = dict(entry.raw)
    if status in _DELIVERED:
        return StatusReport(status=FaxStatus.DELIVERED, code=entry.status, pages_sent=entry.pages, raw=raw)
    if status in _NOT_YET:
        return StatusReport(status=FaxStatus.SENDING, code=entry.status or None, raw=raw)
    if status in _CANCELLED:
        return StatusReport(
            status=FaxStatus.CANCELLED, reason="the fax was cancelled on the NGCP", code=entry.status, raw=raw
        )
    reason, sip = describe_failure(entry.status, entry.reason)
    code = f"{entry.status}/SIP {sip}" if sip is not None else entry.status
    return StatusReport(status=FaxStatus.FAILED, reason=reason, code=code, pages_sent=entry.pages or 0, raw=raw)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _as_bool(value: Any, default: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    return default


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _parse_time(value: Any, zone: ZoneInfo) -> datetime | None:
    """A journal time in UTC: ``YYYY-MM-DD HH:MM:SS`` in ``zone`` (or with an offset), or epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def _link(links: Any, rel: str) -> str | None:
    if not isinstance(links, Mapping):
        return None
    value = links.get(rel)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping) and isinstance(value.get("href"), str):
        return str(value["href"])
    return None


def parse_journal_entry(item: Mapping[str, Any], zone: ZoneInfo) -> JournalEntry | None:
    """Read one journal item; ``None`` when it has no usable id (it could not be referred to anyway)."""
    entry_id = _as_int(item.get("id"))
    if entry_id is None:
        return None
    direction = _text(item.get("direction")).strip().lower()
    caller, callee = _text(item.get("caller")), _text(item.get("callee"))
    if not caller and not callee and item.get("peer_number") is not None:
        # Older NGCPs name only the other party: the callee of an outgoing fax, the caller of an incoming one.
        peer = _text(item.get("peer_number"))
        caller, callee = ("", peer) if direction != "in" else (peer, "")
    recording = _link(item.get("_links"), "ngcp:faxrecordings")
    if recording is not None and not recording.startswith(RECORDINGS):
        # Only links into the NGCP's own API are followed: our credentials go nowhere else.
        recording = None
    return JournalEntry(
        id=entry_id,
        time=_parse_time(item.get("time"), zone),
        subscriber_id=_as_int(item.get("subscriber_id")),
        direction=direction,
        caller=caller,
        callee=callee,
        status=_text(item.get("status")).strip(),
        reason=_text(item.get("reason")),
        pages=_as_int(item.get("pages")),
        filename=_text(item.get("filename")),
        recording=recording,
        raw=dict(item),
    )


def hal_items(body: Mapping[str, Any], resource: str, *, provider: str = "sipwise") -> list[dict[str, Any]]:
    """The items of a HAL collection: Data::HAL renders one item as an object, several as a list, none not at all."""
    embedded = body.get("_embedded")
    if embedded is None:
        return []
    if not isinstance(embedded, Mapping):
        raise MalformedResponse(
            f"{provider}: the NGCP's {resource} collection has a malformed _embedded", provider=provider
        )
    value = embedded.get(f"ngcp:{resource}", embedded.get(resource))
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, list) and all(isinstance(item, Mapping) for item in value):
        return [dict(item) for item in value]
    raise MalformedResponse(
        f"{provider}: the NGCP's {resource} collection holds something other than items", provider=provider
    )


# -- numbers -----------------------------------------------------------------------------------------------


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def _same_number(ours: str, theirs: str) -> bool:
    """Whether a journal number is our destination (E.164 digits), written as the NGCP's rewrite rules had it."""
    digits = _digits(theirs)
    if not digits:
        return False
    if digits == ours:
        return True
    # 004930123456 and 030123456 are 4930123456 after the international or national prefix.
    significant = digits.lstrip("0")
    return len(significant) >= 7 and ours.endswith(significant)


def _e164(number: str) -> str | None:
    """E.164 where the journal's number allows it (NGCP writes ``cc ac sn`` without ``+``); else as written."""
    text = number.strip()
    if not text or text.lower() in ("anonymous", "unknown", "private", "webfax"):
        return None
    digits = _digits(text)
    if text.startswith("+") and digits:
        return "+" + digits
    if digits == text and text.startswith("00") and len(digits) > 4:
        return "+" + digits[2:]
    if digits == text and not text.startswith("0") and len(digits) >= 7:
        return "+" + digits
    # A PBX extension, a national number or user@domain: not E.164, given as the NGCP wrote it.
    return text


# -- settings import --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaxDestination:
    """Where the NGCP mails a subscriber's faxes (faxserversettings ``destinations[]``)."""

    destination: str
    filetype: str
    incoming: bool
    outgoing: bool
    status_reports: bool


@dataclass(frozen=True, slots=True)
class MailToFaxRule:
    """One mail2fax ACL rule, in the same shape as an account's ``acl`` rules."""

    from_email: str | None
    received_from: str | None
    destination: str | None
    use_regex: bool


@dataclass(frozen=True, slots=True)
class SubscriberFaxSettings:
    """A subscriber's fax and mail2fax settings, with secrets reduced to whether they are set."""

    subscriber_id: int
    fax_active: bool
    header_name: str | None
    """"Name in Fax Header": what the NGCP prints in the header line of sent faxes."""
    has_fax_password: bool
    t38: bool
    ecm: bool
    destinations: tuple[FaxDestination, ...]
    mail2fax_active: bool
    has_secret_key: bool
    """Whether a mail2fax secret key is set; the key itself is never kept."""
    secret_key_renew: str
    last_secret_key_modify: str | None
    secret_renew_notify: tuple[str, ...]
    acl: tuple[MailToFaxRule, ...]


def _optional_text(value: Any) -> str | None:
    text = _text(value).strip()
    return text or None


def _summarise(subscriber_id: int, fax: Mapping[str, Any], mail: Mapping[str, Any]) -> SubscriberFaxSettings:
    destinations = tuple(
        FaxDestination(
            destination=_text(item.get("destination")),
            filetype=_text(item.get("filetype")).upper(),
            incoming=_as_bool(item.get("incoming")),
            outgoing=_as_bool(item.get("outgoing")),
            status_reports=_as_bool(item.get("status")),
        )
        for item in fax.get("destinations") or []
        if isinstance(item, Mapping)
    )
    acl = tuple(
        MailToFaxRule(
            from_email=_optional_text(item.get("from_email")),
            received_from=_optional_text(item.get("received_from")),
            destination=_optional_text(item.get("destination")),
            use_regex=_as_bool(item.get("use_regex")),
        )
        for item in mail.get("acl") or []
        if isinstance(item, Mapping)
    )
    notify = tuple(
        _text(item.get("destination"))
        for item in mail.get("secret_renew_notify") or []
        if isinstance(item, Mapping) and item.get("destination")
    )
    return SubscriberFaxSettings(
        subscriber_id=subscriber_id,
        fax_active=_as_bool(fax.get("active")),
        header_name=_optional_text(fax.get("name")),
        has_fax_password=bool(_text(fax.get("password"))),
        t38=_as_bool(fax.get("t38"), default=True),
        ecm=_as_bool(fax.get("ecm"), default=True),
        destinations=destinations,
        mail2fax_active=_as_bool(mail.get("active")),
        has_secret_key=bool(_text(mail.get("secret_key"))),
        secret_key_renew=_text(mail.get("secret_key_renew")) or "never",
        last_secret_key_modify=_optional_text(mail.get("last_secret_key_modify")),
        secret_renew_notify=notify,
        acl=acl,
    )


# -- HTTP helpers -------------------------------------------------------------------------------------------


class _BasicAuth(httpx.Auth):
    """HTTP Basic, sent with every request; a password file is read again whenever it changes."""

    def __init__(self, provider: str, username: str, password: str | None, password_file: Path | None) -> None:
        self._provider = provider
        self._username = username
        self._password = password
        self._file = password_file
        self._seen: tuple[int, int] | None = None

    def _current(self) -> str:
        if self._file is None:
            assert self._password is not None
            return self._password
        try:
            stat = self._file.stat()
            if self._seen != (stat.st_mtime_ns, stat.st_size) or self._password is None:
                # Files written by editors and `echo` end with a newline that is not part of the password.
                self._password = self._file.read_text(encoding="utf-8").rstrip("\r\n")
                self._seen = (stat.st_mtime_ns, stat.st_size)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            # A configuration mistake, not a property of this fax: temporary, so faxes wait for the fix.
            raise ProviderTemporaryError(
                f"{self._provider}: cannot read the NGCP password from {self._file}: {reason}; "
                "fix password_file (faxes wait and are retried)",
                provider=self._provider,
            ) from exc
        if not self._password:
            raise ProviderTemporaryError(
                f"{self._provider}: the NGCP password file {self._file} is empty (faxes wait and are retried)",
                provider=self._provider,
            )
        return self._password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = base64.b64encode(f"{self._username}:{self._current()}".encode()).decode("ascii")
        request.headers["Authorization"] = f"Basic {token}"
        yield request


def _error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    """The NGCP's ``{"code", "message"}`` (or a short plain-text body) as (message, code)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        code = body.get("code")
        return body["message"].strip(), str(code) if code is not None else None
    if response.headers.get("content-type", "").startswith("text/plain"):
        text = response.text.strip()
        if text:
            return text[:200], None
    return None, None


def _top_of_journal(ids: Sequence[int], total: int | None) -> int | None:
    """The highest journal id, from the first page of a newest-first listing, if the page proves it."""
    if total is not None and total <= len(ids):
        return max(ids, default=0)  # the whole journal is on the page
    if len(ids) >= 2 and all(a > b for a, b in itertools.pairwise(ids)):
        return ids[0]
    # One row, or not newest first (an NGCP that ignores order_by): the top is not known.
    return None


def _id_from_location(location: str | None) -> str | None:
    if not location:
        return None
    found = re.search(r"/api/faxes/(\d+)/?(?:[?#].*)?$", location)
    return found.group(1) if found else None


@dataclass(frozen=True, slots=True)
class _Attempt:
    """A send that may have reached the NGCP: enough to look for its journal entry later."""

    destination: str
    subscriber_id: int
    mark: int | None
    started_at: datetime


# -- the adapter ---------------------------------------------------------------------------------------------


class SipwiseProvider(FaxProvider):
    """Faxes through an NGCP's ``/api/faxes/``; outcomes and received faxes from its fax journal."""

    type_name: ClassVar[str] = "sipwise"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.STATUS_POLL, Capability.INBOUND_POLL, Capability.INBOUND_DOWNLOAD, Capability.INBOUND_ACK}
    )
    settings_model: ClassVar[type[ProviderSettings]] = SipwiseSettings

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, SipwiseSettings)
        self._settings = settings
        self._zone = ZoneInfo(settings.journal_timezone)
        clock = context.extra.get("clock")
        # Replaceable (context.extra["clock"]) so that tests can let hours pass.
        self._now: Callable[[], datetime] = clock if callable(clock) else _utcnow
        password = settings.password.get_secret_value() if settings.password is not None else None
        password_file = context.path(settings.password_file) if settings.password_file is not None else None
        auth = _BasicAuth(self.name, settings.username, password, password_file)
        client_context = context
        if settings.ca_file is not None and not isinstance(context.extra.get("transport"), httpx.AsyncBaseTransport):
            ca_file = context.path(settings.ca_file)
            try:
                trust = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"providers.{self.name}.ca_file: cannot load {ca_file}: {exc}") from exc
            client_context = dataclasses.replace(
                context, extra={**context.extra, "transport": httpx.AsyncHTTPTransport(verify=trust)}
            )
        self._client = _http.make_client(
            client_context, base_url=settings.base_url, timeouts=settings.timeouts, auth=auth, headers={"Accept": _HAL}
        )
        self.inbound_dir = context.path(settings.inbound_dir or Path(f"sipwise-{_safe_name(context.name)}"))
        self._ledger = AcknowledgedLedger(
            self.inbound_dir / "acknowledged.json",
            provider=context.name,
            window=f"{settings.inbound_lookback_hours:g} hours",
        )
        self._marks: dict[int, tuple[int, datetime]] = {}
        """Per subscriber: the highest journal id seen, and when it was read."""
        self._pending: dict[str, tuple[str, datetime]] = {}
        """Per destination (E.164 digits): the job waiting for its journal entry, and until when we wait."""
        self._attempts: dict[str, _Attempt] = {}
        """Per job id: sends that failed after they may have reached the NGCP (for ``find_submission``)."""

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- requests -----------------------------------------------------------------------------------------

    def _checked(self, response: httpx.Response, *, doing: str, sending: bool = False) -> httpx.Response:
        """``response`` if it is a success; otherwise the classified error, with the NGCP's own message."""
        if response.is_success:
            return response
        message, code = _error_of(response)
        status = response.status_code
        lowered = (message or "").lower()
        if status == 403 and "licen" in lowered:
            raise ProviderPermanentError(
                f"{self.name}: the NGCP has no licence for faxes ({message}); its operator must add the fax licence",
                provider=self.name,
                code=code or "403",
            )
        if status in (404, 422) and "subscriber not found" in lowered:
            raise ProviderPermanentError(
                f"{self.name}: {doing}: subscriber {self._settings.subscriber_id} is not a subscriber this NGCP login "
                f"can use ({message}); check subscriber_id and the login's reseller",
                provider=self.name,
                code=code or str(status),
            )
        if status == 422 and re.search(r"invalid\s+subscriber\s+fax\s+preferences", lowered):
            raise ProviderPermanentError(
                f"{self.name}: {doing}: fax is not active for subscriber {self._settings.subscriber_id} ({message}); "
                "set active = true in its fax server settings (/api/faxserversettings/"
                f"{self._settings.subscriber_id})",
                provider=self.name,
                code=code or "422",
            )
        if status == 422 and "faxserver feature is not active" in lowered:
            raise ProviderPermanentError(
                f"{self.name}: {doing}: the fax server is switched off on this NGCP ({message}); its operator must "
                "enable the faxserver feature",
                provider=self.name,
                code=code or "422",
            )
        if status == 422 and "field='destination'" in lowered:
            raise InvalidNumber(
                f"{self.name}: the NGCP refused the destination number ({message})",
                provider=self.name,
                code=code or "422",
            )
        reason = f"{doing}: {message}" if message else f"{doing}: HTTP {status}"
        return _http.check_response(response, provider=self.name, sending=sending, reason=reason, code=code)

    async def _get_object(self, url: str, *, doing: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = await _http.request(self._client, "GET", url, provider=self.name, params=dict(params or {}))
        self._checked(response, doing=doing)
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise MalformedResponse(
                f"{self.name}: {doing}: the NGCP answered HTTP {response.status_code} without a JSON object",
                provider=self.name,
            )
        return body

    # -- the journal --------------------------------------------------------------------------------------

    async def _journal(
        self, subscriber_id: int, *, above: int | None = None, since: datetime | None = None
    ) -> list[JournalEntry]:
        """Entries of ``subscriber_id``, newest first, down to id ``above`` or time ``since`` (when the
        NGCP sorts as asked; otherwise every page up to ``journal_max_pages``)."""
        settings = self._settings
        entries: list[JournalEntry] = []
        for page in range(1, settings.journal_max_pages + 1):
            params = {
                "subscriber_id": subscriber_id,
                "order_by": "id",
                "order_by_direction": "desc",
                "page": page,
                "rows": settings.journal_rows,
                "tz": settings.journal_timezone,
            }
            read_at = self._now()
            body = await self._get_object(FAXES, doing="reading the fax journal", params=params)
            rows = [
                entry
                for entry in (
                    parse_journal_entry(item, self._zone) for item in hal_items(body, "faxes", provider=self.name)
                )
                if entry is not None
            ]
            ids = [entry.id for entry in rows]
            newest_first = ids == sorted(ids, reverse=True)
            total = _as_int(body.get("total_count"))
            if page == 1:
                self._note_mark(subscriber_id, _top_of_journal(ids, total), read_at)
            entries.extend(rows)
            if not rows or (total is not None and page * settings.journal_rows >= total):
                break
            if newest_first and above is not None and ids[-1] <= above:
                break
            if newest_first and since is not None and all(e.time is not None and e.time < since for e in rows):
                break
        else:
            log.warning(
                "%s: read %d pages of the fax journal of subscriber %d without reaching its end; entries beyond "
                "were not examined (raise journal_max_pages)",
                self.name,
                settings.journal_max_pages,
                subscriber_id,
            )
        return entries

    def _note_mark(self, subscriber_id: int, mark: int | None, read_at: datetime) -> None:
        """Keep the mark of the read that *started* last: an earlier read finishing later knows less."""
        known = self._marks.get(subscriber_id)
        if mark is not None and (known is None or read_at >= known[1]):
            self._marks[subscriber_id] = (mark, read_at)

    def _fresh_mark(self, subscriber_id: int) -> int | None:
        known = self._marks.get(subscriber_id)
        if known is None or self._now() - known[1] > MARK_FRESH:
            return None
        return known[0]

    async def _read_mark(self, subscriber_id: int) -> int | None:
        """The subscriber's highest journal id now, or ``None`` when the NGCP cannot be asked or tell."""
        read_at = self._now()
        try:
            body = await self._get_object(
                FAXES,
                doing="reading the fax journal",
                params={
                    "subscriber_id": subscriber_id,
                    "order_by": "id",
                    "order_by_direction": "desc",
                    "page": 1,
                    # Two rows, not one: only two show whether the NGCP honoured the order asked for.
                    "rows": 2,
                    "tz": self._settings.journal_timezone,
                },
            )
            items = hal_items(body, "faxes", provider=self.name)
        except ProviderError as exc:
            log.warning("%s: cannot read the fax journal's newest entry (%s); matching by time", self.name, exc)
            return None
        ids = [i for i in (_as_int(item.get("id")) for item in items) if i is not None]
        mark = _top_of_journal(ids, _as_int(body.get("total_count")))
        if mark is None:
            log.warning("%s: the NGCP did not list its fax journal newest first; matching by time", self.name)
        self._note_mark(subscriber_id, mark, read_at)
        return mark

    def _matching(self, entries: Sequence[JournalEntry], attempt: _Attempt) -> list[JournalEntry]:
        ours = _digits(attempt.destination)
        found = []
        for entry in entries:
            if entry.direction != "out" or not _same_number(ours, entry.callee):
                continue
            if attempt.mark is not None and entry.id <= attempt.mark:
                continue
            if attempt.mark is None and (entry.time is None or entry.time < attempt.started_at - CLOCK_SKEW):
                continue
            found.append(entry)
        return sorted(found, key=lambda entry: entry.id)

    # -- sending -----------------------------------------------------------------------------------------

    def _destination(self, number: str) -> str:
        digits = _digits(number)
        if not number.strip().startswith("+") or not 6 <= len(digits) <= 15:
            raise InvalidNumber(
                f"{self.name}: {number!r} is not an E.164 number (+ and 6 to 15 digits)", provider=self.name
            )
        return self._settings.destination_prefix + digits

    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Upload the fax as ``POST /api/faxes/`` (multipart ``json`` + ``faxfile``); the 201 has no body."""
        settings = self._settings
        if len(fax.document) > MAX_FAXFILE:
            raise ProviderPermanentError(
                f"{self.name}: the fax document has {len(fax.document)} bytes; the NGCP takes at most {MAX_FAXFILE}",
                provider=self.name,
            )
        destination = self._destination(fax.to)
        key = _digits(fax.to)
        if settings.one_fax_per_number:
            waiting = self._pending.get(key)
            if waiting is not None and waiting[0] != fax.job_id and self._now() < waiting[1]:
                raise ProviderTemporaryError(
                    f"{self.name}: fax job {waiting[0]} to {fax.to} has no journal entry yet; this fax waits for it "
                    "so that the NGCP's journal can tell the two apart (one_fax_per_number)",
                    provider=self.name,
                    code="NUMBER_IN_USE",
                )
        started = self._now()
        mark = self._fresh_mark(settings.subscriber_id)
        resource: dict[str, Any] = {"subscriber_id": settings.subscriber_id, "destination": destination}
        if settings.send_pageheader and fax.header:
            resource["pageheader"] = fax.header
        if fax.caller_id:
            log.debug("%s: caller id %s not sent: the NGCP uses the subscriber's number", self.name, fax.caller_id)
        try:
            response = await _http.request(
                self._client,
                "POST",
                FAXES,
                provider=self.name,
                sending=True,
                # A plain field, not a file part: the NGCP reads the resource with $c->req->param('json').
                data={"json": json.dumps(resource, ensure_ascii=False)},
                files={"faxfile": (f"{fax.job_id}.pdf", fax.document, "application/pdf")},
            )
            self._checked(response, doing="sending the fax", sending=True)
        except ProviderError as exc:
            if exc.maybe_accepted:
                if mark is None:
                    mark = await self._read_mark(settings.subscriber_id)
                self._attempts[fax.job_id] = _Attempt(destination, settings.subscriber_id, mark, started)
            raise
        accepted = self._now()
        location = response.headers.get("location")
        fax_id = _id_from_location(location)
        if fax_id is None and mark is None:
            mark = await self._read_mark(settings.subscriber_id)
        if settings.one_fax_per_number:
            self._pending[key] = (fax.job_id, accepted + timedelta(hours=settings.journal_timeout_hours))
        self._attempts.pop(fax.job_id, None)
        raw: dict[str, Any] = {
            "http_status": response.status_code,
            "location": location,
            "subscriber_id": settings.subscriber_id,
            "destination": destination,
            "journal_mark": mark,
            "accepted_at": accepted.isoformat(),
            "pageheader": resource.get("pageheader"),
        }
        return SendReceipt(provider_fax_id=fax_id, client_reference=fax.job_id, accepted_at=accepted, raw=raw)

    # -- outcome --------------------------------------------------------------------------------------------

    async def _entry(self, fax_id: str) -> JournalEntry | None:
        response = await _http.request(self._client, "GET", f"{FAXES}{fax_id}", provider=self.name)
        if response.status_code == 404:
            return None
        body = self._checked(response, doing=f"reading journal entry {fax_id}")
        try:
            item = body.json()
        except (ValueError, UnicodeDecodeError):
            item = None
        entry = parse_journal_entry(item, self._zone) if isinstance(item, dict) else None
        if entry is None:
            raise MalformedResponse(
                f"{self.name}: journal entry {fax_id} came back without a readable id", provider=self.name
            )
        return entry

    def _waited_too_long(self, accepted: datetime) -> bool:
        return self._now() - accepted > timedelta(hours=self._settings.journal_timeout_hours)

    async def status(self, receipt: SendReceipt) -> StatusReport:
        """The journal entry of the fax, found by id or by number and journal mark (see the module notes)."""
        raw = receipt.raw
        subscriber = _as_int(raw.get("subscriber_id")) or self._settings.subscriber_id
        destination = _text(raw.get("destination"))
        waited: dict[str, Any] = {"journal_entry": None, "since": receipt.accepted_at.isoformat()}
        if receipt.provider_fax_id:
            entry = await self._entry(receipt.provider_fax_id)
            entries = [entry] if entry is not None else []
        elif destination:
            attempt = _Attempt(destination, subscriber, _as_int(raw.get("journal_mark")), receipt.accepted_at)
            journal = await self._journal(
                subscriber, above=attempt.mark, since=receipt.accepted_at - CLOCK_SKEW if attempt.mark is None else None
            )
            entries = self._matching(journal, attempt)
            waited["above_id"] = attempt.mark
        else:
            return StatusReport(
                status=FaxStatus.UNKNOWN,
                reason="the receipt names neither a journal entry nor a destination, so the fax cannot be found",
                raw={"receipt": dict(raw)},
            )
        report = self._judge(entries, receipt, waited)
        if report.status in (FaxStatus.DELIVERED, FaxStatus.FAILED, FaxStatus.CANCELLED):
            key = _digits(destination) if destination else None
            waiting = self._pending.get(key) if key else None
            if key and waiting is not None and waiting[0] == receipt.client_reference:
                del self._pending[key]
        return report

    def _judge(self, entries: Sequence[JournalEntry], receipt: SendReceipt, waited: Mapping[str, Any]) -> StatusReport:
        if not entries:
            if self._waited_too_long(receipt.accepted_at):
                return StatusReport(
                    status=FaxStatus.FAILED,
                    reason=f"the NGCP has no journal entry for the fax {self._settings.journal_timeout_hours:g} hours "
                    "after taking it, so it was probably never sent; check the subscriber's fax journal on the "
                    "NGCP before sending it again",
                    code="NO_JOURNAL_ENTRY",
                    raw=dict(waited),
                )
            # The fax server writes the entry only when it is done with the fax: until then it is queued.
            return StatusReport(status=FaxStatus.QUEUED, raw=dict(waited))
        reports = [map_journal_entry(entry) for entry in entries]
        first = reports[0]
        # With one_fax_per_number this adapter sent nothing else to the number until this fax's entry appeared:
        # the first entry after the mark is this fax and later ones are later faxes. Without it, several entries
        # may be in-flight faxes of ours, and only an outcome they all share can be this fax's.
        several = len(reports) > 1 and not self._settings.one_fax_per_number
        if several and len({report.status for report in reports}) > 1:
            if any(report.status == FaxStatus.SENDING for report in reports):
                first = StatusReport(status=FaxStatus.SENDING, raw={"journal_entries": [dict(e.raw) for e in entries]})
            else:
                return StatusReport(
                    status=FaxStatus.FAILED,
                    reason="the NGCP's journal has several faxes to this number since this one was sent, with "
                    "different outcomes, and cannot tell which one was this fax; check the journal on the NGCP "
                    "before sending it again",
                    code="AMBIGUOUS",
                    raw={"journal_entries": [dict(e.raw) for e in entries]},
                )
        elif several:
            log.warning(
                "%s: %d journal entries (%s) match fax %s; they agree (%s)",
                self.name,
                len(entries),
                ", ".join(str(e.id) for e in entries),
                receipt.client_reference,
                first.status,
            )
        if first.status == FaxStatus.SENDING and self._waited_too_long(receipt.accepted_at):
            return StatusReport(
                status=FaxStatus.FAILED,
                reason=f"the NGCP's journal still shows the fax as {entries[0].status or 'unfinished'} "
                f"{self._settings.journal_timeout_hours:g} hours after it was sent; check it on the NGCP",
                code=entries[0].status or "NO_FINAL_STATUS",
                raw=dict(first.raw),
            )
        return first

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """The receipt when the journal has an entry for the interrupted send; never ``None`` (see the notes)."""
        attempt = self._attempts.get(fax.job_id)
        if attempt is None:
            raise SubmissionUnknown(
                f"{self.name}: this process did not see the interrupted send of job {fax.job_id}, so there is no "
                "journal position to look from; check the subscriber's fax journal on the NGCP",
                provider=self.name,
                maybe_accepted=True,
            )
        journal = await self._journal(attempt.subscriber_id, above=attempt.mark, since=attempt.started_at - CLOCK_SKEW)
        # Both bounds apply here: a false "found" would report another fax's outcome as this one's.
        entries = [
            entry
            for entry in self._matching(journal, attempt)
            if entry.time is None or entry.time >= attempt.started_at - CLOCK_SKEW
        ]
        if len(entries) == 1:
            entry = entries[0]
            self._attempts.pop(fax.job_id, None)
            raw = {
                "subscriber_id": attempt.subscriber_id,
                "destination": attempt.destination,
                "journal_mark": attempt.mark,
                "journal_entry": dict(entry.raw),
                "found_by": "journal",
            }
            return SendReceipt(
                provider_fax_id=str(entry.id),
                client_reference=fax.job_id,
                accepted_at=entry.time or attempt.started_at,
                raw=raw,
            )
        if entries:
            raise SubmissionUnknown(
                f"{self.name}: {len(entries)} journal entries ({', '.join(str(e.id) for e in entries)}) to "
                f"{fax.to} could be job {fax.job_id}; check them on the NGCP",
                provider=self.name,
                maybe_accepted=True,
            )
        raise SubmissionUnknown(
            f"{self.name}: no journal entry for job {fax.job_id} yet; Sipwise writes it only when the fax server has "
            "finished with a fax, so this does not prove the fax was not taken",
            provider=self.name,
            maybe_accepted=True,
        )

    # -- received faxes -----------------------------------------------------------------------------------

    async def poll_incoming(self) -> list[InboundRef]:
        """Received faxes (``direction`` ``in``) of the last ``inbound_lookback_hours``, oldest first."""
        settings = self._settings
        if not settings.inbound:
            return []
        now = self._now()
        since = now - timedelta(hours=settings.inbound_lookback_hours)
        ledger = await self._ledger.entries() if settings.inbound_ack == "remember" else {}
        refs: list[tuple[int, InboundRef]] = []
        for subscriber in settings.inbound_subscriber_ids or [settings.subscriber_id]:
            for entry in await self._journal(subscriber, since=since):
                if entry.direction != "in" or str(entry.id) in ledger:
                    continue
                if entry.time is not None and entry.time < since:
                    continue
                if not entry.filename and entry.status.upper() not in _DELIVERED:
                    # A failed reception with nothing stored: there is no document to fetch.
                    continue
                refs.append(
                    (
                        entry.id,
                        InboundRef(
                            provider=self.name,
                            provider_fax_id=str(entry.id),
                            caller=_e164(entry.caller),
                            called=_e164(entry.callee),
                            # Unreadable time: listed anyway (never lose a fax), as received now.
                            received_at=entry.time or now,
                            pages=entry.pages,
                            token=entry.recording,
                        ),
                    )
                )
        refs.sort(key=lambda item: (item[1].received_at, item[0]))
        return [ref for _, ref in refs]

    async def download(self, ref: InboundRef) -> bytes:
        """``GET /api/faxrecordings/{id}?format=pdf14``: the received fax as PDF."""
        url = ref.token if ref.token and ref.token.startswith(RECORDINGS) else f"{RECORDINGS}{ref.provider_fax_id}"
        response = await _http.request(
            self._client,
            "GET",
            url.split("?", 1)[0],
            provider=self.name,
            params={"format": self._settings.inbound_format},
            headers={"Accept": "application/pdf, image/tiff;q=0.5, */*;q=0.1"},
        )
        self._checked(response, doing=f"fetching received fax {ref.provider_fax_id}")
        document = response.content
        if not document.startswith((b"%PDF", b"II*\x00", b"MM\x00*")):
            raise MalformedResponse(
                f"{self.name}: received fax {ref.provider_fax_id} came back as "
                f"{response.headers.get('content-type', 'an unknown type')}, not as PDF or TIFF",
                provider=self.name,
            )
        return document

    async def acknowledge(self, ref: InboundRef) -> None:
        """Remember the fax as delivered here, or delete its journal entry (``inbound_ack``)."""
        if self._settings.inbound_ack == "delete":
            response = await _http.request(self._client, "DELETE", f"{FAXES}{ref.provider_fax_id}", provider=self.name)
            if response.status_code == 404:
                return
            if response.status_code == 405:
                raise ProviderPermanentError(
                    f"{self.name}: this NGCP does not delete fax journal entries (added in 2023); "
                    'set inbound_ack = "remember"',
                    provider=self.name,
                    code="405",
                )
            self._checked(response, doing=f"deleting received fax {ref.provider_fax_id}")
            return
        now = self._now()
        # An entry acknowledged before the listing window can no longer come back: forget it then.
        await self._ledger.record(
            ref.provider_fax_id, now, forget_before=now - timedelta(hours=self._settings.inbound_lookback_hours + 48)
        )

    # -- settings import ----------------------------------------------------------------------------------

    async def import_settings(self, subscriber_id: int | None = None) -> SubscriberFaxSettings:
        """Read a subscriber's faxserversettings and mailtofaxsettings (secrets only as "set or not")."""
        sid = subscriber_id or self._settings.subscriber_id
        fax = await self._get_object(
            f"/api/faxserversettings/{sid}", doing=f"reading the fax server settings of subscriber {sid}"
        )
        mail = await self._get_object(
            f"/api/mailtofaxsettings/{sid}", doing=f"reading the mail2fax settings of subscriber {sid}"
        )
        return _summarise(sid, fax, mail)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value) or "provider"
