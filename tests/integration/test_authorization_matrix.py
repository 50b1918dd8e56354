"""Who may fax: an authorization matrix over real SMTP, each cell's exact reply asserted.

Dimensions: envelope sender × ``From:`` × secret key (current, previous within its grace, previous after
it, wrong, absent) × client address × SMTP AUTH × destination class. The full product is thousands of
sessions; the matrix takes every combination of the first four (a refusal in one must never be undone by
another), and crosses AUTH and the destination with the key. The expected reply comes from the rules as the
README states them, written out independently of the code. For every refused cell: no job, no fax, no mail.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import itertools
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import trustme

from bridge.app import Bridge
from bridge.auth import hash_password
from bridge.secret_keys import KEY_LENGTH
from tests.conftest import maildir_bytes, outbox_submissions

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1, hours=1)  # key0 retired 23 h ago, key1 1 h ago, grace 2 h
pytestmark = pytest.mark.timeout(300)

SENDERS = {"clerk": "clerk@example.com", "stranger": "stranger@evil.example"}
FROMS = {"same": None, "colleague": "boss@example.com", "foreign": "ceo@evil.example"}
KEYS = ("current", "previous-in-grace", "previous-after-grace", "wrong", "absent")
CLIENTS = {"allowed": "127.0.0.1", "other": "127.0.0.2"}
AUTHS = ("none", "own-user", "other-account-user", "bad-password")
DESTINATIONS = {
    "ordinary": "+4930123456",
    "premium": "+499001234567",
    "denied-prefix": "+4940123456",
    "not-a-number": "12",
}
USERS = {"own-user": ("clerk-login", "pa55word-clerk"), "other-account-user": ("acme-login", "pa55word-acme")}


@dataclass(frozen=True)
class Cell:
    sender: str
    from_: str
    key: str
    client: str
    auth: str = "none"
    destination: str = "ordinary"

    def label(self) -> str:
        return f"{self.sender}/{self.from_}/{self.key}/{self.client}/{self.auth}/{self.destination}"


def expected(cell: Cell) -> tuple[str, int, str]:
    """(stage, code, enhanced status): where the session ends and with what; ("data", 250, …) takes the fax."""
    if cell.auth == "bad-password":
        return ("auth", 535, "5.7.8")
    if cell.sender != "clerk":
        return ("rcpt", 550, "5.7.1")  # no account admits the sender
    if cell.auth == "other-account-user":
        return ("rcpt", 550, "5.7.1")  # the user belongs to another account than the sender
    if cell.client != "allowed":
        return ("rcpt", 550, "5.7.1")  # outside the account's allowed networks
    if cell.destination == "not-a-number":
        return ("rcpt", 550, "5.1.1")
    if cell.destination in ("premium", "denied-prefix"):
        return ("rcpt", 550, "5.7.1")  # the destination policy
    if cell.from_ == "foreign":
        return ("data", 550, "5.7.1")
    if cell.key not in ("current", "previous-in-grace"):
        return ("data", 550, "5.7.1")  # never says that it was the key
    return ("data", 250, "2.0.0")


def cells() -> list[Cell]:
    grid = [
        Cell(sender, from_, key, client)
        for sender, from_, key, client in itertools.product(SENDERS, FROMS, KEYS, CLIENTS)
    ]
    grid += [
        Cell("clerk", "same", key, "allowed", auth, destination)
        for auth, destination, key in itertools.product(AUTHS, DESTINATIONS, ("current", "absent"))
        if (auth, destination) != ("none", "ordinary")
    ]
    return grid


@pytest.fixture
def tls(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certificate, key = tmp_path / "server.pem", tmp_path / "server.key"
    server.private_key_pem.write_to_path(str(key))
    with certificate.open("wb") as handle:
        for blob in server.cert_chain_pems:
            handle.write(blob.bytes())
    return ca, certificate, key


def session(port: int, cell: Cell, key: str, ca: trustme.CA) -> tuple[str, int, str]:
    """One SMTP session as a mail program would hold it; returns where it ended and the reply."""
    sender = SENDERS[cell.sender]
    message = EmailMessage()
    message["From"] = FROMS[cell.from_] or sender
    message["To"] = f"{DESTINATIONS[cell.destination]}@fax.localhost"
    message["Subject"] = f"Order 4711 {key}".strip()
    message["Message-ID"] = f"<{cell.label().replace('/', '.')}@example.com>"
    message.set_content("Please deliver 12 boxes of paper.")
    with smtplib.SMTP("127.0.0.1", port, source_address=(CLIENTS[cell.client], 0), timeout=30) as client:
        client.ehlo()
        if cell.auth != "none":
            context = ssl.create_default_context()
            ca.configure_trust(context)
            client.starttls(context=context)
            client.ehlo()
            login, password = USERS.get(cell.auth, ("clerk-login", "not the password"))
            try:
                client.login(login, password)
            except smtplib.SMTPAuthenticationError as exc:
                return ("auth", exc.smtp_code, exc.smtp_error.decode())
        code, text = client.mail(sender)
        if code != 250:
            return ("mail", code, text.decode())
        code, text = client.rcpt(message["To"])
        if code != 250:
            return ("rcpt", code, text.decode())
        code, text = client.data(message.as_bytes(policy=email.policy.SMTP))
        return ("data", code, text.decode())


def keys_from_mail(settings: Any) -> list[str]:
    """The keys mailed to the administrator, oldest first (by the mail's Date, the bridge's clock)."""
    found: list[tuple[datetime, str]] = []
    for raw in maildir_bytes(settings):
        message = email.message_from_bytes(raw, policy=default)
        if str(message["Subject"]).startswith("New fax secret key"):
            assert isinstance(message, EmailMessage)
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            [key] = re.findall(rf"^    ([A-Z0-9]{{{KEY_LENGTH}}})$", str(body.get_content()), re.M)
            found.append((email.utils.parsedate_to_datetime(str(message["Date"])), key))
    return [key for _, key in sorted(found)]


async def test_authorization_matrix(
    make_settings: Any, tls: tuple[trustme.CA, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # faxbridge's own loggers, at their most talkative (aiosmtpd's debug lines dump whole messages; setup_logging
    # keeps them at WARNING or above).
    caplog.set_level(logging.DEBUG, logger="bridge")
    ca, certificate, private_key = tls
    settings = make_settings(
        smtp={"tls_certificate": str(certificate), "tls_key": str(private_key), "failure_limit": 100_000},
        accounts=[
            {
                "name": "office",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["*@example.com"],
                "allowed_networks": ["127.0.0.1/32"],
                "denied_prefixes": ["+4940"],
                "secret_key_required": True,
                "secret_key_grace_hours": 2,
                "secret_key_notify": ["fax-admin@example.com"],
                "auth_users": [
                    {"username": USERS["own-user"][0], "password_hash": hash_password(USERS["own-user"][1], n=2**10)}
                ],
            },
            {
                "name": "acme",
                "provider": "local",
                "country": "DE",
                "allowed_senders": ["*@acme.example"],
                "auth_users": [
                    {
                        "username": USERS["other-account-user"][0],
                        "password_hash": hash_password(USERS["other-account-user"][1], n=2**10),
                    }
                ],
            },
        ],
    )
    clock_now = [T0]
    bridge = Bridge(settings, clock=lambda: clock_now[0])
    await bridge.start()
    try:
        assert bridge.keys is not None
        assert bridge.store is not None
        assert bridge.address is not None
        account = settings.accounts[0]
        await bridge.keys.rotate(account, T0 + timedelta(hours=1))
        await bridge.keys.rotate(account, T0 + timedelta(days=1))
        clock_now[0] = NOW
        key0, key1, key2 = keys_from_mail(settings)
        key_for = {
            "current": key2,
            "previous-in-grace": key1,
            "previous-after-grace": key0,
            "wrong": "Q2W3E4R5T6Y7U8P9",
            "absent": "",
        }

        mismatches: list[str] = []
        taken = 0
        for cell in cells():
            jobs_before = len(await bridge.store.list_jobs(limit=10_000))
            stage, code, text = await asyncio.to_thread(session, bridge.address[1], cell, key_for[cell.key], ca)
            want = expected(cell)
            if (stage, code, text.split(" ", 1)[0]) != want:
                mismatches.append(f"{cell.label()}: got {stage} {code} {text!r}, expected {want}")
            jobs_after = len(await bridge.store.list_jobs(limit=10_000))
            if code == 250:
                taken += 1
                if jobs_after != jobs_before + 1:
                    mismatches.append(f"{cell.label()}: accepted but {jobs_after - jobs_before} jobs")
            elif jobs_after != jobs_before:
                mismatches.append(f"{cell.label()}: refused but a job was stored")
        assert mismatches == []
        print(f"\nauthorization matrix: {len(cells())} sessions, {taken} faxes taken")

        assert bridge.worker is not None
        await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", taken), 60)
        assert len(outbox_submissions(settings)) == taken
        recipients = [str(email.message_from_bytes(raw, policy=default)["To"]) for raw in maildir_bytes(settings)]
        # Three key mails to the administrator, one notice per fax to the clerk, and nothing to anyone refused.
        assert sorted(recipients) == sorted(["fax-admin@example.com"] * 3 + ["clerk@example.com"] * taken)
        # Every refusal is logged with its reason, and no log line ever holds a key.
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert "no valid secret key of account office" in logged
        for key in (key0, key1, key2):
            assert key not in logged
        # Four cells of the grid are faxes: From: the sender or a colleague, with the current key or the
        # previous one in its grace; the AUTH cross adds one (own user, ordinary number, current key).
        assert taken == 5
    finally:
        await bridge.stop()
