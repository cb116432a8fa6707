"""One Stripe request budget per account, shared by every process, kept in PostgreSQL.

Stripe limits requests per *account*; a reversal run and two reconciliation
backfills are three processes (in production, three pods) on one account. A
``TokenBucket`` per process cannot see the others, so together they overshoot
(benchmarks/RESULTS.md, "Shared budget"). Here every process books its send
slots from one row of ``stripe_budget``:

* **A GCRA schedule in one row.** ``next_slot_at`` is the account's next free
  send time. A booking of ``k`` slots moves it ``k / rate`` seconds on and
  returns the start, so slots handed to different processes never overlap in
  time, whatever machine they run on (times are the database's; each process
  maps them onto its own clock from its fastest booking, so machines' clocks
  need not agree and a reply that comes back late does not shift its slots).
* **Batches.** A reversal process books ``batch_seconds`` worth of slots at a
  time (29 at 58/s), and books the next batch while half of the current one is
  left: the database sees ~2 statements per second per process, not one per
  request, and a booking that is slow to come back (a busy database) does not
  leave the process without slots. A slot not used within ``SLOT_EXPIRY_SECONDS`` of its time is
  dropped, never sent late, so late slots cannot pile onto another process's.
* **Priority.** Reversals (money owed back) book from the shared schedule as
  above. Listing (reconciliation bookkeeping) books one slot per page: while
  reversals have booked within the last second, listing runs on its own
  schedule at ``listing_floor`` of the budget (for all listing together; never
  starved), and while listing has booked within the last second, reversals
  book at ``1 - listing_floor`` of it, so the two never overlap. When no
  reversal is drawing, listing books from the shared schedule at the full
  rate: it uses what is left.
* **429s are account-wide.** A 429 seen by any process pauses the whole
  schedule (``paused_until``) and lowers ``rate_factor``, which climbs back
  linearly; every process sees it at its next booking (within one batch). The
  process that saw it keeps the slots it booked past the pause, at the lowered
  rate: the schedule lies past them, so a slot given up is lost to everyone.
* **Fail safe.** If the database cannot be read, this process paces itself
  with a local ``TokenBucket`` at ``fail_safe_fraction`` of its rate, logs a
  warning, counts the time for the run's metadata, and tries the database
  again after ``fail_safe_retry_seconds``. It never sends faster because the
  budget is unreadable.

The account key is a SHA-256 of the API key (with a fixed prefix): processes
with the same key share a row, and the key itself is never stored. Two
different keys of one account (a restricted key and the secret key) get two
budgets: give every process of one account the same key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from reversal_pipeline.stripe.budget_sql import BOOK_SQL, CREATE_ROW_SQL, PENALIZE_SQL
from reversal_pipeline.stripe.rate_limit import TokenBucket

log = logging.getLogger(__name__)

#: A booked slot not used within this long of its time is dropped, not sent late.
SLOT_EXPIRY_SECONDS = 0.15
#: How far behind "now" a booking may start: recovers the time a booking's own
#: round trip costs, at the price of at most this much of a burst.
BOOKING_TOLERANCE_SECONDS = 0.02
#: Listing counts as contended while a reversal booked within this long.
REVERSAL_ACTIVE_SECONDS = 1.0
# How long a clock sample stands before any later one replaces it: the database's
# wall clock may be slewed against this process's monotonic one (NTP: up to 0.5 ms/s).
CLOCK_SAMPLE_SECONDS = 30.0
#: A holder seen within this long is "currently drawing" for ``status``.
ACTIVE_HOLDER_SECONDS = 30.0
#: Holder rows idle this long are pruned when a process starts.
HOLDER_RETENTION = timedelta(days=1)


class Priority(StrEnum):
    """Who is asking: reversals go first, listing takes what they leave."""

    REVERSAL = "reversal"
    LISTING = "listing"


class BudgetMode(StrEnum):
    SHARED = "shared"
    FAIL_SAFE = "fail_safe"


def account_key(api_key: str) -> str:
    """A stable, non-reversible name for the account's budget row; never the key."""
    digest = hashlib.sha256(f"reversal_pipeline/stripe_budget/{api_key}".encode()).hexdigest()
    return f"sha256:{digest[:32]}"


