"""The SMTP front door: an aiosmtpd handler that refuses early and answers ``250`` only after the commit.

Every refusal happens inside the session, with the enhanced status code a mail server expects, so the bridge
never has to send mail to a sender it refused (no backscatter):

* a recipient outside the fax domains: ``550 5.7.1`` (the bridge is never a relay);
* a sender no account admits: ``550 5.7.1``, at RCPT; a ``From:`` that is not the same account's: at DATA;
* a local part that is not a valid number: ``550 5.1.1``;
* too many recipients: ``452 4.5.3``; too big: ``552 5.3.4``;
* a bare LF or CR in DATA: ``550 5.5.2`` (see ``check_line_endings``);
* past ``smtp.failure_limit`` refusals, a client address or sender gets ``450 4.7.1`` for a cooling-off time;
  more than ``smtp.max_connections_per_client`` sessions from one address: ``421 4.7.0``;
* automatic mail (bounces, ``Auto-Submitted``, bulk ``Precedence``, our own ``X-Loop``): ``550 5.7.1``, and
  it is never answered (RFC 3834);
* the store could not commit: ``451 4.3.0``, so the client keeps the message and tries again.

With ``smtp.tls_certificate`` the server offers STARTTLS, and after it SMTP AUTH (PLAIN and LOGIN only) for the
accounts' ``auth_users``: AUTH before TLS gets aiosmtpd's ``538 5.7.11``, bad credentials ``535 5.7.8`` (a
refusal for the abuse guard). An authenticated session faxes for its user's account only: the envelope sender
and ``From:`` must be allowed senders of that account, else ``550 5.7.1``. ``smtp.require_starttls`` makes
every command but EHLO, STARTTLS, NOOP and QUIT get ``530 5.7.0`` before STARTTLS.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridge.abuse import AbuseGuard
from bridge.auth import burn_verification, verify_password
from bridge.errors import BareLineEnding, BridgeError, ConfigError, MessageRejected, RecipientRejected, StoreError
from bridge.intake import Intake, build_request
from bridge.routing import Recipient, Router, acl_admits
from bridge.secret_keys import KeyRotation
from bridge.settings import AccountSettings, Settings
from bridge.stores.base import JobStore

log = logging.getLogger(__name__)

OK_SENDER = "250 2.1.0 Sender OK"
OK_RECIPIENT = "250 2.1.5 Recipient OK"
RELAY_DENIED = "550 5.7.1 Relay access denied: this server only takes mail for its fax domains"
NOT_AUTHORIZED = "550 5.7.1 Delivery not authorized"
BAD_NUMBER = "550 5.1.1 Bad destination mailbox address: not a valid fax number"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_BIG = "552 5.3.4 Message too big for system"
SHUTTING_DOWN = "421 4.3.2 System not accepting network messages, try again later"
COOLING_OFF = "450 4.7.1 Too many refused requests from your address or sender; try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address"
TEMPORARY_ERROR = "451 4.3.0 Temporary server error, please try again later"
MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"
RATE_LIMITED = "450 4.7.1 Sender rate limit exceeded; try again later"
AUTH_COOLING_OFF = "454 4.7.0 Temporary authentication failure: too many refused requests from your address"

# The only AUTH mechanisms offered: both carry the password itself, which is what a scrypt hash can check.
AUTH_MECHANISMS = frozenset({"PLAIN", "LOGIN"})

# aiosmtpd words some replies itself, without enhanced status codes; these are the ones a fax sender meets.
_REWORDED = {
    b"552 Error: Too much mail data": TOO_BIG.encode(),
    b"552 Error: message size exceeds fixed maximum message size": TOO_BIG.encode(),
    b"530 Must issue a STARTTLS command first": MUST_STARTTLS.encode(),
}


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """What a successful AUTH leaves in ``session.auth_data``: the user and its account, never the password."""

    login: str
    """aiosmtpd copies this into ``session.login_data``."""
    account: str


class FaxEnvelope(Envelope):
    """An envelope that also holds the recipients as parsed at RCPT time."""

    def __init__(self) -> None:
        super().__init__()
        self.fax_recipients: list[Recipient] = []


class FaxSMTP(SMTP):
    """aiosmtpd's protocol with enhanced status codes on its own size replies."""

    def __init__(
        self,
        handler: FaxHandler,
        *,
        on_lost: Callable[[FaxSMTP], None],
        admit: Callable[[FaxSMTP], bool],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._on_lost = on_lost
        self._admit = admit

    async def _handle_client(self) -> None:
        # aiosmtpd has no per-client connection limit; refuse before the greeting, as Postfix's anvil does.
        if not self._admit(self):
            await self.push(TOO_MANY_CONNECTIONS)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _create_envelope(self) -> Envelope:
        return FaxEnvelope()

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the session, then let aiosmtpd clean up."""
        self._on_lost(self)
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        """Send a reply, rewording aiosmtpd's bare size errors."""
        raw = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) else status
        await super().push(_REWORDED.get(raw, raw))


