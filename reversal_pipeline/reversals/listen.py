"""Keep a reversal run listening while refund events flow, so a refund waits for no launch.

Why: on the ``dev`` stack a ``reversal_job`` run waits several times longer
between its request and its start than it takes to run (the daemon's dequeue,
then a fresh process that imports Dagster and loads the code location; figures
in benchmarks/RESULTS.md, "Timeliness on the dev stack"). A run that has done
its due rows therefore stays up for an idle window and takes newly due rows as
they come.

Each pass is exactly what a fresh run does: intake (``process_refund_events``),
claim (``claim_due_rows`` under the run's own token) and a new
``ReversalBatch`` over that claim, which writes every outcome as it comes, keeps
the leases renewed and releases what it did not finish. The money-safety rules
(claims, leases, fencing, audit rows) are the same code, not a second path.

Wake-up: a trigger on ``refund_events`` (migration 0010) sends a ``NOTIFY`` on
channel ``refund_events`` when an insert commits; the run ``LISTEN``s on a
connection of its own. A notification is only a hint: every pass reads the
inbox and claims whatever is due, and the loop also polls every
``poll_seconds``, which catches what no insert announces (an open event whose
order's transfer completed, a retry whose backoff ended) and bounds the cost
of a lost notification (listening connection dropped, trigger missing).

The run ends when no pass found work for ``idle_seconds``, when it has
listened ``max_seconds`` (so its materialization lands and the 15-minute
freshness check of ``reversal_outcomes`` sees it), when it is terminated (the
interrupt is raised in the waiting thread: waits are sliced to at most
``WAIT_SLICE_SECONDS`` so it is seen promptly), or when a pass must fail the
run (a 401/403, or an outcome not written). The loop's last act before an idle
exit is a pass, and an event inserted after that is not lost:
``refund_events_sensor`` does not advance its cursor while a listening run is
up, so it requests a run for anything still unprocessed once this one ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.environment import LISTEN_SECONDS_ENV, setting
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.reversals.batch import FAILURE_LIST_LIMIT, BatchReport, ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows
from reversal_pipeline.reversals.intake import IntakeSummary, process_refund_events
from reversal_pipeline.reversals.reverse import ReversalGateway
from reversal_pipeline.reversals.settings import ReversalSettings

log = logging.getLogger(__name__)

#: The channel the trigger of migration 0010 notifies; keep the two in step.
CHANNEL = "refund_events"
MAX_LISTEN_SECONDS = 3600.0
#: Longest single wait: a termination signal is acted on within this.
WAIT_SLICE_SECONDS = 1.0


def listen_seconds_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``REVERSAL_LISTEN_SECONDS`` (default 120; 0 = a run does its due rows and ends)."""
    # The default idle window (environment.py) is long enough to bridge the gaps of
    # a steady trickle of refunds, short enough that a quiet shop has no run up.
    raw = setting(LISTEN_SECONDS_ENV, environ)
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{LISTEN_SECONDS_ENV}={raw!r} is not a number of seconds"
        ) from None
    if not 0 <= seconds <= MAX_LISTEN_SECONDS:
        raise ConfigurationError(
            f"{LISTEN_SECONDS_ENV}={raw} is outside 0..{MAX_LISTEN_SECONDS:.0f} seconds"
        )
    return seconds


class Wake(StrEnum):
    """What started a pass."""

    FIRST = "first"  # the run's own first pass, before any waiting
    NOTIFY = "notify"  # a refund event was inserted
    POLL = "poll"  # the poll interval ran out


class ListenEnd(StrEnum):
    """Why a run stopped listening."""

    IDLE = "idle"  # no pass found work for the idle window
    MAX_TIME = "max_time"  # listened for the longest allowed
    STOPPED = "stopped"  # asked to stop (the caller's stop event)
    RUN_FAILING = "run_failing"  # a pass must fail the run: nothing more is taken


@dataclass(frozen=True)
class ListenWindow:
    """How long a run listens, and how often it looks without being woken."""

    idle_seconds: float
    max_seconds: float
    poll_seconds: float


@dataclass
class PassReport:
    """One pass: what intake did, what was claimed, and the batch over that claim."""

    wake: Wake
    started_at: datetime
    events_processed: int
    rows_requested: int
    rows_claimed: int
    batch: BatchReport
    intake: IntakeSummary = field(repr=False, default_factory=IntakeSummary)

    @property
    def did_work(self) -> bool:
        return bool(self.events_processed or self.rows_claimed)

    @property
    def must_fail_run(self) -> bool:
        return self.batch.systemic_error is not None or bool(self.batch.outcomes_not_written)

    def as_row(self, number: int) -> dict[str, Any]:
        """One line of the ``batches`` table an operator reads on the materialization."""
        statuses = self.batch.statuses
        return {
            "pass": number,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "woken_by": self.wake.value,
            "events_processed": self.events_processed,
            "rows_claimed": self.rows_claimed,
            "reversed": statuses.get("reversed", 0),
            "permanently_failed": statuses.get("permanently_failed", 0),
            "retry_scheduled": statuses.get("reversal_pending", 0),
            "released": self.batch.rows_released,
            "outcomes_not_written": len(self.batch.outcomes_not_written),
            "elapsed_seconds": round(self.batch.elapsed_seconds, 3),
        }


