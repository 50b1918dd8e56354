"""STARTTLS and SMTP AUTH over real sockets, with a certificate from a test CA made by trustme."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from bridge.auth import hash_password
from bridge.errors import ConfigError
from bridge.settings import Settings
from tests.conftest import SettingsFactory, running_bridge
from tests.integration.smtp_client import crlf, make_message
from tests.integration.test_spine import FAX, assert_nothing_happened

# Cheap scrypt parameters: the tests check the protocol, tests/unit/test_auth.py the hashing.
ALICE = ("alice", "correct horse battery staple")
BOB = ("bob@acme", "tr0ub4dor&3")


def _hash(password: str) -> str:
    return hash_password(password, n=2**10)


@dataclass
class Tls:
    """A test CA and the server certificate and key files it issued."""

    ca: trustme.CA
    certificate: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certificate, key = tmp_path / "server.pem", tmp_path / "server.key"
    server.private_key_pem.write_to_path(str(key))
    with certificate.open("wb") as handle:
        for blob in server.cert_chain_pems:
            handle.write(blob.bytes())
    return Tls(ca, certificate, key)


def accounts() -> list[dict[str, Any]]:
    """The default demo account with user alice, and account acme with user bob."""
    return [
        {
            "name": "demo",
            "provider": "local",
            "country": "DE",
            "allowed_senders": ["demo@example.com"],
            "auth_users": [{"username": ALICE[0], "password_hash": _hash(ALICE[1])}],
        },
        {
            "name": "acme",
            "provider": "local",
            "country": "DE",
            "allowed_senders": ["boss@acme.example"],
            "auth_users": [{"username": BOB[0], "password_hash": _hash(BOB[1])}],
        },
    ]


SettingsMaker = Callable[..., Settings]


@pytest.fixture
def tls_settings(make_settings: SettingsFactory, tls: Tls) -> SettingsMaker:
    def factory(**smtp: Any) -> Settings:
        return make_settings(
            smtp={"tls_certificate": str(tls.certificate), "tls_key": str(tls.key), "failure_limit": 3, **smtp},
            accounts=accounts(),
        )

    return factory


async def _run(settings: Settings) -> AsyncIterator[Any]:
    async with running_bridge(settings) as bridge:
        yield bridge


@pytest.fixture
async def bridge(tls_settings: SettingsMaker) -> AsyncIterator[Any]:
    async for running in _run(tls_settings()):
        yield running


@pytest.fixture
async def strict_bridge(tls_settings: SettingsMaker) -> AsyncIterator[Any]:
    async for running in _run(tls_settings(require_starttls=True)):
        yield running


def _plain(username: str, password: str) -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


def connect(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("client.example")
    return client


def secure(port: int, tls: Tls) -> smtplib.SMTP:
    client = connect(port)
    code, _ = client.starttls(context=tls.client_context())
    assert code == 220
    client.ehlo("client.example")
    return client


def auth(client: smtplib.SMTP, mechanism: str, username: str, password: str) -> tuple[int, bytes]:
    """Run AUTH with smtplib's own PLAIN or LOGIN dialogue; return the final reply."""
    client.user, client.password = username, password
    method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    try:
        return client.auth(mechanism, method)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error


def send(client: smtplib.SMTP, mail_from: str, header_from: str | None = None) -> list[tuple[int, bytes]]:
    """MAIL, RCPT and (if RCPT was taken) DATA; return the replies."""
    replies = [client.mail(mail_from)]
    if replies[-1][0] != 250:
        return replies
    replies.append(client.rcpt(FAX))
    if replies[-1][0] != 250:
        return replies
    data = make_message(sender=header_from or mail_from).as_bytes()
    replies.append(client.data(crlf(data)))
    return replies


async def test_before_starttls_auth_is_neither_offered_nor_taken(bridge: Any, tls: Tls) -> None:
    def run() -> tuple[bool, bool, tuple[int, bytes]]:
        with connect(bridge.address[1]) as client:
            return client.has_extn("starttls"), client.has_extn("auth"), client.docmd("AUTH", "PLAIN " + _plain(*ALICE))

    starttls, auth_offered, reply = await asyncio.to_thread(run)

    assert starttls
    assert not auth_offered
    assert reply[0] == 538
    assert reply[1].startswith(b"5.7.11")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_a_good_password_after_starttls_faxes_end_to_end(bridge: Any, tls: Tls, mechanism: str) -> None:
    def run() -> tuple[str, tuple[int, bytes], list[tuple[int, bytes]]]:
        with secure(bridge.address[1], tls) as client:
            offered = client.esmtp_features.get("auth", "")
            reply = auth(client, mechanism, *ALICE)
            return offered, reply, send(client, "demo@example.com")

    offered, reply, replies = await asyncio.to_thread(run)

    assert sorted(offered.split()) == ["LOGIN", "PLAIN"]
    assert reply == (235, b"2.7.0 Authentication successful")
    assert [code for code, _ in replies] == [250, 250, 250]
    jobs = await bridge.store.list_jobs()
    assert [job.account for job in jobs] == ["demo"]


@pytest.mark.parametrize(
    ("username", "password"), [(ALICE[0], "wrong"), ("mallory", ALICE[1]), (BOB[0], ALICE[1])], ids=str
)
async def test_bad_credentials_get_535(bridge: Any, tls: Tls, username: str, password: str) -> None:
    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with secure(bridge.address[1], tls) as client:
            return auth(client, "PLAIN", username, password), auth(client, "LOGIN", username, password)

    plain, login = await asyncio.to_thread(run)

    assert plain == (535, b"5.7.8 Authentication credentials invalid")
    assert login == (535, b"5.7.8 Authentication credentials invalid")
    assert await bridge.store.list_jobs() == []


