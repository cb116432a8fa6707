"""How long a refund event may wait for its order's payout before it is alerted on.

A plain environment variable rather than a resource field: the intake core,
the ``refund_intake`` checks and ``reversal-pipeline status`` all need the same
number, and none of them should disagree with another about what is overdue.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from reversal_pipeline.errors import ConfigurationError

OPEN_DAYS_ENV = "REVERSAL_REFUND_OPEN_DAYS"
DEFAULT_OPEN_DAYS = 30
MAX_OPEN_DAYS = 3650


def refund_open_window(environ: Mapping[str, str] | None = None) -> timedelta:
    """``REVERSAL_REFUND_OPEN_DAYS`` (default 30) as a window; a bad value is refused."""
    raw = (os.environ if environ is None else environ).get(OPEN_DAYS_ENV, "").strip()
    if not raw:
        return timedelta(days=DEFAULT_OPEN_DAYS)
    try:
        days = int(raw)
    except ValueError:
        raise ConfigurationError(f"{OPEN_DAYS_ENV}={raw!r} is not a whole number of days") from None
    if not 1 <= days <= MAX_OPEN_DAYS:
        raise ConfigurationError(f"{OPEN_DAYS_ENV}={days} is outside 1..{MAX_OPEN_DAYS} days")
    return timedelta(days=days)
