"""The bridge as a real process: started like ``make run``, stopped by SIGTERM, killed by SIGKILL."""

from __future__ import annotations

import asyncio
import json
import mailbox
import re
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import default_config, dump_toml
from tests.integration.process import BridgeProcess
from tests.integration.smtp_client import atransact, make_message
from tests.integration.test_inbound import _tiff, fax_pdf

pytestmark = pytest.mark.slow

FAX = "+4930123456@fax.localhost"
NOTICE_SENT = re.compile(r"job (\S+): notice sent")


def write_config(tmp_path: Path, **changes: Any) -> Path:
    data = default_config()
    data["state_dir"] = str(tmp_path / "var")
    data["smtp"]["listen_port"] = 0
    data["worker"]["poll_seconds"] = 0.5
    data.update(changes)
    path = tmp_path / "faxbridge.toml"
    path.write_text(dump_toml(data))
    return path


def outbox_lines(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "var" / "outbox" / "submissions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def maildir_messages(tmp_path: Path) -> list[bytes]:
    box = mailbox.Maildir(tmp_path / "var" / "mail", create=False)
    return [box.get_bytes(key) for key in box.iterkeys()]


async def test_process_started_like_make_run(tmp_path: Path) -> None:
    inbox = tmp_path / "var" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "early.pdf").write_bytes(fax_pdf(1))
    (inbox / "early.json").write_text(json.dumps({"caller": "+31201234567", "called": "+4930123456"}))
    process = BridgeProcess(write_config(tmp_path))
    port = await process.start()
    try:
        # The embedded default mails every incoming fax to demo@example.com, into the Maildir.
        await process.wait_for_line(r"incoming fax early\.pdf at local from \+31201234567 mailed to demo@example\.com")
        (inbox / "later.tif").write_bytes(_tiff())
        # The inbox is looked at every 5 seconds.
        await process.wait_for_line(r"incoming fax later\.tif at local from an unknown number mailed to", timeout=30)
        message = make_message(subject="Process test")
        result = await atransact(port, "demo@example.com", [FAX], message.as_bytes())
        assert result.data_code == 250
        job_id = result.data_text.rsplit(" ", 1)[1]
        await process.wait_for_line(rf"job {job_id}: notice sent")
        assert (tmp_path / "var" / "outbox" / f"{job_id}.pdf").is_file()
        [notice] = [m for m in maildir_messages(tmp_path) if b"X-Faxbridge-Job:" in m]
        assert len(maildir_messages(tmp_path)) == 3  # two incoming faxes and the notice
        assert message["Message-ID"].encode() in notice
        assert b"Auto-Submitted: auto-replied" in notice
    finally:
        code = await process.terminate()
    assert code == 0
    assert process.matching("faxbridge stopped")


async def test_sigkill_right_after_250_sends_each_fax_exactly_once(tmp_path: Path) -> None:
    # The default lease is 120 s; the restarted bridge must not wait for it: it sees that the process holding
    # the leases is gone and takes the jobs back at once (the waits below give up after 60 s).
    config = write_config(tmp_path)
    first = BridgeProcess(config)
    port = await first.start()
    results = await asyncio.gather(
        *(atransact(port, "demo@example.com", [FAX], make_message(body=f"crash {i}").as_bytes()) for i in range(12))
    )
    # The kill comes the moment the last 250 is read: some jobs are mid-way, some not yet started.
    await first.kill()
    assert all(r.data_code == 250 for r in results)
    job_ids = {r.data_text.rsplit(" ", 1)[1] for r in results}
    assert len(job_ids) == 12

    second = BridgeProcess(config)
    await second.start()
    try:
        done_before = {NOTICE_SENT.search(line).group(1) for line in first.matching(NOTICE_SENT.pattern)}  # type: ignore[union-attr]
        remaining = job_ids - done_before
        for job_id in remaining:
            await second.wait_for_line(rf"job {job_id}: notice sent")
    finally:
        assert await second.terminate() == 0

    sent = Counter(line["job_id"] for line in outbox_lines(tmp_path))
    assert set(sent) <= job_ids
    assert all(count == 1 for count in sent.values()), sent
    for job_id in job_ids:
        assert (tmp_path / "var" / "outbox" / f"{job_id}.json").is_file()
    # Every sender hears about every fax (a notice written just before the kill may come twice; never none).
    noticed = Counter()
    for raw in maildir_messages(tmp_path):
        for job_id in job_ids:
            if f"X-Faxbridge-Job: {job_id}".encode() in raw:
                noticed[job_id] += 1
    assert set(noticed) == job_ids


async def test_configuration_error_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("listen_port = 0", "listen_port = 99999"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "--config",
        str(config),
        "serve",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 78
    assert b"smtp.listen_port" in out
    assert str(config).encode() in out


async def test_systemd_hears_ready_and_stopping(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        process = BridgeProcess(write_config(tmp_path), env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        await process.start()
        ready = await asyncio.wait_for(loop.sock_recv(listener, 4096), 30)
        assert b"READY=1" in ready.split(b"\n")
        assert await process.terminate() == 0
        stopping = await asyncio.wait_for(loop.sock_recv(listener, 4096), 30)
        assert b"STOPPING=1" in stopping.split(b"\n")
    finally:
        listener.close()


async def test_sigterm_during_data_never_answers_250(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    process = BridgeProcess(config)
    port = await process.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def command(line: bytes, expect: bytes) -> None:
        writer.write(line + b"\r\n")
        await writer.drain()
        while True:
            reply = await reader.readline()
            if not reply.startswith(expect + b"-"):
                assert reply.startswith(expect), reply
                return

    assert (await reader.readline()).startswith(b"220")
    await command(b"EHLO client.example", b"250")
    await command(b"MAIL FROM:<demo@example.com>", b"250")
    await command(b"RCPT TO:<+4930123456@fax.localhost>", b"250")
    await command(b"DATA", b"354")
    writer.write(b"From: demo@example.com\r\nSubject: half\r\n\r\nthe first half of the message\r\n")
    await writer.drain()
    terminated = asyncio.create_task(process.terminate())
    await process.wait_for_line("shutting down")
    answer = b""
    try:
        writer.write(b"the second half\r\n.\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 30)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    assert await terminated == 0
    # A 421 or a closed connection both tell the client to keep the message; a 250 would be a lie.
    assert answer == b"" or answer.startswith(b"421"), answer
    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "--config", str(config), "jobs", "--json", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await listing.communicate()
    assert listing.returncode == 0
    assert out == b""
