"""The whole outbound pipeline: SMTP → commit → convert → submit to the local provider's outbox.

Part 1, throughput and latency. ``--faxes`` (500) one-page text faxes (2 KB mails) are sent over
``--sessions`` (10) concurrent SMTP sessions to ``python -m bridge --config <tmp> serve`` (config/faxbridge.toml
with its state in a temporary directory; the ``local`` provider writes ``outbox/<job-id>.pdf`` and a JSON
sidecar with ``submitted_at``, fsyncing both, and a notice goes to the Maildir). Reported per round:

* faxes/s: faxes ÷ (first SMTP connect → the last ``submitted_at`` in the outbox sidecars);
* p50/p95/max from the ``250`` the client got to that fax's ``submitted_at`` (client and bridge share the clock);
* the bridge's CPU time per fax (from ``/proc/<pid>/stat``, until every notice was written).

With 10 sessions the SMTP intake outruns the worker, so the 250→submitted times are mostly queueing behind
earlier faxes. Each round therefore also sends ``--light-faxes`` (50) faxes one at a time, each only after
the previous one's notice was written: its 250→submitted times are what one fax takes on an idle bridge.

Baseline, same run, alternating with the bridge: bench/_convert_loop.py converts the very same message with
``bridge.converters.convert_message`` ``--faxes`` times in a loop, on the same core. Conversion is the only
work a fax cannot do without, so ``bridge faxes/s ÷ conversions/s`` is the share of the core left to faxes
after everything else the bridge does per fax (SMTP, about ten SQLite commits with fsync, the provider's
fsyncs, the notice, logging). A bare SMTP sink would say less: it does none of the fax's work. Target:
≥ 50 faxes/s on the 2-core benchmark machine.

Part 2, memory. A fresh bridge (``smtp.max_message_size`` raised to 40 MiB) is warmed up with two small faxes,
its peak RSS is reset (``/proc/<pid>/clear_refs``), and it is sent one ``--rss-size`` (25 MiB) mail: a short
text and a base64 PDF of 10 noise-image pages (about 19 MB). ``VmHWM`` (peak RSS) is read from
``/proc/<pid>/status`` right after the ``250`` (intake only: the worker starts at once, so the same is also
measured on the intake-only bridge of worker.enabled = false) and after the fax's notice (conversion
and submission included). Target: peak − idle ≤ 4 × the message size. Baseline, same run: the bare
aiosmtpd + fsync server of bench/_bare_smtp.py taking the same message (aiosmtpd's own share).

Run: ``.venv/bin/python bench/pipeline.py`` (about 1.5 minutes); ``--faxes 200 --rounds 5``,
``--skip-memory`` or ``--skip-throughput`` for parts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from _common import (
    BENCH,
    KIB,
    MIB,
    LoadResult,
    ServerProcess,
    Servers,
    TestMail,
    machine_description,
    outbox_dir,
    pdf_mail,
    percentile,
    pin_client,
    run_load,
    send_one,
    server_argv,
    spread,
    start_bare,
    start_bridge,
    table,
    text_mail,
    write_bridge_config,
)

TARGET_FAXES_PER_S = 50.0
TARGET_RSS_FACTOR = 4.0


@dataclass
class BridgeRound:
    """One round of the pipeline through the bridge."""

    faxes: int
    faxes_per_s: float
    smtp_per_s: float
    to_submit_ms: list[float]
    cpu_ms_per_fax: float
    failures: int
    pages: set[int]


@dataclass
class ConvertRound:
    """One round of the conversion-only loop."""

    count: int
    per_s: float


def _job_id(reply: str) -> str:
    # "250 2.0.0 Ok: queued as <job id>" with one recipient.
    return reply.rsplit(" ", 1)[-1].strip()


async def _paced(bridge: ServerProcess, mail: TestMail, *, faxes: int, timeout: float) -> LoadResult:
    """One fax at a time: the next is sent only once the previous one's notice was written."""
    load = LoadResult()
    notices = bridge.counts["notice"]
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        for index in range(faxes):
            load.sent.append(await send_one(bridge.host, bridge.port, mail.header(index), mail.body))
            notices += 1
            await bridge.wait_count("notice", notices, timeout)
    load.elapsed = time.perf_counter() - started
    return load


