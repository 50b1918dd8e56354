"""Submissions per second to each provider's fake over loopback: the adapter against a bare httpx client.

For every provider with a fake, the fake runs as ``faxbridge fake-provider NAME`` in its own process pinned
to CPU 1; this process, pinned to CPU 0, submits one-page faxes through the real adapter
(``FaxProvider.send``, with its token handling, body building and response parsing). The baseline, in the same
run and alternating with it, is a bare ``httpx.AsyncClient`` posting the very request the adapter made (same
method, path, headers and body, captured from the adapter's own traffic) to the same fake. The ratio
adapter ÷ bare is the share of the HTTP round trip that reaches faxes after the adapter's own work; the aim
is ≥ 0.8.

Run: ``.venv/bin/python bench/submit.py [--faxes 200] [--rounds 3] [--concurrency 8] [--providers a,b]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import can_pin, machine_description, pin_client, server_argv, table  # noqa: E402
from bridge.fakes import available  # noqa: E402
from bridge.models import OutboundFax  # noqa: E402
from bridge.providers import build_provider  # noqa: E402
from tests.integration.test_providers_e2e import harness_class, pointed_at  # noqa: E402
from tests.providers.contract import one_page_pdf  # noqa: E402


@dataclass
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


@dataclass
class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to the network and keeps a copy of each (for the bare client to replay)."""

    inner: httpx.AsyncBaseTransport
    seen: list[Recorded] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        self.seen.append(Recorded(request.method, str(request.url), dict(request.headers), content))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_fake(name: str, port: int, options: dict[str, Any]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bridge", "fake-provider", name, "--port", str(port)]
    argv += [f"--option={key}={json.dumps(value)}" for key, value in options.items()]
    argv = server_argv(argv)
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    process.stdout.readline()  # the fake's one line: it is about to listen
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"the {name} fake did not start")


def fax(number: int, document: bytes) -> OutboundFax:
    return OutboundFax(
        job_id=f"01BENCH{number:011d}",
        to="+4930123456",
        document=document,
        pages=1,
        sender="bench@example.com",
        account="demo",
        subject="bench",
    )


async def run_adapter(provider: Any, count: int, concurrency: int, document: bytes, offset: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with slots:
            await provider.send(fax(offset + n, document))

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - started)


_REPLAYED = itertools.count(1)


async def run_bare(client: httpx.AsyncClient, request: Recorded, job_id: str, count: int, concurrency: int) -> float:
    """Post the adapter's request ``count`` times; each copy carries a fresh job id of the same length (APIs
    that refuse a reference they have seen, as Retarus does, would answer 409), made before the clock starts."""
    slots = asyncio.Semaphore(concurrency)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "host")}
    old = job_id.encode()
    bodies = [request.content.replace(old, f"01REPLAY{next(_REPLAYED):010d}".encode()) for _ in range(count)]

    async def one(body: bytes) -> None:
        async with slots:
            response = await client.request(request.method, request.url, headers=headers, content=body)
            if response.status_code >= 400:
                raise RuntimeError(f"the bare client got HTTP {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(one(body) for body in bodies))
    return count / (time.perf_counter() - started)


async def bench_provider(name: str, args: argparse.Namespace, tmp: Path) -> list[str]:
    port = free_port()
    harness = harness_class(name)(tmp)
    process = start_fake(name, port, harness.fake_options())
    url = f"http://127.0.0.1:{port}"
    try:
        section = pointed_at(harness.section(), url)
        section["timeouts"] = {"connect": 5, "read": 30, "write": 30, "pool": 30}
        recorder = RecordingTransport(httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100)))
        provider = build_provider(name, section, tmp, extra={"transport": recorder})
        document = one_page_pdf("Bench fax")
        await run_adapter(provider, 10, args.concurrency, document, 0)  # warm-up: tokens, connections
        sends = [r for r in recorder.seen if r.url.split("?")[0].rstrip("/").endswith(harness.send_path.rstrip("/"))]
        if not sends:
            sends = [r for r in recorder.seen if harness.send_path in r.url]
        request = sends[-1]
        job_id = fax(9, document).job_id  # the last warm-up fax, whose request is replayed
        adapter_rates: list[float] = []
        bare_rates: list[float] = []
        ratios: list[float] = []
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as bare:
            await run_bare(bare, request, job_id, 10, args.concurrency)
            offset = 1000
            for round_ in range(args.rounds):
                first_adapter = round_ % 2 == 0
                a = b = 0.0
                for which in ("adapter", "bare") if first_adapter else ("bare", "adapter"):
                    if which == "adapter":
                        a = await run_adapter(provider, args.faxes, args.concurrency, document, offset)
                        offset += args.faxes
                    else:
                        b = await run_bare(bare, request, job_id, args.faxes, args.concurrency)
                adapter_rates.append(a)
                bare_rates.append(b)
                ratios.append(a / b)
                print(f"  {name} round {round_ + 1}: adapter {a:.0f}/s, bare {b:.0f}/s, ratio {a / b:.2f}", flush=True)
        await provider.aclose()
        return [
            name,
            f"{statistics.median(adapter_rates):.0f} ({min(adapter_rates):.0f}–{max(adapter_rates):.0f})",
            f"{statistics.median(bare_rates):.0f} ({min(bare_rates):.0f}–{max(bare_rates):.0f})",
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})",
            "met" if statistics.median(ratios) >= 0.8 else "MISSED",
        ]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def main_async(args: argparse.Namespace) -> None:
    import tempfile

    names = args.providers.split(",") if args.providers else available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(await bench_provider(name, args, Path(tmp)))
    print()
    print(f"submissions/s over loopback, {args.faxes} one-page faxes a round, {args.concurrency} at a time")
    print(table(["provider", "adapter /s", "bare httpx /s", "ratio", "aim ≥ 0.8"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--providers", default="", help="comma-separated; default: every provider with a fake")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(REPO))
    for line in machine_description():
        print(line)
    if can_pin():
        pin_client()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
