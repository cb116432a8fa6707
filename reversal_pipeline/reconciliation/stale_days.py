"""Which past days need reconciling again, and whether a few rows' re-check will do.

Reversals happen days after the transfer, so a day reconciled yesterday may
have changed since. A day is stale when, after its last *complete*
reconciliation (full or incremental):

- a row of it changed in a column reconciliation compares
  (``reconciliation_changed_at``, kept by a trigger, so hand edits count; claims,
  lease renewals and attempt counts do not move it, or every reversal run
  would mark its days stale);
- a row's ``transferred_at`` moved off the day (``seller_transfer_day_moves``):
  the day's findings about it, or its transfer there, need another look;
- an in-grace finding's grace ended: it was held back as work in progress,
  and is looked at again now instead of never;

or when it was never reconciled completely.

Only the transfer side's runs and findings count here (``source``, migration
0012): a refund-side run of the day says nothing about its transfers. The
refund side's staleness is ``refund_stale_days``.

"Changed after the run" compares the writing transaction's ``now()`` (its
*start*) with the run's ``covered_until``, not its start: a write that began
before a run and committed after the run read the day was open when the run
read, so the run's coverage ends before it began (``coverage.py``), and the
day stays stale until a later run sees the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa

from reversal_pipeline.reconciliation.store import FindingScope

# Rows readers fall back to updated_at for: written before migration 0004.
_CHANGED_AT = "coalesce(t.reconciliation_changed_at, t.updated_at)"
# What a run surely saw (reconciliation/coverage.py); runs before migration 0009: their start.
_COVERED_UNTIL = "coalesce(covered_until, started_at)"

STALE_DAYS_SQL = sa.text(
    f"""
    WITH changes AS (
        SELECT (t.transferred_at AT TIME ZONE 'UTC')::date AS day,
               max({_CHANGED_AT}) AS changed_at, 'rows changed' AS why
        FROM seller_transfers t
        WHERE t.transferred_at >= :since AND t.transferred_at < :until
        GROUP BY 1
        UNION ALL
        SELECT (m.transferred_at_before AT TIME ZONE 'UTC')::date, max(m.moved_at),
               'a row''s transferred_at moved to another day'
        FROM seller_transfer_day_moves m
        WHERE m.transferred_at_before >= :since AND m.transferred_at_before < :until
        GROUP BY 1
        UNION ALL
        SELECT d.partition_day, max(d.grace_ends_at), 'findings in grace reached their end'
        FROM reconciliation_drift d
        WHERE d.resolved_at IS NULL AND d.in_grace AND d.grace_ends_at <= :now
          AND d.source = 'transfers'
          AND d.partition_day >= :since_day AND d.partition_day < :until_day
        GROUP BY 1
    ), reconciled AS (
        SELECT partition_day AS day, max({_COVERED_UNTIL}) AS reconciled_at
        FROM reconciliation_runs
        WHERE complete AND source = 'transfers' AND partition_day >= :since_day
        GROUP BY 1
    ), stale AS (
        SELECT c.day, c.changed_at, c.why, r.reconciled_at
        FROM changes c LEFT JOIN reconciled r ON r.day = c.day
        WHERE r.reconciled_at IS NULL OR c.changed_at > r.reconciled_at
    )
    SELECT day, max(changed_at) AS changed_at, max(reconciled_at) AS reconciled_at,
           string_agg(DISTINCT why, '; ') AS why
    FROM stale
    GROUP BY day
    ORDER BY day
    """
)


@dataclass(frozen=True)
class StaleDay:
    day: date
    changed_at: datetime
    reconciled_at: datetime | None
    why: str = "rows changed"

    @property
    def reason(self) -> str:
        if self.reconciled_at is None:
            return "never reconciled completely"
        return (
            f"{self.why}, latest at {self.changed_at:%Y-%m-%d %H:%M:%S}, "
            "after the last reconciliation"
        )


def stale_days(
    connection: sa.Connection, *, since: datetime, until: datetime, now: datetime
) -> list[StaleDay]:
    """Days in [since, until) changed (or whose grace ended) after their last reconciliation."""
    rows = connection.execute(
        STALE_DAYS_SQL,
        {
            "since": since,
            "until": until,
            "since_day": since.date(),
            "until_day": until.date(),
            "now": now,
        },
    ).all()
    return [StaleDay(row.day, row.changed_at, row.reconciled_at, row.why) for row in rows]


@dataclass(frozen=True)
class RecheckPlan:
    """How to reconcile a stale day: the rows to re-check, or ``None`` for a full listing."""

    scope: FindingScope | None
    reason: str

    @property
    def incremental(self) -> bool:
        return self.scope is not None


# Stripe lists 100 transfers a page: a re-check of k rows (k retrieves) is
# cheaper than the listing while k is below the day's page count.
TRANSFERS_PER_PAGE = 100

_LAST_COMPLETE = sa.text(
    f"""
    SELECT max({_COVERED_UNTIL}) AS since,
           max(greatest(db_rows, stripe_transfers)) FILTER (WHERE kind = 'full') AS size,
           bool_or(kind = 'full') AS had_full
    FROM reconciliation_runs WHERE partition_day = :day AND complete AND source = 'transfers'
    """
)
_CHANGED_ROWS = sa.text(
    f"""
    SELECT t.id FROM seller_transfers t
    WHERE t.transferred_at >= :day_start AND t.transferred_at < :day_end
      AND {_CHANGED_AT} > :since
    ORDER BY t.id
    LIMIT :limit
    """
)
_MOVED_OFF = sa.text(
    """
    SELECT count(*) FROM seller_transfer_day_moves
    WHERE transferred_at_before >= :day_start AND transferred_at_before < :day_end
      AND moved_at > :since
    """
)
_GRACE_ENDED = sa.text(
    """
    SELECT DISTINCT seller_transfer_id, stripe_transfer_id FROM reconciliation_drift
    WHERE partition_day = :day AND resolved_at IS NULL AND in_grace AND grace_ends_at <= :now
      AND source = 'transfers'
    """
)


def recheck_plan(
    connection: sa.Connection,
    day: date,
    day_start: datetime,
    day_end: datetime,
    *,
    now: datetime,
) -> RecheckPlan:
    """Re-check only the changed rows when that costs fewer calls than listing the day.

    Falls back to the full listing when the day never had one, a row moved
    off the day (its transfer may now be unknown to the day), or k reaches
    the day's page count.
    """
    last = connection.execute(_LAST_COMPLETE, {"day": day}).one()
    if last.since is None or not last.had_full:
        return RecheckPlan(None, "no complete full reconciliation of the day yet")
    bounds = {"day_start": day_start, "day_end": day_end, "since": last.since}
    if connection.execute(_MOVED_OFF, bounds).scalar_one():
        return RecheckPlan(None, "a row's transferred_at moved off the day")
    pages = max(1, -(-(last.size or 0) // TRANSFERS_PER_PAGE))
    changed = connection.execute(_CHANGED_ROWS, {**bounds, "limit": pages}).scalars().all()
    ended = connection.execute(_GRACE_ENDED, {"day": day, "now": now}).all()
    row_ids = set(changed) | {r.seller_transfer_id for r in ended if r.seller_transfer_id}
    stripe_only = {r.stripe_transfer_id for r in ended if r.seller_transfer_id is None}
    k = len(row_ids) + len(stripe_only)
    if k >= pages:
        return RecheckPlan(None, f"{k}+ changed rows: at least the day's {pages} page(s)")
    scope = FindingScope(tuple(sorted(row_ids)), tuple(sorted(t for t in stripe_only if t)))
    return RecheckPlan(scope, f"{k} changed row(s) < {pages} page(s): incremental re-check")
