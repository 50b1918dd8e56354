"""Run the document pipeline in a child process with CPU-time, memory and wall-clock limits.

Every mail is converted in a process of its own, forked for it and gone afterwards, because the documents come
from strangers: a decompression bomb, a PDF that loops or a parser bug may exhaust memory, spin or crash, and
all of that must end one child, never the daemon, and end as a refusal that names the attachment.

How a conversion runs:

* The children are forked by a fork server (``bridge.converters.zygote``), which imports the converters and
  warms them up once; a child therefore starts in about a millisecond instead of the ~300 ms an import of
  pypdf, Pillow, fpdf2 and PDFium costs. The fork server itself is a fresh interpreter started by the
  daemon, so it holds none of the daemon's threads, sockets or database connections.
* Before it reads a byte of the mail, the child sets its own limits: ``RLIMIT_CPU`` (SIGXCPU at the limit),
  ``RLIMIT_AS`` (allocations fail, which Python raises as ``MemoryError``), ``RLIMIT_FSIZE`` and no core
  files; and it asks the kernel to kill it when its parent, the fork server, goes (``PR_SET_PDEATHSIG``),
  which happens when the daemon dies. A CPU-time limit is per process, which is one more reason not to reuse
  a child for a second mail.
* The child reports each step and attachment as it starts, so a limit can name the attachment it stopped
  in. The parent waits in a thread for the result, up to the wall-clock timeout, then kills the child.
* A child that vanishes without a reason of its own (killed from outside: the OOM killer, an administrator)
  is given one more try in a fresh child; a second loss refuses the mail, naming the attachment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing.connection
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bridge.converters.pipeline import ConversionOptions, ConversionResult, convert_message
from bridge.converters.zygote import Zygote, ZygoteGone
from bridge.errors import BridgeError, ConversionError, TooLarge, UnsupportedContent

__all__ = ["ConverterStopped", "Limits", "Sandbox", "SandboxListener"]

log = logging.getLogger(__name__)

# What the fork server imports once, so that each child starts with the converters loaded.
PRELOAD: Final = ("bridge.converters.sandbox", "bridge.converters.warmup")

SandboxListener = Callable[[str, int, str], None]
"""Called on the event loop with (event, child pid, detail): ``started``, ``step`` ("<step>:<part>"),
``helper`` (the process group of a helper program such as LibreOffice), ``ended`` (the exit code)."""

_REFUSALS: Final[dict[str, type[ConversionError | TooLarge | UnsupportedContent]]] = {
    "ConversionError": ConversionError,
    "TooLarge": TooLarge,
    "UnsupportedContent": UnsupportedContent,
}
_PR_SET_PDEATHSIG: Final = 1
_MIB: Final = 1024 * 1024


class ConverterStopped(BridgeError):
    """The conversion was interrupted for a reason that is not the document's (the bridge is stopping).

    Temporary: the job keeps its place and is converted again later.
    """

    temporary = True


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one conversion child."""

    cpu_seconds: int = 60
    memory_bytes: int = 1024 * _MIB
    """Address space of the child (``RLIMIT_AS``): what the Python converters may map in all."""
    timeout_seconds: float = 120.0
    """Wall-clock time for the whole mail, office conversions included."""
    file_size_bytes: int = 512 * _MIB
    office_memory_bytes: int = 4096 * _MIB
    """LibreOffice maps far more address space than it uses; its own limit, enforced on its process."""


@dataclass(slots=True)
class _Outcome:
    kind: str  # done, refused, memory, crashed, timeout, died, cancelled
    step: str = ""
    part: str = ""
    message: tuple[Any, ...] = ()
    exitcode: int | None = None


@dataclass(slots=True)
class _Child:
    """One conversion child, as the supervising thread sees it; ``kill`` may be called from any thread."""

    pid: int | None = None
    killed: threading.Event = field(default_factory=threading.Event)
    helpers: set[int] = field(default_factory=set)
    """Process groups of helper programs (LibreOffice) the child has running: they are in sessions of their
    own, so killing the child alone would leave them behind."""

    def kill(self) -> None:
        self.killed.set()
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(self.pid, signal.SIGKILL)
        self.kill_helpers()

    def kill_helpers(self) -> None:
        for group in list(self.helpers):
            with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
                os.killpg(group, signal.SIGKILL)


