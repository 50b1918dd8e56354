"""Fixtures for the job store contract suite: one ``store`` per backend, on an isolated database.

The ``store_url`` fixture (one empty database per backend) lives in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bridge.stores.sql import SQLStore

DEDUPE_WINDOW = timedelta(days=7)
STORE_THREAD_PREFIX = "faxbridge-store-"

T = TypeVar("T")


async def run_sql(store: SQLStore, fn: Callable[[Connection], T]) -> T:
    """Run ``fn`` in one transaction on a connection of the test's own to the store's database.

    The store's engine is not used: on PostgreSQL it only runs inside the store's ``run_sync``.
    """
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, poolclass=NullPool)
        try:

            def transaction() -> T:
                with engine.begin() as conn:
                    return fn(conn)

            return await asyncio.to_thread(transaction)
        finally:
            engine.dispose()
    async_engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with async_engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await async_engine.dispose()


def store_threads() -> list[threading.Thread]:
    """The store threads of every SQLite store alive in this process."""
    return [thread for thread in threading.enumerate() if thread.name.startswith(STORE_THREAD_PREFIX)]


@dataclass
class FakeClock:
    """A clock that only moves when a test moves it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


StoreFactory = Callable[..., Awaitable[SQLStore]]


@pytest.fixture
async def make_store(store_url: str, clock: FakeClock) -> AsyncIterator[StoreFactory]:
    """Start store instances on the test's database; each is checked for leaked connections and closed."""
    stores: list[SQLStore] = []

    async def factory(*, dedupe_window: timedelta = DEDUPE_WINDOW, **kwargs: object) -> SQLStore:
        kwargs.setdefault("clock", clock)
        store = SQLStore(store_url, dedupe_window=dedupe_window, **kwargs)  # type: ignore[arg-type]
        stores.append(store)
        await store.start()
        return store

    yield factory
    leaked = {}
    for store in stores:
        checked_out = store.engine.pool.checkedout()  # type: ignore[attr-defined]
        if checked_out:
            leaked[repr(store)] = checked_out
        await store.close()
    assert not leaked, f"pooled connections still checked out after the test: {leaked}"
    assert not store_threads(), "close() left store threads running"


@pytest.fixture
async def store(make_store: StoreFactory) -> SQLStore:
    """A started store on an empty database, with the test's ``clock``."""
    return await make_store()


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLStore]:
    """A started SQLite store, for tests of how SQLite transactions are run; checked and closed like the others."""
    store = SQLStore(f"sqlite:///{tmp_path / 'faxbridge.db'}", dedupe_window=DEDUPE_WINDOW, clock=clock)
    try:
        await store.start()
        yield store
        checked_out = store.engine.pool.checkedout()  # type: ignore[attr-defined]
    finally:
        await store.close()
    assert not checked_out, f"{checked_out} pooled connections still checked out after the test"
    assert not store_threads(), "close() left store threads running"


@contextlib.contextmanager
def sqlite_write_lock(store: SQLStore) -> Iterator[None]:
    """Hold SQLite's write lock from a connection of another "process" (the test's own) for the block."""
    database = store.engine.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
