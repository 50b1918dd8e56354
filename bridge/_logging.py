"""Logging set-up: one line per event; no timestamps under systemd, whose journal adds its own."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter drowns out the bridge's own lines at INFO.
    for noisy in ("mail.log", "aiosmtpd", "apscheduler", "sqlalchemy", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # A timer whose previous run is still going (a long inbound poll) is skipped by design (max_instances=1).
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
