"""Serving an ASGI app with uvicorn inside an event loop that is already running.

Used by the bridge's HTTP endpoint and by the provider fakes (``faxbridge fake-provider``, and the tests
that serve a fake on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

__all__ = ["RunningServer", "start_server"]


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM and SIGINT belong to the program that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A server listening in this loop: where, how to stop it, and the task that ends when it stops."""

    address: tuple[str, int]
    stop: Callable[[], Awaitable[None]]
    task: asyncio.Task[None]


async def start_server(app: Any, host: str, port: int, *, own_signals: bool = False) -> RunningServer:
    """Start serving ``app`` on ``host``:``port`` (0: any free port) and return once it listens.

    ``own_signals`` lets uvicorn handle Ctrl-C and SIGTERM itself (a program that is only this server);
    otherwise the embedding program keeps them.

    Raises:
        OSError: the address cannot be bound.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config) if own_signals else _QuietServer(config)
    task = asyncio.create_task(server.serve(), name=f"http {host}:{port}")
    # uvicorn offers no event for "listening"; it sets a flag, or ends the task when binding failed.
    while not server.started:
        if task.done():
            await task
            raise OSError(f"cannot listen on {host}:{port}")
        await asyncio.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()

    async def stop() -> None:
        server.should_exit = True
        await task

    return RunningServer((str(bound[0]), int(bound[1])), stop, task)
