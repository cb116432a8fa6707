"""Read-only views of refund events still open: what the checks, metadata and ``status`` show.

One query for all three, so the UI, the alert and the command line never
disagree about which refunds are waiting and which are overdue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.statuses import REFUSED_OUTCOMES
from reversal_pipeline.db.tables import refund_events

LIST_LIMIT = 20


@dataclass(frozen=True)
class OpenEventsSummary:
    """How many events are open, how many past the window, and the oldest open one."""

    open_count: int
    past_window_count: int
    oldest_received_at: datetime | None
    oldest_age: timedelta | None


def _age() -> sa.ColumnElement[timedelta]:
    # SQLAlchemy already types timestamp - timestamp as Interval at runtime; its stubs say
    # datetime, so the coercion states it for the type checker (the SQL is unchanged).
    return sa.type_coerce(sa.func.now() - refund_events.c.received_at, sa.Interval).label("age")


def past_window(window: timedelta) -> sa.ColumnElement[bool]:
    """The event was received longer than ``window`` ago (by the database's clock)."""
    return refund_events.c.received_at < sa.func.now() - sa.bindparam(
        "open_window", window, type_=sa.Interval
    )


def summarize_open_events(connection: sa.Connection, window: timedelta) -> OpenEventsSummary:
    row = connection.execute(
        sa.select(
            sa.func.count(),
            sa.func.count().filter(past_window(window)),
            sa.func.min(refund_events.c.received_at),
            sa.func.max(_age()),
        ).where(refund_events.c.processed_at.is_(None))
    ).one()
    return OpenEventsSummary(int(row[0]), int(row[1]), row[2], row[3])


def list_open_events(
    connection: sa.Connection,
    window: timedelta,
    *,
    past_window_only: bool = False,
    limit: int = LIST_LIMIT,
) -> list[dict[str, Any]]:
    """The oldest open events first, with their age in days (to one decimal) for reading."""
    query = (
        sa.select(
            refund_events.c.id,
            refund_events.c.refund_id,
            refund_events.c.order_id,
            refund_events.c.outcome,
            refund_events.c.received_at,
            _age(),
            refund_events.c.outcome_detail,
        )
        .where(refund_events.c.processed_at.is_(None))
        .order_by(refund_events.c.received_at, refund_events.c.id)
        .limit(limit)
    )
    if past_window_only:
        query = query.where(past_window(window))
    rows = []
    for row in connection.execute(query).mappings():
        event = dict(row)
        event["age_days"] = round(event.pop("age").total_seconds() / 86_400, 1)
        rows.append(event)
    return rows


def list_refused_events(
    connection: sa.Connection, *, limit: int = LIST_LIMIT
) -> list[dict[str, Any]]:
    """Open events intake refused to place (issue 17), oldest first: a person must act."""
    query = (
        sa.select(
            refund_events.c.id,
            refund_events.c.refund_id,
            refund_events.c.order_id,
            refund_events.c.outcome,
            refund_events.c.received_at,
            refund_events.c.outcome_detail,
        )
        .where(
            refund_events.c.processed_at.is_(None),
            refund_events.c.outcome.in_([o.value for o in REFUSED_OUTCOMES]),
        )
        .order_by(refund_events.c.received_at, refund_events.c.id)
        .limit(limit)
    )
    return [dict(row) for row in connection.execute(query).mappings()]