@dataclass(frozen=True)
class BudgetUsage:
    """What this process drew from the shared budget, for the run's metadata."""

    mode: BudgetMode
    requests_per_second: float
    granted: int
    granted_listing: int
    waited_seconds: float
    fail_safe_seconds: float
    fail_safe_entries: int
    bookings: int
    elapsed_seconds: float
    #: Booked slots this process used too late to send, so never sent: throughput
    #: a busy process (or a pool with too few threads) lost; never reused by anyone.
    slots_expired: int = 0

    @property
    def share_of_budget(self) -> float:
        """Fraction of the account's budget this process used while it was running."""
        if self.elapsed_seconds <= 0:
            return 0.0
        return self.granted / (self.elapsed_seconds * self.requests_per_second)

    def as_metadata(self) -> dict[str, float | int | str]:
        return {
            "stripe_budget_mode": self.mode.value,
            "stripe_budget_requests_per_second": round(self.requests_per_second, 2),
            "stripe_budget_share": round(self.share_of_budget, 3),
            "stripe_budget_granted": self.granted,
            "stripe_budget_granted_listing": self.granted_listing,
            "stripe_budget_wait_seconds": round(self.waited_seconds, 3),
            "stripe_budget_fail_safe_seconds": round(self.fail_safe_seconds, 3),
            "stripe_budget_slots_expired": self.slots_expired,
        }


@dataclass(frozen=True)
class ActiveHolder:
    holder_id: str
    description: str
    granted_total: int
    granted_listing: int
    waited_seconds: float
    started_at: datetime
    last_seen_at: datetime


