"""The job store on SQLAlchemy 2 Core: SQLite through the sqlite3 module on the store's own threads, PostgreSQL
through asyncpg.

How a call runs: each public method's transaction is one plain synchronous function over a SQLAlchemy
``Connection`` (Core statements, the same code for both databases). A runner executes that function whole,
so the event loop hands over one function per transaction instead of awaiting every statement:

* **SQLite** uses a sync engine (``sqlite+pysqlite``). Write transactions run on one dedicated writer thread
  and read transactions on a small pool of reader threads; each transaction is one hop from the event loop
  to a thread and back. The async engine on aiosqlite made about 16 hops per write transaction, each a
  queue put, a thread wake-up and a GIL handover, and spent about 2 ms of CPU per transaction on them.
  Every call into sqlite3 happens on these threads, never on the event loop. The writer thread is also the
  process's write queue: writes run one at a time in the order they were queued, without contending for
  SQLite's lock inside the process. ``accept_messages`` goes ahead of queued worker writes (FIFO among
  equals): an SMTP client waits for its ``250`` behind the one write in progress at most, not behind every
  worker update already queued. Readers run beside the writer, which WAL mode allows. The pool holds one
  connection per thread and keeps it open (``QueuePool``, sized to the threads). ``check_same_thread`` is
  off, as SQLAlchemy sets it for file databases, because the next checkout may be on another of the
  store's threads; a connection is only ever used by one thread at a time.
* **PostgreSQL** uses the async engine (asyncpg). Each transaction is ``AsyncConnection.run_sync(fn)``, one
  greenlet switch for the whole transaction, and the server does the queuing. The pool keeps enough
  connections for the worker's concurrency, so that they are not reopened per transaction.

Each transaction also sends as few statements as it can. ``update_job`` and ``release_job`` read the row
(with its message's fields) and write it with ``UPDATE … RETURNING``. ``acquire_jobs`` claims with a SELECT
and an ``UPDATE … RETURNING``; on SQLite it first looks for a due job in a read transaction, so that a poll
that finds nothing neither takes the write lock nor waits behind the writer. ``accept_messages`` learns
which dedupe keys it claimed from ``INSERT … ON CONFLICT DO NOTHING RETURNING`` and reads only the keys that
were already taken.

Every dialect difference lives in this module:

* **SQLite** runs in WAL mode with ``synchronous=FULL`` (in WAL mode ``NORMAL`` may lose the last commits on
  power loss, and a commit is the moment the SMTP client gets its 250), ``busy_timeout`` and foreign keys, set
  on every new connection. The sqlite3 driver's own transaction handling is switched off
  (``isolation_level = None``) and SQLAlchemy's "begin" event emits the ``BEGIN`` instead: ``BEGIN IMMEDIATE``
  for writes, so that a write transaction holds SQLite's single write lock from its first statement and two
  processes (the daemon and a CLI command) cannot both read a job as free and both lease it; a plain deferred
  ``BEGIN`` for reads, which in WAL mode never wait for a writer.
* **PostgreSQL** claims jobs with ``SELECT … FOR UPDATE OF jobs SKIP LOCKED`` and sets the lease in the same
  transaction; rows being changed are locked with ``FOR UPDATE OF jobs``. ``synchronous_commit`` is left as
  the server has it (a warning is logged at start when it is ``off``). Schema creation is serialised across
  instances with a transaction-scoped advisory lock. Dead pooled connections (after a restart or failover)
  are found by a ping before use.

Choices on points the contract leaves open:

* ``update_job``/``release_job`` require ``lease_holder == worker_id``. A holder whose lease has expired may
  still write as long as nobody else acquired the job meanwhile: acquisition and writes are serialised on the
  row (PostgreSQL) or the database (SQLite), so an expired lease that another worker took shows up as a
  different holder and gives ``LeaseLost``. ``update_job`` then renews the lease from now.
* ``JobUpdate.detail`` is merged into the stored detail one level deep: its keys replace the stored ones,
  other stored keys stay.
* A leased job is ``interrupted`` whenever it is found in ``SUBMITTING``: only a worker holding the lease can
  put it there, so whoever finds it there next cannot know whether the fax went out.
* Dedupe keys count from the first time they were claimed; a duplicate does not extend the window.
* ``accept_messages`` is all or nothing for the whole batch: if one message cannot be stored, none is.
* On SQLite, a call whose caller is cancelled before its transaction started never runs. Once started, a
  transaction runs to its commit or rollback on its thread, and the caller no longer waits for the result.
* After ``close()`` every method raises ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from bridge.errors import JobNotFound, LeaseLost, StoreUnavailable
from bridge.models import (
    ACTIVE_STATES,
    AcceptRequest,
    AcceptResult,
    FaxJob,
    InboundRecord,
    InboundRef,
    InboundState,
    JobState,
    JobUpdate,
    LeasedJob,
    NoticeState,
    SenderUsage,
    StoredKey,
    can_transition,
)
from bridge.stores import schema
from bridge.stores.base import PURGEABLE_STATES, JobStore, PurgeResult
from bridge.stores.schema import (
    cluster_leases,
    dedupe_keys,
    documents,
    inbound_faxes,
    jobs,
    messages,
    previews,
    report_runs,
    secret_keys,
)

__all__ = ["SQLStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_READ_ONLY = "faxbridge_read_only"
"""Execution option marking connections whose transactions only read (a deferred BEGIN on SQLite)."""

_SCHEMA_LOCK_ID = 0x6661786272696467
"""PostgreSQL advisory lock key ("faxbridg") held while the schema is created."""

_DATABASE_ERRORS = (sa_exc.DBAPIError, sa_exc.TimeoutError, sa_exc.DisconnectionError, OSError)
"""What a public method turns into ``StoreUnavailable``: driver errors, pool timeouts, network failures."""

_INTAKE = 0
"""Writer queue priority of ``accept_messages``: an SMTP client is waiting for its 250."""
_DEFAULT = 1
"""Writer queue priority of every other transaction (the worker's, start-up, cleanup)."""
_LAST = 2
"""Writer queue priority of the stop marker, so that a closing store finishes what was queued first."""

_SQLITE_READERS = 2
"""Reader threads on SQLite. Reads are short and mostly hold the GIL, so more threads would mainly contend
for it; two let a read run while another waits on the disk."""

_POSTGRES_POOL_SIZE = 10
"""Pooled PostgreSQL connections kept open: the worker's default concurrency (8), the intake and a read.
Connections beyond it (up to as many again) are opened on demand and closed when returned."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} has no timezone; the job store needs aware datetimes")
    return value.astimezone(UTC)


def _is_pending(state: JobState, notice: NoticeState) -> bool:
    """Whether a worker still has something to do for the job: the state machine or the sender's notice."""
    return state in ACTIVE_STATES or notice == NoticeState.PENDING


_JOB_FIELDS = (
    jobs.c.job_id,
    jobs.c.message_id,
    jobs.c.account,
    jobs.c.provider,
    jobs.c.recipient,
    jobs.c.number,
    jobs.c.state,
    jobs.c.notice,
    jobs.c.attempts,
    jobs.c.pages,
    jobs.c.provider_fax_id,
    jobs.c.reason,
    jobs.c.code,
    jobs.c.created_at,
    jobs.c.updated_at,
    jobs.c.next_attempt_at,
    jobs.c.submitted_at,
    jobs.c.finished_at,
    jobs.c.detail,
)
"""The ``jobs`` columns a ``FaxJob`` carries; also what ``UPDATE … RETURNING`` gives back."""

_JOB_SELECT = sa.select(
    *_JOB_FIELDS,
    jobs.c.lease_holder,
    messages.c.mail_from,
    messages.c.subject,
    messages.c.original_message_id,
).select_from(jobs.join(messages, jobs.c.message_id == messages.c.message_id))
"""A job with its message's fields and its lease holder. The message fields come from here and not from
``RETURNING``: SQLite's ``RETURNING`` may only name the updated table."""


# Statements are built once, with bind parameters, and reused: SQLAlchemy memoizes the cache key of a statement
# object, so a reused one skips the statement building and the cache-key traversal that a fresh one costs
# (about a third of a small transaction's CPU).

_JOB_BY_ID = _JOB_SELECT.where(jobs.c.job_id == sa.bindparam("job_id"))

_DUE = sa.and_(
    jobs.c.pending == sa.true(),
    jobs.c.next_attempt_at <= sa.bindparam("now"),
    sa.or_(jobs.c.lease_holder.is_(None), jobs.c.lease_expires_at <= sa.bindparam("now")),
)
"""A job is due at ``now`` when it has work left, its next attempt has come, and its lease is free or expired."""

_ANY_DUE = sa.select(jobs.c.job_id).where(_DUE).limit(1)

_CLAIMABLE = (
    _JOB_SELECT.where(_DUE)
    .order_by(jobs.c.next_attempt_at, jobs.c.job_id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
"""Due jobs with their messages' fields, oldest due first (PostgreSQL adds ``FOR UPDATE … SKIP LOCKED``)."""

_LEASE = (
    sa.update(jobs)
    .where(jobs.c.job_id.in_(sa.bindparam("job_ids", expanding=True)))
    .values(
        lease_holder=sa.bindparam("lease_holder_value", type_=jobs.c.lease_holder.type),
        lease_expires_at=sa.bindparam("lease_expires_value", type_=jobs.c.lease_expires_at.type),
        updated_at=sa.bindparam("now", type_=jobs.c.updated_at.type),
    )
    .returning(*_JOB_FIELDS)
)

_MESSAGE_RAW = sa.select(messages.c.raw).where(messages.c.message_id == sa.bindparam("message_id"))

_DOCUMENT = (
    sa.select(jobs.c.job_id, documents.c.pdf)
    .select_from(jobs.outerjoin(documents, documents.c.job_id == jobs.c.job_id))
    .where(jobs.c.job_id == sa.bindparam("job_id"))
)

_PREVIEW = sa.select(previews.c.png).where(previews.c.job_id == sa.bindparam("job_id"))

_NEXT_DUE = sa.select(sa.func.min(jobs.c.next_attempt_at)).where(jobs.c.pending == sa.true())

_PURGE_BATCH = 500
"""Jobs (or messages) whose data one purge transaction deletes: short enough that the intake, which waits
behind the one SQLite write in progress, is never held up for long."""


def _finished_before(cutoff: datetime) -> sa.ColumnElement[bool]:
    """A job that is finished for good (``PURGEABLE_STATES``, no notice pending) and ended before ``cutoff``."""
    return sa.and_(
        jobs.c.state.in_(sorted(state.value for state in PURGEABLE_STATES)),
        jobs.c.pending == sa.false(),
        sa.func.coalesce(jobs.c.finished_at, jobs.c.created_at) < cutoff,
    )


_INSERT_MESSAGES = sa.insert(messages)
_INSERT_JOBS = sa.insert(jobs)


@lru_cache(maxsize=256)
def _job_write(columns: tuple[str, ...]) -> sa.Update:
    """``UPDATE jobs SET <columns> … RETURNING`` for the job ``job_id_match`` held by ``holder_match``.

    One statement per set of columns an update changes (a handful in practice), each built once.
    Parameters: ``job_id_match``, ``holder_match`` and ``set_<column>`` for each column.
    """
    return (
        sa.update(jobs)
        .where(
            jobs.c.job_id == sa.bindparam("job_id_match", type_=jobs.c.job_id.type),
            jobs.c.lease_holder == sa.bindparam("holder_match", type_=jobs.c.lease_holder.type),
        )
        .values({name: sa.bindparam(f"set_{name}", type_=jobs.c[name].type) for name in columns})
        .returning(*_JOB_FIELDS)
    )


def _to_job(row: sa.Row[*tuple[Any, ...]], message: sa.Row[*tuple[Any, ...]] | None = None) -> FaxJob:
    """Build a ``FaxJob`` from a ``_JOB_SELECT`` row, or from job columns plus the ``_JOB_SELECT`` row ``message``."""
    origin = row if message is None else message
    return FaxJob(
        job_id=row.job_id,
        message_id=row.message_id,
        account=row.account,
        provider=row.provider,
        recipient=row.recipient,
        number=row.number,
        sender=origin.mail_from,
        subject=origin.subject,
        original_message_id=origin.original_message_id,
        state=JobState(row.state),
        notice=NoticeState(row.notice),
        attempts=row.attempts,
        pages=row.pages,
        provider_fax_id=row.provider_fax_id,
        reason=row.reason,
        code=row.code,
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_attempt_at=row.next_attempt_at,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
        detail=dict(row.detail or {}),
    )


def _sqlite_open_problem(database: str | None) -> str | None:
    """Say why SQLite could not open or write ``database``, or return ``None`` if it looks fine.

    Checked before the first connection because "unable to open database file" does not say what to fix.
    """
    if not database or database.startswith("file:"):
        return None
    path = Path(database).absolute()
    try:
        if not path.parent.is_dir():
            return f"the directory {path.parent} does not exist"
        if path.exists() and not path.is_file():
            return f"{path} exists and is not a file"
        # SQLite writes its -wal and -shm files beside the database, so the directory must be writable.
        if not os.access(path.parent, os.W_OK | os.X_OK):
            return f"the directory {path.parent} is not writable by this user"
    except OSError as exc:
        return f"{path} cannot be checked ({exc})"
    return None


def _sqlite_on_connect(busy_timeout_ms: int, dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # Take BEGIN away from the sqlite3 driver (it would defer it, or skip it for DDL);
    # _sqlite_on_begin emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # First, so that switching the journal mode waits for another process instead of failing.
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
        cursor.execute("PRAGMA journal_mode = WAL")
        row = cursor.fetchone()
        mode = str(row[0]).lower() if row else "unknown"
        if mode != "wal":
            log.warning(
                "SQLite refused WAL mode (journal_mode is %s); readers will block writers. "
                "Is the database on a network file system?",
                mode,
            )
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _in_transaction(fn: Callable[[Connection], T], conn: Connection) -> T:
    """Run ``fn`` in one transaction on ``conn``: committed if it returns, rolled back if it raises."""
    with conn.begin():
        return fn(conn)


def _on_engine(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """Check a connection out of ``engine``'s pool, run ``fn`` in one transaction on it, and return it."""
    with engine.connect() as conn:
        return _in_transaction(fn, conn)


# -- runners -------------------------------------------------------------------------------------------------


class _Lane:
    """Threads that run callables, lowest priority number first and in submission order within a priority.

    With one thread this is the SQLite writer: the queue is what serialises writes inside the process.
    ``submit`` is called from the event loop's thread only.
    """

    def __init__(self, name: str, threads: int) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Future[Any], Callable[[], Any] | None]] = queue.PriorityQueue()
        # The sequence number keeps FIFO order within a priority, and tuples never compare their futures.
        self._order = itertools.count()
        # Daemon threads: a store that is never closed must not keep the process from exiting.
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}" if threads > 1 else name, daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], T], priority: int) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((priority, next(self._order), future, fn))
        return future

    async def run(self, fn: Callable[[], T], priority: int) -> T:
        # wrap_future passes a cancellation on to the concurrent future: a call that has not started yet
        # is then skipped by _serve; one that is running finishes, and its result is dropped.
        return await asyncio.wrap_future(self.submit(fn, priority))

    def _serve(self) -> None:
        while True:
            _, _, future, fn = self._queue.get()
            if fn is None:
                future.set_result(None)
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting caller, whatever it is
                future.set_exception(exc)
            else:
                future.set_result(result)

    async def stop(self) -> None:
        """Let every thread finish what is queued, then end it."""
        ends: list[Future[Any]] = []
        for _ in self._threads:
            end: Future[Any] = Future()
            self._queue.put((_LAST, next(self._order), end, None))
            ends.append(end)
        await asyncio.gather(*(asyncio.wrap_future(end) for end in ends))
        for thread in self._threads:
            # Each thread has set its end marker and is returning: this join takes microseconds.
            thread.join()


class _Runner(Protocol):
    """Executes one transaction function and returns its result."""

    engine: Engine

    async def run(self, fn: Callable[[Connection], T], *, write: bool, priority: int) -> T: ...

    async def close(self) -> None: ...


class _SQLiteRunner:
    """SQLite: writes on one writer thread, reads on a few reader threads, over a sync engine's pool."""

    def __init__(self, url: URL, busy_timeout: timedelta) -> None:
        self.engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            # hide_parameters keeps message bytes and addresses out of exception texts and logs.
            hide_parameters=True,
            # One connection per store thread, kept open. The overflow is for code that checks a connection
            # out beside the store (diagnostics, tests); the store's own threads never need it.
            poolclass=QueuePool,
            pool_size=_SQLITE_READERS + 1,
            max_overflow=2,
            connect_args={"check_same_thread": False},
        )
        busy_ms = int(busy_timeout.total_seconds() * 1000)
        event.listen(self.engine, "connect", partial(_sqlite_on_connect, busy_ms))
        event.listen(self.engine, "begin", _sqlite_on_begin)
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})
        self._writer: _Lane | None = None
        self._readers: _Lane | None = None

    def _lanes(self) -> tuple[_Lane, _Lane]:
        # Started on first use, so that a store that is created and never used owns no threads.
        if self._writer is None or self._readers is None:
            self._writer = _Lane("faxbridge-store-writer", 1)
            self._readers = _Lane("faxbridge-store-reader", _SQLITE_READERS)
        return self._writer, self._readers

    async def run(self, fn: Callable[[Connection], T], *, write: bool, priority: int) -> T:
        writer, readers = self._lanes()
        if write:
            return await writer.run(partial(_on_engine, self.engine, fn), priority)
        return await readers.run(partial(_on_engine, self._read_engine, fn), _DEFAULT)

    async def close(self) -> None:
        """Finish queued transactions, close every connection and end the threads; reusable afterwards."""
        writer, readers = self._lanes()
        self._writer = self._readers = None
        try:
            await readers.stop()
            # Closing the last connection checkpoints the WAL (disk I/O), so it happens on the writer thread,
            # after the readers have returned their connections.
            await writer.run(self.engine.dispose, _LAST)
        finally:
            await writer.stop()


