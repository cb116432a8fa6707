"""``refund_events_sensor``: acts on new refunds within seconds instead of the next tick.

It looks every few seconds (``minimum_interval_seconds``) and folds a burst
into one run: while a ``reversal_job`` run is waiting to start, that run's
intake will take the new events too, so the sensor requests nothing and
keeps its cursor. The instance runs one ``reversal_job`` at a time (tag limit
``domain: reversals`` in the instance template), so a run requested while
another works waits its turn instead of running beside it.
"""

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.automation import sensor_default_status
from reversal_pipeline.defs.reversals.jobs import reversal_job

#: Seconds between looks. A look is one indexed query; the run launch it may
#: cause dominates a refund's time to reversal, not this interval.
REFUND_EVENTS_INTERVAL_SECONDS = 5
#: A run in these states has not run its intake yet: new events will be in it.
WAITING_TO_START = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]


@dg.sensor(
    name="refund_events_sensor",
    job=reversal_job,
    minimum_interval_seconds=REFUND_EVENTS_INTERVAL_SECONDS,
    default_status=sensor_default_status(),
    description="Requests a reversal_job run when unprocessed refund events arrive.",
)
def refund_events_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    """Cursor: the highest refund_events.id already acted on; one run per new high-water mark."""
    waiting = context.instance.get_run_records(
        dg.RunsFilter(job_name=reversal_job.name, statuses=WAITING_TO_START), limit=1
    )
    if waiting:
        return dg.SensorResult(
            skip_reason=f"run {waiting[0].dagster_run.run_id} is waiting to start: "
            "its intake takes any new refund events"
        )
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
