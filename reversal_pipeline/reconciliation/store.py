"""Persist one day's findings in ``reconciliation_drift`` and the run in ``reconciliation_runs``.

A finding is identified by ``(partition_day, category, finding_key)``; storing
a run upserts what it saw (``first_seen_at`` kept, ``last_seen_at`` moved,
``resolved_at`` cleared) and resolves what it no longer sees, all in one
transaction, so a reader never sees half a run. Findings are never deleted.

Only a *complete* run may resolve findings: a listing that failed midway
proves nothing about the transfers it did not reach, so
``record_incomplete_run`` writes the run and leaves every finding alone.

A run never overwrites a later-started run's findings: two runs of one day
(the schedule and the backfill sensor both ask for yesterday) each hold a
snapshot, and the older one stored last would resolve the newer one's real
findings. Under the day's lock, a run that finds a later-started full run
(or, for an incremental run, any later-started run) already stored stores
nothing and is recorded as superseded. A full run that finishes after a
later-started incremental one still stores (it alone re-read Stripe for the
whole day), but, like every run, says nothing about rows changed after it
started: those are left to the run that saw them, or to the next one.

An *incremental* run re-checks only some rows (``FindingScope``): it resolves
only findings about those rows and their transfers, never the rest of the day.

Two sides share the tables (``source``, migration 0012): the transfer side
(``reversal_reconciliation``) and the refund side (``refund_reconciliation``)
store findings and runs on the same partition days. A run sees only its own
side: it resolves, is superseded by and counts only its side's findings and
runs, so reconciling transfers of day D never resolves a refund finding of D.

An in-grace finding whose grace has ended counts as drift (``DRIFT_CONDITION``)
until a later run sees it gone, so "in grace" can delay an alarm but never
silence one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift, reconciliation_runs
from reversal_pipeline.reconciliation.categories import SEVERITY_RANK
from reversal_pipeline.reconciliation.compare import FINDING_COLUMNS

# Two-key advisory lock namespace ("RECO"): one store per partition day at a time.
_LOCK_NAMESPACE = 0x5245434F

_BATCH_TABLE = "reconciliation_findings_batch"

_CREATE_BATCH = f"""
CREATE TEMP TABLE {_BATCH_TABLE} (
    category            text    NOT NULL,
    severity            text    NOT NULL,
    finding_key         text    NOT NULL,
    seller_transfer_id  bigint,
    stripe_transfer_id  text,
    stripe_reversal_ids text,
    amount              bigint,
    currency            text,
    explanation         text    NOT NULL,
    details             jsonb   NOT NULL,
    in_grace            boolean NOT NULL,
    grace_ends_at       timestamptz
) ON COMMIT DROP
"""

# Built after the COPY: it refuses duplicate keys (ON CONFLICT cannot touch one row
# twice in a statement) and gives the anti-join below a good plan without ANALYZE.
_INDEX_BATCH = f"CREATE UNIQUE INDEX ON {_BATCH_TABLE} (category, finding_key)"

_COLUMN_LIST = ", ".join(FINDING_COLUMNS)

# Re-running a day rewrites every seen finding (last_seen_at moves), so at 100k
# findings the cost is PostgreSQL writing 100k rows, whichever statement does it:
# a joined UPDATE + INSERT measured no faster than this single upsert.
_UPSERT = f"""
INSERT INTO reconciliation_drift AS d (
    partition_day, {_COLUMN_LIST}, first_seen_at, last_seen_at, resolved_at, last_run_id, source)
SELECT :day, {_COLUMN_LIST}, :now, :now, NULL, :run_id, :source
FROM {_BATCH_TABLE}
ON CONFLICT (partition_day, category, finding_key) DO UPDATE SET
    severity = EXCLUDED.severity,
    seller_transfer_id = EXCLUDED.seller_transfer_id,
    stripe_transfer_id = EXCLUDED.stripe_transfer_id,
    stripe_reversal_ids = EXCLUDED.stripe_reversal_ids,
    amount = EXCLUDED.amount,
    currency = EXCLUDED.currency,
    explanation = EXCLUDED.explanation,
    details = EXCLUDED.details,
    in_grace = EXCLUDED.in_grace,
    grace_ends_at = EXCLUDED.grace_ends_at,
    last_seen_at = EXCLUDED.last_seen_at,
    resolved_at = NULL,
    last_run_id = EXCLUDED.last_run_id
"""

_RESOLVE_UNSEEN = f"""
UPDATE reconciliation_drift AS d SET resolved_at = :now
WHERE d.partition_day = :day AND d.resolved_at IS NULL AND d.source = :source
  AND NOT EXISTS (
      SELECT 1 FROM {_BATCH_TABLE} AS b
      WHERE b.category = d.category AND b.finding_key = d.finding_key)