class SharedBudget:
    """Paces this process's Stripe requests from the account's shared budget.

    Thread-safe; one per ``StripeResource``. ``acquire()`` blocks until a send
    slot is ours; ``penalize()`` reports a 429 to every process.
    """

    def __init__(
        self,
        engine: sa.Engine,
        key: str,
        rate: float,
        *,
        description: str,
        batch_seconds: float = 0.5,
        listing_floor: float = 0.1,
        fail_safe_fraction: float = 0.25,
        fail_safe_retry_seconds: float = 5.0,
        catch_up: float = 1.0,
        pause_seconds: float = 0.05,
        decrease_factor: float = 0.9,
        recovery_per_second: float = 0.1,
        lone_pause_seconds: float | None = None,
        lone_decrease_factor: float | None = None,
        repeat_within_seconds: float = 0.0,
        min_rate_factor: float = 0.1,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if not 0 < listing_floor <= 1:
            raise ValueError(f"listing_floor must be in (0, 1], got {listing_floor!r}")
        if not catch_up >= 1:
            raise ValueError(f"catch_up must be >= 1, got {catch_up!r}")
        if not 0 < fail_safe_fraction <= 1:
            raise ValueError(f"fail_safe_fraction must be in (0, 1], got {fail_safe_fraction!r}")
        self._engine = engine
        self._key = key
        self._rate = float(rate)
        self._batch = max(1, round(rate * batch_seconds))
        self._floor = listing_floor
        self._fail_safe_fraction = fail_safe_fraction
        self._fail_safe_retry = fail_safe_retry_seconds
        self._penalty = {
            "pause": pause_seconds,
            "decrease": decrease_factor,
            "recovery": recovery_per_second,
            "min_factor": min_rate_factor,
            "lone_pause": pause_seconds if lone_pause_seconds is None else lone_pause_seconds,
            "lone_decrease": (
                decrease_factor if lone_decrease_factor is None else lone_decrease_factor
            ),
            "repeat_within": repeat_within_seconds,
        }
        self.holder_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._description = description
        self._cond = threading.Condition(threading.Lock())
        self._slots: deque[float] = deque()  # monotonic send times booked for reversals
        self._booking = False
        self._row_ready = False
        # Behind the booked slots, sends are kept at least ``_gap`` apart (burst 1):
        # threads that wake late do not send together. The gap is the booked
        # interval divided by ``catch_up``: the resource books at 98 % of the limit
        # and passes 0.99/0.98, so a process catching up on late slots reaches 99 %
        # of the limit and never passes it (with listing drawing, reversals book at
        # 88 % and catch up to 89 %, the listing floor's 9.8 % on top). At exactly the booked
        # interval a thread that woke late delayed every later send for good, and
        # the lag held idle threads until the pool ran dry and booked slots
        # expired (benchmarks/RESULTS.md, figure 1 after issue 15). Burst 1
        # measured better than 2 on both throughput and the worst second
        # (benchmarks/RESULTS.md, figures once in code comments).
        self._catch_up = float(catch_up)
        self._gap = 1.0 / (self._rate * self._catch_up)
        self._spacer = _MinGap()
        # Fail-safe pacer: the in-process bucket at a fraction of the rate.
        self._fallback = TokenBucket(rate * fail_safe_fraction)
        self._fail_safe_until = 0.0
        self._fail_safe_seconds = 0.0
        self._fail_safe_entries = 0
        self._started = time.monotonic()
        self._granted = 0
        self._granted_listing = 0
        self._waited = 0.0
        self._waited_unreported = 0.0
        self._bookings = 0
        self._expired = 0
        self._paused_until = 0.0
        self._burst_began = float("-inf")
        # The database's clock minus this process's (_on_local_clock), from the booking
        # with the shortest round trip in the last CLOCK_SAMPLE_SECONDS.
        self._clock_offset = 0.0
        self._clock_round_trip = float("inf")
        self._clock_sampled_at = 0.0

    # -- the pacer interface (like TokenBucket) ----------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def max_send_rate(self) -> float:
        """The fastest this process sends now, catching up on late slots included."""
        return 1.0 / self._gap

    def acquire(self, priority: Priority = Priority.REVERSAL) -> None:
        """Block until this process may send one request of ``priority``."""
        if self._in_fail_safe():
            self._acquire_fail_safe()
            return
        if priority is Priority.LISTING:
            start = self._book(Priority.LISTING, 1)
            if start is None:
                self._acquire_fail_safe()
                return
            self._wait_until(start)
            with self._cond:
                self._granted += 1
                self._granted_listing += 1
            return
        while True:
            slot = self._next_reversal_slot()
            if slot is None:
                self._acquire_fail_safe()
                return
            self._wait_until(slot)
            # Threads that wake late (a busy CPU, a slow write) would otherwise send
            # their slots together; the in-process bucket spaces them out again, but
            # never past SLOT_EXPIRY_SECONDS after the slot. Its gap follows the
            # latest booking, and after 429s had cut the rate that gap, applied to
            # slots booked before at the full rate, held sends up to 2.5 s past their
            # slots, into other processes' (figure 6, four runs: the 429 storms). A
            # slot the spacer cannot honour in time is dropped, as a late one is.
            if self._spacer.wait(self._gap, latest=slot + SLOT_EXPIRY_SECONDS):
                return
            with self._cond:
                self._granted -= 1
                self._expired += 1

    def penalize(self) -> None:
        """A 429: pause and slow every process on this account, this one at once."""
        with self._cond:
            now = time.monotonic()
            # Threads that see the same burst of 429s extend the pause and slow down
            # once, and a lone 429 is answered lightly, as the database's rate_factor
            # is (PENALIZE_SQL). The two may judge one 429 differently (the database
            # also counts other processes' 429s): the database paces the account,
            # this only how the slots already booked here are spaced.
            if now < self._paused_until:
                decrease, pause = 1.0, self._penalty["lone_pause"]
            else:
                repeated = now - self._burst_began < self._penalty["repeat_within"]
                kind = "" if repeated else "lone_"
                decrease, pause = self._penalty[f"{kind}decrease"], self._penalty[f"{kind}pause"]
                self._burst_began = now
            self._paused_until = max(self._paused_until, now + pause)
            self._slots = _thinned_after_pause(self._slots, self._paused_until, decrease)
            self._gap /= decrease
        self._fallback.penalize()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    PENALIZE_SQL, {"key": self._key, "rate": self._rate, **self._penalty}
                )
        except sa.exc.SQLAlchemyError as err:
            self._enter_fail_safe(err)

    slow_down = penalize

    def expected_delay(self) -> float:
        """Seconds a new request would wait now (a hint for the 429 re-send deadline)."""
        now = time.monotonic()
        with self._cond:
            pending = self._slots[-1] if self._slots else now
            return max(0.0, self._paused_until - now, pending - now)

    def usage(self) -> BudgetUsage:
        with self._cond:
            fail_safe = self._in_fail_safe_locked()
            return BudgetUsage(
                mode=BudgetMode.FAIL_SAFE if fail_safe else BudgetMode.SHARED,
                requests_per_second=self._rate,
                granted=self._granted,
                granted_listing=self._granted_listing,
                waited_seconds=self._waited,
                fail_safe_seconds=self._fail_safe_seconds,
                fail_safe_entries=self._fail_safe_entries,
                bookings=self._bookings,
                elapsed_seconds=time.monotonic() - self._started,
                slots_expired=self._expired,
            )

    def close(self) -> None:
        self._engine.dispose()

    # -- internals ------------------------------------------------------------------

    def _next_reversal_slot(self) -> float | None:
        while True:
            with self._cond:
                now = time.monotonic()
                while self._slots and self._slots[0] < now - SLOT_EXPIRY_SECONDS:
                    self._slots.popleft()  # too late to send on time: never sent late
                    self._expired += 1
                if not self._booking and len(self._slots) <= self._batch // 2:
                    self._booking = True  # refill ahead, while slots remain
                elif self._slots:
                    self._granted += 1
                    return self._slots.popleft()
                else:
                    self._cond.wait()
                    if self._in_fail_safe_locked():
                        return None
                    continue
            # Outside the lock: other threads keep drawing on what is left.
            try:
                start = self._book(Priority.REVERSAL, self._batch)
            finally:
                with self._cond:
                    self._booking = False
                    self._cond.notify_all()
            if start is None:
                return None

    def _book(self, priority: Priority, k: int) -> float | None:
        """Book ``k`` slots; returns the first one's monotonic time, None in fail safe."""
        listing = priority is Priority.LISTING
        with self._cond:
            waited, self._waited_unreported = self._waited_unreported, 0.0
        params = {
            "key": self._key,
            "rate": self._rate,
            "recovery": self._penalty["recovery"],
            "tolerance": BOOKING_TOLERANCE_SECONDS,
            "active": REVERSAL_ACTIVE_SECONDS,
            "listing": listing,
            "floor": self._floor,
            "k": float(k),
            "holder": self.holder_id,
            "description": self._description,
            "waited": waited,
        }
        try:
            if not self._row_ready:
                self._prepare()
            with self._engine.begin() as connection:
                sent = time.monotonic()
                row = connection.execute(BOOK_SQL, params).one_or_none()
                received = time.monotonic()
            if row is None:  # the row vanished (restored database?): make it again
                self._row_ready = False
                return self._book(priority, k)
        except sa.exc.SQLAlchemyError as err:
            self._enter_fail_safe(err)
            return None
        start = self._on_local_clock(float(row.now_epoch), sent, received) + float(row.start_in)
        with self._cond:
            self._bookings += 1
            if not listing:
                interval = 1.0 / float(row.eff)
                self._slots.extend(start + i * interval for i in range(k))
                self._gap = interval / self._catch_up
        return start

    def _on_local_clock(self, db_epoch: float, sent: float, received: float) -> float:
        """The database's time ``db_epoch``, read during a statement, on this process's clock.

        The start used to be counted from when the reply arrived. A reply that came
        back late (a stalled process, a starved core) moved the whole batch late, onto
        the next process's slots: two processes sent at once and drew a storm of 429s
        (figure 6, four runs: 61-93 429s and 1.5-2x the budget in one second in some
        runs). The database read its clock between ``sent`` and ``received``; the
        sample with the shortest round trip places it best, as NTP does, and a slow
        reply no longer moves anything. A sample older than ``CLOCK_SAMPLE_SECONDS``
        is replaced by the next one, so the two clocks' drift cannot add up.
        """
        round_trip = received - sent
        with self._cond:
            if (
                round_trip <= self._clock_round_trip
                or received - self._clock_sampled_at > CLOCK_SAMPLE_SECONDS
            ):
                self._clock_round_trip = round_trip
                self._clock_sampled_at = received
                self._clock_offset = db_epoch - (sent + received) / 2
            return db_epoch - self._clock_offset

    def _prepare(self) -> None:
        with self._engine.begin() as connection:
            connection.execute(CREATE_ROW_SQL, {"key": self._key, "rate": self._rate})
            connection.execute(
                sa.text(
                    "DELETE FROM stripe_budget_holders"
                    " WHERE account_key = :key AND last_seen_at < :cutoff"
                ),
                {"key": self._key, "cutoff": datetime.now(UTC) - HOLDER_RETENTION},
            )
        self._row_ready = True

    def _wait_until(self, when: float) -> None:
        # Pacing to a booked time, not synchronisation: a plain sleep is the point.
        delay = when - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            with self._cond:
                self._waited += delay
                self._waited_unreported += delay

    def _acquire_fail_safe(self) -> None:
        started = time.monotonic()
        self._fallback.acquire()
        with self._cond:
            self._granted += 1
            self._fail_safe_seconds += time.monotonic() - started

    def _enter_fail_safe(self, err: BaseException) -> None:
        with self._cond:
            already = self._in_fail_safe_locked()
            self._fail_safe_until = time.monotonic() + self._fail_safe_retry
            self._slots.clear()
            if not already:
                self._fail_safe_entries += 1
            self._cond.notify_all()
        if not already:
            reason = str(getattr(err, "orig", err)).strip().splitlines()
            log.warning(
                "shared Stripe budget unreadable (%s); pacing this process at %.0f%% of its"
                " rate (%.1f requests/s) and retrying in %.0fs",
                (reason[0] if reason else type(err).__name__)[:200],
                self._fail_safe_fraction * 100,
                self._rate * self._fail_safe_fraction,
                self._fail_safe_retry,
            )

    def _in_fail_safe(self) -> bool:
        with self._cond:
            return self._in_fail_safe_locked()

    def _in_fail_safe_locked(self) -> bool:
        return time.monotonic() < self._fail_safe_until


