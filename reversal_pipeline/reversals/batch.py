"""Process every row a claim holds: concurrently, bounded, and stoppable.

Rows are read a page at a time and handed to a bounded thread pool; the
Stripe resource's shared token bucket keeps all threads together under the
request budget. A 401/403 stops the batch: nothing more is sent, the rows not
yet finished are released without counting an attempt, and the caller fails
the run. A row rate-limited beyond the resource's own patience is sent again
later in the same run with the same idempotency key (Stripe does not store
429s), and counts as an attempt only if it still cannot be sent.

Database writes are kept off the rows' critical path: a page's attempts are
counted in one statement before any of its rows is sent (``start_attempts``),
and outcomes go through a group-commit writer (``writer.GroupCommitWriter``).
Both keep the crash guarantee: an attempt is always committed before its call.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from reversal_pipeline.errors import StripeSystemicError
from reversal_pipeline.reversals import claim, record
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.lease import LeaseKeeper
from reversal_pipeline.reversals.outcome import change_for
from reversal_pipeline.reversals.record import RowChange
from reversal_pipeline.reversals.reverse import (
    ReversalGateway,
    RowDecision,
    look_for_earlier_reversal,
    row_problem,
    send_reversal,
)
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.reversals.writer import GroupCommitWriter

RATE_LIMIT_EXTRA_PASSES = 5
FAILURE_LIST_LIMIT = 50

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What a batch did, for the ``reversal_outcomes`` metadata."""

    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    reversed_amount_by_currency: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, object]] = field(default_factory=list)
    rows_released: int = 0
    rate_limit_resends: int = 0
    elapsed_seconds: float = 0.0
    systemic_error: StripeSystemicError | None = None

    @property
    def rows_finished(self) -> int:
        return sum(self.statuses.values())


class _Window:
    """How many rows are handed to the workers and not finished yet.

    The page loop waits when ``high`` rows are out and wakes again only when half
    of them are done: one wake-up per ``high / 2`` rows rather than one per row
    (a per-row semaphore release woke it, and made it take the GIL, for every row).
    """

    def __init__(self, high: int) -> None:
        self._high = max(high, 2)
        self._low = self._high // 2
        self._out = 0
        self._cond = threading.Condition(threading.Lock())

    def add(self) -> None:
        with self._cond:
            self._out += 1

    def done(self) -> None:
        with self._cond:
            self._out -= 1
            if self._out == self._low:
                self._cond.notify()

    def wait_for_room(self) -> None:
        with self._cond:
            if self._out >= self._high:
                self._cond.wait_for(lambda: self._out <= self._low)


@dataclass
class _Deferred:
    row: ClaimedRow
    decision: RowDecision


