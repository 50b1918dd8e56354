"""Shared plumbing for the faxbridge benchmarks: test mail, an SMTP load client, and server processes.

Every benchmark follows the ground rules of the performance anchors (shared/docs/performance.md §3):

* the system under test runs in its own process pinned to CPU 1 (``taskset -c 1``) and the load generator
  (this process) is pinned to CPU 0, so that the client does not share a core or a GIL with the server;
* everything listens on 127.0.0.1 with port 0 and reports the port it really bound;
* every run is bounded by a message count and by a timeout, and every process started here is stopped by
  its own pid (``ServerProcess.stop``), also when the benchmark fails;
* the bridge and its baseline are measured in the same run, alternating, and compared by their ratio.

Server processes announce what they do on stderr (the bridge's INFO log lines); ``ServerProcess`` reads
those lines as events and counts them, so a benchmark can await "500 notices sent" instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
BASE_CONFIG = REPO / "config" / "faxbridge.toml"

SENDER = "demo@example.com"
RECIPIENT = "+4930123456@fax.localhost"
SERVER_CPU = 1
CLIENT_CPU = 0
KIB = 1024
MIB = 1024 * 1024

LIBRARIES = ("aiosmtpd", "SQLAlchemy", "asyncpg", "pypdf", "Pillow", "fpdf2")


# -- machine ---------------------------------------------------------------------------------------------


@functools.cache
def can_pin() -> bool:
    """Whether the server and the client can get a core each (``taskset`` exists and CPUs 0 and 1 are ours).

    Decided once, before ``pin_client`` narrows this process's own affinity to CPU 0.
    """
    return shutil.which("taskset") is not None and {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0)


def pin_client() -> bool:
    """Pin this process (the load generator) to CPU 0; return whether it was pinned."""
    if not can_pin():
        return False
    os.sched_setaffinity(0, {CLIENT_CPU})
    return True


def server_argv(argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` with ``taskset -c 1`` when pinning is possible (taskset execs: the pid stays the same)."""
    return ["taskset", "-c", str(SERVER_CPU), *argv] if can_pin() else list(argv)


def machine_description() -> list[str]:
    """Lines describing the machine and the library versions, printed above every result table."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    pinned = "server on CPU 1, client on CPU 0" if can_pin() else "NOT pinned (no taskset or fewer than 2 CPUs)"
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, load {_loadavg()}",
        f"python: {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        f"libraries: {', '.join(versions)}",
        f"pinning: {pinned}",
    ]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# -- statistics ------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``; NaN for an empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """``median (min–max)`` of ``values``, each formatted with ``fmt``."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, so the output can be pasted into docs/performance.md."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- configuration ---------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string literal is a valid TOML basic string.
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _emit_table(data: Mapping[str, Any], name: str, out: list[str]) -> None:
    for key, value in data.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            out.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        full = f"{name}.{key}" if name else key
        if isinstance(value, dict):
            out.append(f"\n[{full}]")
            _emit_table(value, full, out)
        elif _is_table_array(value):
            for item in value:
                out.append(f"\n[[{full}]]")
                _emit_table(item, full, out)


def to_toml(data: Mapping[str, Any]) -> str:
    """Write the subset of TOML that faxbridge's configuration uses (tables, arrays of tables, scalars)."""
    out: list[str] = []
    _emit_table(data, "", out)
    return "\n".join(out) + "\n"


