"""The job store alone: what one transaction costs through ``SQLStore``, against the same statements raw.

Measured per transaction, as the bridge calls them:

* ``update_job``: a leased job gets ``JobUpdate(attempts=…, detail=…)`` and keeps its lease (the worker
  makes five of these per fax);
* ``accept ×1``: ``accept_messages`` with one 2 KB message and one job (the intake at one SMTP session);
* ``accept ×20``: ``accept_messages`` with a batch of 20 such messages (the intake under load).

Baseline, in the same process and the same run, alternating with the store: the same statements written by
hand. On SQLite that is the standard ``sqlite3`` module on a connection in WAL mode with
``synchronous=FULL``, each whole transaction run on one worker thread (one hop from the event loop per
transaction): ``BEGIN IMMEDIATE``, the job row joined with its message, ``UPDATE … RETURNING``, ``COMMIT``;
and for an accept the dedupe keys (``INSERT … ON CONFLICT DO NOTHING RETURNING``), the messages and the
jobs. With ``--postgres URL`` the same is measured on PostgreSQL, with asyncpg as the baseline. Every
implementation gets its own fresh database (a file in a temporary directory, or a database created on the
server and dropped afterwards).

The whole benchmark runs in one process pinned to CPU 1 (``taskset``-style affinity), so the event loop
and the store's threads share one core as they do in the bridge. For every operation, the implementations
take turns within a round (the order rotates from round to round); one warm-up round, then ``--rounds``
timed ones. Reported per transaction: wall µs (``time.perf_counter``) and CPU µs (``time.process_time``,
all threads of the process; on PostgreSQL the server's CPU is not included), each as the median (min–max)
over the rounds, and the ratio to the baseline taken within each round.

``--compare PATH`` also measures another ``SQLStore`` in the same run, for instance the previous
``bridge/stores/sql.py`` copied out of git (its imports must resolve; the directory of PATH is put on
``sys.path``).

Run: ``.venv/bin/python bench/store.py`` (about 10 seconds); ``--rounds 7 --updates 1000``;
``--postgres postgresql://postgres@127.0.0.1:5432/test`` (about 45 seconds with ``--compare``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar

from _common import SERVER_CPU, can_pin, machine_description, spread, table

from bridge.models import AcceptRequest, EnvelopeInfo, JobUpdate, NewJob

T = TypeVar("T")

WORKER = "bench-worker"
LEASE = timedelta(hours=1)
DEDUPE_WINDOW = timedelta(days=7)
BODY = b"".join(b"line %04d of a plain text fax, padded to sixty-four bytes or so......\r\n" % i for i in range(28))

JOB_COLUMNS = (
    "job_id",
    "message_id",
    "account",
    "provider",
    "recipient",
    "number",
    "state",
    "notice",
    "pending",
    "attempts",
    "pages",
    "provider_fax_id",
    "reason",
    "code",
    "detail",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "submitted_at",
    "finished_at",
    "lease_holder",
    "lease_expires_at",
)
SELECT_JOB = (
    f"SELECT {', '.join(f'jobs.{name}' for name in JOB_COLUMNS)}, messages.mail_from, messages.subject, "
    "messages.original_message_id FROM jobs JOIN messages ON jobs.message_id = messages.message_id "
    "WHERE jobs.job_id = {}"
)
"""The job row joined with the message fields a ``FaxJob`` carries; format in the placeholder."""
RETURNING_JOB = f"RETURNING {', '.join(JOB_COLUMNS)}"
MESSAGE_COLUMNS = (
    "message_id",
    "received_at",
    "account",
    "mail_from",
    "rcpt_tos",
    "client_address",
    "original_message_id",
    "subject",
    "size",
    "raw",
)
NEW_JOB_COLUMNS = (
    "job_id",
    "message_id",
    "account",
    "provider",
    "recipient",
    "number",
    "state",
    "notice",
    "pending",
    "attempts",
    "detail",
    "created_at",
    "updated_at",
    "next_attempt_at",
)


def raw_message(message_id: str) -> bytes:
    """A 2 KB plain-text mail, as the intake stores it."""
    head = (
        f"From: demo@example.com\r\nTo: +4930123456@fax.localhost\r\nSubject: bench\r\n"
        f"Message-ID: <{message_id}@bench.example>\r\n\r\n"
    ).encode()
    return head + BODY


def request(message_id: str) -> AcceptRequest:
    return AcceptRequest(
        message_id=message_id,
        raw=raw_message(message_id),
        envelope=EnvelopeInfo(
            mail_from="demo@example.com",
            rcpt_tos=("+4930123456@fax.localhost",),
            client_address="127.0.0.1",
            message_id=f"<{message_id}@bench.example>",
            subject="bench",
            account="demo",
        ),
        jobs=(
            NewJob(
                job_id=f"j{message_id}",
                recipient="+4930123456@fax.localhost",
                number="+4930123456",
                account="demo",
                provider="local",
                dedupe_key=f"key-{message_id}",
            ),
        ),
    )


class Implementation(Protocol):
    """One way of running the store's transactions."""

    label: str
    baseline: bool

    async def open(self) -> None: ...

    async def update_job(self, n: int) -> None: ...

    async def accept(self, ids: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


# -- SQLStore --------------------------------------------------------------------------------------------


async def prepare(store_module: ModuleType, url: str) -> str:
    """Create the schema at ``url`` with ``store_module.SQLStore`` and lease one job to ``WORKER``."""
    store = store_module.SQLStore(url, dedupe_window=DEDUPE_WINDOW)
    try:
        await store.start()
        await store.accept_messages([request("setup")])
        [leased] = await store.acquire_jobs(WORKER, timedelta(days=365), 1)
        job_id: str = leased.job.job_id
        return job_id
    finally:
        await store.close()


@dataclass
class StoreImplementation:
    """``SQLStore`` from ``module`` (bridge.stores.sql, or a file given with ``--compare``)."""

    label: str
    module: ModuleType
    url: str
    baseline: bool = False
    store: Any = None
    job_id: str = ""

    async def open(self) -> None:
        self.job_id = await prepare(self.module, self.url)
        self.store = self.module.SQLStore(self.url, dedupe_window=DEDUPE_WINDOW)
        await self.store.start()

    async def update_job(self, n: int) -> None:
        await self.store.update_job(WORKER, self.job_id, JobUpdate(attempts=n % 1000, detail={"bench": n}), LEASE)

    async def accept(self, ids: Sequence[str]) -> None:
        await self.store.accept_messages([request(message_id) for message_id in ids])

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


# -- raw sqlite3 -----------------------------------------------------------------------------------------


def sqlite_time(value: datetime) -> str:
    """A UTC timestamp as SQLAlchemy writes it to SQLite (naive ISO text, so that strings sort in time order)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@dataclass
class RawSQLite:
    """The same statements through the ``sqlite3`` module, each transaction in one hop to one thread."""

    path: Path
    store_module: ModuleType
    label: str = "raw sqlite3, one thread"
    baseline: bool = True
    job_id: str = ""
    conn: sqlite3.Connection | None = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "bench-raw-sqlite"))

    async def open(self) -> None:
        self.job_id = await prepare(self.store_module, f"sqlite:///{self.path}")

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            return conn

        self.conn = await self._hop(connect)

    async def _hop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def _transaction(self, body: Callable[[sqlite3.Connection], None]) -> None:
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            body(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    async def update_job(self, n: int) -> None:
        job_id = self.job_id

        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute(SELECT_JOB.format("?"), (job_id,)).fetchone()
            if row is None or row[JOB_COLUMNS.index("lease_holder")] != WORKER:
                raise RuntimeError(f"job {job_id} is not leased to {WORKER}")
            detail = {**json.loads(row[JOB_COLUMNS.index("detail")]), "bench": n}
            now = datetime.now(UTC)
            conn.execute(
                "UPDATE jobs SET attempts = ?, detail = ?, pending = 1, updated_at = ?, lease_expires_at = ? "
                f"WHERE job_id = ? AND lease_holder = ? {RETURNING_JOB}",
                (n % 1000, json.dumps(detail), sqlite_time(now), sqlite_time(now + LEASE), job_id, WORKER),
            ).fetchone()

        await self._hop(lambda: self._transaction(body))

    async def accept(self, ids: Sequence[str]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            now = sqlite_time(datetime.now(UTC))
            keys = [(f"key-{message_id}", f"j{message_id}", now) for message_id in ids]
            values = ", ".join("(?, ?, ?)" for _ in keys)
            conn.execute(
                f"INSERT INTO dedupe_keys (dedupe_key, job_id, created_at) VALUES {values} "
                "ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key",
                [item for key in keys for item in key],
            ).fetchall()
            conn.executemany(
                f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})",
                [
                    (
                        message_id,
                        now,
                        "demo",
                        "demo@example.com",
                        json.dumps(["+4930123456@fax.localhost"]),
                        "127.0.0.1",
                        f"<{message_id}@bench.example>",
                        "bench",
                        len(raw := raw_message(message_id)),
                        raw,
                    )
                    for message_id in ids
                ],
            )
            conn.executemany(
                f"INSERT INTO jobs ({', '.join(NEW_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(NEW_JOB_COLUMNS))})",
                [
                    (
                        f"j{message_id}",
                        message_id,
                        "demo",
                        "local",
                        "+4930123456@fax.localhost",
                        "+4930123456",
                        "received",
                        "none",
                        1,
                        0,
                        "{}",
                        now,
                        now,
                        now,
                    )
                    for message_id in ids
                ],
            )

        await self._hop(lambda: self._transaction(body))

    async def close(self) -> None:
        if self.conn is not None:
            await self._hop(self.conn.close)
        self.executor.shutdown(wait=True)


# -- raw asyncpg -----------------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class RawAsyncpg:
    """The same statements through asyncpg on one connection, each transaction in ``conn.transaction()``."""

    url: str
    store_module: ModuleType
    label: str = "raw asyncpg, one connection"
    baseline: bool = True
    job_id: str = ""
    conn: Any = None

    async def open(self) -> None:
        import asyncpg

        self.job_id = await prepare(self.store_module, self.url)
        self.conn = await asyncpg.connect(asyncpg_dsn(self.url))

    async def update_job(self, n: int) -> None:
        async with self.conn.transaction():
            row = await self.conn.fetchrow(SELECT_JOB.format("$1") + " FOR UPDATE OF jobs", self.job_id)
            if row is None or row["lease_holder"] != WORKER:
                raise RuntimeError(f"job {self.job_id} is not leased to {WORKER}")
            detail = {**json.loads(row["detail"]), "bench": n}
            now = datetime.now(UTC)
            await self.conn.fetchrow(
                "UPDATE jobs SET attempts = $1, detail = $2, pending = true, updated_at = $3, lease_expires_at = $4 "
                f"WHERE job_id = $5 AND lease_holder = $6 {RETURNING_JOB}",
                n % 1000,
                json.dumps(detail),
                now,
                now + LEASE,
                self.job_id,
                WORKER,
            )

    async def accept(self, ids: Sequence[str]) -> None:
        now = datetime.now(UTC)
        async with self.conn.transaction():
            values = ", ".join(f"(${3 * i + 1}, ${3 * i + 2}, ${3 * i + 3})" for i in range(len(ids)))
            await self.conn.fetch(
                f"INSERT INTO dedupe_keys (dedupe_key, job_id, created_at) VALUES {values} "
                "ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key",
                *[item for message_id in ids for item in (f"key-{message_id}", f"j{message_id}", now)],
            )
            places = ", ".join(f"${i + 1}" for i in range(len(MESSAGE_COLUMNS)))
            await self.conn.executemany(
                f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES ({places})",
                [
                    (
                        message_id,
                        now,
                        "demo",
                        "demo@example.com",
                        json.dumps(["+4930123456@fax.localhost"]),
                        "127.0.0.1",
                        f"<{message_id}@bench.example>",
                        "bench",
                        len(raw := raw_message(message_id)),
                        raw,
                    )
                    for message_id in ids
                ],
            )
            places = ", ".join(f"${i + 1}" for i in range(len(NEW_JOB_COLUMNS)))
            await self.conn.executemany(
                f"INSERT INTO jobs ({', '.join(NEW_JOB_COLUMNS)}) VALUES ({places})",
                [
                    (
                        f"j{message_id}",
                        message_id,
                        "demo",
                        "local",
                        "+4930123456@fax.localhost",
                        "+4930123456",
                        "received",
                        "none",
                        True,
                        0,
                        "{}",
                        now,
                        now,
                        now,
                    )
                    for message_id in ids
                ],
            )

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


@contextlib.asynccontextmanager
async def postgres_databases(base_url: str, count: int) -> Any:
    """Create ``count`` empty databases on the server of ``base_url``; yield their SQLAlchemy URLs; drop them."""
    import asyncpg
    from sqlalchemy import make_url

    admin = await asyncpg.connect(asyncpg_dsn(base_url))
    names = [f"faxbridge_bench_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        base = make_url(base_url).set(drivername="postgresql+asyncpg")
        yield [base.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# -- measuring -------------------------------------------------------------------------------------------


@dataclass
class Sample:
    wall_us: float
    cpu_us: float


@dataclass
class Operation:
    name: str
    count: int
    run: Callable[[Implementation, int, str], Awaitable[None]]


async def run_update(impl: Implementation, n: int, _: str) -> None:
    await impl.update_job(n)


def accept_op(batch: int) -> Callable[[Implementation, int, str], Awaitable[None]]:
    async def run(impl: Implementation, n: int, tag: str) -> None:
        await impl.accept([f"{tag}-{n}-{k}" for k in range(batch)])

    return run


async def measure(impl: Implementation, op: Operation, tag: str) -> Sample:
    wall = time.perf_counter()
    cpu = time.process_time()
    for n in range(op.count):
        await op.run(impl, n, tag)
    return Sample(
        wall_us=(time.perf_counter() - wall) / op.count * 1e6,
        cpu_us=(time.process_time() - cpu) / op.count * 1e6,
    )


async def bench_backend(
    backend: str, impls: list[Implementation], ops: list[Operation], rounds: int
) -> list[list[str]]:
    """Run every operation on every implementation, alternating; return Markdown table rows."""
    for impl in impls:
        await impl.open()
    samples: dict[tuple[str, str], list[Sample]] = {}
    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for round_no in range(rounds + 1):
            timed = round_no > 0
            for op in ops:
                shift = round_no % len(impls)
                order = impls[shift:] + impls[:shift]
                got: dict[str, Sample] = {}
                for impl in order:
                    tag = f"r{round_no}-{op.name.replace(' ', '')}"
                    got[impl.label] = await measure(impl, op, tag)
                if not timed:
                    continue
                base = next(got[impl.label] for impl in impls if impl.baseline)
                for label, sample in got.items():
                    samples.setdefault((op.name, label), []).append(sample)
                    ratios.setdefault((op.name, label), []).append(
                        (sample.cpu_us / base.cpu_us, sample.wall_us / base.wall_us)
                    )
            what = "warm-up" if not timed else f"round {round_no}/{rounds}"
            print(f"{backend}: {what} done", flush=True)
    finally:
        for impl in impls:
            await impl.close()
    rows = []
    for op in ops:
        for impl in impls:
            got_samples = samples[(op.name, impl.label)]
            got_ratios = ratios[(op.name, impl.label)]
            rows.append(
                [
                    backend,
                    op.name,
                    impl.label,
                    spread([s.wall_us for s in got_samples]),
                    spread([s.cpu_us for s in got_samples]),
                    "1" if impl.baseline else spread([r[0] for r in got_ratios], "{:.2f}"),
                    "1" if impl.baseline else spread([r[1] for r in got_ratios], "{:.2f}"),
                ]
            )
    return rows


def load_module(path: Path) -> ModuleType:
    """Import a ``sql.py`` from ``path`` under its own name, with its directory on ``sys.path``."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"compared_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def main_async(args: argparse.Namespace) -> int:
    import bridge.stores.sql as current

    print("\n".join(["# faxbridge store benchmark", *machine_description()[:-1]]))
    if can_pin():
        os.sched_setaffinity(0, {SERVER_CPU})
        print(f"pinning: this whole process on CPU {SERVER_CPU} (event loop and store threads share it)")
    else:
        print("pinning: NOT pinned (no taskset or fewer than 2 CPUs)")
    compared = load_module(args.compare) if args.compare else None
    ops = [
        Operation("update_job", args.updates, run_update),
        Operation("accept ×1", args.accepts, accept_op(1)),
        Operation("accept ×20", args.batches, accept_op(20)),
    ]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="faxbridge-bench-store-", dir=args.tmp) as tmp:
        workdir = Path(tmp)
        sqlite: list[Implementation] = [
            StoreImplementation("SQLStore", current, f"sqlite:///{workdir / 'store.db'}"),
            RawSQLite(workdir / "raw.db", current),
        ]
        if compared is not None:
            url = f"sqlite:///{workdir / 'compared.db'}"
            sqlite.insert(1, StoreImplementation(f"SQLStore from {args.compare.name}", compared, url))
        rows += await bench_backend("SQLite", sqlite, ops, args.rounds)
        if args.postgres:
            async with postgres_databases(args.postgres, 3 if compared else 2) as urls:
                postgres: list[Implementation] = [
                    StoreImplementation("SQLStore", current, urls[0]),
                    RawAsyncpg(urls[1], current),
                ]
                if compared is not None:
                    postgres.insert(1, StoreImplementation(f"SQLStore from {args.compare.name}", compared, urls[2]))
                rows += await bench_backend("PostgreSQL", postgres, ops, args.rounds)
    print()
    print(f"µs per transaction, median (min–max) of {args.rounds} rounds; ratio taken within each round")
    header = ["database", "operation", "implementation", "wall µs", "CPU µs", "CPU ratio", "wall ratio"]
    print(table(header, rows))
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description="faxbridge job store: cost per transaction against raw SQL.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round (default 5)")
    parser.add_argument("--updates", type=int, default=500, help="update_job calls per round (default 500)")
    parser.add_argument("--accepts", type=int, default=300, help="accepts of one message per round (default 300)")
    parser.add_argument("--batches", type=int, default=50, help="accepts of 20 messages per round (default 50)")
    parser.add_argument(
        "--postgres", default=None, help="also measure on this PostgreSQL server (a role that may create databases)"
    )
    parser.add_argument("--compare", type=Path, default=None, help="another sql.py to measure in the same run")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long (default 600)")
    parser.add_argument("--tmp", default=None, help="directory for the SQLite files (default: the system's)")
    args = parser.parse_args()
    try:
        return asyncio.run(asyncio.wait_for(main_async(args), args.max_seconds))
    except TimeoutError:
        print(f"stopped: --max-seconds {args.max_seconds:.0f} reached", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
