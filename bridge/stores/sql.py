"""The job store on SQLAlchemy 2 (async Core): SQLite through aiosqlite, PostgreSQL through asyncpg.

Every dialect difference lives in this module:

* **SQLite** runs in WAL mode with ``synchronous=FULL`` (in WAL mode ``NORMAL`` may lose the last commits on
  power loss, and a commit is the moment the SMTP client gets its 250), ``busy_timeout`` and foreign keys, set
  on every new connection. The sqlite3 driver's own transaction handling is switched off
  (``isolation_level = None``) and SQLAlchemy's "begin" event emits the ``BEGIN`` instead: ``BEGIN IMMEDIATE``
  for writes, so that a write transaction holds SQLite's single write lock from its first statement and two
  processes (the daemon and a CLI command) cannot both read a job as free and both lease it; a plain deferred
  ``BEGIN`` for reads, which in WAL mode never wait for a writer. Inside one process writes also queue on an
  ``asyncio.Lock``, so that they wait their turn on the event loop instead of polling SQLite's busy handler.
* **PostgreSQL** claims jobs with ``SELECT … FOR UPDATE SKIP LOCKED`` and sets the lease in the same
  transaction; rows being changed are locked with ``FOR UPDATE``. ``synchronous_commit`` is left as the
  server has it (a warning is logged at start when it is ``off``). Schema creation is serialised across
  instances with a transaction-scoped advisory lock.

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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from bridge.errors import JobNotFound, LeaseLost, StoreUnavailable
from bridge.models import (
    ACTIVE_STATES,
    AcceptRequest,
    AcceptResult,
    FaxJob,
    JobState,
    JobUpdate,
    LeasedJob,
    NoticeState,
    can_transition,
)
from bridge.stores import schema
from bridge.stores.base import JobStore
from bridge.stores.schema import dedupe_keys, documents, jobs, messages

__all__ = ["SQLStore"]

log = logging.getLogger(__name__)

_READ_ONLY = "faxbridge_read_only"
"""Execution option marking connections whose transactions only read (a deferred BEGIN on SQLite)."""

_SCHEMA_LOCK_ID = 0x6661786272696467
"""PostgreSQL advisory lock key ("faxbridg") held while the schema is created."""

_DATABASE_ERRORS = (sa_exc.DBAPIError, sa_exc.TimeoutError, sa_exc.DisconnectionError, OSError)
"""What a public method turns into ``StoreUnavailable``: driver errors, pool timeouts, network failures."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} has no timezone; the job store needs aware datetimes")
    return value.astimezone(UTC)


def _is_pending(state: JobState, notice: NoticeState) -> bool:
    """Whether a worker still has something to do for the job: the state machine or the sender's notice."""
    return state in ACTIVE_STATES or notice == NoticeState.PENDING


_JOB_SELECT = sa.select(
    jobs.c.job_id,
    jobs.c.message_id,
    jobs.c.account,
    jobs.c.provider,
    jobs.c.recipient,
    jobs.c.number,
    messages.c.mail_from,
    messages.c.subject,
    messages.c.original_message_id,
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
).select_from(jobs.join(messages, jobs.c.message_id == messages.c.message_id))