class Sandbox:
    """Converts mails in child processes, at most ``concurrency`` at a time.

    Args:
        limits: per-child resource limits.
        concurrency: children running at once; each may use up to ``limits.memory_bytes``.
    """

    def __init__(self, limits: Limits | None = None, *, concurrency: int = 2) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.limits = limits or Limits()
        self._zygote = Zygote(PRELOAD)
        self._slots = asyncio.Semaphore(concurrency)
        self._listeners: list[SandboxListener] = []

    def close(self) -> None:
        """Stop the fork server; conversions still running are killed with it."""
        self._zygote.close()

    def add_listener(self, listener: SandboxListener) -> None:
        """Call ``listener`` for each child event (for logs, metrics and tests)."""
        self._listeners.append(listener)

    async def convert(self, raw: bytes, options: ConversionOptions) -> ConversionResult:
        """Convert ``raw`` in a child process.

        Raises:
            ConversionError, TooLarge, UnsupportedContent: the mail cannot be faxed; ``notes`` say per part why.
                Resource limits end here too, naming the attachment being converted.
            ConverterStopped: the task was cancelled, or the child was stopped by a signal that means shutdown.
        """
        async with self._slots:
            for attempt in (1, 2):
                outcome = await self._run_child(raw, options)
                if outcome.kind == "died" and outcome.exitcode == -signal.SIGKILL and attempt == 1:
                    log.warning(
                        "the conversion child was killed from outside during %s; converting again in a new one",
                        _where(outcome),
                    )
                    continue
                return self._result(outcome)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_child(self, raw: bytes, options: ConversionOptions) -> _Outcome:
        loop = asyncio.get_running_loop()
        child = _Child()

        def notify(event: str, pid: int, detail: str) -> None:
            for listener in self._listeners:
                loop.call_soon_threadsafe(listener, event, pid, detail)

        thread = asyncio.ensure_future(
            asyncio.to_thread(_supervise, self._zygote, self.limits, raw, options, child, notify)
        )
        try:
            return await asyncio.shield(thread)
        except asyncio.CancelledError:
            child.kill()
            # The thread ends as soon as the pipe closes; wait for it so that no child outlives the task.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(thread), timeout=10)
            raise

    def _result(self, outcome: _Outcome) -> ConversionResult:
        where = _where(outcome)
        limits = self.limits
        if outcome.kind == "done":
            result = outcome.message[1]
            if not isinstance(result, ConversionResult):  # pragma: no cover - the child sends nothing else
                raise ConversionError("the converter returned something unexpected")
            return result
        if outcome.kind == "refused":
            _, kind, text, notes = outcome.message
            raise _REFUSALS.get(str(kind), ConversionError)(str(text), notes=tuple(notes))
        if outcome.kind == "memory":
            raise _refusal(
                f"{where}: converting it needed more memory than allowed ({limits.memory_bytes // _MIB} MiB)"
            )
        if outcome.kind == "timeout":
            raise _refusal(f"{where}: converting it took longer than the limit of {limits.timeout_seconds:g} seconds")
        if outcome.kind == "crashed":
            log.error("the converter failed during %s: %s", where, outcome.message[1] if outcome.message else "?")
            raise _refusal(f"{where}: the document could not be converted (the converter failed on it)")
        if outcome.kind == "cancelled":
            raise ConverterStopped("the conversion was interrupted because the bridge is stopping")
        if outcome.kind == "unavailable":
            raise ConverterStopped("the conversion fork server could not be started; see the log")
        code = outcome.exitcode
        if code == -signal.SIGXCPU:
            raise _refusal(f"{where}: converting it needed more than {limits.cpu_seconds} seconds of processor time")
        if code in (-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP):
            raise ConverterStopped(f"the conversion child was stopped by signal {-code} during {where}")
        if code == -signal.SIGKILL:
            raise _refusal(f"{where}: the converter was killed twice while converting it; it was not faxed")
        log.error("the conversion child ended with exit code %s during %s", code, where)
        raise _refusal(f"{where}: the document could not be converted (it crashed the converter)")