class _PostgresRunner:
    """PostgreSQL: each transaction is one ``run_sync`` on a pooled asyncpg connection.

    Transactions run side by side, so there is no writer queue and no priority: writers wait for each other
    only on the rows they share, which the intake's new rows never are.
    """

    def __init__(self, url: URL, connect_timeout: timedelta) -> None:
        self._async_engine: AsyncEngine = create_async_engine(
            url,
            # hide_parameters keeps message bytes and addresses out of exception texts and logs.
            hide_parameters=True,
            # A PostgreSQL restart or failover leaves dead pooled connections behind; test before use.
            pool_pre_ping=True,
            pool_size=_POSTGRES_POOL_SIZE,
            max_overflow=_POSTGRES_POOL_SIZE,
            connect_args={
                "timeout": connect_timeout.total_seconds(),
                "server_settings": {"application_name": "faxbridge"},
            },
        )
        self.engine = self._async_engine.sync_engine

    async def run(self, fn: Callable[[Connection], T], *, write: bool, priority: int) -> T:
        # BEGIN and COMMIT happen inside run_sync too: one greenlet switch for the whole transaction.
        async with self._async_engine.connect() as conn:
            return await conn.run_sync(partial(_in_transaction, fn))

    async def close(self) -> None:
        await self._async_engine.dispose()


