"""Configuration: a TOML file plus ``FAXBRIDGE_*`` environment overrides, validated by pydantic-settings.

The file is found from ``--config``, then ``FAXBRIDGE_CONFIG``, then ``/etc/faxbridge/faxbridge.toml``.
Environment variables override the file, with ``__`` between nested keys: ``FAXBRIDGE_SMTP__LISTEN_PORT=2526``.
Relative paths in the file are taken relative to ``state_dir``; a relative ``state_dir`` is taken relative to
the working directory. Every mistake is reported as a ``ConfigError`` naming the key, the file and what was
expected, and the process exits with code 78 so that systemd does not restart it in a loop.

Provider sections (``[providers.NAME]``) are checked by the provider's own settings model when the provider
is built (see ``bridge.providers``), so that adding a provider changes nothing here.
"""

from __future__ import annotations

import os
import re
import tomllib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.auth import parse_hash
from bridge.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/faxbridge/faxbridge.toml")


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SmtpSettings(_Section):
    """The SMTP listener that takes mail for the fax domains."""

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=2525, ge=0, le=65535)
    hostname: str = "faxbridge.localhost"
    """The name in the greeting and in the ``Received`` trace."""
    max_message_size: int = Field(default=20 * 1024 * 1024, ge=1024)
    """Bytes; advertised as SIZE. Bigger messages get ``552 5.3.4``."""
    max_recipients: int = Field(default=10, ge=1, le=1000)
    """Fax numbers per message; one more gets ``452 4.5.3``."""
    timeout: float = Field(default=300.0, gt=0)
    """Seconds an idle session is kept open."""
    batch_max: int = Field(default=64, ge=1)
    """Messages committed together when they arrive at the same time."""
    authserv_id: str | None = None
    """The authserv-id your mail server writes into ``Authentication-Results``; only headers with it are
    believed. Needed by accounts with ``require_authentication``."""
    max_connections_per_client: int = Field(default=20, ge=1)
    """Sessions one client address may hold open at once; one more gets ``421 4.7.0``."""
    failure_limit: int = Field(default=10, ge=1)
    """Refusals (relaying, unknown sender, bad number…) from one client address or sender within
    ``failure_window_seconds`` before its new transactions get ``450 4.7.1`` for ``cooloff_seconds``."""
    failure_window_seconds: float = Field(default=600.0, gt=0)
    cooloff_seconds: float = Field(default=900.0, gt=0)
    tls_certificate: Path | None = None
    """PEM certificate chain for STARTTLS (relative to ``state_dir``); needs ``tls_key``. Unset: no STARTTLS,
    and so no AUTH, which is only offered over TLS."""
    tls_key: Path | None = None
    """PEM private key of ``tls_certificate``."""
    require_starttls: bool = False
    """Refuse everything but EHLO, STARTTLS, NOOP and QUIT before STARTTLS (``530 5.7.0``); needs a certificate."""

    @model_validator(mode="after")
    def _tls_is_complete(self) -> SmtpSettings:
        if (self.tls_certificate is None) != (self.tls_key is None):
            missing = "smtp.tls_key" if self.tls_key is None else "smtp.tls_certificate"
            raise ValueError(f"{missing} is required: set both smtp.tls_certificate and smtp.tls_key, or neither")
        if self.require_starttls and self.tls_certificate is None:
            raise ValueError("smtp.require_starttls needs smtp.tls_certificate and smtp.tls_key")
        return self


class StoreSettings(_Section):
    """Where messages and jobs are kept."""

    url: str | None = None
    """SQLAlchemy URL. Default: SQLite file ``faxbridge.db`` in ``state_dir``. For several instances use
    ``postgresql+asyncpg://user@host/db``."""
    dedupe_days: float = Field(default=7.0, gt=0)
    """How long a resent message is recognised (the sender's retry horizon is about 5 days)."""


