"""Dagster shell of the alerts: the sensor that finds problems and posts them (``alerts/`` core)."""
