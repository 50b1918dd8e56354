"""Identifiers for messages and jobs: short enough to read out on the phone, sortable by time."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32: no i, l, o, u to misread


def new_id() -> str:
    """Return an 18-character id: 48 bits of milliseconds, then 40 random bits."""
    value = (time.time_ns() // 1_000_000) << 40 | secrets.randbits(40)
    chars = []
    for _ in range(18):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))
