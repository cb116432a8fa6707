"""``reversal_job``: intake, claim, reverse, in one run."""

import dagster as dg

from reversal_pipeline.defs.reversals.assets import due_reversals, refund_intake, reversal_outcomes

reversal_job = dg.define_asset_job(
    name="reversal_job",
    selection=dg.AssetSelection.assets(refund_intake, due_reversals, reversal_outcomes),
    description="Turn refund events into due rows, claim them, and reverse each at Stripe.",
    # One process for the whole run: the steps share the database pool and the
    # Stripe rate limiter, and a subprocess per step would cost seconds per run.
    executor_def=dg.in_process_executor,
    tags={"domain": "reversals"},
)
