"""The baseline for bench/ingest.py: the least a durable Python SMTP server can do per message.

A bare ``aiosmtpd.smtp.SMTP`` protocol on ``loop.create_server`` (no ``Controller`` thread, ``decode_data``
off, as in the anchors of shared/docs/performance.md §1.1) whose DATA handler writes
``envelope.original_content`` to a new file (``O_CREAT|O_EXCL``), fsyncs it, closes it, fsyncs the spool
directory, and only then answers ``250``. That is the same promise faxbridge makes (the message is on disk
before the ``250``) without parsing, authorization, a database, or jobs.

Prints ``bare-smtp listening on HOST:PORT`` once bound (port 0 picks a free port) and runs until SIGTERM or
SIGINT. Started and stopped by bench/ingest.py and bench/pipeline.py; not meant to be used alone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class FsyncHandler:
    """Write each message to its own file and fsync it and the directory before answering ``250``."""

    def __init__(self, spool: Path) -> None:
        self._spool = spool
        self._dir_fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY)
        self._serial = itertools.count()
        self._prefix = f"{os.getpid()}-"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message durably, then accept it."""
        data = envelope.original_content or b""
        path = self._spool / f"{self._prefix}{next(self._serial)}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(self._dir_fd)
        return "250 2.0.0 Ok: queued"

    def close(self) -> None:
        """Close the directory handle."""
        os.close(self._dir_fd)


async def serve(spool: Path, host: str, max_size: int) -> None:
    """Listen on ``host`` (port 0) until SIGTERM or SIGINT."""
    handler = FsyncHandler(spool)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=max_size, hostname="bare.localhost", ident="bare-smtp"),
        host=host,
        port=0,
    )
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(f"bare-smtp listening on {bound_host}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        handler.close()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spool", type=Path, required=True, help="directory for the message files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-size", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    args.spool.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.spool, args.host, args.max_size))


if __name__ == "__main__":
    main()
