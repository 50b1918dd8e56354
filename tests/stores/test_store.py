"""The job store contract (``bridge/stores/base.py``), run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from bridge.errors import ConfigError, JobNotFound, LeaseLost, StoreUnavailable
from bridge.models import (
    AcceptRequest,
    EnvelopeInfo,
    JobState,
    JobUpdate,
    NewJob,
    NoticeState,
)
from bridge.stores import open_store, schema
from bridge.stores.sql import SQLStore

from .conftest import DEDUPE_WINDOW, FakeClock, StoreFactory, run_sql, sqlite_write_lock, store_threads

REPO = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)
EXPIRED = timedelta(seconds=-1)
"""A lease that has already run out when it is granted: the next acquirer may take the job at once."""

RAW = (
    b"Received: from client.example (client.example [192.0.2.7])\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"\r\n"
    b"body with bare \n LF, a NUL \x00, high bytes \xff\xfe and a trailing space \r\n"
)


def envelope(subject: str = "Résumé", message_id: str | None = "<m1@example.com>") -> EnvelopeInfo:
    return EnvelopeInfo(
        mail_from="alice@example.com",
        rcpt_tos=("+4930123456@fax.example.com", "+4930999999@fax.example.com"),
        client_address="192.0.2.7",
        message_id=message_id,
        subject=subject,
        account="acme",
    )


def new_job(job_id: str, key: str | None = None, number: str = "+4930123456") -> NewJob:
    return NewJob(
        job_id=job_id,
        recipient=f"{number}@fax.example.com",
        number=number,
        account="acme",
        provider="local",
        dedupe_key=key or f"key-{job_id}",
    )


def message(message_id: str, *jobs: NewJob, raw: bytes = RAW, env: EnvelopeInfo | None = None) -> AcceptRequest:
    return AcceptRequest(message_id=message_id, raw=raw, envelope=env or envelope(), jobs=jobs)


async def accept(store: SQLStore, message_id: str, *job_ids: str) -> None:
    """Store one message with one job per id, each with its own dedupe key."""
    [result] = await store.accept_messages([message(message_id, *(new_job(j) for j in job_ids))])
    assert not result.duplicate


async def lease_one(store: SQLStore, worker: str, job_id: str, lease: timedelta = HOUR) -> None:
    leased = await store.acquire_jobs(worker, lease, 1000)
    assert job_id in [lj.job.job_id for lj in leased]
    for other in leased:
        if other.job.job_id != job_id:
            await store.release_job(worker, other.job.job_id)


async def move(store: SQLStore, worker: str, job_id: str, *states: JobState) -> None:
    for state in states:
        await store.update_job(worker, job_id, JobUpdate(state=state), HOUR)


async def count_rows(store: SQLStore, table: sa.Table) -> int:
    return await run_sql(
        store, lambda conn: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    )


# -- schema and start-up ---------------------------------------------------------------------------------


async def test_start_creates_schema_once_and_a_second_instance_reuses_it(
    store: SQLStore, make_store: StoreFactory
) -> None:
    await accept(store, "m1", "j1")
    second = await make_store()
    assert (await second.get_job("j1")).message_id == "m1"
    versions = await run_sql(
        store, lambda conn: conn.execute(sa.select(schema.schema_version.c.version)).scalars().all()
    )
    assert versions == [schema.SCHEMA_VERSION]


async def test_start_refuses_a_database_from_a_newer_faxbridge(store: SQLStore, make_store: StoreFactory) -> None:
    await run_sql(
        store, lambda conn: conn.execute(sa.update(schema.schema_version).values(version=schema.SCHEMA_VERSION + 1))
    )
    with pytest.raises(ConfigError, match="schema version"):
        await make_store()


async def test_sqlite_connections_use_wal_and_full_sync(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'faxbridge.db'}", dedupe_window=DEDUPE_WINDOW)

    def pragmas() -> list[Any]:
        # A connection of the store's own pool, set up by the store's connect event.
        with store.engine.connect() as conn:
            return [
                conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]

    try:
        await store.start()
        assert await asyncio.to_thread(pragmas) == ["wal", 2, 1, 30_000]  # synchronous 2 is FULL
    finally:
        await store.close()


# -- accept_messages -------------------------------------------------------------------------------------


async def test_accept_round_trips_raw_bytes_and_envelope(store: SQLStore, clock: FakeClock) -> None:
    raw = RAW + bytes(range(256)) * 4000  # about 1 MB, every byte value
    [result] = await store.accept_messages([message("m1", new_job("j1"), new_job("j2", number="+4930999999"))])
    assert result.message_id == "m1"
    assert result.job_ids == ("j1", "j2")
    assert not result.duplicate
    assert await store.get_message("m1") == RAW

    await store.accept_messages([message("m2", new_job("j3"), raw=raw, env=envelope(subject="", message_id=None))])
    assert await store.get_message("m2") == raw
    bare = await store.get_job("j3")
    assert (bare.subject, bare.original_message_id) == ("", None)

    job = await store.get_job("j2")
    assert job.message_id == "m1"
    assert (job.account, job.provider, job.number) == ("acme", "local", "+4930999999")
    assert job.recipient == "+4930999999@fax.example.com"
    assert job.sender == "alice@example.com"
    assert job.subject == "Résumé"
    assert job.original_message_id == "<m1@example.com>"
    assert (job.state, job.notice, job.attempts) == (JobState.RECEIVED, NoticeState.NONE, 0)
    assert (job.pages, job.provider_fax_id, job.reason, job.code) == (None, None, None, None)
    assert job.created_at == job.updated_at == job.next_attempt_at == clock.now
    assert job.created_at.tzinfo is UTC
    assert (job.submitted_at, job.finished_at) == (None, None)
    assert job.detail == {}
    assert await store.get_document("j2") is None


async def test_accept_of_nothing_touches_nothing(store: SQLStore) -> None:
    assert await store.accept_messages([]) == []


async def test_unknown_ids_raise_job_not_found(store: SQLStore) -> None:
    with pytest.raises(JobNotFound):
        await store.get_message("nope")
    with pytest.raises(JobNotFound):
        await store.get_job("nope")
    with pytest.raises(JobNotFound):
        await store.get_document("nope")
    with pytest.raises(JobNotFound):
        await store.update_job("w1", "nope", JobUpdate(), HOUR)
    with pytest.raises(JobNotFound):
        await store.release_job("w1", "nope")


async def test_a_failing_message_leaves_nothing_of_its_batch(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    good = message("m2", new_job("j2"))
    clashing = message("m3", new_job("j3"), new_job("j1", key="fresh-key"))  # j1 exists: primary key clash
    with pytest.raises(StoreUnavailable, match="could not store 2 accepted message"):
        await store.accept_messages([good, clashing])

    with pytest.raises(JobNotFound):
        await store.get_message("m2")
    with pytest.raises(JobNotFound):
        await store.get_message("m3")
    assert [job.job_id for job in await store.list_jobs()] == ["j1"]
    assert await count_rows(store, schema.dedupe_keys) == 1
    # Its dedupe keys went with it: the same message is accepted as new afterwards.
    [again] = await store.accept_messages([good])
    assert again == type(again)(message_id="m2", job_ids=("j2",), duplicate=False)


async def test_a_message_with_a_job_id_twice_is_not_stored(store: SQLStore) -> None:
    with pytest.raises(StoreUnavailable):
        await store.accept_messages([message("m1", new_job("j1", key="a"), new_job("j1", key="b"))])
    assert await count_rows(store, schema.messages) == 0
    assert await count_rows(store, schema.jobs) == 0


async def test_the_same_key_again_is_a_duplicate(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    clock.advance(DEDUPE_WINDOW - timedelta(seconds=1))
    [result] = await store.accept_messages([message("m2", new_job("j9", key="key-j1"))])
    assert result.duplicate
    assert result.job_ids == ("j1",)
    assert result.message_id == "m1"
    with pytest.raises(JobNotFound):
        await store.get_message("m2")
    with pytest.raises(JobNotFound):
        await store.get_job("j9")
    assert await count_rows(store, schema.messages) == 1


async def test_a_key_older_than_the_window_makes_a_new_job(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    clock.advance(DEDUPE_WINDOW + timedelta(seconds=1))
    [result] = await store.accept_messages([message("m2", new_job("j2", key="key-j1"))])
    assert result == type(result)(message_id="m2", job_ids=("j2",), duplicate=False)
    assert (await store.get_job("j2")).message_id == "m2"
    # The new job now owns the key for a whole window.
    clock.advance(DEDUPE_WINDOW - timedelta(seconds=1))
    [third] = await store.accept_messages([message("m3", new_job("j3", key="key-j1"))])
    assert third.duplicate
    assert (third.message_id, third.job_ids) == ("m2", ("j2",))


async def test_partial_duplicates_store_the_message_with_its_new_jobs(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    [result] = await store.accept_messages([message("m2", new_job("j2"), new_job("j9", key="key-j1"), new_job("j3"))])
    assert result == type(result)(message_id="m2", job_ids=("j2", "j1", "j3"), duplicate=False)
    assert await store.get_message("m2") == RAW
    assert (await store.get_job("j1")).message_id == "m1"
    assert (await store.get_job("j3")).message_id == "m2"
    with pytest.raises(JobNotFound):
        await store.get_job("j9")


async def test_duplicates_inside_one_batch(store: SQLStore) -> None:
    first = message("m1", new_job("j1", key="a"), new_job("j2", key="b"))
    resent = message("m2", new_job("j3", key="a"), new_job("j4", key="b"))
    partly = message("m3", new_job("j5", key="b"), new_job("j6", key="c"))
    results = await store.accept_messages([first, resent, partly])
    assert [(r.message_id, r.job_ids, r.duplicate) for r in results] == [
        ("m1", ("j1", "j2"), False),
        ("m1", ("j1", "j2"), True),
        ("m3", ("j2", "j6"), False),
    ]
    assert await count_rows(store, schema.messages) == 2
    assert sorted(job.job_id for job in await store.list_jobs()) == ["j1", "j2", "j6"]


async def test_concurrent_deliveries_of_one_message_give_one_job(store: SQLStore, make_store: StoreFactory) -> None:
    other = await make_store()
    results = await asyncio.gather(
        *(s.accept_messages([message(f"m{i}", new_job(f"j{i}", key="same"))]) for i, s in enumerate([store, other]))
    )
    flat = [r for batch in results for r in batch]
    assert sorted(r.duplicate for r in flat) == [False, True]
    assert flat[0].job_ids == flat[1].job_ids
    assert await count_rows(store, schema.jobs) == 1


# -- acquire_jobs ----------------------------------------------------------------------------------------


async def test_acquire_hands_out_oldest_first_up_to_the_limit(store: SQLStore, clock: FakeClock) -> None:
    for i in range(5):
        await accept(store, f"m{i}", f"j{i}")
        clock.advance(timedelta(seconds=1))
    assert await store.acquire_jobs("w1", HOUR, 0) == []
    leased = await store.acquire_jobs("w1", HOUR, 3)
    assert [lj.job.job_id for lj in leased] == ["j0", "j1", "j2"]
    assert all(lj.lease_expires_at == clock.now + HOUR for lj in leased)
    assert not any(lj.interrupted for lj in leased)
    # Leased jobs are not handed out again while the lease runs.
    assert [lj.job.job_id for lj in await store.acquire_jobs("w2", HOUR, 10)] == ["j3", "j4"]
    assert await store.acquire_jobs("w3", HOUR, 10) == []


async def test_two_stores_never_lease_the_same_job(store: SQLStore, make_store: StoreFactory) -> None:
    other = await make_store()
    requests = [message(f"m{i}", new_job(f"j{i}")) for i in range(200)]
    await store.accept_messages(requests)

    async def drain(s: SQLStore, worker: str) -> list[str]:
        got: list[str] = []
        while batch := await s.acquire_jobs(worker, HOUR, 7):
            got.extend(lj.job.job_id for lj in batch)
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(drain(store, "a1"), drain(other, "b1"), drain(store, "a2"), drain(other, "b2"))
    everything = [job_id for got in results for job_id in got]
    assert len(everything) == len(set(everything)) == 200


@pytest.mark.slow
async def test_two_processes_never_lease_the_same_job(make_store: StoreFactory, store_url: str) -> None:
    store = await make_store(clock=None)  # the child process uses the real clock too
    await store.accept_messages([message(f"m{i}", new_job(f"j{i}")) for i in range(300)])
    child_code = textwrap.dedent(
        """
        import asyncio, sys
        from datetime import timedelta
        from bridge.stores.sql import SQLStore

        async def main():
            store = SQLStore(sys.argv[1], dedupe_window=timedelta(days=1))
            await store.start()
            print("ready", flush=True)
            sys.stdin.readline()
            got = []
            while batch := await store.acquire_jobs("child", timedelta(hours=1), 2):
                got.extend(lj.job.job_id for lj in batch)
            await store.close()
            print(" ".join(got), flush=True)

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        child_code,
        store_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"
    child.stdin.write(b"go\n")
    await child.stdin.drain()
    mine: list[str] = []
    while batch := await store.acquire_jobs("parent", HOUR, 2):
        mine.extend(lj.job.job_id for lj in batch)
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0
    theirs = out.decode().split()
    assert not set(mine) & set(theirs)
    assert len(mine) + len(theirs) == 300