class WorkerSettings(_Section):
    """The job worker: conversion, submission, status and notices."""

    enabled: bool = True
    """``false`` makes an intake-only instance: it takes mail and stores jobs, and other instances on the same
    PostgreSQL database send them."""
    concurrency: int = Field(default=8, ge=1)
    lease_seconds: float = Field(default=120.0, ge=5)
    """How long a worker owns a job before another instance may take it over; renewed at every step, so it
    must only be longer than the longest single step. Jobs of a crashed instance on another host resume when it
    runs out; a bridge restarted on the same host takes its predecessor's jobs back at once."""
    poll_seconds: float = Field(default=5.0, gt=0)
    """How often to look for jobs that no local event announced (retries, other instances, expired leases)."""
    status_poll_seconds: float = Field(default=30.0, gt=0)
    retry_initial_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=1800.0, gt=0)
    give_up_hours: float = Field(default=24.0, gt=0)
    """A fax that could not be submitted for this long fails, and the sender is told."""
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    """On SIGTERM, how long in-flight jobs may finish before their leases are released."""


class DocumentSettings(_Section):
    """Converting what senders attach: each mail in a child process of its own, under these limits."""

    concurrency: int = Field(default=2, ge=1)
    """Conversions running at once; each child may use up to ``memory_mb``."""
    cpu_seconds: int = Field(default=60, ge=1)
    """Processor time one mail may take to convert; past it the child is stopped and the mail refused."""
    memory_mb: int = Field(default=1024, ge=256)
    """Address space of a conversion child, in MiB; a document needing more is refused."""
    timeout_seconds: float = Field(default=120.0, gt=0)
    """Wall-clock time one mail may take to convert, LibreOffice included."""
    office_timeout_seconds: float = Field(default=60.0, gt=0)
    """Wall-clock time for one LibreOffice conversion (it starts with a fresh profile each time)."""
    office_memory_mb: int = Field(default=4096, ge=512)
    """Address space for LibreOffice, which maps far more than it uses."""
    preview: bool = True
    """Attach a small picture of page 1 to the notice of a fax that was sent."""


class InboundDestination(_Section):
    """Where an incoming fax is mailed, and how."""

    address: str = Field(min_length=3)
    format: Literal["pdf", "tiff"] = "pdf"
    """The attachment: the fax as PDF or as TIFF (converted when the provider delivered the other)."""
    preview: bool = True
    """Attach a small PNG of page 1, so the fax can be seen without opening it."""
    incoming: bool = True
    """Sipwise-style flags: this address gets incoming faxes…"""
    outgoing_copies: bool = False
    """…a copy, with the fax attached, of each fax sent from this number (an account's ``caller_id``, or a
    sender's own from ``sender_caller_ids``)…"""
    status_reports: bool = False
    """…and the notice of each fax sent from this number."""


class InboundRoute(_Section):
    """The destinations for faxes to one of our numbers (DID)."""

    number: str
    """The called number in E.164 (``+4930123456``), or ``*`` for every number no other route names."""
    destinations: list[InboundDestination] = Field(min_length=1)


class InboundSettings(_Section):
    """Incoming faxes: polled from every provider that has an inbound side and mailed by route."""

    enabled: bool = True
    poll_seconds: float = Field(default=5.0, gt=0)
    """How often the providers are asked for new faxes; one instance of a cluster asks at a time."""
    retry_seconds: float = Field(default=60.0, gt=0)
    """How long a fax waits after the mail relay refused it for now; doubled at each attempt, up to an hour."""
    routes: list[InboundRoute] = Field(default_factory=list)
    """The first route whose number is the called number wins; a route with ``*`` catches the rest. A fax no
    route takes stays at the provider and is logged."""


