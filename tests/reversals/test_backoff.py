"""The backoff schedule: exponential, capped, jittered within bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reversal_pipeline.reversals.backoff import nominal_delay_seconds, retry_delay


@given(
    base=st.floats(min_value=0.001, max_value=3600),
    cap_factor=st.floats(min_value=1, max_value=10_000),
    jitter=st.floats(min_value=0, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_schedule_is_non_decreasing_to_its_cap_and_within_jitter(
    base: float, cap_factor: float, jitter: float, seed: int
) -> None:
    cap = base * cap_factor
    rng = random.Random(seed)
    previous = 0.0
    for attempt in range(1, 80):
        nominal = nominal_delay_seconds(attempt, base, cap)
        assert previous <= nominal <= cap
        actual = retry_delay(attempt, base, cap, jitter, rng).total_seconds()
        assert nominal * (1 - jitter) - 1e-6 <= actual <= nominal + 1e-6
        previous = nominal


def test_first_delays_double_from_the_base() -> None:
    assert [nominal_delay_seconds(n, 60, 3600) for n in range(1, 8)] == [
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]


def test_attempt_zero_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        nominal_delay_seconds(0, 60, 3600)