async def test_an_expired_lease_passes_to_another_worker(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1", timedelta(minutes=5))
    clock.advance(timedelta(minutes=5))
    [taken] = await store.acquire_jobs("w2", HOUR, 10)
    assert taken.job.job_id == "j1"
    assert not taken.interrupted
    with pytest.raises(LeaseLost, match="leased to 'w2'"):
        await store.update_job("w1", "j1", JobUpdate(state=JobState.READY), HOUR)
    with pytest.raises(LeaseLost):
        await store.release_job("w1", "j1")
    assert (await store.get_job("j1")).state == JobState.RECEIVED


async def test_the_leases_of_a_dead_worker_can_be_ended_at_once(store: SQLStore) -> None:
    for n in (1, 2, 3):
        await accept(store, f"m{n}", f"j{n}")
    await lease_one(store, "dead", "j1")
    await lease_one(store, "dead", "j2")
    await lease_one(store, "alive", "j3")
    await store.update_job("dead", "j2", JobUpdate(state=JobState.READY), HOUR)
    await store.update_job("dead", "j2", JobUpdate(state=JobState.SUBMITTING), HOUR)
    assert await store.lease_holders() == {"dead", "alive"}
    assert await store.acquire_jobs("heir", HOUR, 10) == []
    assert await store.expire_leases("dead") == 2
    assert await store.lease_holders() == {"alive"}
    taken = {leased.job.job_id: leased for leased in await store.acquire_jobs("heir", HOUR, 10)}
    assert set(taken) == {"j1", "j2"}
    assert taken["j2"].interrupted
    assert not taken["j1"].interrupted
    assert await store.expire_leases("nobody") == 0
    with pytest.raises(LeaseLost):
        await store.release_job("dead", "j1")


async def test_a_lease_that_ran_out_frees_the_job_at_once(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    [first] = await store.acquire_jobs("w1", EXPIRED, 10)
    assert first.lease_expires_at < first.job.updated_at
    [second] = await store.acquire_jobs("w2", HOUR, 10)
    assert second.job.job_id == "j1"
    with pytest.raises(LeaseLost):
        await store.release_job("w1", "j1")


async def test_a_job_found_in_submitting_comes_back_interrupted(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    await move(store, "w1", "j1", JobState.READY)
    await store.update_job("w1", "j1", JobUpdate(state=JobState.SUBMITTING), timedelta(minutes=5))
    clock.advance(timedelta(minutes=5, seconds=1))
    [taken] = await store.acquire_jobs("w2", HOUR, 10)
    assert taken.job.state == JobState.SUBMITTING
    assert taken.interrupted
    with pytest.raises(LeaseLost):
        await store.update_job("w1", "j1", JobUpdate(state=JobState.SUBMITTED), HOUR)
    job = await store.update_job("w2", "j1", JobUpdate(state=JobState.SUBMIT_UNCERTAIN), HOUR)
    assert job.state == JobState.SUBMIT_UNCERTAIN


async def test_an_expired_lease_nobody_took_still_lets_its_holder_write(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1", timedelta(minutes=5))
    clock.advance(HOUR)
    job = await store.update_job("w1", "j1", JobUpdate(state=JobState.READY), timedelta(minutes=5))
    assert job.state == JobState.READY
    # The write renewed the lease from now, so nobody else may take the job.
    assert await store.acquire_jobs("w2", HOUR, 10) == []


async def test_update_extends_the_lease(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1", timedelta(minutes=1))
    clock.advance(timedelta(seconds=50))
    await store.update_job("w1", "j1", JobUpdate(attempts=1), timedelta(minutes=10))
    clock.advance(timedelta(minutes=5))
    assert await store.acquire_jobs("w2", HOUR, 10) == []
    clock.advance(timedelta(minutes=5))
    assert [lj.job.job_id for lj in await store.acquire_jobs("w2", HOUR, 10)] == ["j1"]


async def test_writes_need_the_lease(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    with pytest.raises(LeaseLost, match="not leased"):
        await store.update_job("w1", "j1", JobUpdate(state=JobState.READY), HOUR)
    await lease_one(store, "w1", "j1")
    with pytest.raises(LeaseLost, match="leased to 'w1', not to worker 'w2'"):
        await store.update_job("w2", "j1", JobUpdate(state=JobState.READY), HOUR)
    with pytest.raises(LeaseLost):
        await store.release_job("w2", "j1", JobUpdate(attempts=3))
    await store.release_job("w1", "j1")
    with pytest.raises(LeaseLost):
        await store.release_job("w1", "j1")
    job = await store.get_job("j1")
    assert (job.state, job.attempts) == (JobState.RECEIVED, 0)


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        ((), JobState.SUBMITTING),
        ((), JobState.DELIVERED),
        ((JobState.READY,), JobState.SUBMITTED),
        ((JobState.READY, JobState.SUBMITTING), JobState.READY),
        ((JobState.REJECTED,), JobState.READY),
        ((JobState.CANCELLED,), JobState.QUARANTINED),
    ],
)
async def test_forbidden_transitions_raise_and_write_nothing(
    store: SQLStore, path: tuple[JobState, ...], forbidden: JobState
) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    await move(store, "w1", "j1", *path)
    before = await store.get_job("j1")
    with pytest.raises(ValueError, match=f"from {before.state.value} to {forbidden.value}"):
        await store.update_job("w1", "j1", JobUpdate(state=forbidden, attempts=5), HOUR)
    with pytest.raises(ValueError, match=f"from {before.state.value} to {forbidden.value}"):
        await store.release_job("w1", "j1", JobUpdate(state=forbidden))
    assert await store.get_job("j1") == before
    # The worker still holds the job.
    await store.release_job("w1", "j1")


async def test_update_writes_fields_document_and_merges_detail(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    clock.advance(timedelta(seconds=10))
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 100 + b"%%EOF\n"
    job = await store.update_job(
        "w1",
        "j1",
        JobUpdate(state=JobState.READY, pages=3, document=pdf, detail={"converter": {"warnings": ["x"]}, "a": 1}),
        HOUR,
    )
    assert (job.state, job.pages, job.updated_at) == (JobState.READY, 3, clock.now)
    assert await store.get_document("j1") == pdf
    submitted = clock.now + timedelta(seconds=5)
    job = await store.update_job(
        "w1",
        "j1",
        JobUpdate(
            state=JobState.SUBMITTING,
            attempts=1,
            provider_fax_id="F-1",
            code="202",
            reason="queued",
            submitted_at=submitted.astimezone(timezone(timedelta(hours=-5))),  # any offset, read back as UTC
            document=b"%PDF-2",
            detail={"a": 2, "send": {"id": "F-1"}},
        ),
        HOUR,
    )
    assert job.detail == {"converter": {"warnings": ["x"]}, "a": 2, "send": {"id": "F-1"}}
    assert (job.attempts, job.provider_fax_id, job.code, job.reason) == (1, "F-1", "202", "queued")
    assert job.submitted_at == submitted
    assert job.submitted_at is not None
    assert job.submitted_at.tzinfo is UTC
    assert job.pages == 3  # left alone: None means unchanged
    assert await store.get_document("j1") == b"%PDF-2"
    assert await store.get_job("j1") == job


async def test_naive_datetimes_and_unstorable_detail_are_refused(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    with pytest.raises(ValueError, match="no timezone"):
        await store.update_job("w1", "j1", JobUpdate(next_attempt_at=datetime(2030, 1, 1)), HOUR)
    with pytest.raises(ValueError, match="JSON"):
        await store.update_job("w1", "j1", JobUpdate(detail={"x": object()}), HOUR)


async def test_release_makes_the_job_due_at_its_next_attempt(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    retry_at = clock.now + timedelta(minutes=10)
    job = await store.release_job("w1", "j1", JobUpdate(next_attempt_at=retry_at))
    assert job.next_attempt_at == retry_at
    assert await store.acquire_jobs("w2", HOUR, 10) == []
    assert await store.next_due_at() == retry_at
    clock.advance(timedelta(minutes=10))
    assert [lj.job.job_id for lj in await store.acquire_jobs("w2", HOUR, 10)] == ["j1"]


async def test_a_pending_notice_makes_a_finished_job_due(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    await store.release_job(
        "w1", "j1", JobUpdate(state=JobState.REJECTED, notice=NoticeState.PENDING, reason="encrypted PDF")
    )
    [again] = await store.acquire_jobs("w2", HOUR, 10)
    assert (again.job.state, again.job.notice) == (JobState.REJECTED, NoticeState.PENDING)
    await store.release_job("w2", "j1", JobUpdate(notice=NoticeState.SENT))
    assert await store.acquire_jobs("w3", HOUR, 10) == []
    assert await store.next_due_at() is None


async def test_next_due_at_ignores_leases_and_finished_jobs(store: SQLStore, clock: FakeClock) -> None:
    assert await store.next_due_at() is None
    start = clock.now
    await accept(store, "m1", "j1")
    clock.advance(timedelta(seconds=30))
    await accept(store, "m2", "j2")
    await lease_one(store, "w1", "j1")
    assert await store.next_due_at() == start
    await store.release_job("w1", "j1", JobUpdate(state=JobState.REJECTED))
    assert await store.next_due_at() == start + timedelta(seconds=30)


async def test_list_jobs_newest_first_with_filter_and_limit(store: SQLStore, clock: FakeClock) -> None:
    for i in range(4):
        await accept(store, f"m{i}", f"j{i}")
        clock.advance(timedelta(seconds=1))
    await lease_one(store, "w1", "j1")
    await move(store, "w1", "j1", JobState.READY)
    await store.release_job("w1", "j1")
    assert [job.job_id for job in await store.list_jobs()] == ["j3", "j2", "j1", "j0"]
    assert [job.job_id for job in await store.list_jobs(limit=2)] == ["j3", "j2"]
    assert [job.job_id for job in await store.list_jobs(states={JobState.READY})] == ["j1"]
    received = await store.list_jobs(states=[JobState.RECEIVED, JobState.FAILED])
    assert [job.job_id for job in received] == ["j3", "j2", "j0"]
    assert await store.list_jobs(states=[]) == []


async def test_cleanup_deletes_keys_older_than_the_window(store: SQLStore, clock: FakeClock) -> None:
    await accept(store, "m1", "j1")
    clock.advance(timedelta(days=3))
    await accept(store, "m2", "j2")
    clock.advance(timedelta(days=2))
    assert await store.cleanup(dedupe_window=timedelta(days=4)) == 1
    assert await store.cleanup(dedupe_window=timedelta(days=4)) == 0
    # j1's key is gone, j2's remains.
    [fresh] = await store.accept_messages([message("m3", new_job("j3", key="key-j1"))])
    [dup] = await store.accept_messages([message("m4", new_job("j4", key="key-j2"))])
    assert (fresh.duplicate, dup.duplicate, dup.job_ids) == (False, True, ("j2",))
    assert (await store.get_job("j1")).message_id == "m1"  # jobs are not touched


# -- how transactions run -------------------------------------------------------------------------------


def first_words(statement: str) -> str:
    """``BEGIN IMMEDIATE`` or ``BEGIN`` for a BEGIN, else the statement's keyword (``SELECT``, ``UPDATE``…)."""
    words = statement.split()
    return " ".join(words[:2]) if words[0].upper() == "BEGIN" and len(words) > 1 else words[0].upper()


async def test_each_transaction_sends_few_statements(store: SQLStore) -> None:
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(first_words(statement))

    sqlite = store.engine.dialect.name == "sqlite"
    event.listen(store.engine, "before_cursor_execute", record)
    try:
        await accept(store, "m1", "j1")
        # The dedupe keys come back from INSERT … RETURNING: no SELECT when none was taken before.
        assert sent == ["BEGIN IMMEDIATE", "INSERT", "INSERT", "INSERT"] if sqlite else ["INSERT"] * 3
        sent.clear()
        await lease_one(store, "w1", "j1")
        sent.clear()
        await store.update_job("w1", "j1", JobUpdate(state=JobState.READY), HOUR)
        # The row with its message's fields, then UPDATE … RETURNING; no SELECT afterwards.
        assert sent == ["BEGIN IMMEDIATE", "SELECT", "UPDATE"] if sqlite else ["SELECT", "UPDATE"]
        sent.clear()
        assert await store.acquire_jobs("w2", HOUR, 10) == []
        # Nothing due: one look, in a read transaction on SQLite (no write lock), and no write anywhere.
        assert sent == ["BEGIN", "SELECT"] if sqlite else ["SELECT"]
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


async def test_close_ends_the_threads_and_refuses_later_calls(store: SQLStore) -> None:
    await accept(store, "m1", "j1")
    assert await store.get_message("m1") == RAW
    await store.close()
    assert not store_threads()
    with pytest.raises(StoreUnavailable, match="could not read job j1: it is closed"):
        await store.get_job("j1")
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.accept_messages([message("m2", new_job("j2"))])
    await store.close()  # a second close is harmless


async def test_sqlite_runs_every_statement_on_its_threads_over_connections_opened_once(
    sqlite_store: SQLStore,
) -> None:
    store = sqlite_store
    opened: list[str] = []
    ran_on: set[str] = set()
    event.listen(store.engine, "connect", lambda *_: opened.append(threading.current_thread().name))
    event.listen(store.engine, "before_cursor_execute", lambda *_: ran_on.add(threading.current_thread().name))
    await store.accept_messages([message(f"m{i}", new_job(f"j{i}")) for i in range(40)])
    assert len(await store.acquire_jobs("w1", HOUR, 40)) == 40
    for _ in range(3):
        await asyncio.gather(
            *(store.get_message(f"m{i}") for i in range(40)),
            *(store.update_job("w1", f"j{i}", JobUpdate(attempts=1), HOUR) for i in range(40)),
            store.next_due_at(),
        )
    threads = {thread.name for thread in store_threads()}
    assert ran_on <= threads, "sqlite3 was called outside the store's threads"
    # The pool keeps the connections open: at most one was opened per thread, however many transactions ran.
    assert len(opened) <= len(threads)


async def test_sqlite_a_poll_with_nothing_due_neither_takes_nor_waits_for_the_write_lock(
    sqlite_store: SQLStore,
) -> None:
    store = sqlite_store
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    with sqlite_write_lock(store):
        # Another process writes (for up to busy_timeout = 30 s); polls and reads go on beside it.
        assert await asyncio.wait_for(store.acquire_jobs("w2", HOUR, 10), 5) == []
        assert (await asyncio.wait_for(store.get_job("j1"), 5)).job_id == "j1"


async def test_sqlite_the_intake_goes_ahead_of_queued_worker_writes(sqlite_store: SQLStore) -> None:
    store = sqlite_store
    await store.accept_messages([message(f"m{i}", new_job(f"j{i}")) for i in range(3)])
    assert len(await store.acquire_jobs("w1", HOUR, 10)) == 3
    finished: list[str] = []

    async def track(name: str, call: Awaitable[object]) -> None:
        await call
        finished.append(name)

    with sqlite_write_lock(store):
        updates = [
            asyncio.create_task(track(f"j{i}", store.update_job("w1", f"j{i}", JobUpdate(attempts=1), HOUR)))
            for i in range(3)
        ]
        intake = asyncio.create_task(track("accept", store.accept_messages([message("m9", new_job("j9"))])))
        await asyncio.sleep(0.2)  # every call is queued; the writer waits for the lock with the first it took
        assert finished == []
    await asyncio.gather(*updates, intake)
    # At most the one update the writer had already started finishes before the accept; the worker's
    # writes keep their order among themselves.
    assert finished.index("accept") <= 1
    assert [name for name in finished if name != "accept"] == ["j0", "j1", "j2"]


async def test_sqlite_a_call_cancelled_before_its_transaction_started_writes_nothing(
    sqlite_store: SQLStore,
) -> None:
    store = sqlite_store
    await accept(store, "m1", "j1")
    await lease_one(store, "w1", "j1")
    with sqlite_write_lock(store):
        running = asyncio.create_task(store.update_job("w1", "j1", JobUpdate(attempts=1), HOUR))
        await asyncio.sleep(0.2)  # the writer has started the update and waits for the lock
        queued = asyncio.create_task(store.accept_messages([message("m2", new_job("j2"))]))
        await asyncio.sleep(0.05)
        queued.cancel()
    assert (await running).attempts == 1
    with pytest.raises(asyncio.CancelledError):
        await queued
    await store.cleanup(dedupe_window=DEDUPE_WINDOW)  # queued behind anything the writer still had
    with pytest.raises(JobNotFound):
        await store.get_message("m2")
    assert await count_rows(store, schema.dedupe_keys) == 1


# -- failures --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "complaint"),
    [
        ("missing/faxbridge.db", "does not exist"),
        ("file/faxbridge.db", "does not exist"),
        ("directory", "is not a file"),
    ],
)
async def test_sqlite_where_no_database_can_be(tmp_path: Path, place: str, complaint: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "directory").mkdir()
    store = SQLStore(f"sqlite:///{tmp_path / place}", dedupe_window=DEDUPE_WINDOW)
    try:
        with pytest.raises(StoreUnavailable, match=complaint):
            await store.start()
    finally:
        await store.close()


async def test_database_errors_become_store_unavailable(store: SQLStore) -> None:
    await run_sql(store, lambda conn: conn.execute(sa.text("DROP TABLE dedupe_keys")))
    with pytest.raises(StoreUnavailable, match="could not store 1 accepted message") as raised:
        await store.accept_messages([message("m1", new_job("j1"))])
    assert isinstance(raised.value.__cause__, sa.exc.DBAPIError)
    with pytest.raises(StoreUnavailable, match="could not delete expired dedupe keys"):
        await store.cleanup(dedupe_window=DEDUPE_WINDOW)


async def test_postgres_on_a_closed_port_is_unavailable_and_hides_the_password() -> None:
    store = SQLStore("postgresql+asyncpg://faxbridge:s3cret@127.0.0.1:1/faxbridge", dedupe_window=DEDUPE_WINDOW)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.start()
        assert "s3cret" not in str(raised.value)
        assert "127.0.0.1:1" in str(raised.value)
        assert isinstance(raised.value.__cause__, OSError | sa.exc.DBAPIError)
        with pytest.raises(StoreUnavailable, match="could not acquire jobs"):
            await store.acquire_jobs("w1", HOUR, 1)
    finally:
        await store.close()


# -- open_store ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:////var/lib/faxbridge/faxbridge.db", "sqlite+pysqlite"),
        ("sqlite+pysqlite:///faxbridge.db", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///faxbridge.db", "sqlite+pysqlite"),  # earlier configurations say this
        ("postgresql://fb@db.example/faxbridge", "postgresql+asyncpg"),
        ("postgres://fb@db.example/faxbridge", "postgresql+asyncpg"),
        ("postgresql+psycopg2://fb@db.example/faxbridge", "postgresql+asyncpg"),
        ("postgresql+asyncpg://fb@db.example/faxbridge", "postgresql+asyncpg"),
    ],
)
async def test_open_store_maps_urls_to_the_drivers_it_runs_on(url: str, driver: str) -> None:
    store = open_store(url, dedupe_window=DEDUPE_WINDOW)
    try:
        assert isinstance(store, SQLStore)
        assert store.engine.url.drivername == driver
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://fb:pw@db.example/faxbridge",
        "postgresql+psycopg://fb:pw@db.example/faxbridge",
        "sqlite+pysqlcipher://:pw@/faxbridge.db",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url",
    ],
)
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_store(url, dedupe_window=DEDUPE_WINDOW)
    assert ":pw@" not in str(raised.value)
