"""Process every row a claim holds: concurrently, bounded, and stoppable.

Rows are read a page at a time and handed to a bounded thread pool; the
Stripe resource's shared token bucket keeps all threads together under the
request budget. A 401/403 stops the batch: nothing more is sent, the rows not
yet finished are released without counting an attempt (an answer that still
arrives is audited; only one that moved money is written), and the caller
fails the run. So does termination: queued rows are dropped, not sent.

A row rate-limited beyond the resource's own patience is a transient failure
like a 5xx: its one call is audited once, the attempt counts toward
``max_attempts`` and the row backs off (DESIGN.md: 429 is transient). It used
to be re-sent later in the same run with the same idempotency key, which
wrote a second audit row with that key, broke
``uq_reversal_attempts_idempotency_key`` and lost the outcome (issue 12).

Before giving up on a row the job looks on Stripe for a reversal a lost reply
hid. If that look-up has no answer (429, 5xx, network) nothing is known: the
row stays ``reversal_pending`` with ``retry_count`` at ``max_attempts``, and
later runs only look, never send, until the look-up answers.

Database writes are kept off the rows' critical path: a page's attempts are
counted in one statement before any of its rows is sent (``start_attempts``),
and outcomes go through a group-commit writer (``writer.GroupCommitWriter``).
Both keep the crash guarantee: an attempt is always committed before its call.
An outcome that cannot be written is listed in ``outcomes_not_written`` and
the caller fails the run.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from reversal_pipeline.errors import StripeSystemicError
from reversal_pipeline.reversals import claim, record
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.lease import LeaseKeeper
from reversal_pipeline.reversals.outcome import change_for, describe
from reversal_pipeline.reversals.record import RowChange
from reversal_pipeline.reversals.reverse import (
    DecisionKind,
    ReversalGateway,
    RowDecision,
    look_for_earlier_reversal,
    row_problem,
    send_reversal,
)
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.reversals.writer import GroupCommitWriter, WriteResult

FAILURE_LIST_LIMIT = 50
#: Decisions that record money Stripe moved: written even after the batch stopped.
MONEY_MOVED = frozenset(
    {DecisionKind.REVERSED, DecisionKind.ALREADY_REVERSED, DecisionKind.FOUND_EXISTING}
)

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What a batch did, for the ``reversal_outcomes`` metadata."""

    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    reversed_amount_by_currency: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, object]] = field(default_factory=list)
    rows_released: int = 0
    outcomes_not_written: list[int] = field(default_factory=list)
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


