"""Which past days need reconciling again.

Reversals happen days after the transfer, so a day reconciled yesterday may
have changed since. A day is stale when a row of it changed (``updated_at``,
kept by a trigger, so hand edits count) after its last *complete*
reconciliation, or when it was never reconciled completely.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa

STALE_DAYS_SQL = sa.text(
    """
    WITH changed AS (
        SELECT (transferred_at AT TIME ZONE 'UTC')::date AS day, max(updated_at) AS changed_at
        FROM seller_transfers
        WHERE transferred_at >= :since AND transferred_at < :until
        GROUP BY 1
    ), reconciled AS (
        SELECT partition_day AS day, max(started_at) AS reconciled_at
        FROM reconciliation_runs
        WHERE complete AND partition_day >= :since_day
        GROUP BY 1
    )
    SELECT c.day, c.changed_at, r.reconciled_at
    FROM changed c LEFT JOIN reconciled r ON r.day = c.day
    WHERE r.reconciled_at IS NULL OR c.changed_at > r.reconciled_at
    ORDER BY c.day
    """
)


@dataclass(frozen=True)
class StaleDay:
    day: date
    changed_at: datetime
    reconciled_at: datetime | None

    @property
    def reason(self) -> str:
        if self.reconciled_at is None:
            return "never reconciled completely"
        return f"rows changed at {self.changed_at:%Y-%m-%d %H:%M:%S} after the last reconciliation"


def stale_days(connection: sa.Connection, *, since: datetime, until: datetime) -> list[StaleDay]:
    """Days in [since, until) whose rows changed after their last complete reconciliation."""
    rows = connection.execute(
        STALE_DAYS_SQL, {"since": since, "until": until, "since_day": since.date()}
    ).all()
    return [StaleDay(row.day, row.changed_at, row.reconciled_at) for row in rows]