async def bridge_round(
    bridge: ServerProcess,
    outbox: Path,
    mail: TestMail,
    *,
    faxes: int,
    sessions: int,
    timeout: float,
    paced: bool = False,
) -> BridgeRound:
    """Send ``faxes`` mails, wait until every one is submitted and noticed, read the sidecars.

    ``paced``: one session, each fax sent after the previous one was finished (an idle bridge's latency).
    """
    submitted_before = bridge.counts["submitted"]
    notices_before = bridge.counts["notice"]
    cpu_before = bridge.cpu_seconds()
    started_wall = time.time()
    if paced:
        load = await _paced(bridge, mail, faxes=faxes, timeout=timeout)
    else:
        load = await run_load(bridge.host, bridge.port, mail, count=faxes, sessions=sessions, timeout=timeout)
    await bridge.wait_count("submitted", submitted_before + len(load.sent), timeout)
    await bridge.wait_count("notice", notices_before + len(load.sent), timeout)
    cpu = bridge.cpu_seconds() - cpu_before
    delays = []
    last_submit = started_wall
    pages = set()
    for sent in load.sent:
        record = json.loads((outbox / f"{_job_id(sent.reply)}.json").read_text())
        submitted = datetime.fromisoformat(record["submitted_at"]).timestamp()
        pages.add(int(record["pages"]))
        last_submit = max(last_submit, submitted)
        delays.append((submitted - sent.accepted_at) * 1000)
    elapsed = last_submit - started_wall
    return BridgeRound(
        faxes=len(load.sent),
        faxes_per_s=len(load.sent) / elapsed if elapsed > 0 else float("nan"),
        smtp_per_s=load.rate,
        to_submit_ms=delays,
        cpu_ms_per_fax=1000 * cpu / max(1, len(load.sent)),
        failures=len(load.failures),
        pages=pages,
    )


async def convert_round(message: Path, *, count: int, timeout: float) -> ConvertRound:
    """Run bench/_convert_loop.py on CPU 1 and read its JSON line; kill it after ``timeout`` seconds."""
    argv = server_argv(
        [
            sys.executable,
            str(BENCH / "_convert_loop.py"),
            "--message",
            str(message),
            "--count",
            str(count),
            "--max-seconds",
            str(timeout),
        ]
    )
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the conversion loop failed ({proc.returncode}): {err.decode(errors='replace')}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return ConvertRound(count=int(result["count"]), per_s=result["count"] / result["elapsed"])


async def throughput(args: argparse.Namespace, workdir: Path) -> None:
    """Part 1: alternate bridge rounds and conversion-loop rounds; print the table."""
    mail = text_mail(2 * KIB, "template", subject="bench one-page fax")
    message_file = workdir / "one-page.eml"
    message_file.write_bytes(mail.header(0) + mail.body)
    config = write_bridge_config(workdir / "pipeline")
    outbox = outbox_dir(workdir / "pipeline")
    bridge_rounds: list[BridgeRound] = []
    light_rounds: list[BridgeRound] = []
    convert_rounds: list[ConvertRound] = []
    async with Servers() as stack:
        bridge = await stack.add(await start_bridge(config))
        print(f"bridge pid {bridge.proc.pid} port {bridge.port}")
        warm = await bridge_round(
            bridge, outbox, mail.retag("warmup"), faxes=args.warmup_faxes, sessions=args.sessions, timeout=args.timeout
        )
        print(f"warm-up: bridge {warm.faxes_per_s:.1f} faxes/s", flush=True)
        await convert_round(message_file, count=args.warmup_faxes, timeout=args.timeout)
        for round_no in range(args.rounds):
            steps = ["bridge", "light", "convert"] if round_no % 2 == 0 else ["convert", "light", "bridge"]
            line = []
            for step in steps:
                if step == "convert":
                    converted = await convert_round(message_file, count=args.faxes, timeout=args.timeout)
                    convert_rounds.append(converted)
                    line.append(f"convert-only {converted.per_s:.1f}/s")
                    continue
                light = step == "light"
                result = await bridge_round(
                    bridge,
                    outbox,
                    mail.retag(uuid.uuid4().hex[:12]),
                    faxes=args.light_faxes if light else args.faxes,
                    sessions=1 if light else args.sessions,
                    timeout=args.timeout,
                    paced=light,
                )
                (light_rounds if light else bridge_rounds).append(result)
                line.append(f"bridge{' one at a time' if light else ''} {result.faxes_per_s:.1f} faxes/s")
            print(f"round {round_no + 1}/{args.rounds}: {', '.join(line)}", flush=True)
        problems = bridge.problems[:5]
    ratios = [b.faxes_per_s / c.per_s for b, c in zip(bridge_rounds, convert_rounds, strict=True)]
    light_ratios = [b.faxes_per_s / c.per_s for b, c in zip(light_rounds, convert_rounds, strict=True)]
    pages = sorted(set().union(*(r.pages for r in bridge_rounds + light_rounds)))
    rows = [
        _bridge_row(f"bridge, {args.sessions} sessions × {args.faxes} faxes", bridge_rounds, ratios),
        _bridge_row(f"bridge, one at a time × {args.light_faxes} faxes", light_rounds, light_ratios),
        [
            "convert_message only (same core)",
            spread([c.per_s for c in convert_rounds], "{:.1f}"),
            "—",
            "—",
            "—",
            "—",
            spread([1000 / c.per_s for c in convert_rounds], "{:.1f}"),
            "1",
        ],
    ]
    header = [
        "pipeline",
        "faxes/s median (min–max)",
        "SMTP msg/s",
        "250→submitted p50 ms",
        "p95 ms",
        "max ms",
        "CPU ms/fax",
        "ratio vs convert-only",
    ]
    print()
    print(f"one-page faxes (pages per fax seen: {pages}), {args.rounds} rounds")
    print(table(header, rows))
    median_rate = statistics.median(r.faxes_per_s for r in bridge_rounds)
    verdict = "met" if median_rate >= TARGET_FAXES_PER_S else f"MISSED by {1 - median_rate / TARGET_FAXES_PER_S:.0%}"
    print(f"target ≥ {TARGET_FAXES_PER_S:.0f} faxes/s: {verdict} ({median_rate:.1f})")
    print(
        "faxes/s: first connect → last submitted_at; 250→submitted: per fax, all rounds pooled (with many "
        "sessions it is mostly time queued behind earlier faxes); CPU: the bridge's, until every notice was written"
    )
    failures = sum(r.failures for r in bridge_rounds + light_rounds)
    if failures or problems:
        print(f"problems: {failures} failed SMTP deliveries; bridge log: {problems}")