class FaxHandler:
    """aiosmtpd hooks: authorization and number checks at RCPT, content check and commit at DATA."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        intake: Intake,
        *,
        store: JobStore | None = None,
        keys: KeyRotation | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._router = router
        self._intake = intake
        self._store = store
        self._key_rotation = keys
        self._clock = clock
        smtp = settings.smtp
        self.guard = AbuseGuard(
            limit=smtp.failure_limit, window=smtp.failure_window_seconds, cooloff=smtp.cooloff_seconds
        )
        self.accepting = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        """Refuse new transactions while shutting down or cooling off; otherwise record the sender."""
        if not self.accepting:
            return SHUTTING_DOWN
        if self._cooling_off(session, address):
            return COOLING_OFF
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return OK_SENDER

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        """Check the fax domain, the sender's account and the number before taking a recipient."""
        peer = _peer(session)
        if not self.accepting:
            return SHUTTING_DOWN
        if self._cooling_off(session, envelope.mail_from):
            return COOLING_OFF
        if not self._router.is_fax_address(address):
            log.info("refused relay attempt from %s: %s -> %s", peer, envelope.mail_from, address)
            return self._refused(session, envelope, RELAY_DENIED)
        account = self._account(session, envelope.mail_from)
        if account is None:
            log.info("refused sender %r from %s: no account admits it", envelope.mail_from, peer)
            return self._refused(session, envelope, NOT_AUTHORIZED)
        if not _client_allowed(peer, account):
            log.info(
                "refused %r from %s: not in the allowed networks of account %s", envelope.mail_from, peer, account.name
            )
            return self._refused(session, envelope, NOT_AUTHORIZED)
        try:
            recipient = self._router.recipient(address, account)
        except RecipientRejected as exc:
            log.info("refused recipient %r from %s: %s", address, peer, exc)
            return self._refused(session, envelope, BAD_NUMBER)
        except MessageRejected as exc:
            # A valid number this account may not dial: an authorization refusal, worded by the rule.
            log.info("refused recipient %r from %s for account %s: %s", address, peer, account.name, exc)
            return self._refused(session, envelope, exc.smtp_reply)
        if not acl_admits(account, sender=envelope.mail_from or "", client=peer, number=recipient.number):
            log.info("refused %r from %s to %s: no ACL rule of account %s admits it", envelope.mail_from, peer,
                     recipient.number, account.name)  # fmt: skip
            return self._refused(session, envelope, NOT_AUTHORIZED)
        known: list[Recipient] = _recipients(envelope)
        if any(r.number == recipient.number for r in known):
            # The same number twice in one envelope is one fax.
            return OK_RECIPIENT
        if len(known) >= min(self._settings.smtp.max_recipients, account.max_recipients or 1_000_000):
            return TOO_MANY_RECIPIENTS
        if await self._over_rate_limit(account, envelope.mail_from or "", pending=len(known)):
            log.info("deferred %r from %s: over the sender's rate limit of account %s", envelope.mail_from, peer,
                     account.name)  # fmt: skip
            return RATE_LIMITED
        known.append(recipient)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return OK_RECIPIENT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Check ``From:``, then commit the message and its jobs; only then ``250``."""
        if not self.accepting:
            return SHUTTING_DOWN
        account = self._account(session, envelope.mail_from)
        raw = envelope.original_content
        if account is None or raw is None:
            return NOT_AUTHORIZED
        try:
            digests = await self._secret_digests(account)
        except StoreError as exc:
            log.error("could not read the secret keys of account %s: %s", account.name, exc)
            return TEMPORARY_ERROR
        try:
            check_line_endings(raw)
            request = build_request(
                self._router,
                account,
                raw,
                mail_from=envelope.mail_from or "",
                recipients=_recipients(envelope),
                client_address=_peer(session),
                own_address=self._settings.mail.from_address,
                authserv_id=self._settings.smtp.authserv_id,
                secret_digests=digests,
            )
        except MessageRejected as exc:
            log.info("refused message from %s (%s): %s", envelope.mail_from, _peer(session), exc)
            return self._refused(session, envelope, exc.smtp_reply)
        self._in_flight += 1
        self._idle.clear()
        try:
            result = await self._intake.accept(request)
        except StoreError as exc:
            log.error("could not store a message from %s: %s", envelope.mail_from, exc)
            return TEMPORARY_ERROR
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        verb = "already queued" if result.duplicate else "queued"
        log.info(
            "%s message %s from %s as jobs %s",
            verb,
            result.message_id,
            envelope.mail_from,
            ",".join(result.job_ids),
        )
        return _queued_reply(verb, result.job_ids)

    async def _secret_digests(self, account: AccountSettings) -> list[str] | None:
        if self._key_rotation is None or (not account.secret_key_required and account.secret_key_renew == "never"):
            return None
        return await self._key_rotation.valid_digests(account, self._clock())

    async def _over_rate_limit(self, account: AccountSettings, sender: str, *, pending: int) -> bool:
        """Whether one more fax from ``sender`` would pass the account's per-sender limits.

        ``pending`` counts the recipients this envelope already holds. A store that cannot answer defers the
        recipient rather than admitting it unchecked.
        """
        if self._store is None or (account.max_faxes_per_hour is None and account.max_pages_per_day is None):
            return False
        now = self._clock()
        try:
            usage = await self._store.sender_usage(
                sender, faxes_since=now - timedelta(hours=1), pages_since=now - timedelta(days=1)
            )
        except StoreError as exc:
            log.error("could not count the recent faxes of %s: %s", sender, exc)
            return True
        if account.max_faxes_per_hour is not None and usage.faxes + pending >= account.max_faxes_per_hour:
            return True
        return account.max_pages_per_day is not None and usage.pages >= account.max_pages_per_day

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's ``authenticator``: check a PLAIN or LOGIN username and password against ``auth_users``.

        A failure is answered with aiosmtpd's ``535 5.7.8`` and counted against the client address, so that
        guessing passwords cools the address off like any other refusal.
        """
        client = f"client:{_peer(session)}"
        if self.guard.blocked(client):
            log.info("refused AUTH from %s: the address is cooling off after repeated refusals", _peer(session))
            return AuthResult(success=False, handled=False, message=AUTH_COOLING_OFF)
        if mechanism not in AUTH_MECHANISMS or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        try:
            username = auth_data.login.decode("utf-8")
        except UnicodeDecodeError:
            username = ""
        user = self._router.auth_user(username)
        account = self._router.account_for_user(username)
        if user is None or account is None:
            burn_verification(auth_data.password)
            ok = False
        else:
            ok = verify_password(auth_data.password, user.password_hash)
        if not ok or account is None:
            log.info("refused AUTH %s for %r from %s: bad credentials", mechanism, username, _peer(session))
            self.guard.record_failure([client])
            return AuthResult(success=False, handled=False)
        log.info("AUTH %s as %r (account %s) from %s", mechanism, username, account.name, _peer(session))
        return AuthResult(success=True, auth_data=AuthenticatedUser(login=username, account=account.name))

    def _account(self, session: Session, sender: str | None) -> AccountSettings | None:
        """The account a transaction faxes for: the AUTH user's, if the sender belongs to it; else the sender's."""
        owner = self._router.account_for(sender or "")
        # aiosmtpd types auth_data as None; it holds whatever our authenticator returned.
        user: Any = session.auth_data if session.authenticated else None
        if not isinstance(user, AuthenticatedUser):
            return owner
        account = self._router.account_for_user(user.login)
        # Compared by the same first-match rule as From: (Router.check_from_header), so both checks agree.
        if account is None or owner is None or owner.name != account.name:
            log.info("refused sender %r for user %r: not an allowed sender of its account", sender, user.login)
            return None
        return account

    def _keys(self, session: Session, sender: str | None) -> list[str]:
        keys = [f"client:{_peer(session)}"]
        if sender:
            keys.append(f"sender:{sender.strip().lower()}")
        return keys

    def _cooling_off(self, session: Session, sender: str | None) -> bool:
        blocked = [key for key in self._keys(session, sender) if self.guard.blocked(key)]
        if blocked:
            log.info(
                "refused a transaction from %s: %s is cooling off after repeated refusals", _peer(session), blocked[0]
            )
        return bool(blocked)

    def _refused(self, session: Session, envelope: Envelope, reply: str) -> str:
        self.guard.record_failure(self._keys(session, envelope.mail_from))
        return reply

    async def handle_exception(self, error: Exception) -> str:
        """Never show a client our exception names: answer a neutral temporary error."""
        if isinstance(error, BridgeError):
            log.warning("SMTP session error: %s", error)
            return error.smtp_reply
        log.exception("unexpected error in an SMTP session", exc_info=error)
        return TEMPORARY_ERROR

    async def drained(self) -> None:
        """Wait until no message is between its final dot and its reply."""
        await self._idle.wait()


