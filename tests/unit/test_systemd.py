"""sd_notify against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.systemd import Notifier

RECEIVE_TIMEOUT = 5.0


class Listener:
    """A bound datagram socket playing systemd's notification socket."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        """The value systemd would put into $NOTIFY_SOCKET."""

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    async def areceive(self) -> str:
        # The socket is non-blocking; the loop wakes us when a datagram arrives, so no polling and no sleeps.
        data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        return data.decode()

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        found: list[str] = []
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            while True:
                found.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return found
        finally:
            self.sock.settimeout(timeout)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECEIVE_TIMEOUT)
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    if not sys.platform.startswith("linux"):
        pytest.skip("abstract AF_UNIX sockets exist on Linux only")
    name = f"faxbridge-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECEIVE_TIMEOUT)
        yield Listener(sock, "@" + name)


def test_ready_reaches_a_path_socket(listener: Listener) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": listener.address})

    assert notifier.enabled
    assert notifier.ready() is True
    assert listener.receive() == "READY=1"


def test_ready_reaches_an_abstract_socket(abstract_listener: Listener) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": abstract_listener.address})

    assert notifier.ready() is True
    assert abstract_listener.receive() == "READY=1"
    assert "@faxbridge-test-" in repr(notifier)


def test_each_helper_sends_its_field(listener: Listener) -> None:
    notifier = Notifier(listener.address)

    assert notifier.ready("accepting mail on 127.0.0.1:2525")
    assert notifier.status("3 jobs in flight")
    assert notifier.watchdog()
    assert notifier.stopping()

    assert [listener.receive() for _ in range(4)] == [
        "READY=1\nSTATUS=accepting mail on 127.0.0.1:2525",
        "STATUS=3 jobs in flight",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_fields_go_out_as_one_datagram(listener: Listener) -> None:
    notifier = Notifier(listener.address)

    assert notifier.notify("RELOADING=1", "STATUS=reloading", "MONOTONIC_USEC=1")

    assert listener.receive() == "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=1"
    assert listener.pending() == []


def test_status_text_cannot_inject_fields(listener: Listener) -> None:
    notifier = Notifier(listener.address)

    notifier.status("provider said:\nREADY=1\r\nSTOPPING=1")

    assert listener.receive() == "STATUS=provider said: READY=1 STOPPING=1"


def test_environment_is_stripped() -> None:
    environ = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "60000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/usr/bin",
        "FAXBRIDGE_LOG_LEVEL": "DEBUG",
    }

    Notifier.from_environ(environ)

    assert environ == {"PATH": "/usr/bin", "FAXBRIDGE_LOG_LEVEL": "DEBUG"}


def test_process_environment_is_stripped_by_default(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    notifier = Notifier.from_environ()

    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert key not in os.environ
    assert notifier.watchdog_interval == 1.0
    assert notifier.ready()
    assert listener.receive() == "READY=1"


def test_without_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})

    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.ready("up") is False
    assert notifier.stopping() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval is None


def test_empty_notify_socket_is_a_no_op() -> None:
    assert Notifier.from_environ({"NOTIFY_SOCKET": ""}).ready() is False


def test_unsupported_address_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.systemd"):
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})

    assert not notifier.enabled
    assert notifier.ready() is False
    assert "vsock:2:1234" in caplog.text


def test_missing_socket_returns_false_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))

    with caplog.at_level(logging.DEBUG, logger="bridge.systemd"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gone.sock" in warnings[0].getMessage()


def test_warns_again_after_recovering(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "flaky.sock"
    notifier = Notifier(str(path))

    with caplog.at_level(logging.WARNING, logger="bridge.systemd"):
        assert notifier.watchdog() is False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            assert notifier.watchdog() is True
        path.unlink()
        assert notifier.watchdog() is False

    assert len(caplog.records) == 2


def test_watchdog_interval_is_half_of_watchdog_usec(listener: Listener) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "60000000"})

    assert notifier.watchdog_interval == 30.0


def test_watchdog_interval_for_our_pid(listener: Listener) -> None:
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid())}
    )

    assert notifier.watchdog_interval == pytest.approx(0.0005)


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"WATCHDOG_USEC": "60000000"}, id="no-socket"),
        pytest.param({"NOTIFY_SOCKET": "/run/systemd/notify"}, id="no-watchdog"),
        pytest.param(
            {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"},
            id="other-pid",
        ),
        pytest.param({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "soon"}, id="not-a-number"),
        pytest.param({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "0"}, id="zero"),
    ],
)
def test_watchdog_off(environ: dict[str, str]) -> None:
    assert Notifier.from_environ(environ).watchdog_interval is None


async def test_run_watchdog_pings_repeatedly(listener: Listener) -> None:
    listener.sock.setblocking(False)
    # 20 ms between pings.
    notifier = Notifier(listener.address, watchdog_usec=40_000)

    async def two_pings() -> list[str]:
        # One after the other: two concurrent readers on one socket would replace each other's callback.
        return [await listener.areceive(), await listener.areceive()]

    task = asyncio.create_task(notifier.run_watchdog())
    try:
        pings = await asyncio.wait_for(two_pings(), timeout=RECEIVE_TIMEOUT)
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert pings == ["WATCHDOG=1", "WATCHDOG=1"]


async def test_run_watchdog_returns_without_watchdog(listener: Listener) -> None:
    await asyncio.wait_for(Notifier(listener.address).run_watchdog(), timeout=RECEIVE_TIMEOUT)
    await asyncio.wait_for(Notifier(None, watchdog_usec=1000).run_watchdog(), timeout=RECEIVE_TIMEOUT)

    assert listener.pending() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_stays_silent(listener: Listener) -> None:
    notifier = Notifier(listener.address)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os._exit(0 if notifier.ready() is False else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert listener.pending() == []