def _bridge_row(label: str, rounds: list[BridgeRound], ratios: list[float]) -> list[str]:
    delays = [d for r in rounds for d in r.to_submit_ms]
    return [
        label,
        spread([r.faxes_per_s for r in rounds], "{:.1f}"),
        spread([r.smtp_per_s for r in rounds], "{:.0f}"),
        f"{percentile(delays, 50):.0f}",
        f"{percentile(delays, 95):.0f}",
        f"{max(delays):.0f}" if delays else "n/a",
        spread([r.cpu_ms_per_fax for r in rounds], "{:.1f}"),
        spread(ratios, "{:.2f}"),
    ]


@dataclass
class MemoryRow:
    """Peak RSS around one big message."""

    label: str
    idle_kib: int
    peak_kib: int
    after_kib: int
    latency_s: float


async def memory_case(workdir: Path, big: TestMail, small: list[TestMail], *, intake_only: bool) -> list[MemoryRow]:
    """Idle RSS after a warm-up, then the peak while one big message is taken (and, with the worker, faxed)."""
    name = "intake" if intake_only else "bridge"
    config = write_bridge_config(workdir / f"memory-{name}", max_message_size=40 * MIB)
    rows = []
    async with Servers() as stack:
        bridge = await stack.add(await start_bridge(config, name=name, intake_only=intake_only))
        for index, mail in enumerate(small):
            await send_one(bridge.host, bridge.port, mail.header(index), mail.body)
        if not intake_only:
            await bridge.wait_count("notice", len(small), 120)
        idle = bridge.memory_kib()["VmRSS"]
        if not bridge.reset_peak():
            print("warning: cannot reset VmHWM; the peak includes start-up and warm-up")
        sent = await send_one(bridge.host, bridge.port, big.header(0), big.body)
        at_250 = bridge.memory_kib()
        label = "intake only (worker idle), until the 250" if intake_only else "full bridge, until the 250"
        rows.append(MemoryRow(label, idle, at_250["VmHWM"], at_250["VmRSS"], sent.latency))
        if not intake_only:
            started = time.perf_counter()
            await bridge.wait_count("notice", len(small) + 1, 300)
            done = bridge.memory_kib()
            rows.append(
                MemoryRow(
                    "full bridge, until the fax is submitted and noticed",
                    idle,
                    done["VmHWM"],
                    done["VmRSS"],
                    sent.latency + time.perf_counter() - started,
                )
            )
    return rows


