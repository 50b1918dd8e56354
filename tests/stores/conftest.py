"""Fixtures for the job store contract suite: one ``store`` per backend, on an isolated database.

SQLite gets a file in ``tmp_path``. PostgreSQL needs ``FAXBRIDGE_TEST_POSTGRES_URL`` (a role that may create
databases); each test gets a freshly created database that is dropped afterwards, so tests never see each
other's rows and the suite can run again at once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bridge.stores.sql import SQLStore

POSTGRES_ENV = "FAXBRIDGE_TEST_POSTGRES_URL"
DEDUPE_WINDOW = timedelta(days=7)


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


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set; set it to e.g. postgresql://postgres@127.0.0.1:5432/test")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.external_service)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'faxbridge.db'}"
        return
    base = make_url(postgres_base_url()).set(drivername="postgresql+asyncpg")
    name = f"faxbridge_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


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
        pool = store.engine.sync_engine.pool
        checked_out = pool.checkedout()  # type: ignore[attr-defined]
        if checked_out:
            leaked[repr(store)] = checked_out
        await store.close()
    assert not leaked, f"pooled connections still checked out after the test: {leaked}"


@pytest.fixture
async def store(make_store: StoreFactory) -> SQLStore:
    """A started store on an empty database, with the test's ``clock``."""
    return await make_store()
