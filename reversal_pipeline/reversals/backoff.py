"""When a row that failed transiently is tried again.

Exponential and capped so a Stripe incident is not hammered; jittered so
rows that failed together do not all come due in the same second.
"""

from __future__ import annotations

import random
from datetime import timedelta


def nominal_delay_seconds(attempt: int, base_seconds: float, cap_seconds: float) -> float:
    """Delay before attempt ``attempt + 1``: base * 2**(attempt-1), capped. Non-decreasing."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    exponent = min(attempt - 1, 62)  # 2**62 * base already exceeds any sane cap
    return min(cap_seconds, base_seconds * (2.0**exponent))


def retry_delay(
    attempt: int,
    base_seconds: float,
    cap_seconds: float,
    jitter: float,
    rng: random.Random | None = None,
) -> timedelta:
    """The nominal delay less a random share of at most ``jitter`` of it."""
    nominal = nominal_delay_seconds(attempt, base_seconds, cap_seconds)
    draw = (rng or random).random()
    return timedelta(seconds=nominal * (1.0 - jitter * draw))