"""

# An incremental run saw only these rows and transfers: what it did not see stays.
_IN_SCOPE = """
  AND (d.seller_transfer_id = ANY(:scope_rows)
       OR (d.seller_transfer_id IS NULL AND d.stripe_transfer_id = ANY(:scope_transfers)))
"""

# A full run is superseded by a later-started full run; an incremental one by any.
_LATER_RUN = """
SELECT run_id, started_at FROM reconciliation_runs
WHERE partition_day = :day AND source = :source AND complete AND started_at > :started_at
  AND (kind = 'full' OR :kind = 'incremental')
ORDER BY started_at DESC LIMIT 1
"""

# A row changed after the run started may have been read before the change:
# this run says nothing about it (neither refreshes nor resolves its findings).
# The change makes the day stale, so a later run looks at the row again; and a
# later-started incremental run that already stored it is not overwritten.
_CHANGED_SINCE_START = "coalesce(t.reconciliation_changed_at, t.updated_at) > :started_at"
_DROP_CHANGED_SINCE_START = f"""
DELETE FROM {_BATCH_TABLE} AS b USING seller_transfers AS t
WHERE b.seller_transfer_id = t.id AND {_CHANGED_SINCE_START}
"""
_NOT_CHANGED_SINCE_START = f"""
  AND NOT EXISTS (
      SELECT 1 FROM seller_transfers AS t
      WHERE t.id = d.seller_transfer_id AND {_CHANGED_SINCE_START})
