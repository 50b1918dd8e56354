"""Provider registry: adapters are found by their ``type`` name.

A built-in adapter is the module ``bridge.providers.<type>`` and the ``FaxProvider`` subclass in it whose
``type_name`` is ``<type>``: adding one is adding its module, nothing else changes. Modules are imported only
when a configuration uses them, so one service's dependencies never load for another. Third-party adapters
register in the entry-point group ``faxbridge.providers`` (``name = "package.module:Class"``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge.errors import ConfigError
from bridge.providers.base import FaxProvider, ProviderContext


def builtin() -> dict[str, str]:
    """The adapters shipped in this package: every public module here except ``base``."""
    here = Path(__file__).parent
    return {
        module.name: f"bridge.providers.{module.name}"
        for module in pkgutil.iter_modules([str(here)])
        if not module.name.startswith("_") and module.name != "base"
    }


def available() -> dict[str, str]:
    """Every known adapter type and where it lives."""
    found = builtin()
    for entry in entry_points(group="faxbridge.providers"):
        found.setdefault(entry.name, entry.value)
    return found


def provider_class(type_name: str) -> type[FaxProvider]:
    """Import and return the adapter class for ``type_name``."""
    known = available()
    if type_name not in known:
        raise ConfigError(f"unknown provider type {type_name!r}; known types: {', '.join(sorted(known))}")
    module_name, _, class_name = known[type_name].partition(":")
    module = importlib.import_module(module_name)
    if class_name:
        cls = getattr(module, class_name, None)
    else:
        cls = next(
            (
                value
                for value in vars(module).values()
                if isinstance(value, type)
                and issubclass(value, FaxProvider)
                and getattr(value, "type_name", None) == type_name
            ),
            None,
        )
    if not (isinstance(cls, type) and issubclass(cls, FaxProvider)):
        raise ConfigError(f"provider type {type_name!r} ({known[type_name]}) has no FaxProvider for it")
    return cls


def build_provider(
    name: str, section: Mapping[str, Any], state_dir: Path, *, extra: Mapping[str, Any] | None = None
) -> FaxProvider:
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
    return cls(ProviderContext(name=name, state_dir=state_dir, extra=dict(extra or {})), settings)