async def test_failed_logins_cool_the_client_off(bridge: Any, tls: Tls) -> None:
    # failure_limit is 3 in these settings.
    def run() -> list[int]:
        with secure(bridge.address[1], tls) as client:
            codes = [auth(client, "PLAIN", ALICE[0], "wrong")[0] for _ in range(3)]
            codes.append(auth(client, "PLAIN", *ALICE)[0])
            codes.append(client.mail("demo@example.com")[0])
            return codes

    assert await asyncio.to_thread(run) == [535, 535, 535, 454, 450]


async def test_require_starttls_refuses_mail_before_tls(strict_bridge: Any, tls: Tls) -> None:
    def run() -> tuple[tuple[int, bytes], list[tuple[int, bytes]]]:
        with connect(strict_bridge.address[1]) as client:
            before = client.mail("demo@example.com")
        with secure(strict_bridge.address[1], tls) as client:
            return before, send(client, "demo@example.com")

    before, after = await asyncio.to_thread(run)

    assert before[0] == 530
    assert before[1].startswith(b"5.7.0 Must issue a STARTTLS command first")
    # Without AUTH, a TLS session is judged by its sender as before.
    assert [code for code, _ in after] == [250, 250, 250]


async def test_a_user_faxes_only_for_its_own_account(bridge: Any, tls: Tls) -> None:
    def run() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        with secure(bridge.address[1], tls) as client:
            assert auth(client, "PLAIN", *ALICE)[0] == 235
            foreign_sender = send(client, "boss@acme.example")
            client.rset()
            foreign_from = send(client, "demo@example.com", header_from="boss@acme.example")
        with secure(bridge.address[1], tls) as client:
            assert auth(client, "LOGIN", *BOB)[0] == 235
            own = send(client, "boss@acme.example")
        return foreign_sender, foreign_from, own

    foreign_sender, foreign_from, own = await asyncio.to_thread(run)

    assert foreign_sender[0][0] == 250
    assert foreign_sender[1][0] == 550
    assert foreign_sender[1][1].startswith(b"5.7.1")
    assert foreign_from[-1][0] == 550
    assert foreign_from[-1][1].startswith(b"5.7.1")
    assert own[-1][0] == 250
    jobs = await bridge.store.list_jobs()
    assert [job.account for job in jobs] == ["acme"]


async def test_refused_user_mail_leaves_no_trace(bridge: Any, tls: Tls) -> None:
    def run() -> list[tuple[int, bytes]]:
        with secure(bridge.address[1], tls) as client:
            assert auth(client, "PLAIN", *BOB)[0] == 235
            return send(client, "demo@example.com")

    replies = await asyncio.to_thread(run)

    assert replies[-1][0] == 550
    assert await bridge.store.list_jobs() == []
    assert_nothing_happened(bridge.settings)


# Configuration errors.


def test_a_certificate_needs_a_key(make_settings: SettingsFactory, tls: Tls) -> None:
    with pytest.raises(ConfigError, match=r"smtp\.tls_key is required"):
        make_settings(smtp={"tls_certificate": str(tls.certificate)})


def test_a_key_needs_a_certificate(make_settings: SettingsFactory, tls: Tls) -> None:
    with pytest.raises(ConfigError, match=r"smtp\.tls_certificate is required"):
        make_settings(smtp={"tls_key": str(tls.key)})


def test_require_starttls_needs_a_certificate(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError, match=r"smtp\.require_starttls needs smtp\.tls_certificate"):
        make_settings(smtp={"require_starttls": True})


def test_a_clear_password_is_refused_and_not_repeated(make_settings: SettingsFactory, tls: Tls) -> None:
    users = [{"username": "alice", "password_hash": "hunter2-secret"}]
    with pytest.raises(ConfigError, match=r"accounts\.0\.auth_users\.0\.password_hash") as caught:
        make_settings(
            smtp={"tls_certificate": str(tls.certificate), "tls_key": str(tls.key)},
            accounts=[{**accounts()[0], "auth_users": users}],
        )
    assert "hunter2" not in str(caught.value)
    assert "python -m bridge.auth hash" in str(caught.value)


def test_usernames_are_unique_across_accounts(make_settings: SettingsFactory, tls: Tls) -> None:
    twice = accounts()
    twice[1]["auth_users"] = [{"username": ALICE[0], "password_hash": _hash("other")}]
    with pytest.raises(ConfigError, match=r"accounts\[1\]\.auth_users\[0\]\.username 'alice' is used twice"):
        make_settings(smtp={"tls_certificate": str(tls.certificate), "tls_key": str(tls.key)}, accounts=twice)


def test_auth_users_need_a_certificate(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.auth_users needs smtp\.tls_certificate"):
        make_settings(accounts=accounts())


async def test_an_unreadable_certificate_stops_the_start(make_settings: SettingsFactory, tls: Tls) -> None:
    settings = make_settings(smtp={"tls_certificate": "missing.pem", "tls_key": str(tls.key)})
    with pytest.raises(ConfigError, match=r"smtp\.tls_certificate .*missing\.pem"):
        async for _ in _run(settings):
            pass