def _client_allowed(peer: str | None, account: AccountSettings) -> bool:
    if not account.allowed_networks:
        return True
    try:
        client = ip_address(peer or "")
    except ValueError:
        return False
    return any(client in network for network in account.allowed_networks)


def check_line_endings(raw: bytes) -> None:
    """Refuse a message with a bare LF or CR: ``BareLineEnding``.

    aiosmtpd ends DATA only at CRLF.CRLF, but servers downstream may also end it at LF.LF or CR.CR, which
    lets a second, smuggled message ride inside the first (CVE-2023-51764, CERT VU#302671). A bare LF also
    lets a header line carry a second header past our checks. Such mail is refused rather than repaired:
    repairing would change what the sender signed, and real mail software sends CRLF.
    """
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf:
        raise BareLineEnding("bare <LF> in DATA")
    if raw.count(b"\r") != crlf:
        raise BareLineEnding("bare <CR> in DATA")


def _recipients(envelope: Envelope) -> list[Recipient]:
    # aiosmtpd gives each transaction a fresh envelope from FaxSMTP._create_envelope.
    assert isinstance(envelope, FaxEnvelope)
    return envelope.fax_recipients


def _peer(session: Session) -> str | None:
    peer: Any = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None if peer is None else str(peer)


def _queued_reply(verb: str, job_ids: tuple[str, ...]) -> str:
    # A reply line may hold 512 octets; name as many jobs as fit.
    reply = f"250 2.0.0 Ok: {verb} as " + ",".join(job_ids)
    if len(reply) <= 500:
        return reply
    shown: list[str] = []
    for job_id in job_ids:
        if len(f"250 2.0.0 Ok: {verb} as {','.join([*shown, job_id])} and 9999 more") > 500:
            break
        shown.append(job_id)
    return f"250 2.0.0 Ok: {verb} as {','.join(shown)} and {len(job_ids) - len(shown)} more"


