"""Fixtures for the job store contract suite: one ``store`` per backend, on an isolated database.

The ``store_url`` fixture (one empty database per backend) lives in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bridge.stores.sql import SQLStore

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
