"""Durable storage of accepted messages and fax jobs; ``open_store`` picks the backend from a URL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url

from bridge.errors import ConfigError
from bridge.stores.base import JobStore

__all__ = ["JobStore", "open_store"]

_DRIVERS = {"sqlite": "pysqlite", "postgresql": "asyncpg"}
"""The one driver faxbridge runs each database on: the standard sqlite3 module on the store's own threads
(see bridge/stores/sql.py), and asyncpg."""

_ALIASES = {"sqlite": {"", "aiosqlite"}, "postgresql": {"", "psycopg2"}}
"""Other driver names in a URL that mean "this database" and are mapped to its driver. ``sqlite+aiosqlite``
is what faxbridge's default ``store.url`` and older configurations say: it keeps working."""

_EXAMPLES = {"sqlite": "sqlite:////var/lib/faxbridge/faxbridge.db", "postgresql": "postgresql+asyncpg://user@host/db"}


def open_store(url: str, *, dedupe_window: timedelta, clock: Callable[[], datetime] | None = None) -> JobStore:
    """Return an unstarted job store for ``url``; call ``start()`` on it before use and ``close()`` after.

    Accepted: ``sqlite:///path`` (also spelled ``sqlite+pysqlite`` or ``sqlite+aiosqlite``) and
    ``postgresql+asyncpg://user@host/db``; ``postgresql://…``, ``postgresql+psycopg2://…`` and
    ``postgres://…`` are mapped to asyncpg. Raises ``ConfigError`` for anything else, including an in-memory
    SQLite database (it would lose accepted mail at exit).
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        # The URL may hold a password: do not repeat it.
        raise ConfigError(
            f"store.url is not a database URL; write it as {_EXAMPLES['sqlite']} "
            f"or postgresql+asyncpg://user@host/database ({exc.__class__.__name__})"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    shown = parsed.render_as_string(hide_password=True)
    if backend not in _DRIVERS:
        raise ConfigError(f"store.url {shown} names {backend!r}; faxbridge stores jobs in sqlite or postgresql")
    if driver not in _ALIASES[backend] and driver != _DRIVERS[backend]:
        raise ConfigError(f"store.url {shown} asks for the {driver!r} driver; write it as {_EXAMPLES[backend]}")
    parsed = parsed.set(drivername=f"{backend}+{_DRIVERS[backend]}")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"store.url {shown} is an in-memory SQLite database, which loses every accepted message at exit; "
            f"give a file path such as {_EXAMPLES['sqlite']}"
        )

    # Imported here so that importing bridge.stores stays cheap for code that only needs the contract.
    from bridge.stores.sql import SQLStore

    return SQLStore(parsed, dedupe_window=dedupe_window, clock=clock)
