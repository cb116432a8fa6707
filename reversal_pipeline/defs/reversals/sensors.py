"""``refund_events_sensor``: acts on new refunds within a minute instead of the next tick."""

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.automation import sensor_default_status
from reversal_pipeline.defs.reversals.jobs import reversal_job


@dg.sensor(
    name="refund_events_sensor",
    job=reversal_job,
    minimum_interval_seconds=30,
    default_status=sensor_default_status(),
    description="Requests a reversal_job run when unprocessed refund events arrive.",
)
def refund_events_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    """Cursor: the highest refund_events.id already acted on; one run per new high-water mark."""
    last_seen = int(context.cursor or 0)
    with database.get_engine().connect() as connection:
        newest, waiting = connection.execute(
            sa.text(
                "SELECT max(id), count(*) FROM refund_events"
                " WHERE processed_at IS NULL AND id > :last_seen"
            ),
            {"last_seen": last_seen},
        ).one()
    if not newest:
        return dg.SensorResult(skip_reason=f"no unprocessed refund events after id {last_seen}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"refund-events-through-{newest}",
                tags={"trigger": "refund_events_sensor", "refund_events_waiting": str(waiting)},
            )
        ],
        cursor=str(newest),
    )
