"""SMTP ingest: how fast faxbridge says ``250`` to mail, compared with a bare durable aiosmtpd server.

What is measured, per cell (message size × concurrent sessions), one TCP connection per message as a
sending MTA would do it (EHLO, MAIL, RCPT, DATA, QUIT; no pipelining):

* messages/s over the whole run (first connect to last QUIT);
* p50 and p99 of the time from ``connect()`` to the ``250`` after the final dot (all timed rounds pooled);
* the server's CPU time per message (from ``/proc/<pid>/stat``), which shows whether its one core is the limit;
* the ratio bridge / bare of messages/s, taken within each round (the two ran back to back) — the figure to
  compare with the targets: ≥ 0.8 at 200 KB, ≥ 0.5 at 2 KB, and ideally ≥ 1.0 at 20 sessions.

The servers, each in its own process on CPU 1 (this client runs on CPU 0):

``bare``
    bench/_bare_smtp.py: aiosmtpd, the message written to a new file, fsync of the file and the directory,
    then ``250``. The floor of "durable before 250" in Python.
``bridge``
    ``python -m bridge --config <tmp> serve`` with config/faxbridge.toml's settings (SQLite in WAL mode with
    ``synchronous=FULL``, batch commits, INFO logging), except state in a temporary directory and port 0.
    Its worker runs too and converts and "submits" every accepted job on the same core while the load runs;
    after each of its runs the benchmark waits until every job has its notice sent, so that the backlog does
    not slow down the next measurement.
``intake``
    The same bridge with its worker turned off (``FAXBRIDGE_WORKER__ENABLED=false``): the intake alone.

Rounds: one warm-up round, then ``--rounds`` timed rounds; in every round every cell runs on every server,
in an order that rotates from round to round. Reported: median (min–max) over the timed rounds.

Messages are exact-size copies differing only in their ``Message-ID``: 2 KB is a plain-text mail (one fax
page); larger sizes are a short text plus a base64 PDF attachment (one page holding a noise image, like a
scan). Sender ``demo@example.com``, recipient ``+4930123456@fax.localhost``, both accepted by the shipped
``demo`` account.

Run: ``.venv/bin/python bench/ingest.py`` (about 3 minutes), or for instance
``.venv/bin/python bench/ingest.py --sizes 2k --sessions 20 --messages 1000 --rounds 5 --servers bare,intake``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from _common import (
    KIB,
    MIB,
    LoadResult,
    ServerProcess,
    Servers,
    TestMail,
    machine_description,
    pdf_mail,
    percentile,
    pin_client,
    run_load,
    spread,
    start_bare,
    start_bridge,
    table,
    text_mail,
    write_bridge_config,
)

SERVER_NAMES = ("bare", "bridge", "intake")
TARGETS = {2 * KIB: 0.5, 200 * KIB: 0.8}
"""Minimum bridge/bare throughput ratio per message size, from the issue."""
STRETCH_SESSIONS = 20
"""At this many sessions the batched commit should let the bridge reach the bare server (ratio ≥ 1.0)."""


def parse_size(text: str) -> int:
    """``2k`` → 2048, ``200k`` → 204800, ``1m`` → 1048576, ``512`` → 512."""
    text = text.strip().lower()
    factor = {"k": KIB, "m": MIB}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def size_label(size: int) -> str:
    """2048 → ``2 KB``, 204800 → ``200 KB``."""
    if size % MIB == 0:
        return f"{size // MIB} MB"
    return f"{size / KIB:g} KB"


def default_messages(size: int) -> int:
    """Messages per run: enough for a stable p99 yet ~1–3 s per run (the default total stays ≈ 3 min)."""
    return 300 if size <= 16 * KIB else 100


@dataclass
class Run:
    """One load run of one server in one cell and round."""

    round: int
    size: int
    sessions: int
    server: str
    load: LoadResult
    cpu: float
    drain: float | None


def make_mail(size: int, tag: str) -> TestMail:
    """A plain-text mail up to 16 KB, a text + PDF attachment mail above."""
    return text_mail(size, tag) if size <= 16 * KIB else pdf_mail(size, tag)


async def measure(
    server: ServerProcess, mail: TestMail, *, messages: int, sessions: int, timeout: float, drains: bool
) -> tuple[LoadResult, float, float | None]:
    """One load run; for a bridge whose worker runs, also wait until every accepted job got its notice."""
    notices_before = server.counts["notice"]
    cpu_before = server.cpu_seconds()
    load = await run_load(server.host, server.port, mail, count=messages, sessions=sessions, timeout=timeout)
    cpu = server.cpu_seconds() - cpu_before
    drain = None
    if drains:
        started = time.perf_counter()
        await server.wait_count("notice", notices_before + len(load.sent), timeout)
        drain = time.perf_counter() - started
    return load, cpu, drain


def check_replies(run: Run) -> list[str]:
    """A bridge must answer every message with ``250 … queued as``, never ``already queued`` (dedupe)."""
    if run.server == "bare":
        return []
    bad = [s.reply for s in run.load.sent if "Ok: queued as" not in s.reply]
    return [f"{run.server}: unexpected reply {bad[0]!r} ({len(bad)} times)"] if bad else []


def report(runs: list[Run], sizes: list[int], sessions_list: list[int], servers: list[str]) -> tuple[str, list[str]]:
    """The result table and the verdicts against the targets."""
    by_cell: dict[tuple[int, int, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_cell[(run.size, run.sessions, run.server)].append(run)
    rows = []
    verdicts = []
    for size in sizes:
        for sessions in sessions_list:
            bare_runs = {run.round: run for run in by_cell.get((size, sessions, "bare"), [])}
            for name in servers:
                cell = by_cell.get((size, sessions, name), [])
                if not cell:
                    continue
                rates = [run.load.rate for run in cell]
                latencies = [s.latency * 1000 for run in cell for s in run.load.sent]
                sent = sum(len(run.load.sent) for run in cell)
                cpu_ms = 1000 * sum(run.cpu for run in cell) / sent if sent else float("nan")
                failures = sum(len(run.load.failures) for run in cell)
                ratios = [
                    run.load.rate / bare_runs[run.round].load.rate
                    for run in cell
                    if run.round in bare_runs and bare_runs[run.round].load.rate > 0
                ]
                drains = [run.drain for run in cell if run.drain is not None]
                ratio = "—" if name == "bare" else spread(ratios, "{:.2f}")
                rows.append(
                    [
                        size_label(size),
                        str(sessions),
                        name,
                        spread(rates),
                        f"{percentile(latencies, 50):.1f}",
                        f"{percentile(latencies, 99):.1f}",
                        f"{cpu_ms:.2f}",
                        ratio,
                        f"{statistics.median(drains):.1f}" if drains else "—",
                        str(failures),
                    ]
                )
                if name != "bare" and ratios:
                    verdicts.extend(_verdicts(name, size, sessions, statistics.median(ratios)))
    header = [
        "size",
        "sessions",
        "server",
        "msg/s median (min–max)",
        "p50 ms",
        "p99 ms",
        "server CPU ms/msg",
        "ratio vs bare",
        "drain s",
        "failed",
    ]
    return table(header, rows), verdicts


def _verdicts(name: str, size: int, sessions: int, ratio: float) -> list[str]:
    out = []
    target = TARGETS.get(size)
    cell = f"{name} {size_label(size)} × {sessions}"
    if target is not None:
        verdict = "met" if ratio >= target else f"MISSED by {(target - ratio) / target:.0%}"
        out.append(f"{cell}: ratio {ratio:.2f}, target ≥ {target:.1f}: {verdict}")
    if sessions == STRETCH_SESSIONS:
        verdict = "met" if ratio >= 1.0 else f"not reached ({ratio:.2f})"
        out.append(f"{cell}: stretch goal ratio ≥ 1.0: {verdict}")
    return out


async def main_async(args: argparse.Namespace) -> int:
    """Start the servers, run the rounds, print the table; stop every server whatever happens."""
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    sessions_list = [int(s) for s in args.sessions.split(",")]
    names = [n.strip() for n in args.servers.split(",")]
    unknown = set(names) - set(SERVER_NAMES)
    if unknown or "bare" not in names:
        print(f"--servers must include bare and may include {', '.join(SERVER_NAMES)}", file=sys.stderr)
        return 2
    pinned = pin_client()
    print("\n".join(["# faxbridge ingest benchmark", *machine_description()]))
    if not pinned:
        print("warning: client and servers share CPUs; ratios are still comparable, absolute rates less so")
    deadline = time.monotonic() + args.max_seconds
    mails = {size: make_mail(size, "template") for size in sizes}
    runs: list[Run] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="faxbridge-bench-ingest-", dir=args.tmp) as tmp:
        workdir = Path(tmp)
        async with Servers() as stack:
            servers: dict[str, ServerProcess] = {}
            for name in names:
                if name == "bare":
                    servers[name] = await stack.add(await start_bare(workdir / "bare-spool"))
                else:
                    config = write_bridge_config(workdir / name)
                    servers[name] = await stack.add(await start_bridge(config, name=name, intake_only=name == "intake"))
            print(f"servers: {', '.join(f'{n} pid {s.proc.pid} port {s.port}' for n, s in servers.items())}")
            total_rounds = args.warmup + args.rounds
            for round_no in range(total_rounds):
                label = "warm-up" if round_no < args.warmup else f"round {round_no - args.warmup + 1}/{args.rounds}"
                for size in sizes:
                    count = args.messages or default_messages(size)
                    for sessions in sessions_list:
                        shift = round_no % len(names)
                        order = names[shift:] + names[:shift]
                        line = []
                        for name in order:
                            if time.monotonic() > deadline:
                                print(f"stopping: --max-seconds {args.max_seconds:.0f} reached", file=sys.stderr)
                                return 1
                            server = servers[name]
                            mail = mails[size].retag(uuid.uuid4().hex[:12])
                            load, cpu, drain = await measure(
                                server,
                                mail,
                                messages=count,
                                sessions=sessions,
                                timeout=args.timeout,
                                drains=name == "bridge",
                            )
                            run = Run(round_no, size, sessions, name, load, cpu, drain)
                            problems.extend(check_replies(run))
                            problems.extend(f"{name}: {failure}" for failure in load.failures[:3])
                            if round_no >= args.warmup:
                                runs.append(run)
                            line.append(f"{name} {load.rate:.0f}/s")
                        print(f"{label}: {size_label(size)} × {sessions}: {', '.join(line)}", flush=True)
            for name, server in servers.items():
                problems.extend(f"{name} logged: {text}" for text in server.problems[:5])
    table_text, verdicts = report(runs, sizes, sessions_list, names)
    print()
    print(table_text)
    print()
    print(
        "msg/s: messages accepted per second, first connect to last QUIT, median (min–max) of the timed rounds; "
        "p50/p99: connect → 250 after the final dot, all timed rounds pooled; ratio: msg/s of the server "
        "divided by bare's msg/s in the same round; drain: seconds after the load until the worker had "
        "finished every job (bridge only)."
    )
    for verdict in verdicts:
        print(verdict)
    if problems:
        print("\nproblems:")
        for problem in dict.fromkeys(problems):
            print(f"  {problem}")
    return 0 if not any("failed" in p or "unexpected" in p for p in problems) else 1


def main() -> int:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(
        description="SMTP ingest: faxbridge against a bare aiosmtpd + fsync server, side by side."
    )
    parser.add_argument("--messages", type=int, default=None, help="messages per run (default 300 ≤ 16 KB, else 100)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds, not reported (default 1)")
    parser.add_argument("--sizes", default="2k,200k", help="message sizes, comma-separated (default 2k,200k)")
    parser.add_argument("--sessions", default="1,20", help="concurrent sessions, comma-separated (default 1,20)")
    parser.add_argument(
        "--servers", default="bare,bridge,intake", help="which servers (default bare,bridge,intake; bare is required)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for one run (default 120)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="give up after this long (default 900)")
    parser.add_argument("--tmp", default=None, help="directory for the temporary state (default: the system's)")
    args = parser.parse_args()
    if args.rounds < 1 or (args.messages is not None and args.messages < 1):
        parser.error("--rounds and --messages must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