class HttpSettings(_Section):
    """The bridge's own HTTP endpoint: provider webhooks, ``/healthz`` and ``/metrics``. Off unless enabled."""

    enabled: bool = False
    listen_host: str = "127.0.0.1"
    """Loopback by default: put a reverse proxy with TLS in front before letting providers reach it."""
    listen_port: int = Field(default=8025, ge=0, le=65535)
    webhook_secret: str | None = Field(default=None, min_length=16)
    """Webhooks are taken only at ``/webhooks/<provider>/<secret>`` or with the header ``X-Faxbridge-Secret``;
    without a secret, webhooks are refused."""
    webhook_secret_file: Path | None = None
    """The secret read from a file instead (relative to ``state_dir``)."""


class RetentionSettings(_Section):
    """Housekeeping: what is deleted after how long. Job and message metadata are always kept."""

    documents_days: float | None = Field(default=90.0, ge=0)
    """Fax documents (and their previews) of finished jobs older than this are deleted; ``0`` keeps them."""
    messages_days: float | None = Field(default=90.0, ge=0)
    """Raw mails of finished jobs older than this are deleted; ``0`` keeps them."""
    hour: int = Field(default=3, ge=0, le=23)
    """The hour (UTC) of the daily purge."""

    @field_validator("documents_days", "messages_days")
    @classmethod
    def _zero_keeps(cls, value: float | None) -> float | None:
        # TOML has no null: 0 is how a file says "keep for ever".
        return None if value == 0 else value


class RelaySettings(_Section):
    """A mail relay that takes every mail the bridge writes."""

    host: str
    port: int = Field(default=25, ge=1, le=65535)
    starttls: Literal["auto", "always", "never"] = "auto"
    """``auto`` uses STARTTLS when the relay offers it."""
    validate_certs: bool = True
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    """Read the password from this file (for example under ``$CREDENTIALS_DIRECTORY``)."""
    timeout: float = Field(default=60.0, gt=0)


class MailSettings(_Section):
    """How the bridge's own mails (notices) leave it: into a Maildir, or to a relay."""

    from_address: str = "faxbridge@localhost"
    maildir: Path | None = None
    relay: RelaySettings | None = None

    @model_validator(mode="after")
    def _one_destination(self) -> MailSettings:
        if (self.maildir is None) == (self.relay is None):
            raise ValueError("set exactly one of mail.maildir or [mail.relay]")
        return self


# Number types refused unless an account lists them in ``allowed_number_types``: the ranges that cost the caller
# far more than a call, or pay part of it to whoever holds the number (toll fraud, reliability.md §3). VOIP is
# among them although some fax lines are VoIP numbers: a fail-safe default an account can lift, not a guess
# that a VoIP range is harmless.
DEFAULT_DENIED_NUMBER_TYPES = ("PREMIUM_RATE", "SHARED_COST", "UAN", "PERSONAL_NUMBER", "PAGER", "VOIP")


def _region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not an ISO 3166 region phonenumbers knows, such as DE or NL")
    return region


def _e164_prefix(value: str) -> str:
    # Digits only: a prefix with separators or a national 0 would silently never match an E.164 number.
    prefix = value.strip()
    if not re.fullmatch(r"\+[1-9][0-9]{0,14}", prefix):
        raise ValueError(f"{value!r} is not an E.164 prefix: write + and the digits, such as +4930 or +1900")
    return prefix


def _deniable_type(value: str) -> str:
    name = value.strip().upper()
    if name not in DEFAULT_DENIED_NUMBER_TYPES:
        raise ValueError(
            f"{value!r} is not a number type that is denied by default ({', '.join(DEFAULT_DENIED_NUMBER_TYPES)})"
        )
    return name


def _password_hash(value: str) -> str:
    try:
        parse_hash(value)
    except ValueError as exc:
        raise ValueError(
            f"not a password hash ({exc}); write the output of `python -m bridge.auth hash`, never the password"
        ) from None
    return value.strip()


