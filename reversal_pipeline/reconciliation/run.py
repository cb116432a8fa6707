"""Reconcile one UTC day: list Stripe, read the database, compare, store, report.

The plain core of the ``reversal_reconciliation`` asset. Stripe's listing is
streamed into the columnar frame page by page, so memory holds columns, not
a million SDK objects. If the listing fails part-way the day is recorded as
an *incomplete* run: no finding is resolved, and the caller fails the
materialization, so a partial reconciliation is never reported as clean.

Both sides are read with a margin (``day_margin``) around the day, so clock
skew at midnight matches instead of making a ``missing_at_stripe`` on one day
and an ``unknown_to_db`` on the next; each finding is then kept by the day it
belongs to.

``reconcile_rows`` is the incremental re-check: a day made stale by k changed
rows retrieves only their k transfers (one call each) instead of listing the
whole day (a call per 100 transfers), and resolves only those rows' findings.
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

from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.errors import StripeSentinel, TransferNotFound
from reversal_pipeline.reconciliation.compare import (
    DEFAULT_DAY_MARGIN,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HIGH_AFTER,
    DEFAULT_STUCK_MARGIN,
    DEFAULT_STUCK_MAX_AGE,
    compare,
)
from reversal_pipeline.reconciliation.coverage import covered_until
from reversal_pipeline.reconciliation.frames import (
    db_rows_frame,
    db_transfers_frame,
    rows_select,
    rows_without_transferred_at,
    stripe_transfers_frame,
)
from reversal_pipeline.reconciliation.refund_shares import with_refunds
from reversal_pipeline.reconciliation.report import write_csv
from reversal_pipeline.reconciliation.store import (
    FindingScope,
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


class TransferRetriever(TransferLister, Protocol):
    """What the incremental re-check needs too: one transfer by id."""

    def get_transfer(self, transfer_id: str) -> Any: ...


@dataclass(frozen=True)
class ReconciliationWindows:
    """The time windows that decide what counts as drift (all configurable)."""

    grace_period: timedelta = DEFAULT_GRACE_PERIOD
    stuck_margin: timedelta = DEFAULT_STUCK_MARGIN
    stuck_max_age: timedelta = DEFAULT_STUCK_MAX_AGE
    high_after: timedelta = DEFAULT_HIGH_AFTER
    day_margin: timedelta = DEFAULT_DAY_MARGIN


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
    incremental: bool = False


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
    window_start, window_end = day_start - windows.day_margin, day_end + windows.day_margin
    calls_before = _list_calls(stripe.calls_made)
    seconds: dict[str, float] = {}

    listed = _Counted(stripe.iter_transfers_created(window_start, window_end))
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
        covered = covered_until(connection, started_at)
        db_frame = _with_rows_lacking_transferred_at(
            connection,
            db_transfers_frame(connection, window_start, window_end),
            stripe_frame,
        )
    with _timed(seconds, "comparison"):
        drift_findings = _compare(db_frame, stripe_frame, day, windows, now())
    counts = RunCounts(
        db_rows=_owned_rows(db_frame, day),
        stripe_transfers=len(stripe_frame),
        stripe_calls=stripe_calls,
    )
    wrong_account = _looks_like_wrong_account(drift_findings, db_frame)
    if wrong_account is not None:
        return _incomplete(
            engine, day, started_at, now(), run_id, wrong_account, counts, seconds, drift_findings
        )
    report = None if reports_dir is None else reports_dir / f"reconciliation-{day}-{run_id}.csv"
    run = _CompleteRun(day, run_id, started_at, covered, now, counts, seconds)
    return _store_complete(engine, run, drift_findings, report=report)


def reconcile_rows(
    engine: sa.Engine,
    stripe: TransferRetriever,
    day: date,
    scope: FindingScope,
    *,
    run_id: str | None,
    windows: ReconciliationWindows = ReconciliationWindows(),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DayReconciliation:
    """Re-check only ``scope``'s rows (and Stripe-only transfers) of ``day``: one retrieve each.

    Same rules as the full run: a transfer Stripe does not have, or created
    outside the day and its margin, counts as not listed for the day. Only the
    findings of these rows and transfers may be resolved (``FindingScope``).
    """
    started_at = now()
    day_start, day_end = day_bounds(day)
    window_start, window_end = day_start - windows.day_margin, day_end + windows.day_margin
    calls_before = _retrieve_calls(stripe.calls_made)
    seconds: dict[str, float] = {}
    with _timed(seconds, "database_read"), engine.connect() as connection:
        covered = covered_until(connection, started_at)
        db_frame = db_rows_frame(
            connection, rows_select(seller_transfers.c.id.in_(scope.seller_transfer_ids))
        )
    transfer_ids = sorted(
        set(db_frame["stripe_transfer_id"].dropna().astype(str)) | set(scope.stripe_transfer_ids)
    )
    snapshots: list[Any] = []
    try:
        with _timed(seconds, "stripe_retrieves"):
            for transfer_id in transfer_ids:
                try:
                    snapshot = stripe.get_transfer(transfer_id)
                except TransferNotFound:
                    continue
                if window_start <= snapshot.created < window_end:
                    snapshots.append(snapshot)
    except StripeSentinel as error:
        message = (
            f"incremental re-check of {day} stopped after {len(snapshots)} of "
            f"{len(transfer_ids)} transfer(s): {type(error).__name__}: {error.message}"
        )
        counts = RunCounts(stripe_calls=_retrieve_calls(stripe.calls_made) - calls_before)
        return _incomplete(engine, day, started_at, now(), run_id, message, counts, seconds)
    stripe_calls = _retrieve_calls(stripe.calls_made) - calls_before
    stripe_frame = stripe_transfers_frame(snapshots)
    with _timed(seconds, "comparison"):
        drift_findings = _compare(db_frame, stripe_frame, day, windows, now())
    counts = RunCounts(
        db_rows=len(db_frame), stripe_transfers=len(stripe_frame), stripe_calls=stripe_calls
    )
    scope = FindingScope(
        seller_transfer_ids=scope.seller_transfer_ids,
        stripe_transfer_ids=tuple(transfer_ids),
    )
    run = _CompleteRun(day, run_id, started_at, covered, now, counts, seconds)
    return _store_complete(engine, run, drift_findings, scope=scope)


@dataclass(frozen=True)
class _CompleteRun:
    """What storing a complete run needs to know about it, full or incremental."""

    day: date
    run_id: str | None
    started_at: datetime
    covered_until: datetime  # coverage.covered_until, measured when it read the rows
    now: Callable[[], datetime]
    counts: RunCounts
    seconds: dict[str, float]


def _store_complete(
    engine: sa.Engine,
    run: _CompleteRun,
    drift_findings: pd.DataFrame,
    *,
    scope: FindingScope | None = None,
    report: Path | None = None,
) -> DayReconciliation:
    """Store a complete run (full, or incremental with ``scope``) and say what it did."""
    with _timed(run.seconds, "writing_findings"):
        drift_findings = with_refunds(engine, drift_findings)
        stored = store_findings(
            engine,
            run.day,
            drift_findings,
            now=run.now(),
            started_at=run.started_at,
            run_id=run.run_id,
            counts=run.counts,
            scope=scope,
            covered_until=run.covered_until,
        )
        report_path = None if report is None else write_csv(drift_findings, report)
    return DayReconciliation(
        run.day,
        True,
        drift_findings,
        db_rows=run.counts.db_rows or 0,
        stripe_transfers=run.counts.stripe_transfers or 0,
        stripe_calls=run.counts.stripe_calls or 0,
        stored=stored,
        report_path=report_path,
        seconds=run.seconds,
        incremental=scope is not None,
    )


def _compare(
    db_frame: pd.DataFrame,
    stripe_frame: pd.DataFrame,
    day: date,
    windows: ReconciliationWindows,
    at: datetime,
) -> pd.DataFrame:
    return compare(
        db_frame,
        stripe_frame,
        now=at,
        grace_period=windows.grace_period,
        stuck_margin=windows.stuck_margin,
        stuck_max_age=windows.stuck_max_age,
        high_after=windows.high_after,
        day=day_bounds(day),
    )


def _with_rows_lacking_transferred_at(
    connection: sa.Connection, db_frame: pd.DataFrame, stripe_frame: pd.DataFrame
) -> pd.DataFrame:
    """Add the rows with no ``transferred_at`` whose transfer Stripe lists in this window.

    They are reconciled by the transfer's own ``created`` (and flagged
    ``transferred_at_missing``) instead of hiding from every day.
    """
    undated = db_rows_frame(connection, rows_without_transferred_at())
    if undated.empty:
        return db_frame
    listed = undated["stripe_transfer_id"].isin(stripe_frame["transfer_id"]).to_numpy()
    if not listed.any():
        return db_frame
    combined = pd.concat([db_frame, undated[listed]], ignore_index=True)
    for name in ("currency", "status", "stripe_account_id"):  # concat may drop categories
        combined[name] = combined[name].astype("category")
    return combined


def _owned_rows(db_frame: pd.DataFrame, day: date) -> int:
    start, end = (pd.Timestamp(t) for t in day_bounds(day))
    at = db_frame["transferred_at"]
    return int(((at >= start) & (at < end)).sum() + at.isna().sum())


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


def _retrieve_calls(calls_made: Mapping[str, int]) -> int:
    """Stripe calls an incremental re-check makes: transfer retrieves and reversal pages."""
    return sum(v for k, v in calls_made.items() if k in ("retrieve_transfer", "list_reversals"))


def _list_calls(calls_made: Mapping[str, int]) -> int:
    """Stripe calls a reconciliation makes: transfer list pages and reversal list pages."""
    return sum(v for k, v in calls_made.items() if k.startswith("list_"))