def write_bridge_config(
    workdir: Path, *, max_message_size: int | None = None, overrides: Mapping[str, Any] | None = None
) -> Path:
    """Derive a benchmark configuration from ``config/faxbridge.toml``; return its path.

    Changes: ``state_dir`` in ``workdir`` (on the same disk as the repository's ``var/``, so fsync costs
    what it costs there), ``smtp.listen_host = 127.0.0.1``, ``smtp.listen_port = 0``, and optionally
    ``smtp.max_message_size``. Everything else (the ``local`` provider, the Maildir for notices, the
    ``demo`` account, ``log_level = INFO``, the worker's defaults) stays as shipped.
    """
    with BASE_CONFIG.open("rb") as handle:
        config = tomllib.load(handle)
    config["state_dir"] = str(workdir / "state")
    smtp = config.setdefault("smtp", {})
    smtp["listen_host"] = "127.0.0.1"
    smtp["listen_port"] = 0
    if max_message_size is not None:
        smtp["max_message_size"] = max_message_size
    for dotted, value in (overrides or {}).items():
        target = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "faxbridge.toml"
    path.write_text(to_toml(config))
    return path


def outbox_dir(workdir: Path) -> Path:
    """The local provider's outbox for a configuration written by ``write_bridge_config``."""
    with BASE_CONFIG.open("rb") as handle:
        config = tomllib.load(handle)
    outbox = Path(config["providers"]["local"].get("outbox", "outbox"))
    return outbox if outbox.is_absolute() else workdir / "state" / outbox


# -- test mail -------------------------------------------------------------------------------------------

_WORDS = (
    "invoice", "delivery", "order", "payment", "contract", "account", "balance", "signature", "shipment",
    "meeting", "schedule", "report", "customer", "reference", "quantity", "address", "telephone", "please",
    "confirm", "receipt", "attached", "document", "regards",
)  # fmt: skip


def text_lines(count: int, seed: int) -> list[str]:
    """Deterministic English-looking lines of at most 76 characters (none starts with a dot)."""
    rng = random.Random(seed)
    lines = []
    for number in range(count):
        words = [f"{number + 1:04d}"]
        while True:
            word = rng.choice(_WORDS)
            if len(" ".join([*words, word])) > 72:
                break
            words.append(word)
        lines.append(" ".join(words))
    return lines


def make_pdf(size: int, *, pages: int = 1, seed: int = 1) -> bytes:
    """A PDF of exactly ``size`` bytes: ``pages`` A4 pages, each an uncompressed 8-bit grey image of noise.

    Random pixels are what a scan looks like to a compressor: the file stays as large on the wire as it is.
    faxbridge passes PDF pages through without rendering them. A comment pads the file to the exact size.
    """
    rng = random.Random(seed)
    per_page = max(1, (size - 700 * pages - 400) // pages)
    width = max(1, int(per_page**0.5))
    height = max(1, per_page // width)
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + index * 3} 0 R" for index in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    for index in range(pages):
        page_obj = 3 + index * 3
        content = b"q 595 0 0 842 0 0 cm /Im0 Do Q"
        pixels = rng.randbytes(width * height)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /XObject << /Im0 {page_obj + 2} 0 R >> >> /Contents {page_obj + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        objects.append(
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Length %d >>\nstream\n%s\nendstream" % (width, height, len(pixels), pixels)
        )
    body = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    xref += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)

    def trailer_for(pad: int) -> bytes:
        start = len(body) + (pad + 2 if pad else 0)  # the xref follows the padding comment
        return b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, start)

    pad = 0
    for _ in range(3):
        pad = max(0, size - len(body) - len(xref) - len(trailer_for(pad)) - 2)
    trailer = trailer_for(pad)
    padding = b"%" + b"0" * pad + b"\n" if pad else b""
    out = bytes(body) + padding + xref + trailer
    if len(out) != size:
        raise ValueError(f"cannot make a PDF of exactly {size} bytes (got {len(out)})")
    return out


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