# -- the store -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claims:
    """Who owns each dedupe key of a batch once the keys were claimed."""

    owner: dict[str, str]
    """dedupe key -> the job id that owns it (one of the batch, or an earlier job)."""
    earlier_message: dict[str, str]
    """earlier job id -> its message id, for every owner that is not from this batch."""


class SQLStore(JobStore):
    """``JobStore`` on SQLite (one host) or PostgreSQL (several instances), through SQLAlchemy Core.

    ``url`` names SQLite (``sqlite://``, with or without the ``pysqlite`` or ``aiosqlite`` driver name: faxbridge
    runs SQLite through the standard sqlite3 module either way) or PostgreSQL through asyncpg
    (``postgresql+asyncpg``); ``open_store`` maps the other spellings. ``dedupe_window`` is how long a dedupe
    key is remembered. ``clock`` returns the current time (aware); tests pass a controllable one.
    ``busy_timeout`` is how long a SQLite write waits for another process's write to finish;
    ``connect_timeout`` how long a PostgreSQL connection attempt may take.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        dedupe_window: timedelta,
        clock: Callable[[], datetime] | None = None,
        busy_timeout: timedelta = timedelta(seconds=30),
        connect_timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        if dedupe_window <= timedelta(0):
            raise ValueError(f"dedupe_window must be positive, got {dedupe_window}")
        self._dedupe_window = dedupe_window
        self._clock = clock or _utc_now
        url = sa.make_url(url)
        self._dialect = url.get_backend_name()
        self._database = url.database
        self._display_url = url.render_as_string(hide_password=True)
        self._closed = False
        self._runner: _Runner
        if self._dialect == "sqlite":
            if url.get_driver_name() not in ("pysqlite", "aiosqlite"):
                raise ValueError(f"unsupported SQLite driver {url.get_driver_name()!r} in {self._display_url}")
            self._runner = _SQLiteRunner(url, busy_timeout)
            self._claimable = _CLAIMABLE
            self._current = _JOB_BY_ID
        elif self._dialect == "postgresql":
            self._runner = _PostgresRunner(url, connect_timeout)
            # Rows another instance is claiming right now are passed over, not waited for. OF jobs: the
            # messages rows are only read.
            self._claimable = _CLAIMABLE.with_for_update(of=jobs, skip_locked=True)
            self._current = _JOB_BY_ID.with_for_update(of=jobs)
        else:
            raise ValueError(f"unsupported database {self._dialect!r} in {self._display_url}")
        # ON CONFLICT DO NOTHING also waits, on PostgreSQL, for a concurrent batch that inserted the same key
        # to commit or roll back, so that the SELECT in _claim_dedupe_keys sees the winner. RETURNING names
        # the keys this batch claimed.
        self._claim_keys = (
            self._insert(dedupe_keys)
            .on_conflict_do_nothing(index_elements=[dedupe_keys.c.dedupe_key])
            .returning(dedupe_keys.c.dedupe_key)
        )
        upsert = self._insert(documents)
        self._store_document = upsert.on_conflict_do_update(
            index_elements=[documents.c.job_id],
            set_={"pdf": upsert.excluded.pdf, "stored_at": upsert.excluded.stored_at},
        )
        upsert_preview = self._insert(previews)
        self._store_preview = upsert_preview.on_conflict_do_update(
            index_elements=[previews.c.job_id],
            set_={"png": upsert_preview.excluded.png, "stored_at": upsert_preview.excluded.stored_at},
        )

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the transactions run on, for diagnostics and for tests that check the pool.

        On SQLite it is a sync pysqlite engine; on PostgreSQL the ``sync_engine`` of the asyncpg engine, which
        shares its pool but cannot run statements outside ``run_sync``.
        """
        return self._runner.engine

    # -- plumbing ------------------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return _aware("the store clock's time", self._clock())

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _run(self, what: str, fn: Callable[[Connection], T], *, write: bool, priority: int = _DEFAULT) -> T:
        """Run ``fn`` in one transaction; database failures become ``StoreUnavailable``."""
        if self._closed:
            raise StoreUnavailable(f"The job store at {self._display_url} could not {what}: it is closed.")
        try:
            return await self._runner.run(fn, write=write, priority=priority)
        except _DATABASE_ERRORS as exc:
            reason = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
            raise StoreUnavailable(
                f"The job store at {self._display_url} could not {what}: {reason}. "
                "Check that the database is running, reachable and writable, then try again."
            ) from exc

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the schema if the database is empty, and check that it answers."""
        if self._dialect == "sqlite" and (problem := _sqlite_open_problem(self._database)):
            raise StoreUnavailable(
                f"The job store at {self._display_url} cannot be opened: {problem}. Create the directory "
                "and let the faxbridge user write to it (the systemd unit's StateDirectory= does both)."
            )
        try:
            await self._run("create or check its schema", partial(self._create_schema, self._now()), write=True)
        except BaseException:
            # A caller whose start failed may never call close(): end the threads and connections now.
            # The runner starts them again if the store is used after all.
            await self._runner.close()
            raise

    def _create_schema(self, now: datetime, conn: Connection) -> None:
        if self._dialect == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_ID)))
            setting = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
            if setting == "off":
                log.warning(
                    "PostgreSQL has synchronous_commit=off: a crash can lose messages the SMTP "
                    "client was told were accepted. Set it to on for the faxbridge database."
                )
        schema.create_all(conn, now=now)

    async def close(self) -> None:
        """Finish the transactions already queued, close every connection and end the store's threads."""
        if self._closed:
            return
        self._closed = True
        await self._runner.close()

    # -- intake --------------------------------------------------------------------------------------------

    async def accept_messages(self, requests: Sequence[AcceptRequest]) -> list[AcceptResult]:
        """Store several messages and their jobs in one transaction; one result per request, in order.

        A dedupe key claimed within ``dedupe_window`` (also by an earlier message of the same batch) yields
        the job that claimed it; an older key passes to the new job. A request whose every job is a
        duplicate stores nothing and gets ``duplicate=True`` with the earlier ids and message id.
        """
        if not requests:
            return []
        now = self._now()
        # Within the batch the first job with a key claims it; later ones are its duplicates.
        wanted: dict[str, str] = {}
        for request in requests:
            for job in request.jobs:
                wanted.setdefault(job.dedupe_key, job.job_id)
        return await self._run(
            f"store {len(requests)} accepted message(s)",
            partial(self._accept, requests, wanted, now),
            write=True,
            priority=_INTAKE,
        )

    def _accept(
        self, requests: Sequence[AcceptRequest], wanted: Mapping[str, str], now: datetime, conn: Connection
    ) -> list[AcceptResult]:
        claims = self._claim_dedupe_keys(conn, wanted, now)
        results: list[AcceptResult] = []
        message_rows: list[dict[str, Any]] = []
        job_rows: list[dict[str, Any]] = []
        batch_message: dict[str, str] = {}
        for request in requests:
            job_ids: list[str] = []
            fresh = 0
            for job in request.jobs:
                owner = claims.owner[job.dedupe_key]
                job_ids.append(owner)
                if owner != job.job_id:
                    continue
                fresh += 1
                batch_message[job.job_id] = request.message_id
                job_rows.append(
                    {
                        "job_id": job.job_id,
                        "message_id": request.message_id,
                        "account": job.account,
                        "provider": job.provider,
                        "recipient": job.recipient,
                        "number": job.number,
                        "state": JobState.RECEIVED.value,
                        "notice": NoticeState.NONE.value,
                        "pending": True,
                        "attempts": 0,
                        "detail": {},
                        "created_at": now,
                        "updated_at": now,
                        "next_attempt_at": now,
                    }
                )
            if request.jobs and not fresh:
                first = job_ids[0]
                earlier = batch_message.get(first) or claims.earlier_message[first]
                results.append(AcceptResult(message_id=earlier, job_ids=tuple(job_ids), duplicate=True))
                continue
            envelope = request.envelope
            message_rows.append(
                {
                    "message_id": request.message_id,
                    "received_at": now,
                    "account": envelope.account,
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": list(envelope.rcpt_tos),
                    "client_address": envelope.client_address,
                    "original_message_id": envelope.message_id,
                    "subject": envelope.subject,
                    "size": len(request.raw),
                    "raw": request.raw,
                }
            )
            results.append(AcceptResult(message_id=request.message_id, job_ids=tuple(job_ids), duplicate=False))
        if message_rows:
            conn.execute(_INSERT_MESSAGES, message_rows)
        if job_rows:
            # Columns left out (pages, provider ids, lease…) start as NULL.
            conn.execute(_INSERT_JOBS, job_rows)
        return results

    def _claim_dedupe_keys(self, conn: Connection, wanted: Mapping[str, str], now: datetime) -> _Claims:
        """Claim each key for its wanted job unless a live claim exists; return who owns every key."""
        if not wanted:
            return _Claims(owner={}, earlier_message={})
        # Keys go in sorted order so that two batches sharing keys wait for each other instead of deadlocking.
        # Usually this batch claims every key, and nothing else needs to be read.
        claimed = set(
            conn.execute(
                self._claim_keys,
                [{"dedupe_key": key, "job_id": wanted[key], "created_at": now} for key in sorted(wanted)],
            ).scalars()
        )
        owner = {key: wanted[key] for key in claimed}
        taken = sorted(set(wanted) - claimed)
        if not taken:
            return _Claims(owner=owner, earlier_message={})
        rows = conn.execute(
            sa.select(dedupe_keys.c.dedupe_key, dedupe_keys.c.job_id, dedupe_keys.c.created_at, jobs.c.message_id)
            .select_from(dedupe_keys.outerjoin(jobs, jobs.c.job_id == dedupe_keys.c.job_id))
            .where(dedupe_keys.c.dedupe_key.in_(taken))
        ).all()
        found = {row.dedupe_key: row for row in rows}
        if len(found) != len(taken):
            # Only a cleanup that deleted the key between our INSERT and SELECT gets here.
            raise StoreUnavailable(
                "A dedupe key vanished while the message was being stored (a concurrent cleanup); "
                "nothing was stored, try again."
            )
        cutoff = now - self._dedupe_window
        earlier_message: dict[str, str] = {}
        for key in taken:
            row = found[key]
            job_id: str = row.job_id
            mine = wanted[key]
            if job_id != mine and row.message_id is not None and row.created_at >= cutoff:
                earlier_message[job_id] = row.message_id
            elif job_id != mine:
                # A key past the window, or one whose job is gone, passes to the new job.
                moved = conn.execute(
                    sa.update(dedupe_keys)
                    .where(dedupe_keys.c.dedupe_key == key, dedupe_keys.c.job_id == job_id)
                    .values(job_id=mine, created_at=now)
                )
                if moved.rowcount != 1:
                    raise StoreUnavailable(
                        "A dedupe key changed while the message was being stored (another delivery of it, or a "
                        "cleanup, at the same moment); nothing was stored, try again."
                    )
                job_id = mine
            owner[key] = job_id
        return _Claims(owner=owner, earlier_message=earlier_message)

    async def get_message(self, message_id: str) -> bytes:
        """Return the raw message as it was received. Raises ``JobNotFound``."""
        row = await self._run(
            f"read message {message_id}",
            lambda conn: conn.execute(_MESSAGE_RAW, {"message_id": message_id}).one_or_none(),
            write=False,
        )
        if row is None:
            raise JobNotFound(f"No message with id {message_id!r} is stored.")
        if row.raw is None:
            raise JobNotFound(f"Message {message_id!r} was deleted by retention; only its metadata is kept.")
        return bytes(row.raw)

    async def get_document(self, job_id: str) -> bytes | None:
        """Return the job's fax-ready PDF, or ``None`` before it was converted. Raises ``JobNotFound``."""
        row = await self._run(
            f"read the document of job {job_id}",
            lambda conn: conn.execute(_DOCUMENT, {"job_id": job_id}).one_or_none(),
            write=False,
        )
        if row is None:
            raise JobNotFound(f"No job with id {job_id!r} exists.")
        return None if row.pdf is None else bytes(row.pdf)

    async def get_preview(self, job_id: str) -> bytes | None:
        """Return the PNG preview of page 1 of the job's document, or ``None`` when there is none."""
        row = await self._run(
            f"read the preview of job {job_id}",
            lambda conn: conn.execute(_PREVIEW, {"job_id": job_id}).one_or_none(),
            write=False,
        )
        return None if row is None else bytes(row.png)

    # -- secret keys and sender limits ----------------------------------------------------------------------

    async def secret_keys(self, account: str) -> list[StoredKey]:
        """The account's secret keys as digests, the current one first, then the retired ones newest first."""
        statement = sa.select(secret_keys.c.key_hash, secret_keys.c.created_at, secret_keys.c.retired_at).where(
            secret_keys.c.account == account
        )
        rows = await self._run(
            f"read the secret keys of account {account}",
            lambda conn: conn.execute(statement).all(),
            write=False,
        )
        keys = [StoredKey(row.key_hash, row.created_at, row.retired_at) for row in rows]
        current = [key for key in keys if key.retired_at is None]
        retired = sorted(
            (key for key in keys if key.retired_at is not None), key=lambda k: k.retired_at or k.created_at
        )
        return current + retired[::-1]

    async def rotate_secret_key(
        self, account: str, key_hash: str, now: datetime, *, replaces: str | None, keep: int = 5
    ) -> bool:
        """Make ``key_hash`` the account's current key if the current one is still ``replaces``."""

        def rotate(conn: Connection) -> bool:
            current = conn.execute(
                sa.select(secret_keys.c.key_hash)
                .where(secret_keys.c.account == account, secret_keys.c.retired_at.is_(None))
                .with_for_update()
            ).scalar_one_or_none()
            if current != replaces:
                return False
            if current is not None:
                conn.execute(
                    sa.update(secret_keys)
                    .where(secret_keys.c.account == account, secret_keys.c.key_hash == current)
                    .values(retired_at=now)
                )
            conn.execute(sa.insert(secret_keys).values(account=account, key_hash=key_hash, created_at=now))
            retired = (
                conn.execute(
                    sa.select(secret_keys.c.key_hash)
                    .where(secret_keys.c.account == account, secret_keys.c.retired_at.is_not(None))
                    .order_by(secret_keys.c.retired_at.desc())
                    .offset(keep)
                )
                .scalars()
                .all()
            )
            if retired:
                conn.execute(
                    sa.delete(secret_keys).where(
                        secret_keys.c.account == account, secret_keys.c.key_hash.in_(list(retired))
                    )
                )
            return True

        return await self._run(f"rotate the secret key of account {account}", rotate, write=True)

    async def sender_usage(self, sender: str, *, faxes_since: datetime, pages_since: datetime) -> SenderUsage:
        """Faxes by ``sender`` (any case) accepted since ``faxes_since`` and their pages since ``pages_since``."""
        since = min(faxes_since, pages_since)
        recent = (
            sa.select(messages.c.received_at, jobs.c.pages)
            .select_from(messages.join(jobs, jobs.c.message_id == messages.c.message_id))
            .where(
                sa.func.lower(messages.c.mail_from) == sender.strip().lower(),
                messages.c.received_at >= since,
                jobs.c.state != JobState.REJECTED.value,
            )
        )

        def count(conn: Connection) -> SenderUsage:
            faxes = pages = 0
            for row in conn.execute(recent):
                if row.received_at >= faxes_since:
                    faxes += 1
                if row.received_at >= pages_since:
                    pages += row.pages or 0
            return SenderUsage(faxes=faxes, pages=pages)

        return await self._run(f"count the recent faxes of {sender}", count, write=False)

    # -- cluster leases and incoming faxes ---------------------------------------------------------------

    async def take_cluster_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        """Hold the lease ``name`` until ``until`` if it is free, expired or already ours."""

        def take(conn: Connection) -> bool:
            row = conn.execute(
                sa.select(cluster_leases.c.holder, cluster_leases.c.expires_at)
                .where(cluster_leases.c.name == name)
                .with_for_update()
            ).one_or_none()
            if row is None:
                conn.execute(sa.insert(cluster_leases).values(name=name, holder=holder, expires_at=until))
                return True
            if row.holder != holder and row.expires_at > now:
                return False
            conn.execute(
                sa.update(cluster_leases).where(cluster_leases.c.name == name).values(holder=holder, expires_at=until)
            )
            return True

        return await self._run(f"take the cluster lease {name}", take, write=True)

    async def claim_inbound(self, ref: InboundRef, holder: str, until: datetime, now: datetime) -> InboundRecord | None:
        """Record ``ref`` if it is new and lease it to ``holder``; ``None`` when there is nothing to do now."""
        key = (inbound_faxes.c.provider == ref.provider) & (inbound_faxes.c.provider_fax_id == ref.provider_fax_id)

        def claim(conn: Connection) -> InboundRecord | None:
            row = conn.execute(sa.select(inbound_faxes).where(key).with_for_update()).one_or_none()
            if row is None:
                conn.execute(
                    sa.insert(inbound_faxes).values(
                        provider=ref.provider,
                        provider_fax_id=ref.provider_fax_id,
                        state=InboundState.PENDING.value,
                        caller=ref.caller,
                        called=ref.called,
                        received_at=ref.received_at,
                        first_seen_at=now,
                        attempts=0,
                        next_attempt_at=now,
                        lease_holder=holder,
                        lease_expires_at=until,
                    )
                )
                return InboundRecord(ref.provider, ref.provider_fax_id, InboundState.PENDING, 0, now)
            if row.state == InboundState.ACKNOWLEDGED.value or row.next_attempt_at > now:
                return None
            if (
                row.lease_holder not in (None, holder)
                and row.lease_expires_at is not None
                and row.lease_expires_at > now
            ):
                return None
            conn.execute(sa.update(inbound_faxes).where(key).values(lease_holder=holder, lease_expires_at=until))
            return InboundRecord(
                row.provider, row.provider_fax_id, InboundState(row.state), row.attempts, row.next_attempt_at, row.error
            )

        return await self._run(f"claim the incoming fax {ref.provider_fax_id}", claim, write=True)

    async def update_inbound(
        self,
        provider: str,
        provider_fax_id: str,
        holder: str,
        *,
        state: InboundState | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        now: datetime,
    ) -> None:
        """Record the outcome of a delivery attempt and release the lease."""
        key = (inbound_faxes.c.provider == provider) & (inbound_faxes.c.provider_fax_id == provider_fax_id)
        values: dict[str, Any] = {"lease_holder": None, "lease_expires_at": None, "error": error}
        if state is not None:
            values["state"] = state.value
            if state == InboundState.DELIVERED:
                values["delivered_at"] = now
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
            values["attempts"] = inbound_faxes.c.attempts + 1

        def update(conn: Connection) -> None:
            conn.execute(sa.update(inbound_faxes).where(key, inbound_faxes.c.lease_holder == holder).values(**values))

        await self._run(f"record the delivery of incoming fax {provider_fax_id}", update, write=True)

    # -- workers -------------------------------------------------------------------------------------------

    async def acquire_jobs(self, worker_id: str, lease: timedelta, limit: int) -> list[LeasedJob]:
        """Claim up to ``limit`` due jobs for ``worker_id`` until now + ``lease``; oldest due first."""
        if limit <= 0:
            return []
        now = self._now()
        what = f"acquire jobs for worker {worker_id}"
        if self._dialect == "sqlite":
            # Look first, in a read transaction: a worker polling an idle queue must neither take SQLite's
            # write lock (which other processes would wait for) nor queue behind the writer. On PostgreSQL
            # the claiming SELECT … SKIP LOCKED below is itself that look and writes nothing when it finds
            # nothing.
            probe = await self._run(what, lambda conn: conn.execute(_ANY_DUE, {"now": now}).first(), write=False)
            if probe is None:
                return []
        return await self._run(what, partial(self._claim_due, worker_id, now, now + lease, limit), write=True)

    def _claim_due(
        self, worker_id: str, now: datetime, expires: datetime, limit: int, conn: Connection
    ) -> list[LeasedJob]:
        found = conn.execute(self._claimable, {"now": now, "limit": limit}).all()
        if not found:
            return []
        updated = conn.execute(
            _LEASE,
            {
                "job_ids": [row.job_id for row in found],
                "lease_holder_value": worker_id,
                "lease_expires_value": expires,
                "now": now,
            },
        ).all()
        # RETURNING comes back in no particular order; ``found`` is oldest due first.
        by_id = {row.job_id: row for row in updated}
        leased = []
        for row in found:
            job = _to_job(by_id[row.job_id], message=row)
            leased.append(LeasedJob(job=job, lease_expires_at=expires, interrupted=job.state == JobState.SUBMITTING))
        return leased

    async def update_job(self, worker_id: str, job_id: str, update: JobUpdate, lease: timedelta) -> FaxJob:
        """Apply ``update`` and renew the lease until now + ``lease``; the worker keeps the job.

        Raises ``LeaseLost`` when another worker holds the job or it was released, ``ValueError`` for a
        transition ``models.can_transition`` forbids, ``JobNotFound`` for an unknown id.
        """
        return await self._write_job(f"update job {job_id}", worker_id, job_id, update, lease)

    async def release_job(self, worker_id: str, job_id: str, update: JobUpdate | None = None) -> FaxJob:
        """Apply ``update`` (if any) and clear the lease, so that the job is due again at its next attempt."""
        return await self._write_job(f"release job {job_id}", worker_id, job_id, update or JobUpdate(), None)

    async def _write_job(
        self, what: str, worker_id: str, job_id: str, update: JobUpdate, lease: timedelta | None
    ) -> FaxJob:
        for name in ("next_attempt_at", "submitted_at", "finished_at"):
            value = getattr(update, name)
            if value is not None:
                _aware(f"JobUpdate.{name}", value)
        now = self._now()
        return await self._run(what, partial(self._write_job_tx, worker_id, job_id, update, lease, now), write=True)

    def _write_job_tx(
        self,
        worker_id: str,
        job_id: str,
        update: JobUpdate,
        lease: timedelta | None,
        now: datetime,
        conn: Connection,
    ) -> FaxJob:
        row = conn.execute(self._current, {"job_id": job_id}).one_or_none()
        if row is None:
            raise JobNotFound(f"No job with id {job_id!r} exists.")
        if row.lease_holder != worker_id:
            holder = f"leased to {row.lease_holder!r}" if row.lease_holder else "not leased"
            raise LeaseLost(
                f"Job {job_id} is {holder}, not to worker {worker_id!r}; drop it without writing "
                "(acquire it again if it still needs work)."
            )
        values = self._changes(job_id, row, update, now)
        values["lease_expires_at"] = None if lease is None else now + lease
        if lease is None:
            values["lease_holder"] = None
        # The row is locked (PostgreSQL) or the database is (SQLite), so the lease checked above still holds;
        # the holder condition only keeps the statement honest on its own.
        columns = tuple(sorted(values))
        parameters = {f"set_{name}": values[name] for name in columns}
        stored = conn.execute(
            _job_write(columns), {"job_id_match": job_id, "holder_match": worker_id, **parameters}
        ).one()
        if update.document is not None:
            conn.execute(self._store_document, {"job_id": job_id, "pdf": update.document, "stored_at": now})
        if update.preview is not None:
            conn.execute(self._store_preview, {"job_id": job_id, "png": update.preview, "stored_at": now})
        return _to_job(stored, message=row)

    @staticmethod
    def _changes(job_id: str, row: sa.Row[*tuple[Any, ...]], update: JobUpdate, now: datetime) -> dict[str, Any]:
        """The column values ``update`` sets on a job whose current row is ``row``."""
        state = JobState(row.state)
        notice = NoticeState(row.notice)
        values: dict[str, Any] = {"updated_at": now}
        if update.state is not None:
            if not can_transition(state, update.state):
                raise ValueError(
                    f"Job {job_id} cannot move from {state.value} to {update.state.value}: "
                    "bridge.models.TRANSITIONS does not allow it."
                )
            state = update.state
            values["state"] = state.value
        if update.notice is not None:
            notice = update.notice
            values["notice"] = notice.value
        values["pending"] = _is_pending(state, notice)
        for name in (
            "attempts",
            "pages",
            "provider_fax_id",
            "reason",
            "code",
            "next_attempt_at",
            "submitted_at",
            "finished_at",
        ):
            value = getattr(update, name)
            if value is not None:
                values[name] = value
        if update.detail is not None:
            detail = {**(row.detail or {}), **update.detail}
            try:
                json.dumps(detail)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"JobUpdate.detail for job {job_id} cannot be stored as JSON: {exc}") from exc
            values["detail"] = detail
        return values

    # -- queries -------------------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> FaxJob:
        """Return one job. Raises ``JobNotFound``."""
        row = await self._run(
            f"read job {job_id}", lambda conn: conn.execute(_JOB_BY_ID, {"job_id": job_id}).one_or_none(), write=False
        )
        if row is None:
            raise JobNotFound(f"No job with id {job_id!r} exists.")
        return _to_job(row)

    async def job_counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (states without jobs are left out)."""
        statement = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        rows = await self._run("count the jobs", lambda conn: conn.execute(statement).all(), write=False)
        return {JobState(state): int(count) for state, count in rows}

    async def provider_totals(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """Faxes handed to each provider, and failed jobs by provider and code (for the metrics)."""
        submitted = (
            sa.select(jobs.c.provider, sa.func.count())
            .where(jobs.c.submitted_at.is_not(None))
            .group_by(jobs.c.provider)
        )
        failed = (
            sa.select(jobs.c.provider, sa.func.coalesce(jobs.c.code, ""), sa.func.count())
            .where(jobs.c.state == JobState.FAILED.value)
            .group_by(jobs.c.provider, sa.func.coalesce(jobs.c.code, ""))
        )

        def read(conn: Connection) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
            sent = {str(provider): int(count) for provider, count in conn.execute(submitted)}
            failures = {(str(provider), str(code)): int(count) for provider, code, count in conn.execute(failed)}
            return sent, failures

        return await self._run("count the faxes per provider", read, write=False)

    async def oldest_active_job(self) -> datetime | None:
        """When the oldest job that is not finished was accepted."""
        statement = sa.select(sa.func.min(jobs.c.created_at)).where(
            jobs.c.state.in_([state.value for state in ACTIVE_STATES])
        )
        value = await self._run(
            "find the oldest active job", lambda conn: conn.execute(statement).scalar_one_or_none(), write=False
        )
        if not isinstance(value, datetime):
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    async def list_jobs(self, *, states: Collection[JobState] | None = None, limit: int = 100) -> list[FaxJob]:
        """Return up to ``limit`` jobs, newest first, optionally only those in ``states``."""
        query = _JOB_SELECT.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(max(limit, 0))
        if states is not None:
            query = query.where(jobs.c.state.in_([JobState(state).value for state in states]))
        rows = await self._run("list jobs", lambda conn: conn.execute(query).all(), write=False)
        return [_to_job(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        """Return the earliest ``next_attempt_at`` of a job with work left (ignoring leases), or ``None``."""
        due: datetime | None = await self._run(
            "find the next due job", lambda conn: conn.execute(_NEXT_DUE).scalar_one(), write=False
        )
        return due

    async def lease_holders(self) -> set[str]:
        """Return the workers that hold at least one unexpired lease."""
        query = (
            sa.select(jobs.c.lease_holder)
            .where(jobs.c.lease_holder.is_not(None), jobs.c.lease_expires_at > sa.bindparam("now"))
            .distinct()
        )
        now = self._now()
        rows = await self._run(
            "list lease holders", lambda conn: conn.execute(query, {"now": now}).scalars().all(), write=False
        )
        return {str(row) for row in rows}

    async def expire_leases(self, worker_id: str) -> int:
        """End every lease ``worker_id`` holds now; the holder stays recorded, so the jobs read as interrupted."""
        now = self._now()
        statement = (
            sa.update(jobs)
            .where(jobs.c.lease_holder == worker_id, jobs.c.lease_expires_at > now)
            .values(lease_expires_at=now, updated_at=now)
        )
        return await self._run(
            f"end the leases of {worker_id}", lambda conn: int(conn.execute(statement).rowcount), write=True
        )

    async def cleanup(self, *, dedupe_window: timedelta) -> int:
        """Delete dedupe keys claimed longer than ``dedupe_window`` ago; return how many were deleted."""
        cutoff = self._now() - dedupe_window
        statement = sa.delete(dedupe_keys).where(dedupe_keys.c.created_at < cutoff)
        return await self._run(
            "delete expired dedupe keys", lambda conn: int(conn.execute(statement).rowcount), write=True
        )

    # -- reports and retention -------------------------------------------------------------------------------

    async def report_jobs(self, account: str, since: datetime, until: datetime) -> list[FaxJob]:
        """The jobs of ``account`` created in ``[since, until)``, oldest first."""
        query = _JOB_SELECT.where(
            jobs.c.account == account,
            jobs.c.created_at >= _aware("since", since),
            jobs.c.created_at < _aware("until", until),
        ).order_by(jobs.c.created_at, jobs.c.job_id)
        rows = await self._run(
            f"list the jobs of account {account}", lambda conn: conn.execute(query).all(), write=False
        )
        return [_to_job(row) for row in rows]

    async def inbound_counts(self, since: datetime, until: datetime) -> dict[str, int]:
        """Incoming faxes mailed in ``[since, until)``, per provider."""
        query = (
            sa.select(inbound_faxes.c.provider, sa.func.count())
            .where(
                inbound_faxes.c.delivered_at >= _aware("since", since),
                inbound_faxes.c.delivered_at < _aware("until", until),
            )
            .group_by(inbound_faxes.c.provider)
        )
        rows = await self._run("count the incoming faxes", lambda conn: conn.execute(query).all(), write=False)
        return {str(provider): int(count) for provider, count in rows}

    async def claim_report(self, account: str, period: str, now: datetime, *, stale_after: timedelta) -> bool:
        """Claim the report of ``account`` for ``period`` unless it was sent or another claim is fresh."""
        now = _aware("now", now)
        key = (report_runs.c.account == account) & (report_runs.c.period == period)

        def claim(conn: Connection) -> bool:
            row = conn.execute(
                sa.select(report_runs.c.claimed_at, report_runs.c.sent_at).where(key).with_for_update()
            ).one_or_none()
            if row is None:
                # ON CONFLICT DO NOTHING: an instance that inserted the same row meanwhile (PostgreSQL, where
                # FOR UPDATE cannot lock a row that does not exist yet) wins, and this one backs off.
                inserted = conn.execute(
                    self._insert(report_runs)
                    .values(account=account, period=period, claimed_at=now)
                    .on_conflict_do_nothing(index_elements=[report_runs.c.account, report_runs.c.period])
                )
                return bool(inserted.rowcount == 1)
            if row.sent_at is not None or row.claimed_at > now - stale_after:
                return False
            conn.execute(sa.update(report_runs).where(key).values(claimed_at=now))
            return True

        return await self._run(f"claim the {period} report of account {account}", claim, write=True)

    async def finish_report(self, account: str, period: str, now: datetime, *, sent: bool) -> None:
        """Mark the report sent, or drop the claim so that the next run tries again."""
        now = _aware("now", now)
        key = (report_runs.c.account == account) & (report_runs.c.period == period)

        def finish(conn: Connection) -> None:
            if not sent:
                conn.execute(sa.delete(report_runs).where(key, report_runs.c.sent_at.is_(None)))
                return
            upsert = self._insert(report_runs).values(account=account, period=period, claimed_at=now, sent_at=now)
            conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[report_runs.c.account, report_runs.c.period], set_={"sent_at": now}
                )
            )

        await self._run(f"record the {period} report of account {account}", finish, write=True)

    async def purge(self, *, documents_before: datetime | None, messages_before: datetime | None) -> PurgeResult:
        """Delete documents, previews and raw messages of finished jobs older than the cutoffs, in batches."""
        result = PurgeResult()
        if documents_before is not None:
            cutoff = _aware("documents_before", documents_before)
            while True:
                batch = await self._run("delete old fax documents", partial(self._purge_documents, cutoff), write=True)
                result += batch
                if batch.documents < _PURGE_BATCH and batch.previews < _PURGE_BATCH:
                    break
        if messages_before is not None:
            cutoff = _aware("messages_before", messages_before)
            while True:
                count = await self._run("delete old raw messages", partial(self._purge_messages, cutoff), write=True)
                result += PurgeResult(messages=count)
                if count < _PURGE_BATCH:
                    break
        return result

    @staticmethod
    def _purge_documents(cutoff: datetime, conn: Connection) -> PurgeResult:
        finished = _finished_before(cutoff)
        found = (
            conn.execute(
                sa.select(jobs.c.job_id)
                .where(
                    finished,
                    sa.or_(
                        sa.exists().where(documents.c.job_id == jobs.c.job_id),
                        sa.exists().where(previews.c.job_id == jobs.c.job_id),
                    ),
                )
                .limit(_PURGE_BATCH)
            )
            .scalars()
            .all()
        )
        if not found:
            return PurgeResult()
        ids = list(found)
        # The job is checked again in the DELETE itself: nothing may change between the two statements on
        # SQLite (the write lock), but the rule then holds by construction.
        still = sa.select(jobs.c.job_id).where(jobs.c.job_id.in_(ids), finished)
        pdfs = conn.execute(sa.delete(documents).where(documents.c.job_id.in_(still))).rowcount
        pngs = conn.execute(sa.delete(previews).where(previews.c.job_id.in_(still))).rowcount
        return PurgeResult(documents=int(pdfs), previews=int(pngs))

    @staticmethod
    def _purge_messages(cutoff: datetime, conn: Connection) -> int:
        unfinished = sa.exists().where(jobs.c.message_id == messages.c.message_id, sa.not_(_finished_before(cutoff)))
        due = sa.and_(messages.c.raw.is_not(None), messages.c.received_at < cutoff, sa.not_(unfinished))
        found = conn.execute(sa.select(messages.c.message_id).where(due).limit(_PURGE_BATCH)).scalars().all()
        if not found:
            return 0
        statement = sa.update(messages).where(messages.c.message_id.in_(list(found)), due).values(raw=None)
        return int(conn.execute(statement).rowcount)
