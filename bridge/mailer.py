"""How every mail leaves the bridge: notices to senders and incoming faxes to their mailboxes.

A ``Mailer`` hands one finished ``EmailMessage`` to its destination and returns only once the destination has
taken responsibility for it; otherwise it raises ``NotificationError``, temporary when trying the same mail
again later may help. Two destinations exist, chosen by ``[mail]`` in the configuration:

``MaildirMailer``
    writes into a local Maildir (tmp/ → fsync → rename into new/ → fsync of new/), so a mail is on disk before
    ``deliver`` returns.
``RelayMailer``
    hands the mail to an SMTP relay with aiosmtplib, one connection per mail.

Error classification for the relay (the worker retries temporary errors and gives up on permanent ones):

* no connection, a timeout, a dropped connection, a TLS failure: temporary;
* a reply before the mail transaction (greeting, EHLO, STARTTLS, AUTH): temporary whatever its code, because
  it says nothing about this mail but something about our relay configuration (a wrong password, a relay
  that refuses our address). Treating a ``535`` as permanent would silently drop every notice until an
  administrator fixes the password; as temporary they wait, and the log names the stage and the reply;
* a reply to MAIL, RCPT or DATA: 4xx temporary, 5xx permanent;
* some recipients refused and the mail delivered to the others: ``PartialDeliveryError``, always permanent,
  because retrying the whole mail would give the accepted recipients a second copy. It names the refused
  recipients so that a caller that wants to can retry those alone.

Delivery is at least once: when the connection drops after the final dot but before the relay's reply, the
relay may have taken the mail and a retry sends it again. A duplicate notice is better than a lost one.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import os
import secrets
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from bridge._files import fsync_dir
from bridge.errors import NotificationError
from bridge.settings import MailSettings, RelaySettings

__all__ = [
    "MaildirMailer",
    "Mailer",
    "PartialDeliveryError",
    "RelayMailer",
    "build_mailer",
]

# How long to wait for the relay's answer to QUIT once the mail has been accepted: the mail is safe by then,
# so a slow goodbye must not hold up the worker for the whole relay timeout.
_QUIT_TIMEOUT = 5.0


class PartialDeliveryError(NotificationError):
    """The relay took the mail for some recipients and refused the others.

    Always permanent: the accepted recipients have the mail, and retrying would send them a second copy.
    """

    def __init__(self, message: str, *, delivered: Sequence[str], refused: Mapping[str, str]) -> None:
        super().__init__(message, temporary=False)
        self.delivered: tuple[str, ...] = tuple(delivered)
        """Recipients the relay accepted."""
        self.refused: dict[str, str] = dict(refused)
        """Refused recipients and the relay's reply to each (``"550 5.1.1 no such user"``)."""


