"""Dagster shell of the reversal job: assets, checks, job, schedule, sensor."""
