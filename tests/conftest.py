"""Shared fixtures: isolated settings written as real TOML files, and a running bridge on port 0."""

from __future__ import annotations

import os
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import Settings, load_settings

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
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
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

    Keyword arguments replace top-level keys; dicts are merged one level deep.
    """

    def factory(**changes: Any) -> Settings:
        data = default_config()
        data["state_dir"] = str(tmp_path / "var")
        data["smtp"]["listen_port"] = 0
        data["worker"]["poll_seconds"] = 0.5
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
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


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Any]:
    """A bridge running in this event loop on a free port."""
    from bridge.app import Bridge

    bridge = Bridge(settings)
    try:
        await bridge.start()
        yield bridge
    finally:
        await bridge.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The PostgreSQL URL from ``FAXBRIDGE_TEST_POSTGRES_URL``, or a skip naming the variable."""
    url = os.environ.get("FAXBRIDGE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set FAXBRIDGE_TEST_POSTGRES_URL to run the PostgreSQL tests")
    return url
