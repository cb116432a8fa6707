"""How long a refund event may wait for its order's payout before it is alerted on.

A plain environment variable rather than a resource field: the intake core,
the ``refund_intake`` checks and ``reversal-pipeline status`` all need the same
number, and none of them should disagree with another about what is overdue.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from reversal_pipeline.environment import OPEN_DAYS_ENV, setting
from reversal_pipeline.errors import ConfigurationError

MAX_OPEN_DAYS = 3650


def refund_open_window(environ: Mapping[str, str] | None = None) -> timedelta:
    """``REVERSAL_REFUND_OPEN_DAYS`` (default 30) as a window; a bad value is refused."""
    raw = setting(OPEN_DAYS_ENV, environ)
    try:
        days = int(raw)
    except ValueError:
        raise ConfigurationError(f"{OPEN_DAYS_ENV}={raw!r} is not a whole number of days") from None
    if not 1 <= days <= MAX_OPEN_DAYS:
        raise ConfigurationError(f"{OPEN_DAYS_ENV}={days} is outside 1..{MAX_OPEN_DAYS} days")
    return timedelta(days=days)
