"""Every exception faxbridge raises on purpose, and the process exit codes.

The tree::

    BridgeError                      anything a worker loop may catch
    ├── MessageRejected              permanent; refused at SMTP time or reported by email
    │   ├── RecipientRejected        550 5.1.1 (not a valid fax number, at RCPT)
    │   ├── DestinationDenied        550 5.7.1 (a valid number this account may not fax to, at RCPT)
    │   ├── SenderNotAuthorized      550 5.7.1 (never says which check failed)
    │   │   └── SenderNotAuthenticated 550 5.7.26 (no trusted Authentication-Results verdict)
    │   ├── AutomaticMessage         550 5.7.1 (auto-submitted, bulk or our own: RFC 3834 loop protection)
    │   ├── BareLineEnding           550 5.5.2 (a bare LF or CR in DATA: the smuggling defence)
    │   ├── UnsupportedContent       554 5.6.1 (nothing convertible)
    │   └── TooLarge                 552 5.3.4 (bytes or pages over the limit)
    ├── ConversionError              permanent; a document could not be turned into fax pages
    ├── ProviderError                provider name, HTTP status, maybe_accepted (set by send)
    │   ├── ProviderTemporaryError   try again later
    │   │   ├── RateLimited          429, retry_after in seconds
    │   │   └── ProviderUnavailable  also a ConnectionError: timeouts, resets, DNS
    │   ├── ProviderPermanentError   this fax will never go through as it is
    │   │   ├── AuthenticationFailed 401/403: the operator must fix a credential
    │   │   ├── InvalidNumber
    │   │   └── CapabilityMissing    asked for something the provider does not declare
    │   └── MalformedResponse        temporary; undecodable body
    ├── NotificationError            a notice could not be written; temporary if the relay said 4xx
    ├── StoreError
    │   ├── StoreUnavailable         temporary; database unreachable or a write failed
    │   ├── JobNotFound              also a LookupError
    │   └── LeaseLost                another worker owns the job now
    └── StartupError                 the bridge cannot start: a port is taken, a directory not writable
    ConfigError                      a ValueError, NOT a BridgeError: never swallowed by a worker loop

Each class says whether it is ``temporary``, which SMTP reply it turns into when it happens inside a session,
and which exit code the command line returns for it. The SMTP handler, the worker and the CLI read those
attributes instead of testing types.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import ClassVar


class ExitCode(enum.IntEnum):
    """Process exit codes, following sysexits.h so that systemd and scripts can act on them."""

    OK = 0
    USAGE = 64
    DATAERR = 65
    NOINPUT = 66
    UNAVAILABLE = 69
    SOFTWARE = 70
    TEMPFAIL = 75
    CONFIG = 78


class BridgeError(Exception):
    """Root of every error a worker may catch and act on."""

    temporary: ClassVar[bool] = False
    smtp_reply: ClassVar[str] = "451 4.3.0 Temporary server error, please try again later"
    exit_code: ClassVar[ExitCode] = ExitCode.SOFTWARE


class MessageRejected(BridgeError):
    """The message, or one recipient of it, is refused for good."""

    smtp_reply: ClassVar[str] = "554 5.6.0 Message refused"
    exit_code: ClassVar[ExitCode] = ExitCode.DATAERR


class RecipientRejected(MessageRejected):
    """The recipient address is not a fax number we can dial."""

    smtp_reply: ClassVar[str] = "550 5.1.1 Bad destination mailbox address"


class DestinationDenied(MessageRejected):
    """The number is valid, but the account's destination policy refuses it (premium rate, a denied country…).

    An authorization refusal, not a bad address, hence 5.7.1. The message names the rule for the log; the
    client only learns that the destination is not allowed.
    """

    smtp_reply: ClassVar[str] = "550 5.7.1 Delivery not authorized: destination not allowed"


class SenderNotAuthorized(MessageRejected):
    """No account admits this sender. The reply never says which check failed."""

    smtp_reply: ClassVar[str] = "550 5.7.1 Delivery not authorized"


class AutomaticMessage(MessageRejected):
    """An automatic reply, a bulk mail or one of our own notices: never faxed and never answered (RFC 3834)."""

    smtp_reply: ClassVar[str] = "550 5.7.1 Delivery not authorized: automatic and bulk mail is not faxed"


class BareLineEnding(MessageRejected):
    """A line in DATA ended in a bare LF or CR, which mail servers disagree about (SMTP smuggling)."""

    smtp_reply: ClassVar[str] = "550 5.5.2 bare <LF> or <CR> received: lines must end with <CR><LF>"


class SenderNotAuthenticated(SenderNotAuthorized):
    """The account requires the upstream mail server's verdict, and none authenticates the sender."""

    smtp_reply: ClassVar[str] = "550 5.7.26 Sender not authenticated"