class ReversalBatch:
    """One run's pass over its claimed rows. Not reusable: build one per run."""

    def __init__(
        self,
        engine: sa.Engine,
        stripe: ReversalGateway,
        *,
        token: str,
        run_id: str | None,
        settings: ReversalSettings,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.stripe = stripe
        self.token = token
        self.run_id = run_id
        self.settings = settings
        self.rng = rng or random.Random()  # noqa: S311 - backoff jitter only
        self.report = BatchReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deferred: list[_Deferred] = []
        self._writer: GroupCommitWriter
        self._lease = LeaseKeeper(
            engine, token=token, lease_seconds=settings.lease_seconds, clock=clock
        )

    def run(self) -> BatchReport:
        started = time.monotonic()
        try:
            with (
                self._lease,
                GroupCommitWriter(self.engine, token=self.token, run_id=self.run_id) as writer,
            ):
                self._writer = writer
                self._process_pages()
                for _ in range(RATE_LIMIT_EXTRA_PASSES):
                    if not self._deferred or self._stop.is_set():
                        break
                    self._resend_deferred()
                self._give_up_on_deferred()
        finally:
            # After the writer has flushed: only rows with no written outcome are released.
            self.report.rows_released = claim.release_claims(self.engine, token=self.token)
            self.report.elapsed_seconds = time.monotonic() - started
        return self.report

    # -- the main pass -------------------------------------------------------------------------

    def _process_pages(self) -> None:
        # Up to a page of rows queued ahead of the workers: reading and counting the
        # next page takes this thread 100-200 ms while 16 workers hold the GIL, and
        # with only 2 x concurrency rows queued the workers ran dry at every page
        # boundary. A page of queued rows is still bounded memory, and a queued row
        # checks the stop flag and its lease (reversals/lease.py) before it sends.
        window = _Window(max(self.settings.concurrency * 2, self.settings.page_size))
        with ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="reversal"
        ) as pool:
            for page in claim.iter_claimed_pages(
                self.engine, token=self.token, page_size=self.settings.page_size
            ):
                if self._stop.is_set():
                    break
                attempts = self._count_attempts(page)
                for row in page:
                    window.wait_for_room()
                    if self._stop.is_set():
                        break
                    window.add()
                    pool.submit(self._handle_row, row, attempts, window)

    def _count_attempts(self, page: list[ClaimedRow]) -> dict[int, int]:
        """Count the page's create attempts before any of them is sent (one statement)."""
        sendable = [row.id for row in page if row_problem(row) is None]
        return record.start_attempts(self.engine, row_ids=sendable, token=self.token)

    def _handle_row(self, row: ClaimedRow, attempts: dict[int, int], window: _Window) -> None:
        try:
            self._decide_and_write(row, attempts.get(row.id))
        except Exception:
            # A bug or a database error for one row must not take the batch down; the
            # row keeps its claim until the lease expires and is retried by a later run.
            log.exception("seller transfer %s: unexpected error, left for a later run", row.id)
            self._count("error")
        finally:
            window.done()

    def _decide_and_write(self, row: ClaimedRow, attempt: int | None) -> None:
        if self._stop.is_set():
            return
        problem = row_problem(row)
        if problem is not None:
            self._finish(row, RowDecision(kind="invalid", message=problem))
            return
        if attempt is None:  # the claim was lost before this page was counted
            self._count("lease_lost")
            return
        earlier_calls = []
        if row.stripe_attempts > 0:
            lookup = look_for_earlier_reversal(row, self.stripe)
            if lookup is not None and lookup.kind != "continue":
                self._finish(row, lookup)
                return
            earlier_calls = lookup.calls if lookup else []
        lease_held = self._lease.may_send()
        if self._stop.is_set() or not lease_held:
            # Not sent: released at the end of the run; its counted attempt makes the
            # next run look on Stripe before sending (see reversals/lease.py).
            record.record_calls(self.engine, row_id=row.id, run_id=self.run_id, calls=earlier_calls)
            if not lease_held:
                self._count("lease_at_risk")
            return
        decision = send_reversal(row, self.stripe, attempt=attempt, earlier_calls=earlier_calls)
        if decision.kind == "rate_limited":
            with self._lock:
                self._deferred.append(_Deferred(row, decision))
            return
        self._finish(row, decision)

    # -- rows rate-limited beyond the resource's patience ---------------------------------------

    def _resend_deferred(self) -> None:
        with self._lock:
            batch, self._deferred = self._deferred, []
        self.report.rate_limit_resends += len(batch)
        with ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="reversal-429"
        ) as pool:
            for item in batch:
                pool.submit(self._resend_one, item)

    def _resend_one(self, item: _Deferred) -> None:
        if self._stop.is_set():
            return
        if not self._lease.may_send():
            # Kept deferred, never sent: written as a transient attempt at the end.
            with self._lock:
                self._deferred.append(item)
            return
        assert item.decision.attempt_number is not None
        decision = send_reversal(
            item.row,
            self.stripe,
            attempt=item.decision.attempt_number,
            key=item.decision.idempotency_key,
            earlier_calls=item.decision.calls,
        )
        if decision.kind == "rate_limited":
            with self._lock:
                self._deferred.append(_Deferred(item.row, decision))
            return
        self._finish(item.row, decision)

    def _give_up_on_deferred(self) -> None:
        """Rows never sent past the rate limit: now they count as a transient attempt."""
        for item in self._deferred:
            item.decision.kind = "transient"
            self._finish(item.row, item.decision)
        self._deferred = []

    # -- writing ---------------------------------------------------------------------------------

    def _finish(self, row: ClaimedRow, decision: RowDecision) -> None:
        if decision.kind == "systemic":
            assert isinstance(decision.error, StripeSystemicError)
            with self._lock:
                if self.report.systemic_error is None:
                    self.report.systemic_error = decision.error
            self._stop.set()
            record.record_calls(
                self.engine, row_id=row.id, run_id=self.run_id, calls=decision.calls
            )
            self._count("systemic")
            return
        if decision.kind == "transient" and row.retry_count + 1 >= self.settings.max_attempts:
            decision = self._look_before_giving_up(row, decision)
        change = change_for(row, decision, self.settings, self.rng)
        self._writer.submit(
            row.id, change, lambda written: self._account(row, decision, change, written)
        )

    def _account(
        self, row: ClaimedRow, decision: RowDecision, change: RowChange, written: bool
    ) -> None:
        """Count a row once its outcome is committed (called by the writer thread)."""
        if not written:
            self._count("lease_lost")
            return
        with self._lock:
            self.report.outcomes[decision.kind] += 1
            self.report.statuses[change.status_after] += 1
            if change.status_after == "reversed":
                self.report.reversed_amount_by_currency[row.currency] += row.amount
            elif len(self.report.failures) < FAILURE_LIST_LIMIT:
                self.report.failures.append(
                    {
                        "seller_transfer_id": row.id,
                        "stripe_transfer_id": row.stripe_transfer_id,
                        "status": change.status_after,
                        "outcome": decision.kind,
                        "message": change.message,
                    }
                )

    def _look_before_giving_up(self, row: ClaimedRow, decision: RowDecision) -> RowDecision:
        """The last attempt may have committed at Stripe with its reply lost: look first.

        Without this, a lost reply on the last allowed attempt left the row
        ``permanently_failed`` while Stripe had reversed it (found by the
        fault-injection suite, tests/reliability/). No look-up when no create was
        ever sent for the row: nothing can have committed.
        """
        if decision.attempt_number is None and row.stripe_attempts == 0:
            return decision
        lookup = look_for_earlier_reversal(row, self.stripe)
        if lookup is None:
            return decision
        calls = [*decision.calls, *lookup.calls]
        if lookup.kind == "found_existing":
            return RowDecision(
                kind="found_existing",
                calls=calls,
                reversal_id=lookup.reversal_id,
                idempotency_key=decision.idempotency_key,
                attempt_number=decision.attempt_number,
            )
        decision.calls = calls
        return decision

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.report.outcomes[outcome] += 1
