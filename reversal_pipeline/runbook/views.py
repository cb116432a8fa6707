"""``status`` and ``show``: what an operator reads before acting. Read-only."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.statuses import STATUS_VALUES
from reversal_pipeline.db.tables import (
    reconciliation_drift,
    refund_allocations,
    refund_events,
    reversal_attempts,
)
from reversal_pipeline.db.tables import seller_transfers as st
from reversal_pipeline.errors import OperatorInputError
from reversal_pipeline.reversals.intake_window import refund_open_window
from reversal_pipeline.reversals.open_events import (
    OpenEventsSummary,
    list_open_events,
    summarize_open_events,
)

RECENT_RUNS = 5
#: Terminal width the operator views wrap to (a line longer than this wraps between words).
WRAP_WIDTH = 100
CONTINUATION_INDENT = "    "


def wrap_line(line: str, width: int = WRAP_WIDTH) -> list[str]:
    """``line`` as lines of at most ``width``, broken only between words.

    Continuations keep the line's own indent plus four spaces, so a wrapped
    entry still reads as one entry. A word longer than ``width`` (an id, a
    URL) is left whole on a line of its own rather than cut: an operator
    copies those.
    """
    indent = line[: len(line) - len(line.lstrip(" "))]
    return textwrap.wrap(
        line,
        width=width,
        subsequent_indent=indent + CONTINUATION_INDENT,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [line]


@dataclass
class RunOutcome:
    """One job run as the audit trail saw it: rows it moved, by resulting status."""

    run_id: str
    last_write_at: datetime
    rows_by_status: dict[str, int]


@dataclass
class StatusReport:
    counts: dict[str, int]
    oldest_due: dict[str, Any] | None
    due_now: int
    expired_claims: list[dict[str, Any]]
    recent_runs: list[RunOutcome] = field(default_factory=list)
    # Refund events still open (no transfer yet, or payout pending) and the oldest of them.
    open_refund_events: OpenEventsSummary | None = None
    oldest_open_refund_event: dict[str, Any] | None = None


def status_report(engine: sa.Engine, *, recent_runs: int = RECENT_RUNS) -> StatusReport:
    """Counts per status, the oldest due row, expired claims, and the last runs' outcomes."""
    with engine.connect() as connection:
        found: dict[str, int] = dict(
            connection.execute(sa.select(st.c.status, sa.func.count()).group_by(st.c.status)).all()
        )
        counts = {status: int(found.pop(status, 0)) for status in STATUS_VALUES}
        counts.update({k: int(v) for k, v in found.items()})  # a status the CHECK let through
        due = (st.c.status == "reversal_pending") & (st.c.next_retry_at <= sa.func.now())
        oldest = (
            connection.execute(
                sa.select(
                    st.c.id,
                    st.c.stripe_transfer_id,
                    st.c.next_retry_at,
                    st.c.retry_count,
                    (sa.func.now() - st.c.next_retry_at).label("overdue_by"),
                )
                .where(due)
                .order_by(st.c.next_retry_at, st.c.id)
                .limit(1)
            )
            .mappings()
            .first()
        )
        due_now = connection.execute(sa.select(sa.func.count()).where(due)).scalar_one()
        expired = (
            connection.execute(
                sa.select(st.c.id, st.c.claimed_by, st.c.claim_expires_at)
                .where(st.c.claimed_by.is_not(None), st.c.claim_expires_at < sa.func.now())
                .order_by(st.c.claim_expires_at)
                .limit(20)
            )
            .mappings()
            .all()
        )
        runs = connection.execute(
            sa.select(
                reversal_attempts.c.run_id,
                sa.func.max(reversal_attempts.c.created_at).label("last_write_at"),
            )
            .where(reversal_attempts.c.run_id.is_not(None))
            .group_by(reversal_attempts.c.run_id)
            .order_by(sa.desc("last_write_at"))
            .limit(recent_runs)
        ).all()
        outcomes = []
        for run in runs:
            by_status = connection.execute(
                sa.select(reversal_attempts.c.status_after, sa.func.count())
                .where(
                    reversal_attempts.c.run_id == run.run_id,
                    reversal_attempts.c.status_after.is_not(None),
                )
                .group_by(reversal_attempts.c.status_after)
            ).all()
            outcomes.append(RunOutcome(run.run_id, run.last_write_at, dict(by_status)))
        window = refund_open_window()
        open_events = summarize_open_events(connection, window)
        oldest_open = list_open_events(connection, window, limit=1)
    return StatusReport(
        counts=counts,
        oldest_due=dict(oldest) if oldest else None,
        due_now=int(due_now),
        expired_claims=[dict(r) for r in expired],
        recent_runs=outcomes,
        open_refund_events=open_events,
        oldest_open_refund_event=oldest_open[0] if oldest_open else None,
    )


@dataclass
class RowDetail:
    row: dict[str, Any]
    attempts: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    #: Each refund's share of the row's reversal target, oldest first (issue 17).
    refunds: list[dict[str, Any]] = field(default_factory=list)


def row_detail(engine: sa.Engine, row_id: int) -> RowDetail:
    """The row, every audit row in order, and every reconciliation finding about it."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(st).where(st.c.id == row_id)).mappings().first()
        if row is None:
            raise OperatorInputError(f"no seller transfer with id {row_id}")
        attempts = (
            connection.execute(
                sa.select(reversal_attempts)
                .where(reversal_attempts.c.seller_transfer_id == row_id)
                .order_by(reversal_attempts.c.id)
            )
            .mappings()
            .all()
        )
        findings = (
            connection.execute(
                sa.select(reconciliation_drift)
                .where(reconciliation_drift.c.seller_transfer_id == row_id)
                .order_by(reconciliation_drift.c.partition_day, reconciliation_drift.c.id)
            )
            .mappings()
            .all()
        )
        refunds = (
            connection.execute(
                sa.select(
                    refund_events.c.refund_id,
                    refund_allocations.c.amount,
                    refund_allocations.c.target_before,
                    refund_allocations.c.target_after,
                    refund_allocations.c.created_at,
                )
                .join(refund_events, refund_events.c.id == refund_allocations.c.refund_event_id)
                .where(refund_allocations.c.seller_transfer_id == row_id)
                .order_by(refund_allocations.c.id)
            )
            .mappings()
            .all()
        )
    return RowDetail(
        dict(row),
        [dict(a) for a in attempts],
        [dict(f) for f in findings],
        [dict(r) for r in refunds],
    )
