"""The bridge as a real process: started like ``make run``, stopped by SIGTERM, killed by SIGKILL."""

from __future__ import annotations

import asyncio
import json
import mailbox
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import default_config, dump_toml
from tests.integration.process import BridgeProcess
from tests.integration.smtp_client import atransact, make_message

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
    process = BridgeProcess(write_config(tmp_path))
    port = await process.start()
    try:
        message = make_message(subject="Process test")
        result = await atransact(port, "demo@example.com", [FAX], message.as_bytes())
        assert result.data_code == 250
        job_id = result.data_text.rsplit(" ", 1)[1]
        await process.wait_for_line(rf"job {job_id}: notice sent")
        assert (tmp_path / "var" / "outbox" / f"{job_id}.pdf").is_file()
        [notice] = maildir_messages(tmp_path)
        assert message["Message-ID"].encode() in notice
        assert b"Auto-Submitted: auto-replied" in notice
    finally:
        code = await process.terminate()
    assert code == 0
    assert process.matching("faxbridge stopped")


async def test_sigkill_right_after_250_sends_each_fax_exactly_once(tmp_path: Path) -> None:
    # The dead process's leases must run out before another may take its jobs; keep that short here.
    config = write_config(tmp_path, worker={"poll_seconds": 0.5, "lease_seconds": 5})
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