class _WithDocumentNotes(Exception):
    """A refusal of a document that carries one line per part of the mail, for the sender's notice."""

    def __init__(self, message: str, *, notes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.notes: tuple[str, ...] = tuple(notes)
        """Lines like ``"report.pdf: 3 pages"`` or ``"archive.zip: zip archives cannot be faxed"``."""


class UnsupportedContent(_WithDocumentNotes, MessageRejected):
    """Nothing in the message can be faxed."""

    smtp_reply: ClassVar[str] = "554 5.6.1 Media not supported"


class TooLarge(_WithDocumentNotes, MessageRejected):
    """The message or its document is over a configured limit."""

    smtp_reply: ClassVar[str] = "552 5.3.4 Message too big for system"


class ConversionError(_WithDocumentNotes, BridgeError):
    """A document could not be turned into fax pages; the message says why in words a sender understands."""

    exit_code: ClassVar[ExitCode] = ExitCode.DATAERR


class ProviderError(BridgeError):
    """A fax provider refused or failed a request."""

    exit_code: ClassVar[ExitCode] = ExitCode.UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | None = None,
        maybe_accepted: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code
        # Only the adapter knows whether a failed send may still have reached the provider; when it cannot
        # tell, it says so, and the worker reconciles instead of sending again.
        self.maybe_accepted = maybe_accepted


class ProviderTemporaryError(ProviderError):
    """Worth trying again later."""

    temporary: ClassVar[bool] = True
    exit_code: ClassVar[ExitCode] = ExitCode.TEMPFAIL


class RateLimited(ProviderTemporaryError):
    """The provider asked us to slow down."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailable(ProviderTemporaryError, ConnectionError):
    """The provider could not be reached, or did not answer in time."""


class ProviderPermanentError(ProviderError):
    """This fax will not go through as it is; trying again would not help."""


class AuthenticationFailed(ProviderPermanentError):
    """The provider refused our credentials."""


class InvalidNumber(ProviderPermanentError):
    """The provider says the destination is not a valid fax number."""


class CapabilityMissing(ProviderPermanentError):
    """The caller asked a provider for something outside its declared capabilities: a bug in the caller."""


class MalformedResponse(ProviderTemporaryError):
    """The provider's answer could not be understood."""


class SubmissionUnknown(ProviderError):
    """The provider cannot tell whether an earlier, interrupted submission reached it."""


class NotificationError(BridgeError):
    """A notice or an incoming fax could not be handed to the mail relay or the Maildir."""

    def __init__(self, message: str, *, temporary: bool = True) -> None:
        super().__init__(message)
        self.is_temporary = temporary


class StoreError(BridgeError):
    """The job store failed."""


class StoreUnavailable(StoreError):
    """The database could not be reached or refused a write. Nothing was committed."""

    temporary: ClassVar[bool] = True
    smtp_reply: ClassVar[str] = "451 4.3.0 Queue write error, please try again later"
    exit_code: ClassVar[ExitCode] = ExitCode.TEMPFAIL


class JobNotFound(StoreError, LookupError):
    """No job has that id."""

    exit_code: ClassVar[ExitCode] = ExitCode.NOINPUT


class LeaseLost(StoreError):
    """Another worker holds the job now; this worker must drop it without writing."""


class StartupError(BridgeError):
    """Something outside the configuration file keeps the bridge from starting."""

    exit_code: ClassVar[ExitCode] = ExitCode.UNAVAILABLE


class ConfigError(ValueError):
    """The configuration is invalid. Deliberately not a BridgeError: it must stop the process."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG
