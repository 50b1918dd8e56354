"""SMTP smuggling, bare line endings and mail loops, over real sockets."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import Settings
from tests.conftest import running_bridge
from tests.integration.smtp_client import atransact, make_message
from tests.integration.test_spine import FAX, assert_nothing_happened

PROBES = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r"]


async def raw_session(port: int, data: bytes) -> list[bytes]:
    """EHLO, MAIL, RCPT, DATA, then ``data`` as raw bytes, then QUIT; return every reply line after DATA's 354."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def reply() -> bytes:
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if line[3:4] != b"-":
                    return line

        assert (await reply()).startswith(b"220")
        for command, code in (
            (b"EHLO client.example", b"250"),
            (b"MAIL FROM:<demo@example.com>", b"250"),
            (b"RCPT TO:<+4930123456@fax.localhost>", b"250"),
            (b"DATA", b"354"),
        ):
            writer.write(command + b"\r\n")
            await writer.drain()
            assert (await reply()).startswith(code)
        writer.write(data + b"QUIT\r\n")
        await writer.drain()
        replies = []
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            if not line:
                return replies
            replies.append(line)
    finally:
        writer.close()


@pytest.mark.parametrize("probe", PROBES, ids=[p.decode().encode("unicode_escape").decode() for p in PROBES])
async def test_smuggling_probes_never_make_a_second_message(running: Any, settings: Settings, probe: bytes) -> None:
    smuggled = (
        b"From: demo@example.com\r\nSubject: first\r\n\r\nthe first message"
        + probe
        + b"MAIL FROM:<demo@example.com>\r\n"
        b"RCPT TO:<+4930999999@fax.localhost>\r\nDATA\r\nFrom: demo@example.com\r\nSubject: smuggled\r\n\r\n"
        b"the smuggled message\r\n.\r\n"
    )
    replies = await raw_session(running.address[1], smuggled)
    # One answer to the one DATA, then QUIT's: nothing of the smuggled transaction was taken as commands.
    assert [line[:3] for line in replies] == [b"550", b"221"], replies
    assert replies[0].startswith(b"550 5.5.2")
    assert await running.store.list_jobs() == []
    assert_nothing_happened(settings)


@pytest.mark.parametrize("ending", [b"\n", b"\r"], ids=["LF", "CR"])
async def test_a_bare_line_ending_in_a_header_is_refused(running: Any, settings: Settings, ending: bytes) -> None:
    data = b"From: demo@example.com\r\nSubject: a" + ending + b"X-Injected: b\r\n\r\nbody\r\n.\r\n"
    replies = await raw_session(running.address[1], data)
    assert replies[0].startswith(b"550 5.5.2"), replies
    assert await running.store.list_jobs() == []


async def test_crlf_mail_is_still_accepted(running: Any) -> None:
    replies = await raw_session(running.address[1], b"From: demo@example.com\r\nSubject: fine\r\n\r\nbody\r\n.\r\n")
    assert replies[0].startswith(b"250 2.0.0"), replies


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (.ci/run installs it)")
async def test_swaks_without_data_fixup(running: Any, tmp_path: Path) -> None:
    probe = tmp_path / "probe.txt"
    probe.write_bytes(b"From: demo@example.com\r\nSubject: probe\r\n\r\nfirst\n.\nsecond\r\n.\r\n")
    command = [
        "swaks", "-s", "127.0.0.1", "-p", str(running.address[1]), "-f", "demo@example.com",
        "-t", "004930123456@fax.localhost", "--data", f"@{probe}", "--no-data-fixup",
    ]  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert "<** 550 5.5.2" in result.stdout, result.stdout
    assert await running.store.list_jobs() == []


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Auto-Submitted", "auto-replied"),
        ("Auto-Submitted", "auto-generated; type=dsn"),
        ("Precedence", "bulk"),
        ("Precedence", "junk"),
        ("Precedence", "auto_reply"),
        ("X-Loop", "faxbridge@fax.localhost"),
    ],
)
async def test_automatic_mail_is_never_faxed_nor_answered(
    running: Any, settings: Settings, header: str, value: str
) -> None:
    message = make_message()
    message[header] = value
    result = await atransact(running.address[1], "demo@example.com", [FAX], message.as_bytes())
    assert result.data_code == 550
    assert result.data_text.startswith("5.7.1")
    assert await running.store.list_jobs() == []
    assert_nothing_happened(settings)


async def test_auto_submitted_no_is_a_person_writing(running: Any) -> None:
    message = make_message()
    message["Auto-Submitted"] = "no"
    message["Precedence"] = "first-class"
    result = await atransact(running.address[1], "demo@example.com", [FAX], message.as_bytes())
    assert result.data_code == 250