def _to_job(row: sa.Row[*tuple[Any, ...]]) -> FaxJob:
    return FaxJob(
        job_id=row.job_id,
        message_id=row.message_id,
        account=row.account,
        provider=row.provider,
        recipient=row.recipient,
        number=row.number,
        sender=row.mail_from,
        subject=row.subject,
        original_message_id=row.original_message_id,
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

    Checked before the first connection because aiosqlite leaves a worker thread behind when its connect
    fails (omnilib/aiosqlite#241), and because "unable to open database file" does not say what to fix.
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


@dataclass(frozen=True, slots=True)
class _Claims:
    """Who owns each dedupe key of a batch once the keys were claimed."""

    owner: dict[str, str]
    """dedupe key -> the job id that owns it (one of the batch, or an earlier job)."""
    earlier_message: dict[str, str]
    """earlier job id -> its message id, for every owner that is not from this batch."""


class SQLStore(JobStore):
    """``JobStore`` on SQLite (one host) or PostgreSQL (several instances), through SQLAlchemy async Core.

    ``url`` must name an async driver (``sqlite+aiosqlite``, ``postgresql+asyncpg``); ``open_store`` maps the
    plain forms. ``dedupe_window`` is how long a dedupe key is remembered. ``clock`` returns the current time
    (aware); tests pass a controllable one. ``busy_timeout`` is how long a SQLite write waits for another
    process's write to finish; ``connect_timeout`` how long a PostgreSQL connection attempt may take.
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
        # hide_parameters keeps message bytes and addresses out of exception texts and logs.
        if self._dialect == "sqlite":
            self._engine = create_async_engine(url, hide_parameters=True)
            busy_ms = int(busy_timeout.total_seconds() * 1000)
            event.listen(self._engine.sync_engine, "connect", partial(_sqlite_on_connect, busy_ms))
            event.listen(self._engine.sync_engine, "begin", _sqlite_on_begin)
            self._write_lock: asyncio.Lock | None = asyncio.Lock()
        elif self._dialect == "postgresql":
            self._engine = create_async_engine(
                url,
                hide_parameters=True,
                # A PostgreSQL restart or failover leaves dead pooled connections behind; test before use.
                pool_pre_ping=True,
                connect_args={
                    "timeout": connect_timeout.total_seconds(),
                    "server_settings": {"application_name": "faxbridge"},
                },
            )
            self._write_lock = None
        else:
            raise ValueError(f"unsupported database {self._dialect!r} in {self._display_url}")
        self._read_engine = self._engine.execution_options(**{_READ_ONLY: True})

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine, for diagnostics and for tests that check the pool."""
        return self._engine

    # -- plumbing ------------------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return _aware("the store clock's time", self._clock())

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    @asynccontextmanager
    async def _transaction(self, what: str, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """Run the body in one transaction; database failures become ``StoreUnavailable``."""
        lock: AbstractAsyncContextManager[Any] = (
            self._write_lock if write and self._write_lock is not None else nullcontext()
        )
        engine = self._engine if write else self._read_engine
        try:
            async with lock, engine.begin() as conn:
                yield conn
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
        async with self._transaction("create or check its schema", write=True) as conn:
            if self._dialect == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_ID)))
                setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar_one()
                if setting == "off":
                    log.warning(
                        "PostgreSQL has synchronous_commit=off: a crash can lose messages the SMTP "
                        "client was told were accepted. Set it to on for the faxbridge database."
                    )
            await schema.create_all(conn, now=self._now())

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

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
        what = f"store {len(requests)} accepted message(s)"
        async with self._transaction(what, write=True) as conn:
            claims = await self._claim_dedupe_keys(conn, wanted, now)
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
                await conn.execute(sa.insert(messages), message_rows)
            if job_rows:
                # Columns left out (pages, provider ids, lease…) start as NULL.
                await conn.execute(sa.insert(jobs), job_rows)
        return results

    async def _claim_dedupe_keys(self, conn: AsyncConnection, wanted: Mapping[str, str], now: datetime) -> _Claims:
        """Claim each key for its wanted job unless a live claim exists; return who owns every key."""
        if not wanted:
            return _Claims(owner={}, earlier_message={})
        cutoff = now - self._dedupe_window
        # ON CONFLICT DO NOTHING also waits, on PostgreSQL, for a concurrent batch that inserted the same key
        # to commit or roll back, so that the SELECT below sees the winner. Keys go in sorted order so that
        # two batches sharing keys wait for each other instead of deadlocking.
        await conn.execute(
            self._insert(dedupe_keys).on_conflict_do_nothing(index_elements=[dedupe_keys.c.dedupe_key]),
            [{"dedupe_key": key, "job_id": wanted[key], "created_at": now} for key in sorted(wanted)],
        )
        rows = (
            await conn.execute(
                sa.select(dedupe_keys.c.dedupe_key, dedupe_keys.c.job_id, dedupe_keys.c.created_at).where(
                    dedupe_keys.c.dedupe_key.in_(list(wanted))
                )
            )
        ).all()
        found = {row.dedupe_key: (row.job_id, row.created_at) for row in rows}
        if len(found) != len(wanted):
            # Only a cleanup that deleted the key between our INSERT and SELECT gets here.
            raise StoreUnavailable(
                "A dedupe key vanished while the message was being stored (a concurrent cleanup); "
                "nothing was stored, try again."
            )
        earlier_ids = [job_id for key, (job_id, _) in found.items() if job_id != wanted[key]]
        earlier_message: dict[str, str] = {}
        if earlier_ids:
            earlier_rows = await conn.execute(
                sa.select(jobs.c.job_id, jobs.c.message_id).where(jobs.c.job_id.in_(earlier_ids))
            )
            earlier_message = {row.job_id: row.message_id for row in earlier_rows}
        owner: dict[str, str] = {}
        for key in sorted(found):
            job_id, claimed_at = found[key]
            mine = wanted[key]
            # A key past the window, or one whose job is gone, passes to the new job.
            if job_id != mine and (claimed_at < cutoff or job_id not in earlier_message):
                taken = await conn.execute(
                    sa.update(dedupe_keys)
                    .where(dedupe_keys.c.dedupe_key == key, dedupe_keys.c.job_id == job_id)
                    .values(job_id=mine, created_at=now)
                )
                if taken.rowcount != 1:
                    raise StoreUnavailable(
                        "A dedupe key changed while the message was being stored (another delivery of it, or a "
                        "cleanup, at the same moment); nothing was stored, try again."
                    )
                job_id = mine
            owner[key] = job_id
        return _Claims(owner=owner, earlier_message=earlier_message)

    async def get_message(self, message_id: str) -> bytes:
        """Return the raw message as it was received. Raises ``JobNotFound``."""
        async with self._transaction(f"read message {message_id}", write=False) as conn:
            row = (
                await conn.execute(sa.select(messages.c.raw).where(messages.c.message_id == message_id))
            ).one_or_none()
        if row is None:
            raise JobNotFound(f"No message with id {message_id!r} is stored.")
        if row.raw is None:
            raise JobNotFound(f"Message {message_id!r} was deleted by retention; only its metadata is kept.")
        return bytes(row.raw)

    async def get_document(self, job_id: str) -> bytes | None:
        """Return the job's fax-ready PDF, or ``None`` before it was converted. Raises ``JobNotFound``."""
        query = (
            sa.select(jobs.c.job_id, documents.c.pdf)
            .select_from(jobs.outerjoin(documents, documents.c.job_id == jobs.c.job_id))
            .where(jobs.c.job_id == job_id)
        )
        async with self._transaction(f"read the document of job {job_id}", write=False) as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise JobNotFound(f"No job with id {job_id!r} exists.")
        return None if row.pdf is None else bytes(row.pdf)

    # -- workers -------------------------------------------------------------------------------------------

    async def acquire_jobs(self, worker_id: str, lease: timedelta, limit: int) -> list[LeasedJob]:
        """Claim up to ``limit`` due jobs for ``worker_id`` until now + ``lease``; oldest due first."""
        if limit <= 0:
            return []
        now = self._now()
        expires = now + lease
        due = (
            sa.select(jobs.c.job_id)
            .where(
                jobs.c.pending == sa.true(),
                jobs.c.next_attempt_at <= now,
                sa.or_(jobs.c.lease_holder.is_(None), jobs.c.lease_expires_at <= now),
            )
            .order_by(jobs.c.next_attempt_at, jobs.c.job_id)
            .limit(limit)
        )
        if self._dialect == "postgresql":
            # Rows another instance is claiming right now are passed over, not waited for.
            due = due.with_for_update(skip_locked=True)
        async with self._transaction(f"acquire jobs for worker {worker_id}", write=True) as conn:
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.job_id.in_(ids))
                .values(lease_holder=worker_id, lease_expires_at=expires, updated_at=now)
            )
            rows = (
                await conn.execute(
                    _JOB_SELECT.where(jobs.c.job_id.in_(ids)).order_by(jobs.c.next_attempt_at, jobs.c.job_id)
                )
            ).all()
        leased = []
        for row in rows:
            job = _to_job(row)
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
        current = sa.select(jobs.c.state, jobs.c.notice, jobs.c.lease_holder, jobs.c.detail).where(
            jobs.c.job_id == job_id
        )
        if self._dialect == "postgresql":
            current = current.with_for_update()
        async with self._transaction(what, write=True) as conn:
            row = (await conn.execute(current)).one_or_none()
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
            await conn.execute(
                sa.update(jobs).where(jobs.c.job_id == job_id, jobs.c.lease_holder == worker_id).values(values)
            )
            if update.document is not None:
                upsert = self._insert(documents).values(job_id=job_id, pdf=update.document, stored_at=now)
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[documents.c.job_id],
                        set_={"pdf": upsert.excluded.pdf, "stored_at": upsert.excluded.stored_at},
                    )
                )
            stored = (await conn.execute(_JOB_SELECT.where(jobs.c.job_id == job_id))).one()
        return _to_job(stored)

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
        async with self._transaction(f"read job {job_id}", write=False) as conn:
            row = (await conn.execute(_JOB_SELECT.where(jobs.c.job_id == job_id))).one_or_none()
        if row is None:
            raise JobNotFound(f"No job with id {job_id!r} exists.")
        return _to_job(row)

    async def list_jobs(self, *, states: Collection[JobState] | None = None, limit: int = 100) -> list[FaxJob]:
        """Return up to ``limit`` jobs, newest first, optionally only those in ``states``."""
        query = _JOB_SELECT.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(max(limit, 0))
        if states is not None:
            query = query.where(jobs.c.state.in_([JobState(state).value for state in states]))
        async with self._transaction("list jobs", write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_to_job(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        """Return the earliest ``next_attempt_at`` of a job with work left (ignoring leases), or ``None``."""
        query = sa.select(sa.func.min(jobs.c.next_attempt_at)).where(jobs.c.pending == sa.true())
        async with self._transaction("find the next due job", write=False) as conn:
            due: datetime | None = (await conn.execute(query)).scalar_one()
        return due

    async def cleanup(self, *, dedupe_window: timedelta) -> int:
        """Delete dedupe keys claimed longer than ``dedupe_window`` ago; return how many were deleted."""
        cutoff = self._now() - dedupe_window
        async with self._transaction("delete expired dedupe keys", write=True) as conn:
            result = await conn.execute(sa.delete(dedupe_keys).where(dedupe_keys.c.created_at < cutoff))
        return int(result.rowcount)
