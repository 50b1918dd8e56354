"""Believing only our own mail server's Authentication-Results, and only aligned passes."""

from __future__ import annotations

from email.parser import HeaderParser
from email.policy import compat32

import pytest

from bridge.errors import SenderNotAuthenticated
from bridge.sender_auth import aligned, check_sender

OURS = "mx.example.net"


def headers(*lines: str) -> object:
    return HeaderParser(policy=compat32).parsestr("\r\n".join([*lines, "From: demo@example.com", "", ""]))


@pytest.mark.parametrize(
    "lines",
    [
        [f"Authentication-Results: {OURS}; dmarc=pass header.from=example.com"],
        [f"Authentication-Results: {OURS.upper()}; dmarc=pass header.from=example.com"],
        [f"Authentication-Results: {OURS}; dkim=pass header.d=example.com header.i=@example.com"],
        [f"Authentication-Results: {OURS}; dkim=pass header.d=mail.example.com"],
        [f"Authentication-Results: {OURS}; spf=pass smtp.mailfrom=bounces@example.com"],
        [
            f"Authentication-Results: {OURS};\r\n\tspf=fail smtp.mailfrom=x@other.org;"
            "\r\n\tdmarc=pass header.from=example.com"
        ],
        [
            f"Authentication-Results: {OURS}; dkim=pass header.d=example.com",
            "DKIM-Signature: v=1; a=rsa-sha256; d=other.org; l=100; s=s1; b=abc",
        ],
    ],
)
def test_a_passing_aligned_verdict_from_our_server_authenticates(lines: list[str]) -> None:
    check_sender(headers(*lines), authserv_id=OURS, from_address="demo@example.com")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "lines",
    [
        [],
        # Anyone can write this header; only our server's id counts.
        ["Authentication-Results: mx.attacker.example; dmarc=pass header.from=example.com"],
        [f"Authentication-Results: {OURS}; dmarc=fail header.from=example.com"],
        [f"Authentication-Results: {OURS}; dmarc=pass header.from=other.org"],
        [f"Authentication-Results: {OURS}; dkim=pass header.d=other.org"],
        [f"Authentication-Results: {OURS}; dkim=pass header.d=com"],
        [f"Authentication-Results: {OURS}; spf=pass smtp.mailfrom=x@other.org"],
        [f"Authentication-Results: {OURS}; spf=softfail smtp.mailfrom=demo@example.com"],
        # A body-length limit lets anyone append a part under a valid signature.
        [
            f"Authentication-Results: {OURS}; dkim=pass header.d=example.com",
            "DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n\tl=1200; s=s1; b=abc",
        ],
        [f"Authentication-Results: {OURS}; ;;; garbage ==="],
    ],
)
def test_anything_else_is_refused(lines: list[str]) -> None:
    with pytest.raises(SenderNotAuthenticated):
        check_sender(headers(*lines), authserv_id=OURS, from_address="demo@example.com")  # type: ignore[arg-type]


def test_alignment() -> None:
    assert aligned("example.com", "demo@example.com")
    assert aligned("mail.example.com", "example.com")
    assert not aligned("example.com.evil.org", "example.com")
    assert not aligned("com", "example.com")
    assert not aligned("", "example.com")
