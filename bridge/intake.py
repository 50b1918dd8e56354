"""Accepting one message: the checks that need its content, the dedupe keys, and the durable commit.

The SMTP session has already checked each recipient (fax domain, number, sender's account) at RCPT time.
Here the message itself is checked (its ``From:`` must belong to the same account), one job is made per
recipient, and the message with its jobs is committed before the caller may answer ``250``.

Messages that arrive together are committed together: ``Intake.accept`` queues the request and a single
committer task stores everything that is waiting in one transaction. Each caller still gets its own answer
only after the commit that holds its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from bridge.errors import AutomaticMessage, StoreError, StoreUnavailable
from bridge.ids import new_id
from bridge.models import AcceptRequest, AcceptResult, EnvelopeInfo, NewJob
from bridge.routing import Recipient, Router, header_addresses
from bridge.secret_keys import SecretKeyMissing, find_key, rewrite_subject, strip_key
from bridge.sender_auth import check_sender
from bridge.settings import AccountSettings
from bridge.stores.base import JobStore

log = logging.getLogger(__name__)

_HEADER_PARSER = BytesHeaderParser(policy=compat32)


def _header(headers: Message, name: str) -> str:
    value = headers.get(name)
    if value is None:
        return ""
    # compat32 keeps raw header text; decode RFC 2047 words so the subject reads as the sender wrote it.
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except (ValueError, LookupError, UnicodeError):
        return str(value).strip()


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def header_block(raw: bytes) -> bytes:
    """The header section of ``raw``, without the body.

    Only the headers are parsed before the 250: handing a 25 MB message to the email parser would hold
    several copies of it in memory while the client waits.
    """
    end = _HEADER_END.search(raw)
    return raw if end is None else raw[: end.end()]


def body_digest(raw: bytes) -> str:
    """A digest of the message exactly as it arrived; a retransmission of it hashes the same."""
    return hashlib.sha256(raw).hexdigest()


def dedupe_key(sender: str, message_id: str | None, digest: str, number: str) -> str:
    """Same sender, same ``Message-ID``, same content, same destination: the same fax."""
    material = "\0".join([sender.lower(), message_id or "", digest, number])
    return hashlib.sha256(material.encode()).hexdigest()


_BULK_PRECEDENCE = frozenset({"bulk", "junk", "auto_reply"})


def refuse_automatic(headers: Message, mail_from: str, own_address: str | None) -> None:
    """Raise ``AutomaticMessage`` for mail that must never be faxed nor answered (RFC 3834 §2).

    That is a bounce (empty envelope sender), any ``Auto-Submitted`` other than ``no``, ``Precedence`` bulk,
    junk or auto_reply, and a message carrying our own ``X-Loop`` (one of our notices coming back).
    """
    if not mail_from.strip():
        raise AutomaticMessage("a bounce (empty envelope sender)")
    for value in headers.get_all("Auto-Submitted", []):
        keyword = str(value).split(";", 1)[0].strip().lower()
        if keyword and keyword != "no":
            raise AutomaticMessage(f"Auto-Submitted: {keyword}")
    for value in headers.get_all("Precedence", []):
        if str(value).strip().lower() in _BULK_PRECEDENCE:
            raise AutomaticMessage(f"Precedence: {str(value).strip()}")
    if own_address:
        own = own_address.strip().lower()
        for value in headers.get_all("X-Loop", []):
            if own in str(value).lower():
                raise AutomaticMessage(f"X-Loop: {own} (one of our own mails)")


def build_request(
    router: Router,
    account: AccountSettings,
    raw: bytes,
    *,
    mail_from: str,
    recipients: Sequence[Recipient],
    client_address: str | None,
    own_address: str | None = None,
    authserv_id: str | None = None,
    secret_digests: Sequence[str] | None = None,
    require_secret_key: bool = True,
) -> AcceptRequest:
    """Check the message's own headers and make one job per distinct number.

    ``secret_digests`` are the account's valid secret-key digests (``None`` when it has no keys): a key found
    in the subject is removed from it, in the job and in the stored message alike. ``require_secret_key``
    is false only for the administrator's own ``faxbridge send``.

    Raises ``AutomaticMessage`` for mail that must not be faxed (see ``refuse_automatic``; ``own_address`` is
    the address our notices come from), ``SenderNotAuthorized`` when ``From:`` does not belong to
    ``account``, and ``SecretKeyMissing`` when the account requires a key and the subject has no valid one.
    """
    headers = _HEADER_PARSER.parsebytes(header_block(raw))
    refuse_automatic(headers, mail_from, own_address)
    from_values = [str(v) for v in headers.get_all("From", [])]
    if account.check_from:
        router.check_from_header(account, from_values)
    if account.require_authentication and authserv_id:
        for address in header_addresses(from_values):
            check_sender(headers, authserv_id=authserv_id, from_address=address)
    message_id = _header(headers, "Message-ID") or None
    # The dedupe digest is of the message as received, before the key is taken out of it.
    digest = body_digest(raw)
    subject = _header(headers, "Subject")
    key = find_key(subject, secret_digests) if secret_digests else None
    if key is not None:
        subject = strip_key(subject, key)
        raw = rewrite_subject(raw, subject)
    elif account.secret_key_required and require_secret_key:
        raise SecretKeyMissing(f"no valid secret key of account {account.name} in the subject")
    jobs: list[NewJob] = []
    seen: set[str] = set()
    for recipient in recipients:
        if recipient.number in seen:
            continue
        seen.add(recipient.number)
        jobs.append(
            NewJob(
                job_id=new_id(),
                recipient=recipient.address,
                number=recipient.number,
                account=account.name,
                provider=account.provider,
                dedupe_key=dedupe_key(mail_from, message_id, digest, recipient.number),
            )
        )
    envelope = EnvelopeInfo(
        mail_from=mail_from,
        rcpt_tos=tuple(r.address for r in recipients),
        client_address=client_address,
        message_id=message_id,
        subject=subject,
        account=account.name,
    )
    return AcceptRequest(message_id=new_id(), raw=raw, envelope=envelope, jobs=tuple(jobs))


class Intake:
    """Commits accepted messages in batches; ``accept`` returns after the commit that holds its message."""

    def __init__(
        self,
        store: JobStore,
        *,
        batch_max: int = 64,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._batch_max = batch_max
        self._on_accepted = on_accepted
        self._queue: asyncio.Queue[tuple[AcceptRequest, asyncio.Future[AcceptResult]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the committer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._commit_loop(), name="intake-committer")

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def accept(self, request: AcceptRequest) -> AcceptResult:
        """Store ``request`` durably; raises ``StoreError`` (answer ``451 4.3.0``) when nothing was stored."""
        if self._task is None:
            raise StoreUnavailable("the intake is not running")
        future: asyncio.Future[AcceptResult] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        # Shielded: a client that hangs up after the final dot must not cancel the commit of its message,
        # or a retransmission could not be recognised as the same message.
        return await asyncio.shield(future)

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[AcceptRequest, asyncio.Future[AcceptResult]]]) -> None:
        try:
            results = await self._store.accept_messages([request for request, _ in batch])
        except StoreError as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One bad message must not fail the others that happened to arrive with it.
            log.warning("batch of %d messages failed (%s); committing them one by one", len(batch), exc)
            for item in batch:
                await self._commit([item])
            return
        except Exception as exc:
            log.exception("unexpected error while storing %d messages", len(batch))
            error = StoreUnavailable(f"storing the message failed: {exc}")
            for _, future in batch:
                _settle(future, error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)
        if any(not result.duplicate for result in results):
            self._on_accepted()


def _settle(future: asyncio.Future[AcceptResult], outcome: AcceptResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