class _Queued:
    """The rows handed to the pool and not finished: what must settle before release."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: set[Future[None]] = set()

    def add(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._discard)

    def _discard(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _snapshot(self) -> list[Future[None]]:
        with self._lock:
            return list(self._futures)

    def wait(self) -> None:
        futures.wait(self._snapshot())

    def cancel_and_wait(self) -> None:
        """Drop what has not started; wait for what has (its call may be on the wire)."""
        pending = self._snapshot()
        for future in pending:
            future.cancel()
        futures.wait(pending)


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
        # This batch's own hold on the run's rows: a second batch under the same run id
        # (a step retried while the first attempt's threads still send) holds nothing
        # the first one does, so it can neither send nor write nor release those rows.
        self.batch_id = claim.new_batch_id()
        self.run_id = run_id
        self.settings = settings
        self.rng = rng or random.Random()  # noqa: S311 - backoff jitter only
        self.report = BatchReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._took_the_rest = False
        self._writer: GroupCommitWriter
        self._lease = LeaseKeeper(
            engine,
            token=token,
            batch_id=self.batch_id,
            lease_seconds=settings.lease_seconds,
            clock=clock,
        )

    @property
    def stopping(self) -> threading.Event:
        """Set once nothing more may be sent (a 401/403, or ``stop()``)."""
        return self._stop

    def stop(self) -> None:
        """Send nothing more: rows not yet sent are released uncounted at the end."""
        self._stop.set()

    def run(self) -> BatchReport:
        started = time.monotonic()
        try:
            claim_began = self._lease.now()
            # The first page only (5 s of sends at 100/s with the default 500): the
            # rest are taken once it is queued, while its calls are on the wire
            # (_queue_rows). The keeper counts every lease from here; the rest's
            # leases start later, so it errs early.
            self._take(limit=self.settings.page_size)
            self._lease.claimed(claim_began)
            with (
                self._lease,
                GroupCommitWriter(
                    self.engine, token=self.token, batch_id=self.batch_id, run_id=self.run_id
                ) as writer,
            ):
                self._writer = writer
                self._process_pages()
        finally:
            # After the writer has flushed and every in-flight call has returned: only
            # rows with no written outcome are released, and none of them is on the wire.
            # A batch that stopped before taking the rest lets the run's untaken rows
            # go too, as it would have had it taken them all at the start.
            self.report.rows_released = claim.release_claims(
                self.engine,
                token=self.token,
                batch_id=self.batch_id,
                untaken_too=not self._took_the_rest,
            )
            self.report.elapsed_seconds = time.monotonic() - started
        return self.report

    # -- the main pass -------------------------------------------------------------------------

    def _process_pages(self) -> None:
        # Up to a page of rows queued ahead of the workers: reading and counting the
        # next page takes this thread about as long as the workers need for 2 x
        # concurrency rows while they hold the GIL, so a shorter queue runs dry at every
        # page boundary (figures: benchmarks/RESULTS.md, change 11). A page of queued
        # rows is still bounded memory, and a queued row checks the stop flag and its
        # lease (reversals/lease.py) before it sends.
        window = _Window(max(self.settings.concurrency * 2, self.settings.page_size))
        pool = ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="reversal"
        )
        queued = _Queued()
        try:
            self._queue_rows(window, pool, queued)
            # However the queuing ended (the last page, or a stop), every row handed to
            # the pool settles before the batch goes on to release what it holds: a row
            # released with its call on the wire would leave Stripe's answer no claim
            # to land on. Kept out of the loop so that no early exit from it skips this.
            queued.wait()
        except BaseException:
            # Termination (Dagster raises its interrupt here) or a database error: a
            # pool left to drain would go on sending queued rows after the run ended,
            # while a re-execution may take them. Stop, drop the queue, and wait only
            # for the calls already on the wire, so none is in flight after release.
            self._stop.set()
            queued.cancel_and_wait()
            raise
        finally:
            # Not shutdown(wait=True): on Python 3.11 a join interrupted by a signal
            # marks the live thread stopped (bpo-45274 handling), so a second join
            # returns at once. The futures above are what we wait on; idle workers exit.
            pool.shutdown(wait=False)

    def _queue_rows(self, window: _Window, pool: ThreadPoolExecutor, queued: _Queued) -> None:
        """Hand the claimed rows to the pool, a page at a time, until none is left or a stop."""
        for page in claim.iter_claimed_pages(
            self.engine,
            token=self.token,
            batch_id=self.batch_id,
            page_size=self.settings.page_size,
        ):
            if self._stop.is_set():
                return
            attempts = self._count_attempts(page)
            for row in page:
                window.wait_for_room()
                if self._stop.is_set():
                    return
                window.add()
                queued.add(pool.submit(self._handle_row, row, attempts, window))
            if not self._took_the_rest:
                # Before the next page is read, which walks on by id: the rest lie
                # past the first take's ids. The one exception, a row whose other
                # batch's lease ran out between the two takes, may lie before them;
                # it is then released uncounted at the end, for a later run.
                self._take()

    def _take(self, limit: int | None = None) -> None:
        """Hold the run's rows for this batch: the first ``limit``, or (None) the rest."""
        claim.take_for_batch(
            self.engine,
            token=self.token,
            batch_id=self.batch_id,
            lease_seconds=self.settings.lease_seconds,
            limit=limit,
        )
        self._took_the_rest = limit is None

    def _count_attempts(self, page: list[ClaimedRow]) -> dict[int, int]:
        """Count the page's create attempts before any of them is sent (one statement)."""
        sendable = [row.id for row in page if row_problem(row) is None and not self._exhausted(row)]
        return record.start_attempts(
            self.engine, row_ids=sendable, token=self.token, batch_id=self.batch_id
        )

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
            self._finish(row, RowDecision(kind=DecisionKind.INVALID, message=problem))
            return
        if self._exhausted(row):
            self._finish(row, self._last_look(row))
            return
        if attempt is None:  # the claim was lost before this page was counted
            self._count("lease_lost")
            return
        earlier_calls = []
        already_ours = 0
        # Look first whenever a reversal of ours may exist: an earlier attempt (a lost
        # reply), or an earlier target already confirmed (a raised target sends only
        # the difference, issue 17). A row never sent skips the call.
        if row.stripe_attempts > 0 or row.amount_reversed > 0:
            lookup = look_for_earlier_reversal(row, self.stripe)
            if lookup is not None and lookup.kind != DecisionKind.CONTINUE:
                self._finish(row, lookup)
                return
            earlier_calls = lookup.calls if lookup else []
            already_ours = lookup.already_ours if lookup else 0
        lease_held = self._lease.may_send()
        if self._stop.is_set() or not lease_held:
            # Not sent: released at the end of the run; its counted attempt makes the
            # next run look on Stripe before sending (see reversals/lease.py).
            record.record_calls(self.engine, row_id=row.id, run_id=self.run_id, calls=earlier_calls)
            if not lease_held:
                self._count("lease_at_risk")
            return
        decision = send_reversal(
            row,
            self.stripe,
            attempt=attempt,
            earlier_calls=earlier_calls,
            already_ours=already_ours,
        )
        self._finish(row, decision)

    def _exhausted(self, row: ClaimedRow) -> bool:
        """Out of attempts, kept only because the look-up before giving up had no answer.

        A row never sent (``stripe_attempts == 0``) is not: with ``max_attempts``
        lowered below its ``retry_count`` it is sent once more, then given up as before.
        """
        return row.retry_count >= self.settings.max_attempts and row.stripe_attempts > 0

    def _last_look(self, row: ClaimedRow) -> RowDecision:
        """An exhausted row: look on Stripe once more; never send it again."""
        lookup = look_for_earlier_reversal(row, self.stripe)
        assert lookup is not None
        if lookup.kind == DecisionKind.CONTINUE and lookup.already_ours > 0:
            # Part of the target is ours at Stripe: say so, never "no reversal" (the
            # person taking the row over must not reverse the whole target again).
            [found] = lookup.calls
            return RowDecision(
                kind=DecisionKind.EXHAUSTED,
                calls=lookup.calls,
                message=(
                    f"Stripe already shows {lookup.already_ours} {row.currency.upper()} of "
                    f"ours (newest {found.stripe_reversal_id}), short of the target "
                    f"{row.target}: the rest ({row.target - lookup.already_ours}) was not "
                    "sent; needs a person (resolve, or requeue to send the rest)"
                ),
            )
        if lookup.kind == DecisionKind.CONTINUE:
            return RowDecision(
                kind=DecisionKind.EXHAUSTED,
                calls=lookup.calls,
                message="no reversal from an earlier attempt at Stripe",
            )
        if lookup.kind == DecisionKind.TRANSIENT:
            return dataclasses.replace(lookup, kind=DecisionKind.LOOKUP_FAILED)
        return lookup

    # -- writing ---------------------------------------------------------------------------------

    def _finish(self, row: ClaimedRow, decision: RowDecision) -> None:
        if decision.kind == DecisionKind.SYSTEMIC:
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
        if self._stop.is_set() and decision.kind not in MONEY_MOVED:
            # Stopped (a 401/403 elsewhere, or termination): touch no more rows. The
            # call that answered is still audited; the row is released uncounted.
            record.record_calls(
                self.engine, row_id=row.id, run_id=self.run_id, calls=decision.calls
            )
            self._count("stopped")
            return
        if (
            decision.kind == DecisionKind.TRANSIENT
            and row.retry_count + 1 >= self.settings.max_attempts
        ):
            decision = self._look_before_giving_up(row, decision)
            if decision.kind == DecisionKind.SYSTEMIC:
                self._finish(row, decision)
                return
        change = change_for(row, decision, self.settings, self.rng)
        self._writer.submit(
            row.id, change, lambda written: self._account(row, decision, change, written)
        )

    def _account(
        self, row: ClaimedRow, decision: RowDecision, change: RowChange, result: WriteResult
    ) -> None:
        """Count a row once its outcome is committed (called by the writer thread)."""
        if result is WriteResult.FAILED:
            with self._lock:
                self.report.outcomes_not_written.append(row.id)
            self._count("outcome_not_written")
            return
        if result is WriteResult.CLAIM_LOST:
            self._count("lease_lost")
            return
        with self._lock:
            self.report.outcomes[decision.kind.value] += 1
            self.report.statuses[change.status_after] += 1
            if change.status_after == "reversed":
                confirmed = change.amount_reversed or row.target
                self.report.reversed_amount_by_currency[row.currency] += max(
                    confirmed - row.amount_reversed, 0
                )
            elif len(self.report.failures) < FAILURE_LIST_LIMIT:
                self.report.failures.append(
                    {
                        "seller_transfer_id": row.id,
                        "stripe_transfer_id": row.stripe_transfer_id,
                        "status": change.status_after,
                        "outcome": decision.kind.value,
                        "message": change.message,
                    }
                )

    def _look_before_giving_up(self, row: ClaimedRow, decision: RowDecision) -> RowDecision:
        """The last attempt may have committed at Stripe with its reply lost: look first.

        Without this, a lost reply on the last allowed attempt would leave the row
        ``permanently_failed`` while Stripe had reversed it (the fault-injection
        suite, tests/reliability/, covers it). No look-up when no create was
        ever sent for the row: nothing can have committed. A look-up refused with
        401/403 stops the run; one with no answer means "unknown", so the row is
        looked at again later (``lookup_failed``), never given up blind.
        """
        if decision.attempt_number is None and row.stripe_attempts == 0:
            return decision
        lookup = look_for_earlier_reversal(row, self.stripe)
        assert lookup is not None
        calls = [*decision.calls, *lookup.calls]
        if lookup.kind == DecisionKind.FOUND_EXISTING:
            return RowDecision(
                kind=DecisionKind.FOUND_EXISTING,
                calls=calls,
                reversal_id=lookup.reversal_id,
                amount_reversed=lookup.amount_reversed,
                message=lookup.message,
                idempotency_key=decision.idempotency_key,
                attempt_number=decision.attempt_number,
            )
        if lookup.kind in (
            DecisionKind.SYSTEMIC,
            DecisionKind.NOT_CONFIRMED,
            DecisionKind.NOT_FOUND,
        ):
            return dataclasses.replace(lookup, calls=calls)
        if lookup.kind == DecisionKind.TRANSIENT:
            return RowDecision(
                kind=DecisionKind.LOOKUP_FAILED,
                calls=calls,
                error=lookup.error,
                message=f"the last attempt's error: {describe(decision)}",
            )
        if lookup.already_ours > 0:
            return self._given_up_short_of_target(row, decision, lookup)
        return dataclasses.replace(decision, calls=calls)

    def _given_up_short_of_target(
        self, row: ClaimedRow, decision: RowDecision, lookup: RowDecision
    ) -> RowDecision:
        """Out of attempts with part of the target already ours at Stripe: say how much.

        Since partial refunds the look-up counts a smaller reversal of ours and the
        rest would be sent; on the last attempt nothing more is sent, and the person
        who takes the row over must know what the seller already gave back, or a
        manual reversal of the whole target takes it twice. The look-up's audit row
        is reworded to match: nothing more was sent.
        """
        [found] = lookup.calls
        lookup_call = dataclasses.replace(
            found,
            message=(found.message or "").replace(
                f"sending the difference {row.target - lookup.already_ours}",
                "not sent, the last attempt is used",
            ),
        )
        message = (
            f"gave up after {row.retry_count + 1} attempt(s) "
            f"(max_attempts={self.settings.max_attempts}): Stripe already shows "
            f"{lookup.already_ours} {row.currency.upper()} of ours for seller transfer {row.id} "
            f"(newest {found.stripe_reversal_id}), short of its target {row.target}: the rest "
            f"({row.target - lookup.already_ours}) was not sent; needs a person (resolve, or "
            f"requeue to send the rest); last error: {describe(decision)}"
        )
        return RowDecision(
            kind=DecisionKind.NOT_CONFIRMED,
            calls=[*decision.calls, lookup_call],
            error=decision.error,
            message=message,
            idempotency_key=decision.idempotency_key,
            attempt_number=decision.attempt_number,
        )

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.report.outcomes[outcome] += 1