def _refusal(line: str) -> ConversionError:
    return ConversionError(line, notes=(line,))


def _where(outcome: _Outcome) -> str:
    if outcome.part:
        return outcome.part
    return "the mail" if outcome.step in ("", "read-mail") else f"the mail ({outcome.step})"


def _supervise(
    zygote: Zygote,
    limits: Limits,
    raw: bytes,
    options: ConversionOptions,
    child: _Child,
    notify: Callable[[str, int, str], None],
) -> _Outcome:
    """Start one child, feed it the mail, and wait for its answer or its end (runs in a thread)."""
    step = part = ""
    try:
        pid, conn = zygote.fork(limits)
    except ZygoteGone as exc:
        log.error("%s", exc)
        return _Outcome("unavailable")
    child.pid = pid
    exitcode: int | None = None
    try:
        if child.killed.is_set():  # cancelled while starting
            child.kill()
        notify("started", pid, "")
        deadline = time.monotonic() + limits.timeout_seconds
        try:
            conn.send((raw, options))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    child.kill()
                    return _Outcome("timeout", step, part)
                if not conn.poll(min(remaining, 1.0)):
                    continue
                message = conn.recv()
                if message[0] == "progress":
                    step, part = str(message[1]), str(message[2])
                    notify("step", pid, f"{step}:{part}")
                    continue
                if message[0] == "helper":
                    group, running = int(message[1]), bool(message[2])
                    if running:
                        child.helpers.add(group)
                        notify("helper", pid, str(group))
                    else:
                        child.helpers.discard(group)
                    continue
                return _Outcome(str(message[0]), step, part, message=tuple(message))
        except (EOFError, OSError):
            # The child is gone before it answered: its exit code, below, says why.
            pass
        exitcode = zygote.wait(pid, timeout=10)
        child.kill_helpers()  # the child died with LibreOffice still running: it must not outlive the child
        if child.killed.is_set():
            return _Outcome("cancelled", step, part)
        return _Outcome("died", step, part, exitcode=exitcode)
    finally:
        conn.close()
        if exitcode is None:
            exitcode = zygote.wait(pid, timeout=2)
        if exitcode is None:
            child.kill()
            exitcode = zygote.wait(pid, timeout=10)
        notify("ended", pid, str(exitcode))


# -- the child ------------------------------------------------------------------------------------------


def _child_main(conn: multiprocessing.connection.Connection, limits: Limits) -> None:
    """Entry point of a conversion child: limits first, then the mail, then one answer."""
    _apply_limits(limits)
    _die_with_parent()
    try:
        raw, options = conn.recv()
    except (EOFError, OSError):
        return
    except MemoryError:
        # The mail alone does not fit into the address space the child may use.
        conn.send(("memory",))
        conn.close()
        return
    # Ctrl-C in a terminal reaches the whole process group; the daemon decides what happens to conversions.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def progress(step: str, part: str) -> None:
        conn.send(("progress", step, part))

    def helper(group: int, running: bool) -> None:
        conn.send(("helper", group, running))

    try:
        result = convert_message(raw, options=options, progress=progress, processes=helper)
    except (ConversionError, TooLarge, UnsupportedContent) as exc:
        conn.send(("refused", type(exc).__name__, str(exc), exc.notes))
    except MemoryError:
        del raw
        conn.send(("memory",))
    except Exception as exc:
        conn.send(("crashed", f"{type(exc).__name__}: {exc}"[:1000]))
    else:
        conn.send(("done", result))
    finally:
        conn.close()


def _apply_limits(limits: Limits) -> None:
    cpu = max(1, int(limits.cpu_seconds))
    # The hard CPU limit is a backstop a few seconds later: SIGXCPU at the soft limit ends the child already.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    # The hard address-space limit leaves room for LibreOffice, whose process raises its soft limit up to it.
    memory = int(limits.memory_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (memory, max(memory, int(limits.office_memory_bytes))))
    size = int(limits.file_size_bytes)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    # SIGXCPU and SIGSEGV would otherwise leave core files of the sender's document behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    # The process's own symbol table includes libc's prctl; find_library would start ldconfig instead.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
