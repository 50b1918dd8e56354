"""The command line in-process: ``cli.main(argv)`` returns the exit code."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli import main
from bridge.errors import ExitCode
from bridge.settings import Settings
from tests.conftest import running_bridge


def config_of(settings: Settings) -> str:
    assert settings.config_file is not None
    return str(settings.config_file)


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["serve", "--help"],
        ["send", "--help"],
        ["jobs", "--help"],
        ["jobs", "show", "--help"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        assert "usage: faxbridge" in capsys.readouterr().out


def test_usage_error_exits_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == ExitCode.USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_check_reports_the_setup(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", config_of(settings), "check"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out
    assert "provider local: local" in out
    assert "account demo: local" in out
    # What the converters found, so an administrator sees why Word files or Arabic text would fail.
    soffice = shutil.which("soffice")
    assert (f"LibreOffice: {soffice}" if soffice else "LibreOffice: not found") in out
    for script in ("Latin, Cyrillic, Greek", "Arabic", "Hebrew", "Chinese", "Japanese", "Korean"):
        assert f"font for {script}: " in out


def test_bad_configuration_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('fax_domains = "not a list"\n')
    assert main(["--config", str(path), "check"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "fax_domains" in err
    assert str(path) in err


def test_send_then_serve_delivers_it(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    letter = tmp_path / "letter.txt"
    letter.write_text("Dear Sir or Madam,\nplease find our offer attached.\n")
    code = main(["--config", config_of(settings), "send", "--to", "030 123456", "--subject", "Offer", str(letter)])
    assert code == 0
    out = capsys.readouterr().out
    assert "fax to +49 30 123456" in out
    job_id = out.split()[2].rstrip(":")

    assert main(["--config", config_of(settings), "jobs", "--json"]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["job_id"] == job_id
    assert listed["state"] == "received"

    async def run_bridge() -> None:
        async with running_bridge(settings) as bridge:
            assert bridge.worker is not None
            await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", 1), 30)

    asyncio.run(run_bridge())
    outbox = settings.path(settings.providers["local"]["outbox"])
    assert json.loads((outbox / f"{job_id}.json").read_text())["number"] == "+4930123456"

    assert main(["--config", config_of(settings), "jobs", "show", job_id]) == 0
    shown = capsys.readouterr().out
    assert "delivered" in shown
    assert job_id in shown
    assert main(["--config", config_of(settings), "jobs", "--state", "delivered"]) == 0
    assert job_id in capsys.readouterr().out


def test_send_refusals(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_of(settings)
    assert main(["--config", config, "send", "--to", "not-a-number"]) == ExitCode.DATAERR
    assert "not a fax number" in capsys.readouterr().err
    assert main(["--config", config, "send", "--to", "030123456", str(tmp_path / "missing.pdf")]) == ExitCode.NOINPUT
    assert main(["--config", config, "send", "--from", "x@example.org", "--to", "030123456"]) == ExitCode.DATAERR
    assert main(["--config", config, "jobs", "show", "nosuchjob"]) == ExitCode.NOINPUT


def test_inbox_lists_dropped_faxes(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    inbox = settings.path(settings.providers["local"]["inbox"])
    inbox.mkdir(parents=True)
    (inbox / "incoming-1.pdf").write_bytes(b"%PDF-1.4\n")
    (inbox / "incoming-1.json").write_text(json.dumps({"caller": "+31201234567", "called": "+4930123456"}))
    (inbox / "notes.txt").write_text("not a fax")
    assert main(["--config", config_of(settings), "inbox"]) == 0
    out = capsys.readouterr().out
    assert "incoming-1.pdf" in out
    assert "from +31201234567 to +4930123456" in out
    assert "notes.txt" not in out


def test_serve_on_a_taken_port_exits_69(make_settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(smtp={"listen_port": port})
        assert main(["--config", config_of(settings), "serve"]) == ExitCode.UNAVAILABLE
    err = capsys.readouterr().err
    assert f"cannot listen for SMTP on 127.0.0.1:{port}" in err
    assert "smtp.listen_port" in err


def test_fake_provider_serves_a_fake_on_loopback(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "fake-provider", "voipnow", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}/" in line
        response = None
        deadline = time.monotonic() + 30
        while response is None and time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/_fake/requests", timeout=5)
            except httpx.ConnectError:
                time.sleep(0.05)  # uvicorn is binding: no event to wait on from outside the process
        assert response is not None
        assert response.status_code == 200
        assert response.json() == []
        token = httpx.post(f"http://127.0.0.1:{port}/oauth/token.php", data={"grant_type": "client_credentials"})
        assert token.status_code in (400, 401)  # the fake enforces credentials
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_fake_provider_names_the_fakes_when_the_name_is_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fake-provider", "telefax"]) == 64
    err = capsys.readouterr().err
    assert "no fake for provider 'telefax'" in err
    assert "voipnow" in err
