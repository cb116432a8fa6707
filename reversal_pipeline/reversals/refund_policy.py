"""How an unscoped partial refund of a multi-seller order is shared out.

A refund of part of an order that does not say which seller it concerns
cannot be placed for sure: reversing it from the wrong seller takes money a
seller is owed. ``refuse`` (the default) reverses nothing and surfaces the
event (outcome ``needs_scope``) for a person; ``pro_rata`` splits it over the
order's paid transfers in proportion to their amounts, for marketplaces that
agree to that rule with their sellers.

A plain environment variable like ``REVERSAL_REFUND_OPEN_DAYS``: the intake
core reads it where it runs, and a bad value is refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from reversal_pipeline.environment import POLICY_ENV, setting
from reversal_pipeline.errors import ConfigurationError


class PartialRefundPolicy(StrEnum):
    REFUSE = "refuse"
    PRO_RATA = "pro_rata"


def partial_refund_policy(environ: Mapping[str, str] | None = None) -> PartialRefundPolicy:
    """``REVERSAL_PARTIAL_REFUND_POLICY`` (default ``refuse``); any other value is refused."""
    raw = setting(POLICY_ENV, environ).lower()
    try:
        return PartialRefundPolicy(raw)
    except ValueError:
        allowed = ", ".join(p.value for p in PartialRefundPolicy)
        raise ConfigurationError(f"{POLICY_ENV}={raw!r} is not one of: {allowed}") from None


def split_largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``; the parts sum to ``total`` exactly.

    Each part is first rounded down; the minor units left over go one each to
    the parts with the largest remainders (ties: the earlier part), so no unit
    is lost or invented. Integer arithmetic only: a float share of 1001 cents
    could round to 1000 or 1002.
    """
    if total < 0 or not weights or any(w <= 0 for w in weights):
        raise ValueError(f"cannot split {total} by weights {list(weights)}")
    whole = sum(weights)
    floors = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(floors)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for index in by_remainder[:left]:
        floors[index] += 1
    return floors
