"""encoder/acquire/pacing.py: Retry-After parsing and the pacer's growth on push-back and slow recovery."""

from __future__ import annotations

import pytest

from encoder.acquire.pacing import AdaptivePacer, PacingConfig, parse_retry_after


def test_retry_after_parsing():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def test_pacer_grows_on_pushback_and_recovers_slowly():
    now = [0.0]
    pacer = AdaptivePacer(
        PacingConfig(min_interval=1.0, pushback_step=2.0, max_interval=10.0, grow=2.0, shrink=0.5),
        clock=lambda: now[0],
    )
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer.acquire(sleep)
    pacer.push_back(None)
    assert pacer.interval == 2.0
    pacer.push_back(None)
    pacer.push_back(None)
    assert pacer.interval == 8.0
    pacer.push_back(30.0)  # Retry-After 30 s: capped interval, but requests held 30 s
    assert pacer.interval == 10.0
    waited = pacer.acquire(sleep)
    assert waited == pytest.approx(30.0) and now[0] == pytest.approx(30.0)
    for _ in range(3):
        pacer.succeeded()
    assert pacer.interval == pytest.approx(1.25)
    for _ in range(5):
        pacer.succeeded()
    assert pacer.interval == 1.0