async def test_connections_per_client_are_capped(make_settings: Any) -> None:
    settings = make_settings(smtp={"listen_port": 0, "max_connections_per_client": 2})
    opened: list[asyncio.StreamWriter] = []
    async with running_bridge(settings) as bridge:
        try:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", bridge.address[1])
                opened.append(writer)
                assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"220")
            reader, writer = await asyncio.open_connection("127.0.0.1", bridge.address[1])
            opened.append(writer)
            assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"421 4.7.0")
            assert await asyncio.wait_for(reader.read(), 30) == b""
            # Once one session ends, a new one is welcome again.
            opened[0].close()
            await opened[0].wait_closed()
            result = await atransact(bridge.address[1], "demo@example.com", [FAX], make_message().as_bytes())
            assert result.data_code == 250
        finally:
            for writer in opened:
                writer.close()


async def test_repeated_refusals_cool_a_client_off(make_settings: Any) -> None:
    settings = make_settings(smtp={"listen_port": 0, "failure_limit": 3})
    async with running_bridge(settings) as bridge:
        port = bridge.address[1]
        for guess in ("100", "200", "300"):
            result = await atransact(port, "demo@example.com", [f"{guess}@fax.localhost"], None)
            assert result.rcpts[0][0] == 550
        # Now even a good mail from that address waits: the guessing has stopped.
        result = await atransact(port, "demo@example.com", [FAX], make_message().as_bytes())
        assert result.mail[0] == 450
        assert result.mail[1].startswith(b"4.7.1")
        assert await bridge.store.list_jobs() == []
    assert_nothing_happened(settings)


@pytest.mark.parametrize(("networks", "expected"), [(["10.0.0.0/8", "2001:db8::/32"], 550), (["127.0.0.0/8"], 250)])
async def test_an_account_only_takes_mail_from_its_networks(
    make_settings: Any, networks: list[str], expected: int
) -> None:
    account = {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]}
    settings = make_settings(accounts=[{**account, "allowed_networks": networks}])
    async with running_bridge(settings) as bridge:
        result = await atransact(bridge.address[1], "demo@example.com", [FAX], make_message().as_bytes())
        assert result.rcpts[0][0] == expected
        if expected == 550:
            assert result.rcpts[0][1].startswith(b"5.7.1")
            assert await bridge.store.list_jobs() == []
        else:
            assert result.data_code == 250


async def test_an_account_may_allow_fewer_recipients(make_settings: Any) -> None:
    account = {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"], "max_recipients": 1}
    async with running_bridge(make_settings(accounts=[account])) as bridge:
        rcpts = [FAX, "+4940123456@fax.localhost"]
        result = await atransact(bridge.address[1], "demo@example.com", rcpts, make_message().as_bytes())
        assert [code for code, _ in result.rcpts] == [250, 452]
        assert result.rcpts[1][1].startswith(b"4.5.3")
        assert result.data_code == 250


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        ("Authentication-Results: mx.example.net; dmarc=pass header.from=example.com", 250),
        ("Authentication-Results: mx.forger.example; dmarc=pass header.from=example.com", 550),
        (None, 550),
    ],
)
async def test_an_account_can_require_the_upstream_verdict(
    make_settings: Any, verdict: str | None, expected: int
) -> None:
    account = {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]}
    settings = make_settings(
        smtp={"listen_port": 0, "authserv_id": "mx.example.net"},
        accounts=[{**account, "require_authentication": True}],
    )
    async with running_bridge(settings) as bridge:
        message = make_message()
        if verdict is not None:
            name, _, value = verdict.partition(": ")
            message[name] = value
        result = await atransact(bridge.address[1], "demo@example.com", [FAX], message.as_bytes())
        assert result.data_code == expected
        if expected == 550:
            assert result.data_text.startswith("5.7.26")
            assert await bridge.store.list_jobs() == []


async def test_acl_rules_decide_per_recipient(make_settings: Any) -> None:
    account = {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]}
    rules = [{"from_email": "demo@example.com", "received_from": "127.0.0.1/32", "destination": "+4930*"}]
    settings = make_settings(accounts=[{**account, "acl": rules}])
    async with running_bridge(settings) as bridge:
        rcpts = [FAX, "+4940123456@fax.localhost"]
        result = await atransact(bridge.address[1], "demo@example.com", rcpts, make_message().as_bytes())
        assert [code for code, _ in result.rcpts] == [250, 550]
        assert result.rcpts[1][1].startswith(b"5.7.1")
        assert result.data_code == 250
        [job] = await bridge.store.list_jobs()
        assert job.number == "+4930123456"
