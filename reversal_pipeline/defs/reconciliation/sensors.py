"""``reconciliation_backfill_sensor``: re-reconcile past days whose rows changed.

One run per stale partition, with a run key that includes the day's latest
change, so the same change is never requested twice and a new change always
is. The cursor remembers the change each day was last requested for, so the
next tick requests nothing until the data changes again.
"""

import json
import os
from datetime import UTC, datetime, time, timedelta

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.automation import sensor_default_status
from reversal_pipeline.defs.reconciliation.jobs import reconciliation_job
from reversal_pipeline.defs.reconciliation.partitions import daily_partitions
from reversal_pipeline.reconciliation.stale_days import stale_days

LOOKBACK_ENV = "RECONCILIATION_BACKFILL_LOOKBACK_DAYS"
DEFAULT_LOOKBACK_DAYS = 35
MAX_RUNS_PER_TICK = 31


@dg.sensor(
    name="reconciliation_backfill_sensor",
    job=reconciliation_job,
    minimum_interval_seconds=300,
    default_status=sensor_default_status(),
    description="Requests reconciliation of past days whose rows changed since last reconciled.",
)
def reconciliation_backfill_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    today = datetime.combine(datetime.now(UTC).date(), time.min, tzinfo=UTC)
    lookback = int(os.environ.get(LOOKBACK_ENV) or DEFAULT_LOOKBACK_DAYS)
    start = max(today - timedelta(days=lookback), _first_partition_start())
    with database.get_engine().connect() as connection:
        candidates = stale_days(connection, since=start, until=today)
    run_requests = []
    for stale in candidates:
        day, changed = stale.day.isoformat(), stale.changed_at.isoformat()
        if requested.get(day) == changed or len(run_requests) >= MAX_RUNS_PER_TICK:
            continue
        requested[day] = changed
        run_requests.append(
            dg.RunRequest(
                run_key=f"reconcile-{day}-changed-{changed}",
                partition_key=day,
                tags={"trigger": "reconciliation_backfill_sensor", "reason": stale.reason},
            )
        )
    if not run_requests:
        return dg.SensorResult(skip_reason="no day changed since its last reconciliation")
    # Forget days outside the look-back so the cursor stays small.
    kept = {d: c for d, c in requested.items() if d >= start.date().isoformat()}
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(kept, sort_keys=True))


def _first_partition_start() -> datetime:
    first = daily_partitions.get_first_partition_key()
    assert first is not None
    return datetime.fromisoformat(first).replace(tzinfo=UTC)
