"""Backoff details a mutation run showed untested (issue 12): the seeded generator is used."""

from __future__ import annotations

import random

import pytest

from reversal_pipeline.reversals.backoff import nominal_delay_seconds, retry_delay


def test_the_given_generator_draws_the_jitter() -> None:
    # Two generators with one seed give one delay; the module's random is not consulted.
    random.seed(1)
    first = retry_delay(3, 60, 3600, 0.5, random.Random(42)).total_seconds()
    random.seed(2)
    second = retry_delay(3, 60, 3600, 0.5, random.Random(42)).total_seconds()
    expected = 240 * (1 - 0.5 * random.Random(42).random())
    assert first == second == pytest.approx(expected, abs=1e-6)


def test_without_a_generator_the_module_random_draws() -> None:
    random.seed(7)
    delay = retry_delay(2, 10, 100, 0.5).total_seconds()
    random.seed(7)
    assert delay == pytest.approx(20 * (1 - 0.5 * random.random()), abs=1e-6)


def test_the_exponent_is_clamped_where_it_cannot_matter() -> None:
    # Past attempt 63 the exponent stays 62: still exact, and far above any cap.
    assert nominal_delay_seconds(64, 1e-30, 1.0) == 2.0**62 * 1e-30
    assert nominal_delay_seconds(1_000, 1e-30, 1.0) == 2.0**62 * 1e-30
