"""Dagster shell of reconciliation: daily asset, checks, schedule, backfill sensor, repair."""