"""

# An open finding is drift unless it is still within its grace.
DRIFT_CONDITION = "(NOT in_grace OR grace_ends_at IS NULL OR grace_ends_at <= :now)"


class FindingSource(StrEnum):
    """``reconciliation_drift.source`` / ``reconciliation_runs.source``: which side ran."""

    TRANSFERS = "transfers"  # reversal_reconciliation: seller_transfers vs Stripe's transfers
    REFUNDS = "refunds"  # refund_reconciliation: Stripe's refunds vs refund_events


class RunKind(StrEnum):
    """``reconciliation_runs.kind``: what a run compared."""

    FULL = "full"  # Stripe's whole listing of the day
    INCREMENTAL = "incremental"  # only some rows' transfers, retrieved one by one


@dataclass(frozen=True, slots=True)
class FindingScope:
    """The rows and Stripe transfers an incremental run looked at (and may resolve)."""

    seller_transfer_ids: tuple[int, ...]
    stripe_transfer_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunCounts:
    """What a run looked at, recorded with it for the backfill sensor and operators."""

    db_rows: int | None = None
    stripe_transfers: int | None = None
    stripe_calls: int | None = None
    stripe_refunds: int | None = None  # refund side: refunds listed
    pending_refunds: int | None = None  # refund side: of those, still pending


@dataclass(frozen=True, slots=True)
class StoredRun:
    """The outcome of storing one complete run."""

    run_row_id: int
    upserted: int
    resolved: int
    open_findings: int  # open after this run, not counting those still in grace
    superseded_by: str | None = None  # a later-started run had stored: nothing written


def store_findings(
    engine: sa.Engine,
    partition_day: date,
    drift_findings: pd.DataFrame,
    *,
    now: datetime,
    started_at: datetime,
    run_id: str | None,
    counts: RunCounts,
    scope: FindingScope | None = None,
    covered_until: datetime | None = None,
    source: FindingSource = FindingSource.TRANSFERS,
) -> StoredRun:
    """Store a complete run's findings for ``partition_day``, in one transaction.

    Idempotent: storing the same findings again leaves the same rows, with only
    ``last_seen_at`` (and ``last_run_id``) moved. ``scope`` (an incremental
    run) limits what may be resolved to the findings of those rows/transfers.
    ``covered_until`` (``coverage.covered_until``; default ``started_at``) is
    recorded with the run for ``stale_days``. ``source`` is the side: only its
    findings may be resolved, only its runs supersede this one.
    """
    kind = RunKind.FULL if scope is None else RunKind.INCREMENTAL
    with engine.begin() as connection:
        _lock_day(connection, partition_day)
        later = connection.execute(
            sa.text(_LATER_RUN),
            {
                "day": partition_day,
                "started_at": started_at,
                "kind": kind.value,
                "source": source.value,
            },
        ).first()
        if later is not None:
            message = (
                f"superseded: run {later.run_id} of {partition_day} started later "
                f"({later.started_at:%Y-%m-%d %H:%M:%S}) and already stored its findings; "
                "this older snapshot stored nothing"
            )
            run_row_id = _insert_run(
                connection,
                partition_day,
                run_id=run_id,
                started_at=started_at,
                finished_at=now,
                complete=False,
                counts=counts,
                open_findings=None,
                error_message=message,
                kind=kind,
                source=source,
            )
            open_count = _count_open(connection, partition_day, now, source)
            return StoredRun(run_row_id, 0, 0, open_count, superseded_by=later.run_id or "")
        connection.execute(sa.text(_CREATE_BATCH))
        _copy_findings(connection, drift_findings)
        connection.execute(sa.text(_INDEX_BATCH))
        # The refund side reads rows too, but its findings are about refunds: a row
        # changed since its start makes the day stale (refund_stale_days), not skipped here.
        row_guard = source is FindingSource.TRANSFERS
        if row_guard:
            connection.execute(sa.text(_DROP_CHANGED_SINCE_START), {"started_at": started_at})
        params: dict[str, Any] = {
            "day": partition_day,
            "now": now,
            "run_id": run_id,
            "started_at": started_at,
            "source": source.value,
        }
        upserted = connection.execute(sa.text(_UPSERT), params).rowcount
        resolve = _RESOLVE_UNSEEN + (_NOT_CHANGED_SINCE_START if row_guard else "")
        if scope is not None:
            resolve += _IN_SCOPE
            params |= {
                "scope_rows": list(scope.seller_transfer_ids),
                "scope_transfers": list(scope.stripe_transfer_ids),
            }
        resolved = connection.execute(sa.text(resolve), params).rowcount
        open_count = _count_open(connection, partition_day, now, source)
        run_row_id = _insert_run(
            connection,
            partition_day,
            run_id=run_id,
            started_at=started_at,
            finished_at=now,
            complete=True,
            counts=counts,
            open_findings=open_count,
            kind=kind,
            covered_until=covered_until,
            source=source,
        )
    return StoredRun(run_row_id, upserted, resolved, open_count)


def record_incomplete_run(
    engine: sa.Engine,
    partition_day: date,
    *,
    started_at: datetime,
    finished_at: datetime,
    run_id: str | None,
    error_message: str,
    counts: RunCounts = RunCounts(),  # frozen, so one shared default is safe
    source: FindingSource = FindingSource.TRANSFERS,
) -> int:
    """Record a run that could not finish (e.g. Stripe's listing failed midway).

    Findings are neither added nor resolved: a partial listing would make every
    transfer it did not reach look missing, and would "resolve" real drift.
    ``open_findings`` stays NULL so the run can never read as clean.
    """
    with engine.begin() as connection:
        _lock_day(connection, partition_day)
        return _insert_run(
            connection,
            partition_day,
            run_id=run_id,
            started_at=started_at,
            finished_at=finished_at,
            complete=False,
            counts=counts,
            open_findings=None,
            error_message=error_message,
            source=source,
        )


def _lock_day(connection: sa.Connection, partition_day: date) -> None:
    # Two stores of one day at once would each resolve what the other just saw.
    connection.execute(
        sa.select(sa.func.pg_advisory_xact_lock(_LOCK_NAMESPACE, partition_day.toordinal()))
    )


def _copy_findings(connection: sa.Connection, drift_findings: pd.DataFrame) -> None:
    unique_findings = drift_findings.drop_duplicates(["category", "finding_key"])
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None  # inside engine.begin(): a live connection
    with (
        driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {_BATCH_TABLE} ({_COLUMN_LIST}) FROM STDIN") as copy,
    ):
        for start in range(0, len(unique_findings), _COPY_CHUNK_ROWS):
            chunk = unique_findings.iloc[start : start + _COPY_CHUNK_ROWS]
            for row in _finding_rows(chunk):
                copy.write_row(row)


# Rows turned into Python values at a time: bounds memory when a wrong API key
# makes every one of a million rows a finding.
_COPY_CHUNK_ROWS = 20_000


def _finding_rows(drift_findings: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    columns = [_plain_values(drift_findings[name]) for name in FINDING_COLUMNS]
    details_index = FINDING_COLUMNS.index("details")
    columns[details_index] = [_details_json(d) for d in columns[details_index]]
    return zip(*columns, strict=True)


def _plain_values(values: pd.Series) -> list[Any]:
    present = values.notna().to_numpy()
    plain = values.to_numpy(dtype=object, copy=True)  # writable: pandas may share buffers
    plain[~present] = None
    return plain.tolist()


# One encoder for all rows: json.dumps(**options) builds a new one per call.
# No sort_keys: JSONB stores keys in its own order anyway.
_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def _details_json(details: Mapping[str, Any] | str | None) -> str:
    if details is None:
        return "{}"
    if isinstance(details, str):  # e.g. read back from a CSV report
        return details
    return _JSON.encode(details)


def _count_open(
    connection: sa.Connection, partition_day: date, now: datetime, source: FindingSource
) -> int:
    query = sa.text(
        "SELECT count(*) FROM reconciliation_drift"
        " WHERE partition_day = :day AND source = :source AND resolved_at IS NULL"
        f" AND {DRIFT_CONDITION}"
    )
    params = {"day": partition_day, "now": now, "source": source.value}
    return int(connection.execute(query, params).scalar_one())


def _insert_run(
    connection: sa.Connection,
    partition_day: date,
    *,
    run_id: str | None,
    started_at: datetime,
    finished_at: datetime,
    complete: bool,
    counts: RunCounts,
    open_findings: int | None,
    error_message: str | None = None,
    kind: RunKind = RunKind.FULL,
    covered_until: datetime | None = None,
    source: FindingSource = FindingSource.TRANSFERS,
) -> int:
    statement = (
        sa.insert(reconciliation_runs)
        .values(
            partition_day=partition_day,
            run_id=run_id,
            started_at=started_at,
            finished_at=finished_at,
            complete=complete,
            db_rows=counts.db_rows,
            stripe_transfers=counts.stripe_transfers,
            stripe_calls=counts.stripe_calls,
            open_findings=open_findings,
            error_message=error_message,
            kind=kind.value,
            covered_until=covered_until or started_at,
            source=source.value,
            stripe_refunds=counts.stripe_refunds,
            pending_refunds=counts.pending_refunds,
        )
        .returning(reconciliation_runs.c.id)
    )
    return int(connection.execute(statement).scalar_one())


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class DayFindings:
    """A day's open findings with the runs that explain how current they are."""

    partition_day: date
    latest_run: Mapping[str, Any] | None
    last_complete_run: Mapping[str, Any] | None
    findings: pd.DataFrame
    as_of: datetime  # when read: a finding whose grace ended by then is drift

    @property
    def is_clean(self) -> bool:
        """True only if the latest run completed and left no open drift at ``as_of``.

        A day whose latest run is incomplete is never clean, whatever an older
        run found: the failed run may have been about to see new drift. A
        finding whose grace ended before ``now`` is drift.
        """
        if self.latest_run is None or not self.latest_run["complete"]:
            return False
        return not bool(counts_as_drift(self.findings, self.as_of).any())


def counts_as_drift(findings: pd.DataFrame, now: datetime) -> pd.Series:
    """Per open finding: drift now (out of grace, or its grace has ended)."""
    in_grace = findings["in_grace"].astype(bool)
    ends = pd.to_datetime(findings["grace_ends_at"], utc=True)
    return ~in_grace | ends.isna() | (ends <= pd.Timestamp(now))


def _severity_order() -> sa.ColumnElement[int]:
    return sa.case(SEVERITY_RANK, value=reconciliation_drift.c.severity, else_=len(SEVERITY_RANK))


def open_findings(
    connection: sa.Connection, day: date | None = None, source: FindingSource | None = None
) -> pd.DataFrame:
    """Unresolved findings (of ``day``, or of every day; of ``source``, or of both sides),
    most urgent and largest first."""
    d = reconciliation_drift.c
    query = sa.select(reconciliation_drift).where(d.resolved_at.is_(None))
    if day is not None:
        query = query.where(d.partition_day == day)
    if source is not None:
        query = query.where(d.source == source.value)
    query = query.order_by(
        _severity_order(), d.amount.desc().nulls_last(), d.partition_day, d.category, d.id
    )
    return _read_frame(connection, query)


def latest_findings_for_day(
    connection: sa.Connection,
    day: date,
    *,
    as_of: datetime | None = None,
    source: FindingSource = FindingSource.TRANSFERS,
) -> DayFindings:
    """What the latest complete run of ``day`` left open, and whether a later run failed.

    The open findings of a day are exactly those the latest *complete* run saw:
    it resolved everything else, and incomplete runs change nothing. The runs
    are ``source``'s (the transfer side unless asked); the findings are both
    sides', so a day with an open refund finding never reads as clean.
    """
    return DayFindings(
        partition_day=day,
        latest_run=_latest_run(connection, day, complete_only=False, source=source),
        last_complete_run=_latest_run(connection, day, complete_only=True, source=source),
        findings=open_findings(connection, day),
        as_of=as_of or datetime.now(UTC),
    )


def _latest_run(
    connection: sa.Connection, day: date, *, complete_only: bool, source: FindingSource
) -> Mapping[str, Any] | None:
    r = reconciliation_runs.c
    query = sa.select(reconciliation_runs).where(r.partition_day == day, r.source == source.value)
    if complete_only:
        query = query.where(r.complete.is_(True))
    query = query.order_by(r.started_at.desc(), r.id.desc()).limit(1)
    row = connection.execute(query).mappings().first()
    return dict(row) if row is not None else None


def _read_frame(connection: sa.Connection, query: sa.Select[Any]) -> pd.DataFrame:
    frame = pd.read_sql(query, connection)
    for name in ("seller_transfer_id", "amount"):
        frame[name] = frame[name].astype("Int64")
    frame["in_grace"] = frame["in_grace"].astype(bool)
    return frame