class _MinGap:
    """Keeps this process's sends at least a gap apart, each waiter booked in turn.

    ``TokenBucket`` at burst 1 does the same at a fixed rate; here the gap follows
    the rate the budget last booked at, which changes with listing and 429s.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, gap: float, latest: float = float("inf")) -> bool:
        """Wait for this waiter's turn; False at once, taking no turn, if it is after ``latest``."""
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            if at > latest:
                return False
            self._next = at + gap
        # Pacing to a booked time, not synchronisation: a plain sleep is the point.
        if at > now:
            time.sleep(at - now)
        return True


def _thinned_after_pause(slots: deque[float], resume_at: float, decrease: float) -> deque[float]:
    """The booked slots a 429 leaves this process: none in the pause, ``decrease`` of the rest.

    The account's schedule already lies past every booked slot, so a slot given
    up here is lost to every process: nobody can book it again. Clearing the
    whole batch on a 429 cost a lone run up to half a second per 429 (about 4 %
    of figure 1 at 13 429s in 110 s). Keeping the slots after the pause slows
    this process at once; the others learn of the 429 at their next booking.

    Only a subset of the booked times, evenly spread, never new times: the deque
    often holds two bookings with another process's between them, and slots
    re-spaced from the first to the last filled that gap. The process then sent
    in the other's time, drew more 429s, and thinned again: figure 6's four runs
    fell into storms of 50-115 429s and up to 2x the budget in one second.
    """
    kept: deque[float] = deque()
    credit = 1.0 - decrease  # so the first slot after the pause is kept
    for slot in slots:
        if slot < resume_at:
            continue
        credit += decrease
        if credit >= 1.0 - 1e-9:  # float sums of 0.9s must still reach 1
            credit -= 1.0
            kept.append(slot)
    return kept


def active_holders(connection: sa.Connection) -> list[ActiveHolder]:
    """Processes that drew on any budget recently, newest first (for ``status``)."""
    rows = connection.execute(
        sa.text(
            "SELECT holder_id, description, granted_total, granted_listing, waited_seconds,"
            " started_at, last_seen_at FROM stripe_budget_holders"
            " WHERE last_seen_at > now() - make_interval(secs => :seen)"
            " ORDER BY last_seen_at DESC"
        ),
        {"seen": ACTIVE_HOLDER_SECONDS},
    ).all()
    return [ActiveHolder(*row) for row in rows]


def open_shared_budget(
    database_url: str,
    api_key: str,
    rate: float,
    *,
    description: str = "",
    **options: float,
) -> SharedBudget:
    """A ``SharedBudget`` on its own small pool (booking is one short statement at a time)."""
    from reversal_pipeline.db.engine import create_db_engine

    engine = create_db_engine(database_url, pool_size=2, connect_timeout=5)
    return SharedBudget(
        engine,
        account_key(api_key),
        rate,
        description=description or f"pid {os.getpid()} on {socket.gethostname()}",
        **options,
    )
