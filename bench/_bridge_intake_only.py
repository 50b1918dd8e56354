"""faxbridge with its worker idle: ``python bench/_bridge_intake_only.py --config FILE serve``.

Used by bench/ingest.py to measure the SMTP intake alone (protocol, checks, the batched SQLite commit),
without the worker converting and submitting the accepted jobs on the same core at the same time.
faxbridge has no setting to switch the worker off (a ``worker.enabled = false`` is proposed in
docs/performance.md), so this wrapper replaces ``Worker.run`` with a coroutine that waits until it is
cancelled at shutdown; everything else is the real ``faxbridge serve``. Accepted jobs stay in ``RECEIVED``.
"""

from __future__ import annotations

import asyncio
import sys

from bridge import worker
from bridge.cli import main


async def _idle(self: worker.Worker) -> None:
    """Claim nothing; wait until the bridge cancels the worker task at shutdown."""
    await asyncio.Event().wait()


worker.Worker.run = _idle  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