class RefundEventWakeups:
    """``LISTEN refund_events`` on a connection of its own; ``wait()`` returns when notified.

    Enter it before the run's first pass: an event inserted while that pass
    works is then already queued as a notification and wakes the first wait at
    once. If the listening connection fails, waiting falls back to plain
    timeouts (the poll still finds everything) and says so once in the log.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._connection: sa.Connection | None = None
        self._driver: Any = None
        self._idle = threading.Event()  # never set: a sleep the interpreter can interrupt

    def __enter__(self) -> RefundEventWakeups:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.execute(sa.text(f"LISTEN {CHANNEL}"))
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        self._connection = connection
        self._driver = connection.connection.driver_connection
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Not returned to the pool: a pooled connection must not carry a LISTEN.
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None
            self._driver = None

    def wait(self, timeout: float) -> bool:
        """True when a notification arrived within ``timeout`` seconds (all queued are drained)."""
        if self._driver is None:
            self._idle.wait(timeout)
            return False
        try:
            notified = any(True for _ in self._driver.notifies(timeout=timeout, stop_after=1))
            if notified:  # several inserts during one pass wake one pass, not several
                for _ in self._driver.notifies(timeout=0):
                    pass
            return notified
        except Exception:
            log.exception(
                "listening for refund events failed; the run keeps polling every pass instead"
            )
            self.__exit__(None, None, None)
            return False


def listen(
    wakeups: RefundEventWakeups,
    run_pass: Callable[[Wake], PassReport],
    window: ListenWindow,
    *,
    on_pass: Callable[[PassReport], None],
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ListenEnd:
    """Run passes as events come, until idle, out of time, stopped, or a pass must fail.

    ``on_pass`` gets every pass that did work as soon as it finished (the caller
    records it at once, not only at the end). Returns why listening ended.
    """
    started = idle_since = clock()
    stop = stop or threading.Event()
    while True:
        now = clock()
        if stop.is_set():
            return ListenEnd.STOPPED
        if now - started >= window.max_seconds:
            return ListenEnd.MAX_TIME
        idle_left = window.idle_seconds - (now - idle_since)
        if idle_left <= 0:
            return ListenEnd.IDLE
        wait_for = min(window.poll_seconds, idle_left, window.max_seconds - (now - started))
        wake = Wake.POLL
        deadline = now + wait_for
        while (left := deadline - clock()) > 0 and not stop.is_set():
            if wakeups.wait(min(left, WAIT_SLICE_SECONDS)):
                wake = Wake.NOTIFY
                break
        if stop.is_set():
            return ListenEnd.STOPPED
        report = run_pass(wake)
        if report.did_work:
            idle_since = clock()
            on_pass(report)
        if report.must_fail_run:
            return ListenEnd.RUN_FAILING


def take_newly_due(
    engine: sa.Engine,
    stripe: ReversalGateway,
    *,
    token: str,
    run_id: str | None,
    settings: ReversalSettings,
    open_window: timedelta,
    wake: Wake,
) -> PassReport:
    """One pass: intake of new refund events, claim what is due, reverse it (one batch)."""
    started_at = datetime.now(UTC)
    intake = process_refund_events(engine, run_id=run_id, open_window=open_window)
    claim = claim_due_rows(
        engine,
        token=token,
        max_rows=settings.max_rows_per_run,
        lease_seconds=settings.lease_seconds,
        preview_rows=0,
    )
    batch = (
        ReversalBatch(engine, stripe, token=token, run_id=run_id, settings=settings).run()
        if claim.rows_claimed
        else BatchReport()
    )
    return PassReport(
        wake=wake,
        started_at=started_at,
        events_processed=intake.events_processed,
        rows_requested=intake.rows_requested,
        rows_claimed=claim.rows_claimed,
        batch=batch,
        intake=intake,
    )


def combined_report(reports: list[BatchReport]) -> BatchReport:
    """The run's totals over every batch it did, for the one materialization at the end."""
    total = BatchReport(outcomes=Counter(), statuses=Counter())
    for report in reports:
        total.outcomes.update(report.outcomes)
        total.statuses.update(report.statuses)
        total.reversed_amount_by_currency.update(report.reversed_amount_by_currency)
        room = FAILURE_LIST_LIMIT - len(total.failures)
        total.failures.extend(report.failures[: max(room, 0)])
        total.rows_released += report.rows_released
        total.outcomes_not_written.extend(report.outcomes_not_written)
        total.elapsed_seconds += report.elapsed_seconds
        if total.systemic_error is None:
            total.systemic_error = report.systemic_error
    return total
