"""Dagster definitions, one folder per domain, loaded by ``reversal_pipeline.definitions``."""
