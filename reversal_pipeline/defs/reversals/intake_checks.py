"""Checks on ``refund_intake``: a refund that waits too long for its payout is an alert.

An event waiting for its order's transfer to appear or complete is normal for
a while (the refund raced the payout), so it is listed in the asset's
metadata but not red. Past ``REVERSAL_REFUND_OPEN_DAYS`` it is not normal:
the seller may keep the money of a refunded order, so the check is ERROR
(the alert sensor pages on failed ERROR checks) and names each event.
"""

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.assets import refund_intake
from reversal_pipeline.defs.reversals.metadata import open_events_table, refused_events_table
from reversal_pipeline.reversals.intake_window import OPEN_DAYS_ENV, refund_open_window
from reversal_pipeline.reversals.open_events import (
    list_open_events,
    list_refused_events,
    summarize_open_events,
)


@dg.asset_check(asset=refund_intake, blocking=False)
def no_refund_events_past_window(database: DatabaseResource) -> dg.AssetCheckResult:
    """No refund event open (no transfer, or payout pending) longer than the open window."""
    window = refund_open_window()
    with database.get_engine().connect() as connection:
        counts = summarize_open_events(connection, window)
        overdue = list_open_events(connection, window, past_window_only=True)
    refund_ids = [event["refund_id"] for event in overdue]
    return dg.AssetCheckResult(
        passed=not overdue,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "past_window": counts.past_window_count,
            "open_events": counts.open_count,
            "window_days": window.days,
            "refund_ids": dg.MetadataValue.json(refund_ids),
            "events": open_events_table(overdue),
        },
        description=None
        if not overdue
        else (
            f"{counts.past_window_count} refund event(s) open longer than {window.days} days "
            f"({OPEN_DAYS_ENV}): {', '.join(refund_ids)}. Their order has no paid seller "
            "transfer to reverse: find the order's payout (wrong order_id? transfer never "
            "saved?); see the runbook, 'Refund events'."
        ),
    )


@dg.asset_check(asset=refund_intake, blocking=False)
def no_refused_refund_events(database: DatabaseResource) -> dg.AssetCheckResult:
    """No refund intake could not place: ``needs_scope``, ``over_refund``, ``currency_mismatch``.

    Such a refund reversed nothing (issue 17) and is not looked at again on its
    own, so until a person acts the seller may keep money a customer got
    back: ERROR, named per refund, from the first run that sees it.
    """
    with database.get_engine().connect() as connection:
        refused = list_refused_events(connection)
    refund_ids = [event["refund_id"] for event in refused]
    return dg.AssetCheckResult(
        passed=not refused,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "refused": len(refused),
            "refund_ids": dg.MetadataValue.json(refund_ids),
            "events": refused_events_table(refused),
        },
        description=None
        if not refused
        else (
            f"{len(refused)} refund(s) reversed nothing because intake could not place them: "
            f"{', '.join(refund_ids)}. Say which seller transfer each concerns "
            "(`reversal-pipeline adjust`), then close the event; see the runbook, "
            "'Partial refunds'."
        ),
    )
