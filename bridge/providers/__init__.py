"""Provider registry: adapters are found by their ``type`` name.

Built-in adapters are listed here by module path and imported only when a configuration uses them, so one
service's dependencies never load for another. Third-party adapters register in the entry-point group
``faxbridge.providers`` (``name = "package.module:Class"``); adding one changes nothing in this package.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge.errors import ConfigError
from bridge.providers.base import FaxProvider, ProviderContext

BUILTIN: Mapping[str, str] = {
    "local": "bridge.providers.local:LocalProvider",
}


def available() -> dict[str, str]:
    """Every known adapter type and where it lives."""
    found = dict(BUILTIN)
    for entry in entry_points(group="faxbridge.providers"):
        found.setdefault(entry.name, entry.value)
    return found


def provider_class(type_name: str) -> type[FaxProvider]:
    """Import and return the adapter class for ``type_name``."""
    known = available()
    if type_name not in known:
        raise ConfigError(f"unknown provider type {type_name!r}; known types: {', '.join(sorted(known))}")
    module_name, _, class_name = known[type_name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, FaxProvider)):
        raise ConfigError(f"provider type {type_name!r} ({known[type_name]}) is not a FaxProvider")
    return cls


def build_provider(name: str, section: Mapping[str, Any], state_dir: Path) -> FaxProvider:
    """Validate ``[providers.NAME]`` with the adapter's own model and build the adapter."""
    type_name = section.get("type")
    if not isinstance(type_name, str):
        raise ConfigError(f'providers.{name}.type: missing; name an adapter such as "local"')
    cls = provider_class(type_name)
    try:
        settings = cls.settings_model.model_validate(dict(section))
    except ValidationError as exc:
        details = "; ".join(
            f"providers.{name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(details) from None
    return cls(ProviderContext(name=name, state_dir=state_dir), settings)
