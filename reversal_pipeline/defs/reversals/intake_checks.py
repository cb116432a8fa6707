"""Checks on ``refund_intake``: a refund that waits too long, or cannot be placed, is an alert.

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
from reversal_pipeline.reversals.stripe_refunds import ORDER_METADATA_KEY_ENV
from reversal_pipeline.reversals.unplaced_refunds import list_unplaced


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


@dg.asset_check(asset=refund_intake, blocking=False)
def no_unplaced_stripe_refunds(database: DatabaseResource) -> dg.AssetCheckResult:
    """No refund read from Stripe (``stripe_refunds_sensor``, ``pull-refunds``) names no order.

    Such a refund succeeded at Stripe but reversed nothing: its charge has no
    ``transfer_group`` and no order metadata, or its seller-transfer metadata
    is wrong. Nothing will place it on its own, so the seller keeps the money
    until a person acts: ERROR, named per refund.
    """
    with database.get_engine().connect() as connection:
        unplaced = list_unplaced(connection)
    refund_ids = [str(row["refund_id"]) for row in unplaced]
    return dg.AssetCheckResult(
        passed=not unplaced,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "unplaced": len(unplaced),
            "refund_ids": dg.MetadataValue.json(refund_ids),
            "refunds": dg.MetadataValue.md(unplaced_refunds_markdown(unplaced)),
        },
        description=None
        if not unplaced
        else (
            f"{len(unplaced)} refund(s) succeeded at Stripe but name no order to reverse: "
            + "; ".join(f"{row['refund_id']} ({row['reason']})" for row in unplaced)
            + f". Set the charge's transfer_group or metadata ({ORDER_METADATA_KEY_ENV}), or "
            "fix the refund's seller transfer metadata, then run `reversal-pipeline "
            "pull-refunds`; see the runbook, 'Refunds from Stripe'."
        ),
    )


def unplaced_refunds_markdown(unplaced: list[dict[str, object]]) -> str:
    if not unplaced:
        return "none"
    lines = ["| refund | charge | amount | reason | detail |", "|---|---|---|---|---|"]
    for row in unplaced:
        detail = str(row["detail"]).replace("|", "/")
        lines.append(
            f"| {row['refund_id']} | {row['charge_id'] or '-'} | {row['amount']} "
            f"{str(row['currency']).upper()} | {row['reason']} | {detail} |"
        )
    return "\n".join(lines)
