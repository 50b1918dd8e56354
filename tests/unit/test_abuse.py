"""Refusal counting and cooling off, with a clock the test moves."""

from __future__ import annotations

import pytest

from bridge.abuse import AbuseGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_past_the_limit_a_key_cools_off_then_recovers() -> None:
    clock = Clock()
    guard = AbuseGuard(limit=3, window=60, cooloff=600, clock=clock)
    guard.record_failure(["client:10.0.0.1"])
    guard.record_failure(["client:10.0.0.1"])
    assert not guard.blocked("client:10.0.0.1")
    guard.record_failure(["client:10.0.0.1", "sender:x@example.org"])
    assert guard.blocked("client:10.0.0.1")
    assert not guard.blocked("sender:x@example.org")
    assert not guard.blocked("client:10.0.0.2")
    clock.now += 599
    assert guard.blocked("client:10.0.0.1")
    clock.now += 1
    assert not guard.blocked("client:10.0.0.1")
    # The count started over: one more failure is not enough.
    guard.record_failure(["client:10.0.0.1"])
    assert not guard.blocked("client:10.0.0.1")


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    guard = AbuseGuard(limit=3, window=60, cooloff=600, clock=clock)
    for _ in range(10):
        guard.record_failure(["client:10.0.0.1"])
        clock.now += 31
    assert not guard.blocked("client:10.0.0.1")


def test_memory_is_bounded() -> None:
    guard = AbuseGuard(limit=2, window=60, cooloff=600, max_keys=100, clock=Clock())
    for n in range(1000):
        guard.record_failure([f"client:10.0.{n // 256}.{n % 256}"])
    assert len(guard._failures) == 100
    guard.record_failure(["client:10.0.3.231"])
    assert guard.blocked("client:10.0.3.231")


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AbuseGuard(limit=0, window=1, cooloff=1)
