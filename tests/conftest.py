"""Shared fixtures: isolated settings written as real TOML files, and a running bridge on port 0."""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bridge.settings import Settings, load_settings
from tests.fakes.smtp import RecordingSink, start_sink

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "faxbridge.toml"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A FAXBRIDGE_* variable from the developer's shell must not change what a test configures.
    kept = ("FAXBRIDGE_TEST_", "FAXBRIDGE_REQUIRE_", "FAXBRIDGE_CORPUS")
    for name in list(os.environ):
        if name.startswith("FAXBRIDGE_") and not name.startswith(kept):
            monkeypatch.delenv(name)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def dump_toml(data: dict[str, Any]) -> str:
    """Write a configuration dict as TOML (scalars at top, then tables); enough for test configurations."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"[{key}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    for key, items in arrays:
        for item in items:
            lines.append(f"[[{key}]]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def default_config() -> dict[str, Any]:
    """The embedded default, as a dict tests can change."""
    with DEFAULT_CONFIG.open("rb") as handle:
        return tomllib.load(handle)


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Build settings from the embedded default with the state in ``tmp_path`` and SMTP on port 0.

    Keyword arguments replace top-level keys; dicts are merged one level deep, and a ``None`` value removes
    that key.
    """

    def factory(**changes: Any) -> Settings:
        data = default_config()
        data["state_dir"] = str(tmp_path / "var")
        data["smtp"]["listen_port"] = 0
        data["worker"]["poll_seconds"] = 0.5
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                merged = {**data[key], **value}
                data[key] = {k: v for k, v in merged.items() if v is not None}
            else:
                data[key] = value
        path = tmp_path / "faxbridge.toml"
        path.write_text(dump_toml(data))
        return load_settings(path)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """The embedded default, isolated in a temporary directory."""
    return make_settings()


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[Any]:
    """A bridge running in this event loop with ``settings``; stopped on the way out."""
    from bridge.app import Bridge

    bridge = Bridge(settings)
    try:
        await bridge.start()
        yield bridge
    finally:
        await bridge.stop()


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Any]:
    """A bridge running in this event loop on a free port."""
    async with running_bridge(settings) as bridge:
        yield bridge


def maildir_bytes(settings: Settings) -> list[bytes]:
    """Every mail the bridge wrote into its Maildir, as stored."""
    assert settings.mail.maildir is not None
    path = settings.path(settings.mail.maildir)
    if not path.is_dir():
        return []
    box = mailbox.Maildir(path, create=False)
    return [box.get_bytes(key) for key in box.iterkeys()]


def outbox_submissions(settings: Settings) -> list[dict[str, Any]]:
    """The local provider's submissions log: one record per fax sent."""
    log = settings.path(settings.providers["local"]["outbox"]) / "submissions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
async def sink() -> AsyncIterator[RecordingSink]:
    """A recording SMTP server on a free loopback port, standing in for the mail relay."""
    async with start_sink() as running_sink:
        yield running_sink


POSTGRES_ENV = "FAXBRIDGE_TEST_POSTGRES_URL"


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set; set it to e.g. postgresql://postgres@127.0.0.1:5432/test")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.external_service)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of each backend.

    SQLite gets a file in ``tmp_path``. PostgreSQL needs ``FAXBRIDGE_TEST_POSTGRES_URL`` (a role that may
    create databases); each test gets a freshly created database that is dropped afterwards, so tests never
    see each other's rows and the suite can run again at once.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'faxbridge.db'}"
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
