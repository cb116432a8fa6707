"""``reconciliation_schedule``: every morning, yesterday's day (UTC)."""

import dagster as dg

from reversal_pipeline.defs.automation import schedule_default_status
from reversal_pipeline.defs.reconciliation.jobs import reconciliation_job

reconciliation_schedule = dg.build_schedule_from_partitioned_job(
    reconciliation_job,
    name="reconciliation_schedule",
    hour_of_day=3,
    minute_of_hour=15,
    default_status=schedule_default_status(),
    # The daily pass always lists the whole day (MODE_TAG "full"), whatever changed.
    tags={"reconciliation/mode": "full"},
    description="Reconciles the previous UTC day at 03:15 UTC, after the night's reversals.",
)