def build_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server context for STARTTLS from ``smtp.tls_certificate``/``tls_key``, or ``None`` without them.

    Raises ``ConfigError`` naming the keys when the files cannot be read or do not fit together.
    """
    smtp = settings.smtp
    if smtp.tls_certificate is None or smtp.tls_key is None:
        return None
    certificate, key = settings.path(smtp.tls_certificate), settings.path(smtp.tls_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.0 and 1.1 are deprecated (RFC 8996); every mail client that matters speaks 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"smtp.tls_certificate {certificate} / smtp.tls_key {key}: cannot load the certificate and key: {exc}"
        ) from None
    return context


def _other_mechanisms(handler: object) -> list[str]:
    # aiosmtpd offers every auth_* method of the protocol class and the handler; name all but PLAIN and LOGIN,
    # found the way aiosmtpd finds them, so a mechanism added by a later aiosmtpd is not offered unnoticed.
    names: set[str] = set()
    for obj in (FaxSMTP, handler):
        for name, member in inspect.getmembers(obj):
            if name.startswith("auth_"):
                names.add(getattr(member, "__auth_mechanism_name__", name.replace("auth_", "").replace("__", "-")))
    return sorted(names - AUTH_MECHANISMS)


class SMTPServer:
    """The listening socket and the sessions on it, in the application's event loop."""

    def __init__(self, settings: Settings, handler: FaxHandler) -> None:
        self._settings = settings
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._protocols: set[FaxSMTP] = set()
        self._tls_context: ssl.SSLContext | None = None
        self._exclude = _other_mechanisms(handler)

    def _factory(self) -> FaxSMTP:
        smtp = self._settings.smtp
        protocol = FaxSMTP(
            self._handler,
            on_lost=self._protocols.discard,
            admit=self._admit,
            data_size_limit=smtp.max_message_size,
            hostname=smtp.hostname,
            ident="faxbridge",
            timeout=smtp.timeout,
            enable_SMTPUTF8=True,
            command_call_limit=100,
            tls_context=self._tls_context,
            require_starttls=smtp.require_starttls,
            # Never let a password cross the network in clear: AUTH is neither offered nor taken before TLS.
            auth_require_tls=True,
            auth_exclude_mechanism=self._exclude,
            authenticator=self._handler.authenticate,
        )
        self._protocols.add(protocol)
        return protocol

    def _admit(self, protocol: FaxSMTP) -> bool:
        peer = _peer(protocol.session) if protocol.session is not None else None
        if peer is None:
            return True
        same = sum(1 for other in self._protocols if other.session is not None and _peer(other.session) == peer)
        if same > self._settings.smtp.max_connections_per_client:
            log.info("refused a connection from %s: %d sessions open", peer, same - 1)
            return False
        return True

    async def start(self) -> tuple[str, int]:
        """Bind and listen; return the address actually bound (port 0 picks a free port)."""
        loop = asyncio.get_running_loop()
        smtp = self._settings.smtp
        self._tls_context = build_tls_context(self._settings)
        self._server = await loop.create_server(self._factory, host=smtp.listen_host, port=smtp.listen_port)
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def stop(self, drain: Callable[[], Awaitable[None]] | None = None, timeout: float = 10.0) -> None:
        """Stop listening, let messages past their final dot be committed, then close every session."""
        self._handler.accepting = False
        if self._server is not None:
            self._server.close()
        try:
            await asyncio.wait_for(self._handler.drained(), timeout)
        except TimeoutError:
            log.warning("closing SMTP sessions with messages still being stored")
        for protocol in list(self._protocols):
            transport = protocol.transport
            if transport is not None:
                transport.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
