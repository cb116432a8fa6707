"""A request-pacing token bucket shared by every thread that talks to Stripe.

Stripe limits requests per account, not per connection, so all threads of one
``StripeResource`` draw from one bucket. Hand-written rather than taken from a
library: the usual candidates (``ratelimit``, ``limits``, ``pyrate-limiter``)
either sleep-poll, are not thread-fair, or cannot *slow down and recover* after
a 429, which is the part that matters here; and adding a dependency for ~100
lines is not worth it.

Design: a reservation scheme (the "virtual scheduling" form of GCRA). Each
``acquire()`` books the next free send slot under the lock and then waits on a
``Condition`` until that slot, so each waiter wakes about once, with no
busy-waiting and no thundering herd at 100+ requests/s. ``penalize()`` bumps an
epoch and notifies everyone: waiters holding a stale booking re-book behind the
pause at the reduced rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypedDict

Clock = Callable[[], float]


class Penalty(TypedDict):
    """How a bucket answers a 429 (``TokenBucket.penalize``): the same for every bucket kind."""

    pause_seconds: float
    decrease_factor: float
    recovery_per_second: float


Waiter = Callable[[threading.Condition, float], object]


def _condition_wait(cond: threading.Condition, timeout: float) -> object:
    return cond.wait(timeout)


class TokenBucket:
    """Paces callers to ``rate`` acquisitions per second, with a small burst.

    ``burst`` defaults to 1 (pure pacing): Stripe's limiter is a rolling
    window, and a large burst after an idle spell is exactly what trips it.

    After a 429, ``penalize()`` pauses all senders for ``pause_seconds`` and
    multiplies the rate by ``decrease_factor`` (default: halves it; never below
    ``min_rate_factor`` of it); the rate then
    climbs back linearly by ``recovery_per_second`` of the full rate per
    second. Several threads usually see the same 429 burst: penalties that
    arrive while a pause is still running only extend the pause, so one burst
    of 429s does not collapse the rate to the floor.

    ``clock`` and ``wait`` are injectable so tests can run on a fake clock;
    ``wait(cond, timeout)`` is called with the lock held, like
    ``Condition.wait``.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        pause_seconds: float = 1.0,
        min_rate_factor: float = 0.1,
        recovery_per_second: float = 0.1,
        decrease_factor: float = 0.5,
        clock: Clock = time.monotonic,
        wait: Waiter = _condition_wait,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if not 0 < min_rate_factor <= 1:
            raise ValueError(f"min_rate_factor must be in (0, 1], got {min_rate_factor!r}")
        if not 0 < decrease_factor <= 1:
            raise ValueError(f"decrease_factor must be in (0, 1], got {decrease_factor!r}")
        self._rate = float(rate)
        self._burst = burst
        self._pause_seconds = pause_seconds
        self._min_factor = min_rate_factor
        self._recovery = recovery_per_second
        self._decrease = decrease_factor
        self._clock = clock
        self._wait = wait
        self._cond = threading.Condition(threading.Lock())
        now = clock()
        # Earliest time the next booking may be served; lagging behind "now"
        # by up to (burst - 1) intervals is what allows a burst.
        self._next_slot = now
        self._paused_until = now
        self._factor = 1.0  # rate multiplier right after the last penalty
        self._factor_at = now  # when that multiplier was set (recovery starts here)
        self._epoch = 0
        self._penalties = 0

    @property
    def rate(self) -> float:
        """The configured (full) rate in acquisitions per second."""
        return self._rate

    @property
    def penalties(self) -> int:
        """How many times ``penalize()`` actually slowed the bucket down."""
        with self._cond:
            return self._penalties

    def current_rate(self) -> float:
        """The rate in force now, lower than ``rate`` while recovering from a 429."""
        with self._cond:
            return self._rate * self._factor_now(self._clock())

    def expected_delay(self) -> float:
        """Seconds a new ``acquire()`` would wait now (a hint, not a promise)."""
        with self._cond:
            now = self._clock()
            return max(0.0, self._earliest_slot(now) - now)

    def acquire(self, timeout: float | None = None) -> bool:
        """Block until a send slot is ours. Returns False only if ``timeout`` ran out.

        A booking that would start after ``timeout`` is not taken at all, so a
        caller that gives up leaves no hole in the schedule.
        """
        with self._cond:
            start = self._clock()
            deadline = None if timeout is None else start + timeout
            epoch = -1
            slot = start
            while True:
                now = self._clock()
                if epoch != self._epoch:
                    # First pass, or a penalty invalidated our booking.
                    earliest = self._earliest_slot(now)
                    if deadline is not None and earliest > deadline:
                        return False
                    epoch = self._epoch
                    slot = self._book(earliest, now)
                if now >= slot:
                    return True
                self._wait(self._cond, slot - now)

    def penalize(self, pause_seconds: float | None = None) -> None:
        """Back off after a 429: pause every sender, then run slower for a while."""
        pause = self._pause_seconds if pause_seconds is None else pause_seconds
        with self._cond:
            now = self._clock()
            if now < self._paused_until:
                # Same 429 burst seen by another thread: extend, don't compound.
                self._paused_until = max(self._paused_until, now + pause)
            else:
                self._factor = max(self._min_factor, self._factor_now(now) * self._decrease)
                self._factor_at = now
                self._paused_until = now + pause
                self._penalties += 1
            # Drop the queue of bookings: everyone re-books behind the pause.
            self._next_slot = self._paused_until
            self._epoch += 1
            self._cond.notify_all()

    # The names callers reach for after a 429; same behaviour.
    slow_down = penalize

    def _factor_now(self, now: float) -> float:
        elapsed = max(0.0, now - max(self._factor_at, self._paused_until))
        return min(1.0, self._factor + self._recovery * elapsed)

    def _earliest_slot(self, now: float) -> float:
        interval = 1.0 / (self._rate * self._factor_now(now))
        return max(self._next_slot, self._paused_until, now - (self._burst - 1) * interval)

    def _book(self, slot: float, now: float) -> float:
        interval = 1.0 / (self._rate * self._factor_now(now))
        self._next_slot = slot + interval
        return slot
