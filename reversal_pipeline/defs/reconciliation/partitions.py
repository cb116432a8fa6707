"""Daily partitions by the UTC day of ``seller_transfers.transferred_at``."""

import os

import dagster as dg

START_DATE_ENV = "RECONCILIATION_START_DATE"
DEFAULT_START_DATE = "2026-01-01"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get(START_DATE_ENV) or DEFAULT_START_DATE,
    timezone="UTC",
)
