"""Which refund days (a refund's UTC ``created`` day) need ``refund_reconciliation`` again.

The database does not know a refund's day until the refund side has listed
it, so staleness starts from what that side left behind. A refund day is
stale, after its last *complete* refund-side run (its ``covered_until``),
when:

- an in-grace refund finding's grace ended (a refund not received yet, or a
  reversal still on its way): it is looked at again instead of never;
- an open refund finding's refund changed in the database: its event arrived
  (``refund_events.received_at``), its outcome moved (``refund_event_history``),
  a target was raised for it (``refund_allocations``) or an allocated seller
  transfer changed (``reconciliation_changed_at``, e.g. the job reversed it):
  the finding may be resolved now, so it does not wait for the grace;
- the last run saw refunds still ``pending``: Stripe may have succeeded them
  since, and a succeeded refund nobody received is exactly what this side is
  for; re-checked every ``PENDING_RECHECK`` while some stay pending;
- its latest refund-side run did not complete (listing failed, superseded
  runs excepted: a later run completed).

A day with no open refund finding and no pending refund does not change by
itself: the transfer side watches the rows, and a new refund is on the day
it is created (the schedule's day).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.reconciliation.stale_days import StaleDay

# How often a day whose last run saw pending refunds is listed again.
PENDING_RECHECK = timedelta(hours=6)

REFUND_STALE_DAYS_SQL = sa.text(
    """
    WITH last AS (
        SELECT DISTINCT ON (partition_day)
               partition_day AS day, coalesce(covered_until, started_at) AS reconciled_at,
               pending_refunds
        FROM reconciliation_runs
        WHERE source = 'refunds' AND complete
          AND partition_day >= :since_day AND partition_day < :until_day
        ORDER BY partition_day, coalesce(covered_until, started_at) DESC
    ), open_refund_findings AS (
        SELECT d.partition_day, d.finding_key, d.in_grace, d.grace_ends_at
        FROM reconciliation_drift d
        WHERE d.source = 'refunds' AND d.resolved_at IS NULL
          AND d.partition_day >= :since_day AND d.partition_day < :until_day
    ), changes AS (
        SELECT f.partition_day AS day, max(f.grace_ends_at) AS changed_at,
               'refund findings in grace reached their end' AS why
        FROM open_refund_findings f
        WHERE f.in_grace AND f.grace_ends_at <= :now
        GROUP BY 1
        UNION ALL
        SELECT f.partition_day,
               max(greatest(e.received_at, h.changed_at, a.allocated_at, a.row_changed_at)),
               'an open refund finding''s event or reversal changed'
        FROM open_refund_findings f
        JOIN refund_events e ON e.refund_id = f.finding_key
        LEFT JOIN LATERAL (
            SELECT max(created_at) AS changed_at FROM refund_event_history
            WHERE refund_event_id = e.id) h ON true
        LEFT JOIN LATERAL (
            SELECT max(a.created_at) AS allocated_at,
                   max(coalesce(t.reconciliation_changed_at, t.updated_at)) AS row_changed_at
            FROM refund_allocations a JOIN seller_transfers t ON t.id = a.seller_transfer_id
            WHERE a.refund_event_id = e.id) a ON true
        GROUP BY 1
        UNION ALL
        SELECT l.day, l.reconciled_at + :pending_recheck,
               'refunds pending at the last run may have succeeded since'
        FROM last l
        WHERE l.pending_refunds > 0 AND l.reconciled_at + :pending_recheck <= :now
        UNION ALL
        SELECT r.partition_day, max(r.started_at), 'a refund reconciliation did not complete'
        FROM reconciliation_runs r
        WHERE r.source = 'refunds' AND NOT r.complete
          AND r.partition_day >= :since_day AND r.partition_day < :until_day
        GROUP BY 1
    )
    SELECT c.day, max(c.changed_at) AS changed_at, l.reconciled_at,
           string_agg(DISTINCT c.why, '; ') AS why
    FROM changes c LEFT JOIN last l ON l.day = c.day
    WHERE c.changed_at IS NOT NULL
      AND (l.reconciled_at IS NULL OR c.changed_at > l.reconciled_at)
    GROUP BY c.day, l.reconciled_at
    ORDER BY c.day
    """
)


def refund_stale_days(
    connection: sa.Connection,
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    pending_recheck: timedelta = PENDING_RECHECK,
) -> list[StaleDay]:
    """Refund days in [since, until) to reconcile again (see the module docstring)."""
    rows = connection.execute(
        REFUND_STALE_DAYS_SQL,
        {
            "since_day": since.date(),
            "until_day": until.date(),
            "now": now,
            "pending_recheck": pending_recheck,
        },
    ).all()
    return [StaleDay(row.day, row.changed_at, row.reconciled_at, row.why) for row in rows]
