"""When a sensor's failed ticks become a problem: failing without a break for a while.

A sensor's failed tick is red only on that sensor's page in the UI, which
nobody watches. For ``stripe_refunds_sensor`` that means refunds made at
Stripe are silently not taken in (the cursor stays put, nothing is recorded,
no check runs). One failed tick is not a problem yet: a Stripe blip passes and
the next tick reads the same events again. A sensor whose ticks have all
failed for ``SENSOR_FAILING_ALERT_AFTER`` is: the alert sensor reports it like
a failed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

#: How long a sensor's ticks may fail without a break before it is an alert. Ten minutes is
#: twenty ticks of ``stripe_refunds_sensor`` and two of the 300-second backfill sensor.
SENSOR_FAILING_ALERT_AFTER = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class CompletedTick:
    """A tick that finished: when, and whether it failed (a skipped tick did not)."""

    at: datetime
    failed: bool


def failing_since(
    newest_first: Sequence[CompletedTick],
    now: datetime,
    alert_after: timedelta = SENSOR_FAILING_ALERT_AFTER,
) -> datetime | None:
    """The first failure of an unbroken run of failures ending with the newest tick, if old enough.

    ``None`` when the newest completed tick did not fail, or the failures began
    less than ``alert_after`` before ``now``. ``newest_first`` may be cut short
    (a bounded read): a run of failures that fills it began at its oldest tick
    at the latest, which is all this needs to know.
    """
    started: datetime | None = None
    for tick in newest_first:
        if not tick.failed:
            break
        started = tick.at
    if started is None or now - started < alert_after:
        return None
    return started