@dataclass(frozen=True)
class TestMail:
    """A message of a fixed size; only its ``Message-ID`` changes from one copy to the next.

    ``header(i)`` and ``body`` together are the DATA content (CRLF line endings, ending with CRLF, no line
    starting with a dot, so no dot-stuffing is needed). The bridge dedupes on sender, ``Message-ID``,
    content and number, so every copy gets its own ``Message-ID`` from ``tag`` and ``i``.
    """

    tag: str
    subject: str
    extra_headers: bytes
    body: bytes

    def header(self, index: int) -> bytes:
        """The header block of copy ``index`` (fixed width, so every copy has the same size)."""
        return (
            (
                f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: {self.subject}\r\n"
                f"Message-ID: <{self.tag}.{index:08d}@bench.example.com>\r\n"
                "Date: Tue, 24 Nov 2026 12:00:00 +0000\r\n"
            ).encode()
            + self.extra_headers
            + b"\r\n"
        )

    def size(self) -> int:
        """Bytes of DATA content per copy."""
        return len(self.header(0)) + len(self.body)

    def retag(self, tag: str) -> TestMail:
        """The same mail with another ``Message-ID`` prefix (a new batch that the bridge does not dedupe)."""
        return TestMail(tag, self.subject, self.extra_headers, self.body)


