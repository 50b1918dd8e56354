"""The conversion fork server ("zygote"): a warm process that forks one child per mail.

The daemon must not fork itself: it has threads (the store's, asyncio's executor), and a fork copies their
locks in whatever state they are. Starting a fresh interpreter per mail costs ~300 ms of imports. So the
daemon starts this one small process once (``python -m bridge.converters.zygote FD``); it imports the
converters, converts one warm-up mail (``bridge.converters.warmup``) and then forks a child for each mail,
each in about a millisecond and with fonts, tables and PDFium already initialised.

multiprocessing's fork server does the same in general, but a child it starts first re-runs the parent's
main script (``spawn.prepare``), which costs milliseconds per mail, breaks callers whose script has no
``if __name__ == "__main__"`` guard, and its children take as long again to shut down.

Protocol, over one ``AF_UNIX``/``SOCK_SEQPACKET`` socket (each message one pickled tuple; both ends are
faxbridge's own code, never the sender's bytes):

* daemon → zygote: ``(token, limits)`` with one file descriptor attached, the child's end of a socket pair;
* zygote → daemon: ``("forked", token, pid)`` once the child runs, ``("exited", pid, code)`` when it is reaped
  (``code`` as ``multiprocessing`` reports it: negative for a signal).

The zygote exits when the daemon's end of the socket closes; its children die with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import multiprocessing.connection
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

_MESSAGE_SIZE: Final = 65536


class ZygoteGone(Exception):
    """The fork server died or could not start; the conversion can be tried again with a new one."""


# -- the daemon's side ----------------------------------------------------------------------------------


class Zygote:
    """The daemon's handle on the fork server; thread-safe, started on first use and restarted if it dies."""

    def __init__(self, preload: tuple[str, ...]) -> None:
        self._preload = preload
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._tokens = itertools.count(1)
        self._forked: dict[int, tuple[threading.Event, list[int]]] = {}
        self._exits: dict[int, int] = {}
        self._exit_events: dict[int, threading.Event] = {}
        self._gone = threading.Event()

    def fork(self, limits: Any) -> tuple[int, multiprocessing.connection.Connection]:
        """Fork a child that runs ``sandbox._child_main(conn, limits)``; return its pid and our connection.

        Raises:
            ZygoteGone: the fork server is not there and could not be started.
        """
        control, gone = self._ensure()
        token = next(self._tokens)
        ready = threading.Event()
        slot: list[int] = []
        with self._lock:
            self._forked[token] = (ready, slot)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._send_lock:
                socket.send_fds(control, [pickle.dumps((token, limits))], [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise ZygoteGone(f"the conversion fork server is not reachable: {exc}") from exc
        finally:
            theirs.close()
        while not ready.wait(0.2):
            if gone.is_set():
                ours.close()
                raise ZygoteGone("the conversion fork server stopped before it started the child")
        pid = slot[0]
        return pid, multiprocessing.connection.Connection(ours.detach())

    def wait(self, pid: int, timeout: float) -> int | None:
        """Wait for child ``pid`` to be reaped; its exit code, or ``None`` when unknown (timeout, server gone)."""
        with self._lock:
            if pid in self._exits:
                return self._exits.pop(pid)
            event = self._exit_events.setdefault(pid, threading.Event())
        if event.wait(timeout):
            with self._lock:
                self._exit_events.pop(pid, None)
                return self._exits.pop(pid, None)
        with self._lock:
            self._exit_events.pop(pid, None)
        return None

    def close(self) -> None:
        """Stop the fork server (its children die with it)."""
        with self._lock:
            control, process = self._control, self._process
            self._control = self._process = None
        if control is not None:
            # shutdown() wakes the reader thread blocked in recv(); close() alone would not.
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
            control.close()
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _ensure(self) -> tuple[socket.socket, threading.Event]:
        with self._lock:
            if self._control is not None and not self._gone.is_set():
                return self._control, self._gone
            if self._process is not None:
                with contextlib.suppress(OSError):
                    self._process.kill()
                self._process.wait()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "bridge.converters.zygote", str(theirs.fileno()), *self._preload],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    close_fds=True,
                )
            except OSError as exc:
                ours.close()
                raise ZygoteGone(f"the conversion fork server could not be started: {exc}") from exc
            finally:
                theirs.close()
            gone = threading.Event()
            self._process, self._control, self._gone = process, ours, gone
            threading.Thread(target=self._read, args=(ours, gone), name="faxbridge-zygote-reader", daemon=True).start()
            return ours, gone

    def _read(self, control: socket.socket, gone: threading.Event) -> None:
        try:
            while True:
                try:
                    data = control.recv(_MESSAGE_SIZE)
                except OSError:
                    break
                if not data:
                    break
                message = pickle.loads(data)
                with self._lock:
                    if message[0] == "forked":
                        _, token, pid = message
                        ready, slot = self._forked.pop(token)
                        slot.append(int(pid))
                        ready.set()
                    elif message[0] == "exited":
                        _, pid, code = message
                        self._exits[int(pid)] = int(code)
                        event = self._exit_events.get(int(pid))
                        if event is not None:
                            event.set()
        finally:
            with self._lock:
                gone.set()
                for event in self._exit_events.values():
                    event.set()
            log.debug("the conversion fork server's socket closed")


# -- the fork server ------------------------------------------------------------------------------------


def serve(control_fd: int, child_main: Callable[[multiprocessing.connection.Connection, Any], None]) -> None:
    """Fork a child running ``child_main`` for every request on ``control_fd``, until it closes."""
    # Objects imported and warmed up so far are never collected: a child's first garbage collection would
    # otherwise write to every one of them and copy the whole heap page by page (copy-on-write).
    gc.freeze()
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    # The daemon decides what happens on Ctrl-C or SIGTERM; this process goes when the daemon's socket does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                data, fds, _, _ = socket.recv_fds(control, _MESSAGE_SIZE, 1)
                if not data:
                    return
                token, limits = pickle.loads(data)
                if not fds:
                    continue
                pid = os.fork()
                if pid == 0:
                    _in_child(control, selector, (wake_r, wake_w), fds[0], child_main, limits)
                os.close(fds[0])
                control.send(pickle.dumps(("forked", token, pid)))
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(control)


def _in_child(
    control: socket.socket,
    selector: selectors.BaseSelector,
    wake: tuple[int, int],
    fd: int,
    child_main: Callable[[multiprocessing.connection.Connection, Any], None],
    limits: Any,
) -> None:
    code = 0
    try:
        selector.close()
        control.close()
        signal.set_wakeup_fd(-1)
        for end in wake:
            os.close(end)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        child_main(multiprocessing.connection.Connection(fd), limits)
    except BaseException:
        code = 1
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        # Never return into the fork server's loop, and skip the interpreter's shutdown: nothing of the
        # server's state is the child's to clean up.
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(pickle.dumps(("exited", pid, os.waitstatus_to_exitcode(status))))


def main(argv: list[str]) -> None:
    control_fd = int(argv[0])
    for module in argv[1:]:
        __import__(module)
    from bridge.converters.sandbox import _child_main

    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(control_fd, _child_main)


if __name__ == "__main__":
    main(sys.argv[1:])