async def memory_bare(workdir: Path, big: TestMail, small: list[TestMail]) -> MemoryRow:
    """The same measurement on the bare aiosmtpd + fsync server: what aiosmtpd itself needs for the message."""
    async with Servers() as stack:
        bare = await stack.add(await start_bare(workdir / "memory-bare-spool"))
        for index, mail in enumerate(small):
            await send_one(bare.host, bare.port, mail.header(index), mail.body)
        idle = bare.memory_kib()["VmRSS"]
        bare.reset_peak()
        sent = await send_one(bare.host, bare.port, big.header(0), big.body)
        at_250 = bare.memory_kib()
    label = "baseline: bare aiosmtpd + fsync, until the 250"
    return MemoryRow(label, idle, at_250["VmHWM"], at_250["VmRSS"], sent.latency)


async def memory(args: argparse.Namespace, workdir: Path) -> None:
    """Part 2: peak RSS for one big message: bare aiosmtpd, the intake-only bridge, the full bridge."""
    big = pdf_mail(args.rss_size, "big", pdf_pages=10, subject="bench big fax")
    small = [text_mail(2 * KIB, "warm-text"), pdf_mail(200 * KIB, "warm-pdf")]
    rows = [await memory_bare(workdir, big, small)]
    for intake_only in (True, False):
        rows.extend(await memory_case(workdir, big, small, intake_only=intake_only))
    size_mib = args.rss_size / MIB
    out = []
    for row in rows:
        delta = (row.peak_kib - row.idle_kib) / KIB
        out.append(
            [
                row.label,
                f"{row.idle_kib / KIB:.0f}",
                f"{row.peak_kib / KIB:.0f}",
                f"{delta:.0f}",
                f"{delta / size_mib:.1f}×",
                f"{row.after_kib / KIB:.0f}",
                f"{row.latency_s:.2f}",
            ]
        )
    print()
    print(f"one {size_mib:.0f} MiB mail ({args.rss_size} bytes: text + base64 PDF of 10 noise-image pages)")
    header = ["process", "idle RSS MiB", "peak RSS MiB", "delta MiB", "delta / message", "RSS after MiB", "s"]
    print(table(header, out))
    for row in rows[1:]:
        factor = (row.peak_kib - row.idle_kib) / KIB / size_mib
        verdict = "met" if factor <= TARGET_RSS_FACTOR else f"MISSED by {factor / TARGET_RSS_FACTOR - 1:.0%}"
        print(f"{row.label}: peak − idle = {factor:.1f}× message size, target ≤ {TARGET_RSS_FACTOR:.0f}×: {verdict}")
    print("idle RSS: after start-up and two small faxes; s: connect → 250 (first rows), → notice (last row)")


async def main_async(args: argparse.Namespace) -> int:
    """Run the parts within ``--max-seconds``."""
    pin_client()
    print("\n".join(["# faxbridge pipeline benchmark", *machine_description()]))
    with tempfile.TemporaryDirectory(prefix="faxbridge-bench-pipeline-", dir=args.tmp) as tmp:
        try:
            async with asyncio.timeout(args.max_seconds):
                if not args.skip_throughput:
                    await throughput(args, Path(tmp))
                if not args.skip_memory:
                    await memory(args, Path(tmp))
        except TimeoutError:
            print(f"stopped: --max-seconds {args.max_seconds:.0f} reached", file=sys.stderr)
            return 1
    return 0


def main() -> int:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description="faxbridge end to end: SMTP to the local provider's outbox.")
    parser.add_argument("--faxes", type=int, default=500, help="faxes per round (default 500)")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent SMTP sessions (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--light-faxes", type=int, default=50, help="faxes per round sent one at a time (default 50)")
    parser.add_argument("--warmup-faxes", type=int, default=100, help="faxes in the warm-up round (default 100)")
    parser.add_argument("--rss-size", type=int, default=25 * MIB, help="size of the big mail in bytes (25 MiB)")
    parser.add_argument("--skip-throughput", action="store_true", help="only measure memory")
    parser.add_argument("--skip-memory", action="store_true", help="only measure throughput")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed for one round (default 180)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="give up after this long (default 900)")
    parser.add_argument("--tmp", default=None, help="directory for the temporary state (default: the system's)")
    args = parser.parse_args()
    if min(args.faxes, args.rounds, args.warmup_faxes, args.light_faxes) < 1:
        parser.error("--faxes, --rounds, --warmup-faxes and --light-faxes must be at least 1")
    if args.rss_size > 38 * MIB:
        parser.error("--rss-size must stay below the 40 MiB message size limit of the benchmark configuration")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
