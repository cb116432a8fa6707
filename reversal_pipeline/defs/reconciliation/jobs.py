"""``reconciliation_job``: reconcile one day (a partition) at a time."""

import dagster as dg

from reversal_pipeline.defs.reconciliation.assets import reversal_reconciliation

reconciliation_job = dg.define_asset_job(
    name="reconciliation_job",
    selection=dg.AssetSelection.assets(reversal_reconciliation),
    description="Compare one UTC day of seller transfers with Stripe and record the drift.",
    executor_def=dg.in_process_executor,
    tags={"domain": "reconciliation"},
)
