"""Faithful fakes of the fax services' APIs, one Starlette app per provider, shipped with faxbridge.

``bridge.fakes.<name>`` (the same name as the adapter in ``bridge.providers``) has ``create_app(**options)``
returning a ``FakeApp``: an ASGI app plus its state. Tests call it in-process through
``httpx.ASGITransport``; a person trying a configuration runs it on loopback with
``faxbridge fake-provider NAME --port P``. Adding a fake is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from bridge.fakes.base import FakeApp

__all__ = ["available", "create_app"]


def available() -> list[str]:
    """The names of the fakes shipped here."""
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_") and m.name != "base")


def create_app(name: str, **options: Any) -> FakeApp:
    """Build the fake of provider ``name``."""
    if name not in available():
        raise LookupError(f"no fake for provider {name!r}; fakes exist for {', '.join(available())}")
    module = importlib.import_module(f"bridge.fakes.{name}")
    app = module.create_app(**options)
    if not isinstance(app, FakeApp):
        raise TypeError(f"bridge.fakes.{name}.create_app did not return a FakeApp")
    return app
