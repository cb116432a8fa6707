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
    """How a bucket answers a 429 (``TokenBucket.penalize``): the same for every bucket kind.

    ``lone_*`` answer a 429 that follows no other within ``repeat_within_seconds``;
    ``pause_seconds`` and ``decrease_factor`` answer one that does.
    """

    pause_seconds: float
    decrease_factor: float
    recovery_per_second: float
    lone_pause_seconds: float
    lone_decrease_factor: float
    repeat_within_seconds: float


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

    A *lone* 429, the first in ``repeat_within_seconds``, is answered with
    ``lone_pause_seconds`` and ``lone_decrease_factor`` instead (by default the
    same values, and ``repeat_within_seconds`` 0 makes every 429 lone). Against
    a limit counted in a sliding second, a request that arrives a few
    milliseconds early draws a 429 while the account is not over its limit at
    all; the window frees a slot within one interval. Answering that with the
    full pause and cut cost a lone run about 0.1 s per 429 (benchmarks/RESULTS.md,
    figure 1). A 429 that repeats within the window means the account really is
    over (another client, a lower limit), and gets the full answer, so repeated
    429s still compound down to the floor.

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
        lone_pause_seconds: float | None = None,
        lone_decrease_factor: float | None = None,
        repeat_within_seconds: float = 0.0,
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
        if lone_decrease_factor is not None and not 0 < lone_decrease_factor <= 1:
            raise ValueError(
                f"lone_decrease_factor must be in (0, 1], got {lone_decrease_factor!r}"
            )
        self._rate = float(rate)
        self._burst = burst
        self._pause_seconds = pause_seconds
        self._min_factor = min_rate_factor
        self._recovery = recovery_per_second
        self._decrease = decrease_factor
        self._lone_pause = pause_seconds if lone_pause_seconds is None else lone_pause_seconds
        self._lone_decrease = (
            decrease_factor if lone_decrease_factor is None else lone_decrease_factor
        )
        self._repeat_within = repeat_within_seconds
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
        self._lone_penalties = 0
        self._burst_began = float("-inf")  # when the last burst of 429s began

    @property
    def rate(self) -> float:
        """The configured (full) rate in acquisitions per second."""
        return self._rate

    @property
    def penalties(self) -> int:
        """How many times ``penalize()`` actually slowed the bucket down."""
        with self._cond:
            return self._penalties

    @property
    def lone_penalties(self) -> int:
        """How many of ``penalties`` were lone 429s, answered lightly."""
        with self._cond:
            return self._lone_penalties

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

    def penalize(self) -> None:
        """Back off after a 429: pause every sender, then run slower for a while."""
        with self._cond:
            now = self._clock()
            if now < self._paused_until:
                # Same 429 burst seen by another thread: extend, don't compound.
                # Its request was sent before the pause began, so it says no more
                # than the 429 that began the burst: a lone pause's worth.
                self._paused_until = max(self._paused_until, now + self._lone_pause)
            else:
                lone = now - self._burst_began >= self._repeat_within
                pause = self._lone_pause if lone else self._pause_seconds
                decrease = self._lone_decrease if lone else self._decrease
                self._factor = max(self._min_factor, self._factor_now(now) * decrease)
                self._factor_at = now
                self._burst_began = now
                self._paused_until = now + pause
                self._penalties += 1
                self._lone_penalties += lone
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
