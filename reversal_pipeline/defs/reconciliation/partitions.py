"""Daily partitions by the UTC day of ``seller_transfers.transferred_at``."""

import dagster as dg

from reversal_pipeline.environment import RECONCILIATION_START_DATE_ENV, setting

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=setting(RECONCILIATION_START_DATE_ENV),
    timezone="UTC",
)