class AclRule(_Section):
    """One Mail2Fax ACL rule in Sipwise's shape; every field that is set must match, empty fields match all.

    ``from_email`` is matched against the envelope sender and ``destination`` against the number (with and
    without its ``+``), as shell-style globs (``*@example.com``, ``+4930*``), or as regular expressions when
    ``use_regex`` is true. ``received_from`` is the client's address or network (``192.0.2.25``,
    ``192.0.2.0/24``).
    """

    from_email: str = ""
    received_from: IPv4Network | IPv6Network | None = None
    destination: str = ""
    use_regex: bool = False

    @model_validator(mode="after")
    def _patterns_compile(self) -> AclRule:
        if self.use_regex:
            for name in ("from_email", "destination"):
                try:
                    re.compile(getattr(self, name))
                except re.error as exc:
                    raise ValueError(f"{name} is not a regular expression: {exc}") from None
        return self


class AuthUser(_Section):
    """A user who may log in with SMTP AUTH and then fax for the account that lists it."""

    username: str = Field(min_length=1, max_length=255, pattern=r"^\S+$")
    password_hash: Annotated[str, AfterValidator(_password_hash)]
    """``scrypt$n=…,r=…,p=…$<salt>$<hash>`` from ``python -m bridge.auth hash``."""


Region = Annotated[str, AfterValidator(_region)]
E164Prefix = Annotated[str, AfterValidator(_e164_prefix)]
DeniableNumberType = Annotated[str, AfterValidator(_deniable_type)]


