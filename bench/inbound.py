"""Incoming faxes to email: time from a fax appearing at the provider to the mail relay's ``250``.

The iFax fake (served on loopback by uvicorn) holds the faxes, the real bridge (in this process, its own
event loop, SQLite in a temporary directory) delivers them, and a real aiosmtpd on loopback stands in for the
relay and notes when each mail arrived. Two modes, 200 faxes each by default:

* **webhook**: each fax is announced by the provider's webhook posted to the bridge's HTTP endpoint the moment
  it appears; aim p95 < 1 s;
* **polling**: the bridge finds the faxes on its timer (``inbound.poll_seconds``); aim p95 < interval + 1 s.

Faxes appear at ``--rate`` per second (default 10: a busy office line is a fax every few seconds), or all at
once with ``--rate 0``, which measures a backlog: the last fax then waits for the 199 before it.

Run: ``.venv/bin/python bench/inbound.py [--faxes 200] [--rate 10] [--poll-seconds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import machine_description, table  # noqa: E402
from bridge.app import Bridge  # noqa: E402
from bridge.fakes.base import start  # noqa: E402
from bridge.settings import load_settings  # noqa: E402
from tests.conftest import default_config, dump_toml  # noqa: E402
from tests.fakes.smtp import start_sink  # noqa: E402
from tests.integration.test_providers_e2e import harness_class, pointed_at  # noqa: E402

SECRET = "bench-webhook-secret-0123456789"


def fax_pdf() -> bytes:
    from PIL import Image, ImageDraw

    page = Image.new("1", (1728, 2292), 1)
    ImageDraw.Draw(page).rectangle((100, 100, 1628, 400), outline=0, width=8)
    out = io.BytesIO()
    page.save(out, "PDF", resolution=204.0)
    return out.getvalue()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def run(mode: str, args: argparse.Namespace, workdir: Path) -> list[str]:
    state_dir = workdir / mode
    state_dir.mkdir()
    harness = harness_class("ifax")(state_dir)
    url, stop_fake = await start(harness.fake)
    async with start_sink() as sink:
        data = default_config()
        data["state_dir"] = str(state_dir)
        data["smtp"]["listen_port"] = 0
        data["mail"] = {
            "from_address": "faxbridge@fax.localhost",
            "relay": {"host": sink.host, "port": sink.port, "starttls": "never", "timeout": 30},
        }
        data["providers"] = {"ifax": pointed_at(harness.section(), url)}
        data["accounts"] = [
            {"name": "demo", "provider": "ifax", "country": "DE", "allowed_senders": ["demo@example.com"]}
        ]
        data["http"] = {"enabled": True, "listen_port": 0, "webhook_secret": SECRET}
        data["inbound"] = {
            "enabled": True,
            "poll_seconds": 3600 if mode == "webhook" else args.poll_seconds,
            "routes": [{"number": "*", "destinations": [{"address": "frontdesk@example.com"}]}],
        }
        config = state_dir / "faxbridge.toml"
        config.write_text(dump_toml(data))
        bridge = Bridge(load_settings(config))
        await bridge.start()
        try:
            assert bridge.http_address is not None
            document = fax_pdf()
            appeared: dict[str, float] = {}
            base = "http://{}:{}".format(*bridge.http_address)
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                if mode == "webhook":

                    async def announce(n: int) -> None:
                        fax = harness.fake.state.inject_inbound(document, f"+3120{n:07d}", "+4930999000")
                        call = harness.fake.state.webhooks[-1]
                        appeared[str(fax.job_id)] = time.perf_counter()
                        response = await client.post(
                            f"/webhooks/ifax/{SECRET}", content=call.body, headers=call.headers
                        )
                        response.raise_for_status()

                    tasks = []
                    for n in range(args.faxes):
                        tasks.append(asyncio.create_task(announce(n)))
                        if args.rate > 0:
                            await asyncio.sleep(1 / args.rate)  # the arrival schedule itself
                    await asyncio.gather(*tasks)
                else:
                    for n in range(args.faxes):
                        fax = harness.fake.state.inject_inbound(document, f"+3120{n:07d}", "+4930999000")
                        appeared[str(fax.job_id)] = time.perf_counter()
                        if args.rate > 0:
                            await asyncio.sleep(1 / args.rate)
            with contextlib.suppress(TimeoutError):
                await sink.wait_for(args.faxes, timeout=120)
            arrived = {
                str(m.message.get("X-Faxbridge-Fax", "")).split(":", 1)[-1]: m.received_at for m in sink.messages
            }
        finally:
            await bridge.stop()
            await stop_fake()
    latencies = [arrived[key] - appeared[key] for key in appeared if key in arrived]
    missing = args.faxes - len(latencies)
    aim = 1.0 if mode == "webhook" else args.poll_seconds + 1.0
    p95 = percentile(latencies, 95) if latencies else float("inf")
    return [
        mode,
        str(len(latencies)) + (f" ({missing} missing)" if missing else ""),
        f"{statistics.median(latencies) * 1000:.0f}" if latencies else "-",
        f"{p95 * 1000:.0f}",
        f"{max(latencies) * 1000:.0f}" if latencies else "-",
        f"< {aim:g} s: {'met' if p95 < aim and not missing else 'MISSED'}",
    ]


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("webhook", "polling"):
            rows.append(await run(mode, args, Path(tmp)))
    arrival = f"{args.rate:g} a second" if args.rate > 0 else "all at once"
    print(f"incoming faxes to the relay's 250: {args.faxes} faxes arriving {arrival},", end=" ")
    print(f"polling every {args.poll_seconds:g} s")
    print(table(["mode", "mailed", "p50 ms", "p95 ms", "max ms", "aim p95"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=200)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10.0, help="faxes appearing per second; 0: all at once")
    args = parser.parse_args()
    for line in machine_description():
        print(line)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
