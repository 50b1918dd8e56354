"""A small SMTP client for tests: real smtplib over loopback, every reply code kept."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid


@dataclass
class Transaction:
    """The replies a client got for one mail transaction."""

    mail: tuple[int, bytes]
    rcpts: list[tuple[int, bytes]] = field(default_factory=list)
    data: tuple[int, bytes] | None = None

    @property
    def data_code(self) -> int | None:
        """The reply code after the final dot, or ``None`` when DATA was never reached."""
        return None if self.data is None else self.data[0]

    @property
    def data_text(self) -> str:
        """The reply text after the final dot."""
        return "" if self.data is None else self.data[1].decode()


def make_message(
    *,
    sender: str = "demo@example.com",
    to: str = "+4930123456@fax.localhost",
    subject: str = "Order 4711",
    body: str = "Please deliver 12 boxes of paper on Monday.",
    attachments: list[tuple[str, bytes, str]] | None = None,
) -> EmailMessage:
    """A mail as a person's client would write it."""
    message = EmailMessage()
    message["From"] = f"Demo User <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(body)
    for filename, data, ctype in attachments or []:
        maintype, _, subtype = ctype.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def crlf(data: bytes) -> bytes:
    """Line endings as they go over the wire."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def transact(
    port: int, mail_from: str, rcpts: list[str], data: bytes | None, mail_options: tuple[str, ...] = ()
) -> Transaction:
    """Run one transaction with smtplib and record each reply; DATA only if a recipient was taken."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        result = Transaction(mail=client.mail(mail_from, list(mail_options)))
        if result.mail[0] != 250:
            return result
        for rcpt in rcpts:
            result.rcpts.append(client.rcpt(rcpt))
        if data is not None and any(code == 250 for code, _ in result.rcpts):
            # smtplib fixes line endings only for str; a real client sends CRLF lines.
            result.data = client.data(crlf(data))
    return result


async def atransact(
    port: int, mail_from: str, rcpts: list[str], data: bytes | None, mail_options: tuple[str, ...] = ()
) -> Transaction:
    """``transact`` off the event loop, so the bridge in this loop can answer."""
    return await asyncio.to_thread(transact, port, mail_from, rcpts, data, mail_options)


def send_and_vanish(port: int, mail_from: str, rcpt: str, data: bytes) -> None:
    """Send a whole message, then drop the connection before reading the reply to the final dot."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")

        def expect(prefix: bytes) -> None:
            while True:
                line = reader.readline()
                if not line.startswith(prefix + b"-"):
                    assert line.startswith(prefix), line
                    return

        expect(b"220")
        for command, reply in (
            (b"EHLO client.example", b"250"),
            (b"MAIL FROM:<" + mail_from.encode() + b">", b"250"),
            (b"RCPT TO:<" + rcpt.encode() + b">", b"250"),
            (b"DATA", b"354"),
        ):
            sock.sendall(command + b"\r\n")
            expect(reply)
        body = crlf(data)
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n"))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        sock.sendall(body + b".\r\n")
        # Gone before the 250: the client cannot know whether the message was taken.
        sock.shutdown(socket.SHUT_RDWR)
