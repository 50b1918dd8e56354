"""The ledger of incoming faxes acknowledged on our side, for services that have no call for it.

iFax and (by choice) Sipwise keep a fax listed after we fetched it. So that it is not mailed again at every
listing — and after every restart — its id is written here once the mail went out, and the adapter leaves it
out of its listing. Entries older than the listing window are forgotten, since such a fax cannot be listed
again. A ledger that cannot be read stops the listing rather than deliver every fax of the window again.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

from bridge._files import write_atomically
from bridge.errors import ProviderTemporaryError

__all__ = ["AcknowledgedLedger"]


class AcknowledgedLedger:
    """``{fax id: when acknowledged}`` in a JSON file; safe for concurrent acknowledgements of one process."""

    def __init__(self, path: Path, *, provider: str, window: str) -> None:
        """``window`` says, for the error message, what removing the file would deliver again ("7 days")."""
        self.path = path
        self._provider = provider
        self._window = window
        self._entries: dict[str, str] | None = None
        self._lock = asyncio.Lock()

    async def entries(self) -> dict[str, str]:
        """The acknowledged ids (read from the file once)."""
        if self._entries is None:
            try:
                loaded = json.loads(await asyncio.to_thread(self.path.read_text, encoding="utf-8"))
            except FileNotFoundError:
                loaded = {}
            except (OSError, ValueError) as exc:
                raise ProviderTemporaryError(
                    f"{self._provider}: cannot read the ledger of acknowledged faxes {self.path}: {exc}; repair or "
                    f"remove it (removing it delivers the faxes of the last {self._window} again)",
                    provider=self._provider,
                ) from exc
            found = loaded.get("acknowledged", {}) if isinstance(loaded, dict) else {}
            self._entries = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
        return self._entries

    async def record(self, fax_id: str, now: datetime, *, forget_before: datetime) -> None:
        """Add ``fax_id``, drop entries acknowledged before ``forget_before``, and write the file."""
        async with self._lock:
            entries = dict(await self.entries())
            entries[fax_id] = now.isoformat()
            entries = {k: v for k, v in entries.items() if _when(v, now) >= forget_before}
            data = json.dumps({"acknowledged": entries}, indent=1).encode() + b"\n"
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:
                raise ProviderTemporaryError(
                    f"{self._provider}: cannot record received fax {fax_id} as delivered in {self.path}: "
                    f"{exc.strerror or exc}; check the directory's permissions and free space",
                    provider=self._provider,
                ) from exc
            self._entries = entries

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, data, sync_dir=True)


def _when(value: str, default: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return default
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=default.tzinfo)
