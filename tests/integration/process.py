"""Run the bridge as a real process, the way ``make run`` and systemd do, and follow its log."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

LISTENING = re.compile(r"listening for mail on ([\d.]+):(\d+)")


class BridgeProcess:
    """``python -m bridge --config FILE serve`` with its log lines collected as they come."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.port = 0
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start the process and wait until it listens; return the SMTP port."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "--config",
            str(self.config),
            "serve",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read())
        line = await self.wait_for_line(LISTENING)
        match = LISTENING.search(line)
        assert match is not None
        self.port = int(match.group(2))
        return self.port

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            async with self._changed:
                if raw:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                else:
                    self.lines.append("<eof>")
                self._changed.notify_all()
            if not raw:
                return

    async def wait_for_line(self, pattern: re.Pattern[str] | str, count: int = 1, timeout: float = 60) -> str:
        """Wait until ``count`` log lines match ``pattern``; return the last one."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> list[str]:
            return [line for line in self.lines if regex.search(line)]

        async def wait() -> str:
            async with self._changed:
                await self._changed.wait_for(lambda: len(found()) >= count or "<eof>" in self.lines)
            hits = found()
            if len(hits) < count:
                raise AssertionError(f"process ended before {count}× {regex.pattern!r}:\n" + "\n".join(self.lines))
            return hits[-1]

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {count}× {regex.pattern!r} within {timeout}s:\n" + "\n".join(self.lines)
            ) from None

    def matching(self, pattern: str) -> list[str]:
        """Log lines seen so far that match ``pattern``."""
        regex = re.compile(pattern)
        return [line for line in self.lines if regex.search(line)]

    async def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code."""
        return await self._signal(signal.SIGTERM, timeout)

    async def kill(self) -> int:
        """SIGKILL: the process gets no chance to clean up."""
        return await self._signal(signal.SIGKILL, 30)

    async def _signal(self, sig: signal.Signals, timeout: float) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return code
