"""Reconcile one UTC day: list Stripe, read the database, compare, store, report.

The plain core of the ``reversal_reconciliation`` asset. Stripe's listing is
streamed into the columnar frame page by page, so memory holds columns, not
a million SDK objects. If the listing fails part-way the day is recorded as
an *incomplete* run: no finding is resolved, and the caller fails the
materialization, so a partial reconciliation is never reported as clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.errors import StripeSentinel
from reversal_pipeline.reconciliation.compare import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HIGH_AFTER,
    DEFAULT_STUCK_MARGIN,
    DEFAULT_STUCK_MAX_AGE,
    compare,
)
from reversal_pipeline.reconciliation.frames import db_transfers_frame, stripe_transfers_frame
from reversal_pipeline.reconciliation.report import write_csv
from reversal_pipeline.reconciliation.store import (
    RunCounts,
    StoredRun,
    record_incomplete_run,
    store_findings,
)


class TransferLister(Protocol):
    """What reconciliation needs from the Stripe resource."""

    def iter_transfers_created(
        self, created_gte: datetime, created_lt: datetime
    ) -> Iterator[Any]: ...

    @property
    def calls_made(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class ReconciliationWindows:
    """The time windows that decide what counts as drift (all configurable)."""

    grace_period: timedelta = DEFAULT_GRACE_PERIOD
    stuck_margin: timedelta = DEFAULT_STUCK_MARGIN
    stuck_max_age: timedelta = DEFAULT_STUCK_MAX_AGE
    high_after: timedelta = DEFAULT_HIGH_AFTER


@dataclass
class DayReconciliation:
    """The outcome of reconciling one day."""

    day: date
    complete: bool
    drift_findings: pd.DataFrame
    db_rows: int = 0
    stripe_transfers: int = 0
    stripe_calls: int = 0
    stored: StoredRun | None = None
    error: str | None = None
    report_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, dtime.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def reconcile_day(
    engine: sa.Engine,
    stripe: TransferLister,
    day: date,
    *,
    run_id: str | None,
    windows: ReconciliationWindows = ReconciliationWindows(),  # frozen: a shared default is safe
    reports_dir: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DayReconciliation:
    started_at = now()
    day_start, day_end = day_bounds(day)
    calls_before = _list_calls(stripe.calls_made)
    seconds: dict[str, float] = {}

    listed = _Counted(stripe.iter_transfers_created(day_start, day_end))
    try:
        with _timed(seconds, "stripe_listing"):
            stripe_frame = stripe_transfers_frame(listed)
    except StripeSentinel as error:
        message = (
            f"Stripe's transfer list for {day} stopped after {listed.count} transfer(s): "
            f"{type(error).__name__}: {error.message}"
        )
        counts = RunCounts(
            stripe_transfers=listed.count,
            stripe_calls=_list_calls(stripe.calls_made) - calls_before,
        )
        return _incomplete(engine, day, started_at, now(), run_id, message, counts, seconds)
    stripe_calls = _list_calls(stripe.calls_made) - calls_before

    with _timed(seconds, "database_read"), engine.connect() as connection:
        db_frame = db_transfers_frame(connection, day_start, day_end)
    with _timed(seconds, "comparison"):
        drift_findings = compare(
            db_frame,
            stripe_frame,
            now=now(),
            grace_period=windows.grace_period,
            stuck_margin=windows.stuck_margin,
            stuck_max_age=windows.stuck_max_age,
            high_after=windows.high_after,
        )
    counts = RunCounts(
        db_rows=len(db_frame), stripe_transfers=len(stripe_frame), stripe_calls=stripe_calls
    )
    wrong_account = _looks_like_wrong_account(drift_findings, db_frame)
    if wrong_account is not None:
        return _incomplete(
            engine, day, started_at, now(), run_id, wrong_account, counts, seconds, drift_findings
        )
    with _timed(seconds, "writing_findings"):
        stored = store_findings(
            engine,
            day,
            drift_findings,
            now=now(),
            started_at=started_at,
            run_id=run_id,
            counts=counts,
        )
        report_path = None
        if reports_dir is not None:
            report_path = write_csv(
                drift_findings, reports_dir / f"reconciliation-{day.isoformat()}-{run_id}.csv"
            )
    return DayReconciliation(
        day,
        True,
        drift_findings,
        db_rows=len(db_frame),
        stripe_transfers=len(stripe_frame),
        stripe_calls=stripe_calls,
        stored=stored,
        report_path=report_path,
        seconds=seconds,
    )


def _incomplete(
    engine: sa.Engine,
    day: date,
    started_at: datetime,
    finished_at: datetime,
    run_id: str | None,
    message: str,
    counts: RunCounts,
    seconds: dict[str, float],
    drift_findings: pd.DataFrame | None = None,
) -> DayReconciliation:
    """Record a run that proves nothing about the day (it resolves no finding)."""
    record_incomplete_run(
        engine,
        day,
        started_at=started_at,
        finished_at=finished_at,
        run_id=run_id,
        error_message=message,
        counts=counts,
    )
    return DayReconciliation(
        day,
        False,
        pd.DataFrame() if drift_findings is None else drift_findings,
        db_rows=counts.db_rows or 0,
        stripe_transfers=counts.stripe_transfers or 0,
        stripe_calls=counts.stripe_calls or 0,
        error=message,
        seconds=seconds,
    )


WRONG_ACCOUNT_MIN_ROWS = 50


def _looks_like_wrong_account(drift_findings: pd.DataFrame, db_frame: pd.DataFrame) -> str | None:
    """One clear alarm instead of a finding per row when no transfer of the day is at Stripe.

    Every row missing at Stripe means the key is for another account or mode
    (test vs live), not that every transfer vanished: storing a finding per
    row would bury that under thousands of identical lines.
    """
    with_transfer = int(db_frame["stripe_transfer_id"].notna().sum())
    if with_transfer < WRONG_ACCOUNT_MIN_ROWS or drift_findings.empty:
        return None
    missing = int((drift_findings["category"].astype(str) == "missing_at_stripe").sum())
    if missing < with_transfer:
        return None
    return (
        f"none of the {with_transfer} transfers of this day exist at Stripe for this API key: "
        "STRIPE_API_KEY is most likely for another account or mode (test vs live). "
        "No finding stored; fix the key and re-run the partition."
    )


class _Counted:
    """Counts what passes through, so a failed listing can say how far it got."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = iter(items)
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self.count += 1
            yield item


class _timed:
    def __init__(self, into: dict[str, float], name: str) -> None:
        self.into, self.name = into, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.into[self.name] = round(time.perf_counter() - self.started, 4)


def _list_calls(calls_made: Mapping[str, int]) -> int:
    """Stripe calls a reconciliation makes: transfer list pages and reversal list pages."""
    return sum(v for k, v in calls_made.items() if k.startswith("list_"))
