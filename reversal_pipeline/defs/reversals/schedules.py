"""``reversal_schedule``: drains what is due every few minutes (cron configurable)."""

import dagster as dg

from reversal_pipeline.defs.automation import schedule_default_status
from reversal_pipeline.defs.reversals.jobs import reversal_job
from reversal_pipeline.environment import SCHEDULE_CRON_ENV, setting

reversal_schedule = dg.ScheduleDefinition(
    name="reversal_schedule",
    job=reversal_job,
    cron_schedule=setting(SCHEDULE_CRON_ENV),
    execution_timezone="UTC",
    default_status=schedule_default_status(),
    description="Reverse every row that is due; retries come due here after their backoff.",
)
