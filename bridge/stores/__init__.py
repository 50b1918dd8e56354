"""Durable storage of accepted messages and fax jobs; ``open_store`` picks the backend from a URL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url

from bridge.errors import ConfigError
from bridge.stores.base import JobStore

__all__ = ["JobStore", "open_store"]

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
"""The one async driver faxbridge uses for each database."""

_SYNC_DRIVERS = {"sqlite": {"", "pysqlite"}, "postgresql": {"", "psycopg2"}}
"""Driver names in a URL that mean "this database" and are mapped to the async driver."""


def open_store(url: str, *, dedupe_window: timedelta, clock: Callable[[], datetime] | None = None) -> JobStore:
    """Return an unstarted job store for ``url``; call ``start()`` on it before use and ``close()`` after.

    Accepted: ``sqlite+aiosqlite:///path`` and ``postgresql+asyncpg://user@host/db``; plain ``sqlite:///path``,
    ``postgresql://…`` and ``postgres://…`` are mapped to those drivers. Raises ``ConfigError`` for anything
    else, including an in-memory SQLite database (it would lose accepted mail at exit).
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        # The URL may hold a password: do not repeat it.
        raise ConfigError(
            "store.url is not a database URL; write it as sqlite+aiosqlite:///path/to/faxbridge.db "
            f"or postgresql+asyncpg://user@host/database ({exc.__class__.__name__})"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    shown = parsed.render_as_string(hide_password=True)
    if backend not in _ASYNC_DRIVERS:
        raise ConfigError(f"store.url {shown} names {backend!r}; faxbridge stores jobs in sqlite or postgresql")
    if driver not in _SYNC_DRIVERS[backend] and driver != _ASYNC_DRIVERS[backend]:
        raise ConfigError(
            f"store.url {shown} asks for the {driver!r} driver; use {backend}+{_ASYNC_DRIVERS[backend]}://"
        )
    parsed = parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"store.url {shown} is an in-memory SQLite database, which loses every accepted message at exit; "
            "give a file path such as sqlite+aiosqlite:////var/lib/faxbridge/faxbridge.db"
        )

    # Imported here so that importing bridge.stores stays cheap for code that only needs the contract.
    from bridge.stores.sql import SQLStore

    return SQLStore(parsed, dedupe_window=dedupe_window, clock=clock)