class AccountSettings(_Section):
    """Who may fax, through which provider, and to which destinations."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    provider: str
    country: str = "DE"
    """ISO 3166 region used to read national numbers such as ``030123456``."""
    allowed_senders: list[str] = Field(min_length=1)
    """Exact addresses and ``*@domain``; both the envelope sender and ``From:`` must match."""
    check_from: bool = True
    """Whether every ``From:`` address must be an allowed sender of this account too. Turn it off only for an
    account fed by a system that writes a ``From:`` of its own (a scanner, a ticket system) and whose envelope
    sender, client network or SMTP AUTH already says who it is."""
    notify_extra: list[str] = Field(default_factory=list)
    """Addresses that get a copy of every notice."""
    acceptance_receipt: bool = False
    """Also tell the sender when the fax is accepted and queued (after its document was made), with its pages."""
    language: Literal["en", "de", "nl"] = "en"
    """The language of every mail the bridge writes for this account (notices, incoming faxes, reports)."""
    timezone: str = "UTC"
    """The IANA time zone dates and times are shown in (``Europe/Berlin``)."""
    templates: Path | None = None
    """A directory whose files replace single templates for this account (``de/delivered.toml``…); see
    ``config/templates/``."""
    paper: Literal["a4", "letter"] = "a4"
    max_pages: int = Field(default=50, ge=1, le=10000)
    """The longest fax this account may send; a longer one is refused before anything is sent."""
    cover: Literal["none", "body", "page"] = "body"
    """What the mail text becomes: ``body`` its own first page(s); ``page`` a cover page with from, to, subject,
    date, page count and the text; ``none`` nothing when documents are attached (a mail that is only text is
    still faxed)."""
    allowed_networks: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    """Client addresses (networks such as ``192.0.2.0/24`` or single hosts) this account's mail may come from;
    empty means any. Mail from elsewhere is refused with ``550 5.7.1`` at RCPT."""
    max_recipients: int | None = Field(default=None, ge=1)
    """Fax numbers per mail for this account, below ``smtp.max_recipients``; one more gets ``452 4.5.3``."""
    require_authentication: bool = False
    """Take mail only when the upstream mail server's ``Authentication-Results`` (with ``smtp.authserv_id``)
    shows DMARC pass, or DKIM or SPF pass aligned with ``From:``; otherwise ``550 5.7.26``."""
    acl: list[AclRule] = Field(default_factory=list)
    """Mail2Fax ACL rules: when there are any, each recipient must be admitted by one of them (sender, client
    address and destination together), or it is refused with ``550 5.7.1``."""
    auth_users: list[AuthUser] = Field(default_factory=list)
    """Users who may log in (SMTP AUTH, only after STARTTLS); their mail is this account's, and its envelope
    sender and ``From:`` must still be allowed senders of this account."""
    secret_key_required: bool = False
    """Mail2Fax secret key: the account's current key must appear in the subject as a word of its own, or the
    mail is refused with ``550 5.7.1``. It is removed from the subject before anything uses or stores it."""
    secret_key_renew: Literal["never", "daily", "weekly", "monthly"] = "never"
    """How often a new key replaces the current one; each new key is mailed to ``secret_key_notify``."""
    secret_key_grace_hours: float = Field(default=24.0, ge=0)
    """How long the previous key is still accepted after a rotation."""
    secret_key_notify: list[str] = Field(default_factory=list)
    """Who receives each new key; empty: ``notify_extra``."""
    caller_id: str | None = None
    """The number faxes say they come from (E.164, ``+4930123456``), where the provider's API takes one."""
    fax_header: str | None = Field(default=None, max_length=40)
    """The fax header line (the sender's name in the page's top line, TSI/CSID), where the API takes one."""
    sender_caller_ids: dict[str, str] = Field(default_factory=dict)
    """Per sender address, the caller ID for its faxes: typically the incoming number whose faxes are mailed
    to that address, so that replies reach the person who sent. Falls back to ``caller_id``."""
    report: Literal["never", "daily", "weekly", "monthly"] = "never"
    """A periodic summary of the account's faxes (sent and received, pages, failures by reason, a CSV)."""
    report_to: list[str] = Field(default_factory=list)
    """Who gets the summary; empty: ``notify_extra``."""
    max_faxes_per_hour: int | None = Field(default=None, ge=1)
    """Faxes one envelope sender may send in any hour; past it, recipients get ``450 4.7.1`` (try later)."""
    max_pages_per_day: int | None = Field(default=None, ge=1)
    """Fax pages one envelope sender may send in any 24 hours; once reached, recipients get ``450 4.7.1``, and
    a fax that would go past it is refused with a notice."""

    # Destination policy (toll fraud). The rules run in this order and the first that decides wins:
    # denied_prefixes, allowed_prefixes, allowed_countries, number types; a number none refuses is admitted.
    allowed_countries: list[Region] = Field(default_factory=list)
    """ISO 3166 regions this account may fax to. Empty: every country (the other rules still apply). Numbers
    of no country (``+800``, satellite ``+881``, international networks ``+882``/``+883``…) are refused
    either way unless an allowed prefix admits them."""
    allowed_prefixes: list[E164Prefix] = Field(default_factory=list)
    """E.164 prefixes (``+4930``) admitted even when their country or number type would be refused. An
    exception, not a restriction: numbers outside them are judged by the other rules."""
    denied_prefixes: list[E164Prefix] = Field(default_factory=list)
    """E.164 prefixes (``+1900``) always refused, whatever else would admit them."""
    allowed_number_types: list[DeniableNumberType] = Field(default_factory=list)
    """Number types denied by default that this account may fax to anyway: ``PREMIUM_RATE``,
    ``SHARED_COST``, ``UAN``, ``PERSONAL_NUMBER``, ``PAGER``, ``VOIP``."""

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not a time zone such as Europe/Berlin: {value!r}") from None
        return value

    @field_validator("caller_id")
    @classmethod
    def _caller_id(cls, value: str | None) -> str | None:
        if value is not None and not _E164.fullmatch(value):
            raise ValueError(f"not an E.164 number such as +4930123456: {value!r}")
        return value

    @field_validator("sender_caller_ids")
    @classmethod
    def _sender_caller_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for number in value.values():
            if not _E164.fullmatch(number):
                raise ValueError(f"not an E.164 number such as +4930123456: {number!r}")
        return {address.strip().lower(): number for address, number in value.items()}

    @field_validator("country")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return _region(value)

    @field_validator("allowed_senders", "notify_extra")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an address or *@domain")
        return [address.strip().lower() for address in value]


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="FAXBRIDGE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    state_dir: Path = Path("/var/lib/faxbridge")
    fax_domains: list[str] = Field(min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    smtp: SmtpSettings = SmtpSettings()
    store: StoreSettings = StoreSettings()
    worker: WorkerSettings = WorkerSettings()
    documents: DocumentSettings = DocumentSettings()
    inbound: InboundSettings = InboundSettings()
    http: HttpSettings = HttpSettings()
    retention: RetentionSettings = RetentionSettings()
    mail: MailSettings
    providers: dict[str, dict[str, Any]] = Field(min_length=1)
    """``[providers.NAME]`` sections; each has a ``type`` naming the adapter (``local``, ``ifax``…)."""
    accounts: list[AccountSettings] = Field(min_length=1)

    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("fax_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().rstrip(".").lower() for domain in value]

    @model_validator(mode="after")
    def _accounts_are_consistent(self) -> Settings:
        names: set[str] = set()
        users: dict[str, str] = {}
        for index, account in enumerate(self.accounts):
            if account.require_authentication and not self.smtp.authserv_id:
                raise ValueError(
                    f"accounts[{index}].require_authentication needs smtp.authserv_id: the authserv-id your mail "
                    "server writes into Authentication-Results"
                )
            for user_index, user in enumerate(account.auth_users):
                key = f"accounts[{index}].auth_users[{user_index}].username"
                if user.username in users:
                    raise ValueError(f"{key} {user.username!r} is used twice (also in account {users[user.username]})")
                users[user.username] = account.name
            if account.auth_users and self.smtp.tls_certificate is None:
                # AUTH is only offered after STARTTLS: users without a certificate could never log in.
                raise ValueError(f"accounts[{index}].auth_users needs smtp.tls_certificate and smtp.tls_key")
            if account.name in names:
                raise ValueError(f"accounts[{index}].name {account.name!r} is used twice")
            names.add(account.name)
            if account.provider not in self.providers:
                raise ValueError(
                    f"accounts[{index}].provider {account.provider!r} has no [providers.{account.provider}]"
                    f" section (known: {', '.join(sorted(self.providers))})"
                )
        return self

    def path(self, value: Path | str) -> Path:
        """Resolve a configured path against ``state_dir``."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.state_dir / candidate

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the store, defaulting to SQLite in the state directory."""
        return self.store.url or f"sqlite:///{self.state_dir / 'faxbridge.db'}"

    def account(self, name: str) -> AccountSettings:
        """Return the account called ``name``."""
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the configuration file to read: ``--config``, ``$FAXBRIDGE_CONFIG`` or the system default."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("FAXBRIDGE_CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, merge and validate the configuration; raise ``ConfigError`` with the key, file and expectation."""
    file = config_path(path).resolve()
    try:
        with file.open("rb") as handle:
            tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {file} does not exist; pass --config or set FAXBRIDGE_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"configuration file {file} cannot be read: {exc.strerror}") from exc

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=file))

    try:
        # The required fields come from the sources, which mypy cannot see.
        settings: Settings = _FromFile()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, file)) from None
    settings.config_file = file
    settings.state_dir = settings.state_dir.resolve()
    return settings


def describe_validation_error(exc: ValidationError, file: Path) -> str:
    """Turn pydantic's report into lines an administrator can act on."""
    lines = [f"{file}: invalid configuration"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        # Never echo what was written as a password hash: it may be a clear password put there by mistake.
        secret = bool(error["loc"]) and error["loc"][-1] == "password_hash"
        hidden = error["type"] == "missing" or isinstance(given, dict) or secret
        shown = "" if hidden else f" (got {given!r})"
        lines.append(f"  {key}: {message}{shown}")
    lines.append("  (values may come from the file or from a FAXBRIDGE_* environment variable)")
    return "\n".join(lines)