def _pad_text(lines: list[str], need: int) -> list[str]:
    """``lines`` plus lines adding exactly ``need`` bytes on the wire (each line costs its length + CRLF)."""
    if need < 2:
        raise ValueError(f"cannot pad by {need} byte(s)")
    out = list(lines)
    remaining = need
    for line in text_lines(need // 60 + 2, seed=need):
        if remaining - (len(line) + 2) < 160:
            break
        out.append(line)
        remaining -= len(line) + 2
    while remaining >= 2:
        length = min(76, remaining - 2)
        if remaining - (length + 2) == 1:
            length -= 1
        out.append(("kind regards " * 7)[:length])
        remaining -= length + 2
    return out


def text_mail(size: int, tag: str, *, subject: str = "bench text fax") -> TestMail:
    """A plain-text mail of exactly ``size`` bytes (about 25 lines for 2 KB: one fax page)."""
    mail = TestMail(tag, subject, b"Content-Type: text/plain; charset=us-ascii\r\n", b"")
    lines = ["Dear colleague,", "", "please find our order below.", ""]
    body = ("\r\n".join(lines) + "\r\n").encode()
    need = size - mail.size() - len(body)
    if need < 2:
        raise ValueError(f"{size} bytes is too small for a test mail")
    padded = _pad_text(lines, need)
    body = ("\r\n".join(padded) + "\r\n").encode()
    result = TestMail(tag, subject, mail.extra_headers, body)
    assert result.size() == size, (result.size(), size)
    return result


def pdf_mail(size: int, tag: str, *, pdf_pages: int = 1, subject: str = "bench PDF fax") -> TestMail:
    """A mail of exactly ``size`` bytes: a short text and a base64 PDF attachment of random-pixel pages.

    The attachment takes about 97 % of the size; the text part is padded so that the total is exact.
    """
    boundary = "bench-boundary-0123456789"
    extra = f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n'.encode()
    shell = TestMail(tag, subject, extra, b"")
    text_head = f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".encode()
    attach_head = (
        f'--{boundary}\r\nContent-Type: application/pdf; name="scan.pdf"\r\n'
        'Content-Disposition: attachment; filename="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    ).encode()
    tail = f"--{boundary}--\r\n".encode()
    lines = ["Please fax the attached scan.", ""]
    text_size = len(("\r\n".join(lines) + "\r\n").encode())
    fixed = shell.size() + len(text_head) + len(attach_head) + len(tail) + text_size
    # Base64 with a CRLF every 76 characters turns 57 bytes into 78; leave about 600 bytes for the text.
    pdf_size = (size - fixed - 600) * 57 // 78
    pdf_size -= pdf_size % 57
    attachment = _base64_lines(make_pdf(pdf_size, pages=pdf_pages))
    need = size - fixed - len(attachment)
    padded = _pad_text(lines, need)
    body = text_head + ("\r\n".join(padded) + "\r\n").encode() + attach_head + attachment + tail
    result = TestMail(tag, subject, extra, body)
    assert result.size() == size, (result.size(), size)
    return result


# -- SMTP load client ------------------------------------------------------------------------------------


class SMTPFailure(Exception):
    """A reply other than the one expected."""


@dataclass(frozen=True)
class Sent:
    """One message: when its connection started, its latency (connect → ``250`` after the dot), its reply."""

    started: float
    """``time.perf_counter()`` at connect."""
    latency: float
    """Seconds from connect to the ``250`` after the final dot."""
    accepted_at: float
    """``time.time()`` at the ``250`` (wall clock, to compare with the bridge's ``submitted_at``)."""
    reply: str


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPFailure("connection closed by the server")
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if line[3:4] != b"-":
            return int(line[:3]), "\n".join(lines)


async def _expect(reader: asyncio.StreamReader, code: int, what: str) -> str:
    got, text = await _reply(reader)
    if got != code:
        raise SMTPFailure(f"{what}: expected {code}, got {text!r}")
    return text


async def send_one(host: str, port: int, header: bytes, body: bytes) -> Sent:
    """Deliver one message on a new connection: EHLO, MAIL, RCPT, DATA, QUIT (no pipelining)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port, limit=1 * MIB)
    try:
        await _expect(reader, 220, "greeting")
        writer.write(b"EHLO bench.example.com\r\n")
        await _expect(reader, 250, "EHLO")
        writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
        await _expect(reader, 250, "MAIL")
        writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
        await _expect(reader, 250, "RCPT")
        writer.write(b"DATA\r\n")
        await _expect(reader, 354, "DATA")
        writer.write(header)
        writer.write(body)
        writer.write(b".\r\n")
        await writer.drain()
        reply = await _expect(reader, 250, "end of data")
        latency = time.perf_counter() - started
        accepted_at = time.time()
        writer.write(b"QUIT\r\n")
        await _expect(reader, 221, "QUIT")
        return Sent(started, latency, accepted_at, reply)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


@dataclass
class LoadResult:
    """What one load run gave: every message sent, failures, and the wall time of the whole run."""

    sent: list[Sent] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Accepted messages per second over the whole run (first connect to last QUIT)."""
        return len(self.sent) / self.elapsed if self.elapsed > 0 else float("nan")

    def latency_ms(self, pct: float) -> float:
        """A percentile of connect → ``250`` in milliseconds."""
        return percentile([s.latency for s in self.sent], pct) * 1000


async def run_load(host: str, port: int, mail: TestMail, *, count: int, sessions: int, timeout: float) -> LoadResult:
    """Send ``count`` copies of ``mail`` over ``sessions`` concurrent connections, one connection per message.

    Bounded by ``timeout`` seconds for the whole run: what is unfinished then is counted as failed.
    """
    result = LoadResult()
    next_index = 0

    async def session() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            try:
                result.sent.append(await send_one(host, port, mail.header(index), mail.body))
            except (SMTPFailure, OSError) as exc:
                result.failures.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    tasks = [asyncio.create_task(session()) for _ in range(min(sessions, count))]
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*tasks)
    except TimeoutError:
        result.failures.append(f"timeout after {timeout:.0f} s with {len(result.sent)} of {count} accepted")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.elapsed = time.perf_counter() - started
    return result


# -- server processes ------------------------------------------------------------------------------------

BRIDGE_EVENTS: dict[str, re.Pattern[str]] = {
    "queued": re.compile(r" bridge\.smtp: queued message "),
    "converted": re.compile(r": converted, \d+ page"),
    "refused": re.compile(r": document refused: "),
    "submitted": re.compile(r": submitted to "),
    "notice": re.compile(r": notice sent to "),
}
"""What the bridge logs at INFO for each job; ``notice`` is the last step of every job, whatever its outcome."""

_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


class ServerProcess:
    """A server started as a subprocess; its output lines are counted as events.

    Start with ``await ServerProcess.start(...)``; always ``await stop()`` (``running_servers`` does it).
    """

    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, stream: asyncio.StreamReader, events: Mapping[str, Any]
    ) -> None:
        self.name = name
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = 0
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        self.tail: list[str] = []
        self._events = dict(events)
        self._stream = stream
        self._changed = asyncio.Condition()
        self._listening = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        listening: re.Pattern[str],
        events: Mapping[str, re.Pattern[str]] | None = None,
        startup_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        """Start ``argv`` pinned to CPU 1 and wait for the line matching ``listening`` (groups: host, port).

        The process's stdout and stderr are merged and read line by line until it exits.
        """
        proc = await asyncio.create_subprocess_exec(
            *server_argv(argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            limit=4 * MIB,
            start_new_session=True,
        )
        assert proc.stdout is not None
        server = cls(name, proc, proc.stdout, {"listening": listening, **(events or {})})
        server._reader = asyncio.create_task(server._read(), name=f"{name}-output")
        try:
            async with asyncio.timeout(startup_timeout):
                server.host, server.port = await server._listening
        except BaseException:
            await server.stop()
            raise
        return server

    async def _read(self) -> None:
        while line := await self._stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.tail = [*self.tail[-30:], text]
            if _PROBLEM.search(text):
                self.problems.append(text)
            for key, pattern in self._events.items():
                match = pattern.search(text)
                if match is None:
                    continue
                if key == "listening" and not self._listening.done():
                    self._listening.set_result((match.group(1), int(match.group(2))))
                self.counts[key] += 1
            async with self._changed:
                self._changed.notify_all()
        if not self._listening.done():
            self._listening.set_exception(
                RuntimeError(f"{self.name} exited before listening:\n" + "\n".join(self.tail))
            )
        async with self._changed:
            self._changed.notify_all()

    async def wait_count(self, key: str, at_least: int, timeout: float) -> None:
        """Wait until event ``key`` was seen ``at_least`` times; raise ``TimeoutError`` after ``timeout`` s."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.counts[key] >= at_least or self.proc.returncode is not None)
        if self.counts[key] < at_least:
            raise RuntimeError(f"{self.name} exited while waiting for {key}:\n" + "\n".join(self.tail))

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS``, ``VmHWM`` (peak RSS), ``VmSize`` and ``VmPeak`` from ``/proc/<pid>/status``, in KiB."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                values[key] = int(rest.split()[0])
        return values

    def reset_peak(self) -> bool:
        """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/<pid>/clear_refs``); False if not allowed."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process (by its pid) and wait; SIGKILL it if it has not exited after ``timeout`` s."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                print(f"warning: {self.name} (pid {self.proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 10)


BRIDGE_LISTENING = re.compile(r"listening for mail on ([0-9.]+):(\d+)")
BARE_LISTENING = re.compile(r"bare-smtp listening on ([0-9.]+):(\d+)")


async def start_bridge(config: Path, *, name: str = "bridge", intake_only: bool = False) -> ServerProcess:
    """Start faxbridge (``python -m bridge --config CONFIG serve``); ``intake_only`` turns its worker off."""
    argv = [sys.executable, "-m", "bridge", "--config", str(config), "serve"]
    env = {"FAXBRIDGE_WORKER__ENABLED": "false"} if intake_only else {}
    return await ServerProcess.start(name, argv, listening=BRIDGE_LISTENING, events=BRIDGE_EVENTS, env=env)


async def start_bare(spool: Path) -> ServerProcess:
    """Start the bare aiosmtpd + write + fsync sink (``bench/_bare_smtp.py``) writing into ``spool``."""
    argv = [sys.executable, str(BENCH / "_bare_smtp.py"), "--spool", str(spool)]
    return await ServerProcess.start("bare", argv, listening=BARE_LISTENING)


class Servers(contextlib.AsyncExitStack):
    """Stops every server it was given, in reverse order, whatever happens."""

    async def add(self, server: ServerProcess) -> ServerProcess:
        """Register ``server`` to be stopped on exit; return it."""
        self.push_async_callback(server.stop)
        return server
