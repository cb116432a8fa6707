"""``reconciliation_job`` / ``refund_reconciliation_job``: reconcile one day at a time.

Two jobs, not one with both assets: each side has its own schedule, and the
backfill sensor re-runs only the side whose day went stale.
"""

import dagster as dg

from reversal_pipeline.defs.reconciliation.assets import reversal_reconciliation
from reversal_pipeline.defs.reconciliation.refund_assets import refund_reconciliation

reconciliation_job = dg.define_asset_job(
    name="reconciliation_job",
    selection=dg.AssetSelection.assets(reversal_reconciliation),
    description="Compare one UTC day of seller transfers with Stripe and record the drift.",
    executor_def=dg.in_process_executor,
    tags={"domain": "reconciliation"},
)

refund_reconciliation_job = dg.define_asset_job(
    name="refund_reconciliation_job",
    selection=dg.AssetSelection.assets(refund_reconciliation),
    description="Check one UTC day of Stripe's refunds against refund_events and the reversals.",
    executor_def=dg.in_process_executor,
    tags={"domain": "reconciliation"},
)