class Mailer(ABC):
    """Somewhere the bridge's mails go."""

    @abstractmethod
    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Hand ``message`` over for ``recipients``; return only once the destination is responsible for it.

        Raises ``NotificationError``; ``is_temporary`` says whether the same call may succeed later.
        """


def _clean_recipients(recipients: Sequence[str]) -> list[str]:
    """Check the recipient list before anything is written or sent.

    A bare string is a sequence too; taking it letter by letter would be a silent disaster, so it is taken
    as one address. Whitespace and control characters would let an address smuggle header lines into the
    Maildir copy or commands into the SMTP session, so they are refused.
    """
    given = [recipients] if isinstance(recipients, str) else list(recipients)
    cleaned: list[str] = []
    for address in given:
        candidate = address.strip()
        if not candidate or any(char.isspace() or ord(char) < 32 or char == "\x7f" for char in candidate):
            raise NotificationError(f"not a usable recipient address: {address!r}", temporary=False)
        if candidate not in cleaned:
            cleaned.append(candidate)
    if not cleaned:
        raise NotificationError("no recipients to deliver to", temporary=False)
    return cleaned


class MaildirMailer(Mailer):
    """Writes each mail into a Maildir, durably, before ``deliver`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Maildir names must be unique on this host: time, pid, a per-process counter and random bits.
        self._counter = itertools.count(1)
        self._prepared = False
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Write ``message`` into ``new/``, with an ``X-Original-To`` header naming ``recipients``."""
        addresses = _clean_recipients(recipients)
        try:
            data = _maildir_bytes(message, addresses)
        except (ValueError, TypeError, LookupError) as exc:
            raise NotificationError(f"cannot serialise the mail for {self.path}: {exc}", temporary=False) from exc
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise NotificationError(f"cannot write to Maildir {self.path}: {reason}", temporary=True) from exc

    def _unique_name(self) -> str:
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(self._counter)}R{secrets.token_hex(8)}.{self._host}"

    def _write(self, data: bytes) -> None:
        # The file is written here rather than with mailbox.Maildir.add(), which fsyncs neither the file nor
        # the directory it is renamed into: a crash could leave an empty or torn message in new/ after we
        # reported success. The layout (tmp/ new/ cur/, unique names) is the one mailbox.Maildir reads.
        # The directories are made with exist_ok because mailbox.Maildir(create=True) checks and then
        # creates, which fails when two deliveries (or two bridge instances) create the Maildir at once.
        root = self.path
        for directory in (root, root / "tmp", root / "new", root / "cur"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self._prepared:
            # Directories that may just have been created are durable only once their parents are synced.
            for directory in (root.parent, root, root / "tmp", root / "new"):
                fsync_dir(directory)
        name = self._unique_name()
        tmp_path = root / "tmp" / name
        new_dir = root / "new"
        # O_EXCL: never overwrite a file another process is writing. Permissions follow the umask, as in
        # mailbox.Maildir; the service's UMask and its private state directory keep the mail private.
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp_path.rename(new_dir / name)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory holding the new entry is on disk.
        fsync_dir(new_dir)
        self._prepared = True


def _maildir_bytes(message: EmailMessage, recipients: Sequence[str]) -> bytes:
    """The message as a Maildir file: LF line endings, with the envelope recipients prepended.

    A Maildir has no envelope, so a person reading it would not see who a mail was for when the headers
    do not say (a Bcc, or an extra notice address). ``X-Original-To`` is what Postfix's local delivery
    writes for the same purpose. The header is prepended to a serialised copy so the caller's message is
    not changed.
    """
    body = message.as_bytes(policy=message.policy.clone(linesep="\n"))
    header = f"X-Original-To: {', '.join(recipients)}\n".encode()
    return header + body


def _envelope_sender(message: EmailMessage) -> str:
    """The MAIL FROM address: the message's ``Sender``, else its ``From``.

    Not the null path: relays that take authenticated submissions commonly refuse ``MAIL FROM:<>``, and a
    notice that bounces should reach the bridge's own address where an administrator sees it. Loops are
    prevented by ``Auto-Submitted`` on every notice and by the bridge never answering bounces.
    """
    for header in ("Sender", "From"):
        values = message.get_all(header) or []
        for _name, address in email.utils.getaddresses([str(value) for value in values]):
            if address:
                return address
    raise NotificationError("the mail has no From address to use as the envelope sender", temporary=False)


def _describe_reply(code: int, text: str) -> str:
    return f"{code} {' '.join(text.split())}".strip()


def _temporary_code(code: int) -> bool:
    # Only a 5xx is a final "no"; 4xx and anything malformed (aiosmtplib uses -1) may pass on a retry.
    return not 500 <= code <= 599


class RelayMailer(Mailer):
    """Hands each mail to an SMTP relay with aiosmtplib, one connection per mail."""

    def __init__(self, settings: RelaySettings, *, local_hostname: str | None = None) -> None:
        """``settings.password_file`` must already be resolved (``build_mailer`` does it).

        ``local_hostname`` is the EHLO name; aiosmtplib's default is this host's FQDN.
        """
        self.settings = settings
        self._local_hostname = local_hostname
        host = settings.host
        self._where = f"relay [{host}]:{settings.port}" if ":" in host else f"relay {host}:{settings.port}"

    @property
    def _start_tls(self) -> bool | None:
        # aiosmtplib: None upgrades when the relay offers STARTTLS, True insists, False never tries.
        return {"auto": None, "always": True, "never": False}[self.settings.starttls]

    async def _password(self) -> str | None:
        settings = self.settings
        if settings.username is None:
            return None
        if settings.password is not None:
            return settings.password.get_secret_value()
        if settings.password_file is not None:
            # Read on every delivery so that a rotated credential is picked up without a restart.
            try:
                text = await asyncio.to_thread(settings.password_file.read_text, encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise NotificationError(
                    f"cannot read the password for {self._where} from {settings.password_file}: {reason}",
                    temporary=True,
                ) from exc
            # Files written by editors and `echo` end with a newline that is not part of the password.
            return text.rstrip("\r\n")
        # A configuration mistake, not a property of this mail: temporary, so notices wait for the fix.
        raise NotificationError(
            f"mail.relay.username is set for {self._where} but neither password nor password_file is",
            temporary=True,
        )

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Send ``message`` to ``recipients`` through the relay.

        Returns when the relay accepted it for every recipient. Raises ``PartialDeliveryError`` when some
        recipients were refused and the others got it, and ``NotificationError`` otherwise (see the module
        docstring for which failures are temporary).
        """
        addresses = _clean_recipients(recipients)
        sender = _envelope_sender(message)
        password = await self._password()
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            local_hostname=self._local_hostname,
            timeout=settings.timeout,
            start_tls=self._start_tls,
            validate_certs=settings.validate_certs,
        )
        stage = "connect"
        try:
            # connect() reads the greeting, says EHLO and upgrades with STARTTLS as configured.
            await client.connect()
            if settings.username is not None and password is not None:
                stage = "AUTH"
                await client.login(settings.username, password)
            stage = "transaction"
            refused, _reply = await client.send_message(message, sender=sender, recipients=addresses)
        except Exception as exc:
            client.close()
            raise self._error(exc, stage, sender) from exc
        except BaseException:
            # Cancellation: drop the connection without waiting for anything.
            client.close()
            raise
        await self._quit(client)
        if refused:
            # aiosmtplib returns normally when at least one RCPT was accepted: the refusals are only in
            # this dict, and ignoring it would lose the notice for those recipients without a word.
            delivered = [address for address in addresses if address not in refused]
            replies = {address: _describe_reply(reply.code, reply.message) for address, reply in refused.items()}
            listed = "; ".join(f"{address}: {reply}" for address, reply in replies.items())
            noun = "recipient" if len(replies) == 1 else "recipients"
            raise PartialDeliveryError(
                f"{self._where} refused {noun} {listed} (delivered to {', '.join(delivered)})",
                delivered=delivered,
                refused=replies,
            )

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        # The mail is accepted at this point; a failing goodbye must not turn success into an error that
        # would make the caller send it again.
        try:
            await client.quit(timeout=_QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            client.close()

    def _error(self, exc: Exception, stage: str, sender: str) -> NotificationError:
        """Turn what aiosmtplib raised into a ``NotificationError`` that says what failed."""
        where = self._where
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            # Every recipient was refused, so nobody has the mail: retrying all of them is harmless, and
            # worth it while any refusal was temporary.
            parts = [f"{err.recipient}: {_describe_reply(err.code, err.message)}" for err in exc.recipients]
            temporary = any(_temporary_code(err.code) for err in exc.recipients)
            noun = "recipient" if len(parts) == 1 else "recipients"
            return NotificationError(f"{where} refused {noun} {'; '.join(parts)}", temporary=temporary)
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            reply = _describe_reply(exc.code, exc.message)
            return NotificationError(f"{where} refused sender {sender}: {reply}", temporary=_temporary_code(exc.code))
        if isinstance(exc, aiosmtplib.SMTPDataError):
            reply = _describe_reply(exc.code, exc.message)
            return NotificationError(f"{where} refused the message: {reply}", temporary=_temporary_code(exc.code))
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            reply = _describe_reply(exc.code, exc.message)
            return NotificationError(
                f"{where} refused our credentials for {self.settings.username}: {reply}", temporary=True
            )
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            reply = _describe_reply(exc.code, exc.message)
            return NotificationError(f"{where} refused the connection: {reply}", temporary=True)
        if isinstance(exc, aiosmtplib.SMTPHeloError):
            reply = _describe_reply(exc.code, exc.message)
            return NotificationError(f"{where} refused EHLO: {reply}", temporary=True)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return NotificationError(f"{where} timed out ({stage}): {exc}", temporary=True)
        if isinstance(exc, ssl.SSLError):
            return NotificationError(f"{where}: TLS failed: {exc}", temporary=True)
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
            return NotificationError(f"{where} unreachable or disconnected ({stage}): {exc}", temporary=True)
        if isinstance(exc, aiosmtplib.SMTPNotSupported) and stage == "transaction":
            # A non-ASCII address and a relay without SMTPUTF8: the same mail will never go through.
            return NotificationError(f"{where} cannot take this mail: {exc}", temporary=False)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reply = _describe_reply(exc.code, exc.message)
            if stage == "transaction":
                return NotificationError(f"{where} failed: {reply}", temporary=_temporary_code(exc.code))
            return NotificationError(f"{where} failed during {stage}: {reply}", temporary=True)
        if isinstance(exc, aiosmtplib.SMTPException):
            # STARTTLS or AUTH not offered although configured: the relay or our settings must change.
            return NotificationError(f"{where} failed during {stage}: {exc}", temporary=True)
        if isinstance(exc, ValueError):
            # aiosmtplib refuses addresses it cannot put on the wire safely.
            return NotificationError(f"{where}: unusable address: {exc}", temporary=False)
        return NotificationError(f"{where} failed during {stage}: {exc!r}", temporary=True)


def build_mailer(mail: MailSettings, resolve: Callable[[Path], Path]) -> Mailer:
    """Build the mailer ``[mail]`` asks for; ``resolve`` turns configured paths into absolute ones."""
    if mail.maildir is not None:
        return MaildirMailer(resolve(mail.maildir))
    relay = mail.relay
    if relay is None:  # MailSettings guarantees one of the two; this keeps the type checker honest.
        raise ValueError("set exactly one of mail.maildir or [mail.relay]")
    if relay.password_file is not None:
        relay = relay.model_copy(update={"password_file": resolve(relay.password_file)})
    return RelayMailer(relay)
