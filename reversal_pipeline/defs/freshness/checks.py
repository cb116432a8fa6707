"""Freshness checks on the two promises an operator relies on, with the sensor that runs them.

- Yesterday's partitions of ``reversal_reconciliation`` and ``refund_reconciliation``
  are complete by 06:00 UTC (Dagster's time-partition freshness check: after each
  06:00 tick it expects the day that ended at midnight). A refund side that stopped
  running would otherwise hide refunds nobody reversed behind a green board.
- ``reversal_outcomes`` was materialized successfully within the last 15 minutes
  (the reversal job runs every 5: three missed runs is stale).

Both are ERROR checks, so ``reversal_alerts_sensor`` reports a failure as the
asset being stale. Dagster 1.13 also offers ``FreshnessPolicy`` on the asset,
but its state is not an asset check; checks keep one path into the alerts.
``freshness_checks_sensor`` re-evaluates a passing check when it could next go
stale; a failing one is re-run by the run that brings the asset back.
"""

from datetime import timedelta

import dagster as dg

RECONCILIATION_DEADLINE_CRON = "0 6 * * *"
OUTCOMES_MAX_AGE = timedelta(minutes=15)

reconciliation_freshness_checks = dg.build_time_partition_freshness_checks(
    assets=[dg.AssetKey("reversal_reconciliation"), dg.AssetKey("refund_reconciliation")],
    deadline_cron=RECONCILIATION_DEADLINE_CRON,
    timezone="UTC",
    severity=dg.AssetCheckSeverity.ERROR,
)
outcomes_freshness_checks = dg.build_last_update_freshness_checks(
    assets=[dg.AssetKey("reversal_outcomes")],
    lower_bound_delta=OUTCOMES_MAX_AGE,
    timezone="UTC",
    severity=dg.AssetCheckSeverity.ERROR,
)
FRESHNESS_CHECKS = [*reconciliation_freshness_checks, *outcomes_freshness_checks]

freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=FRESHNESS_CHECKS,
    minimum_interval_seconds=60,
    name="freshness_checks_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
