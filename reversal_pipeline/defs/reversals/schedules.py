"""``reversal_schedule``: drains what is due every few minutes (cron configurable)."""

import os

import dagster as dg

from reversal_pipeline.defs.automation import schedule_default_status
from reversal_pipeline.defs.reversals.jobs import reversal_job

CRON_ENV = "REVERSAL_SCHEDULE_CRON"
DEFAULT_CRON = "*/5 * * * *"

reversal_schedule = dg.ScheduleDefinition(
    name="reversal_schedule",
    job=reversal_job,
    cron_schedule=os.environ.get(CRON_ENV) or DEFAULT_CRON,
    execution_timezone="UTC",
    default_status=schedule_default_status(),
    description="Reverse every row that is due; retries come due here after their backoff.",
)
