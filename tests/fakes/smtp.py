"""A recording SMTP sink for tests: a real aiosmtpd server on 127.0.0.1, on a port the OS picks.

Use it as an async context manager inside the test's event loop::

    async with start_sink() as sink:
        mailer = RelayMailer(RelaySettings(host=sink.host, port=sink.port, starttls="never"))
        sink.fail_next("DATA", "451 4.3.0 try later")
        ...
        [message] = await sink.wait_for(1)

Every accepted mail is recorded as a ``RecordedMessage`` (envelope, raw bytes, parsed message). Replies can be
scripted per stage (``MAIL``, ``RCPT``, ``DATA``), optionally only for one address, to inject errors; each
scripted reply is used once (or ``times`` times) and then the sink accepts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

__all__ = ["RecordedMessage", "RecordingSink", "Stage", "start_sink"]

Stage = Literal["MAIL", "RCPT", "DATA"]
_STAGES: frozenset[str] = frozenset({"MAIL", "RCPT", "DATA"})


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """One mail the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    message: EmailMessage
    tls: bool
    """Whether the session had been upgraded with STARTTLS."""
    login: str | None
    """The user that authenticated, if any."""
    received_at: float = field(default_factory=time.perf_counter)
    """When the sink took it (``time.perf_counter``), for latency measurements."""


@dataclass(slots=True)
class _Scripted:
    stage: Stage
    reply: str
    match: str | None
    times: int


@dataclass(slots=True)
class RecordingSink:
    """The server's state: what arrived, and what it will answer next."""

    hostname: str = "sink.faxbridge.test"
    tls_context: ssl.SSLContext | None = None
    credentials: tuple[str, str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[RecordedMessage] = field(default_factory=list)
    refused: list[tuple[Stage, str, str]] = field(default_factory=list)
    """Every scripted refusal the sink gave: (stage, address or "", reply)."""
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)
    _script: list[_Scripted] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: asyncio.AbstractServer | None = None
    _sessions: list[SMTP] = field(default_factory=list)

    # -- scripting -----------------------------------------------------------------------------------------

    def fail_next(self, stage: Stage, reply: str, *, match: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` ``stage`` commands with ``reply`` (e.g. ``"451 4.3.0 try later"``).

        ``match`` limits the reply to one address: the recipient for ``RCPT``, the sender for ``MAIL``, any
        recipient of the transaction for ``DATA`` (case-insensitive).
        """
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {sorted(_STAGES)}, not {stage!r}")
        code = reply[:3]
        if not (code.isdigit() and code[0] in "2345" and (len(reply) == 3 or reply[3] == " ")):
            raise ValueError(f"reply must start with a three-digit SMTP code: {reply!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._script.append(_Scripted(stage, reply, match.lower() if match else None, times))

    def _take(self, stage: Stage, addresses: list[str]) -> str | None:
        lowered = {address.lower() for address in addresses}
        for entry in self._script:
            if entry.stage == stage and (entry.match is None or entry.match in lowered):
                entry.times -= 1
                if entry.times == 0:
                    self._script.remove(entry)
                self.refused.append((stage, addresses[0] if len(addresses) == 1 else "", entry.reply))
                return entry.reply
        return None

    # -- waiting -------------------------------------------------------------------------------------------

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedMessage]:
        """Wait until at least ``count`` mails arrived; return them all. ``TimeoutError`` after ``timeout``."""
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= count)
        except TimeoutError:
            raise TimeoutError(f"expected {count} message(s) within {timeout}s, got {len(self.messages)}") from None
        return list(self.messages)

    async def _record(self, recorded: RecordedMessage) -> None:
        async with self._arrived:
            self.messages.append(recorded)
            self._arrived.notify_all()

    # -- server --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host`` and a free port; ``port`` holds the real port afterwards."""
        loop = asyncio.get_running_loop()
        handler = _Handler(self)

        def factory() -> SMTP:
            options: dict[str, Any] = {
                "hostname": self.hostname,
                "tls_context": self.tls_context,
                # Tests run AUTH without TLS too; aiosmtpd refuses that by default.
                "auth_require_tls": False,
                "timeout": 30,
            }
            if self.credentials is not None:
                options["authenticator"] = self._authenticate
            session = SMTP(handler, loop=loop, **options)
            self._sessions.append(session)
            return session

        self._server = await loop.create_server(factory, host=self.host, port=0)
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])

    async def stop(self) -> None:
        """Stop listening and close every open session, so that no task or socket outlives the test."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks: list[asyncio.Task[None]] = []
        for session in self._sessions:
            # After a failed STARTTLS the session's own transport is the TLS layer; the socket underneath
            # is the original transport, and the handler task may wait for a line that never comes.
            for transport in (session.transport, session._original_transport):
                if transport is not None:
                    transport.close()
            task = session._handler_coroutine
            if task is not None:
                task.cancel()
                tasks.append(task)
        self._sessions.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert self.credentials is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = (login, password) == self.credentials
        self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class _Handler:
    """aiosmtpd hooks: consult the script, else accept and record."""

    def __init__(self, sink: RecordingSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        reply = self._sink._take("MAIL", [address])
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._sink._take("RCPT", [address])
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        reply = self._sink._take("DATA", list(envelope.rcpt_tos))
        if reply is not None:
            return reply
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        await self._sink._record(
            RecordedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=content,
                message=parsed,
                tls=session.ssl is not None,
                login=login,
            )
        )
        return f"250 2.0.0 OK: queued as {len(self._sink.messages)}"


@contextlib.asynccontextmanager
async def start_sink(
    *,
    tls_context: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
    hostname: str = "sink.faxbridge.test",
) -> AsyncIterator[RecordingSink]:
    """Run a recording sink for the duration of the ``async with`` block.

    ``tls_context`` offers STARTTLS with that server context; ``credentials`` (user, password) offers AUTH
    PLAIN/LOGIN (also without TLS) and accepts only that pair.
    """
    sink = RecordingSink(hostname=hostname, tls_context=tls_context, credentials=credentials)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
