"""``reconciliation_schedule`` and ``refund_reconciliation_schedule``: yesterday (UTC), daily."""

import dagster as dg

from reversal_pipeline.defs.automation import schedule_default_status
from reversal_pipeline.defs.reconciliation.jobs import (
    reconciliation_job,
    refund_reconciliation_job,
)

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

refund_reconciliation_schedule = dg.build_schedule_from_partitioned_job(
    refund_reconciliation_job,
    name="refund_reconciliation_schedule",
    hour_of_day=3,
    minute_of_hour=45,
    default_status=schedule_default_status(),
    description="Checks the previous UTC day's refunds at 03:45 UTC, after the transfer side "
    "(03:15), so both sides' findings of a day are in place for the morning's look.",
)
