"""``refund_events_sensor``: new refunds, and waiting ones that became actionable, within seconds.

A refund can arrive before its order's seller transfer exists or is paid
out; intake leaves it open. When the application then writes the row or
completes the payout, this sensor wakes a run instead of waiting for
``reversal_schedule`` (which re-evaluates open events too, so a missed tick
delays, never loses, a refund).

It looks every few seconds (``minimum_interval_seconds``) and folds a burst
into one run: while a ``reversal_job`` run is waiting to start, that run's
intake will take the new events too, so the sensor requests nothing and
keeps its cursor. The instance runs one ``reversal_job`` at a time (tag limit
``domain: reversals`` in the instance template), so a run requested while
another works waits its turn instead of running beside it.

The runs it requests listen (``REVERSAL_LISTEN_SECONDS``, default 120 s;
``reversals/listen.py``): after their due rows they keep taking new refunds
until idle that long. While such a run is up the sensor requests nothing and
keeps its cursor, so an event inserted after the run's last look (just as it
ends) is still "new" to the sensor, which requests a run for it once the
listening run has ended: nothing falls between the two.
"""

import json

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.automation import sensor_default_status
from reversal_pipeline.defs.reversals.jobs import reversal_job
from reversal_pipeline.defs.reversals.listening import LISTENING_TAG, listen_run_config
from reversal_pipeline.reversals.inbox_watch import actionable_fingerprint, new_refund_events
from reversal_pipeline.reversals.listen import listen_seconds_from_env


def _read_cursor(raw: str | None) -> tuple[int, str]:
    """(highest new event id acted on, fingerprint of the actionable set last acted on).

    A bare integer is the cursor of the sensor before open events existed.
    """
    if not raw:
        return 0, ""
    if raw.isdigit():
        return int(raw), ""
    cursor = json.loads(raw)
    return int(cursor.get("newest_id", 0)), str(cursor.get("actionable", ""))


#: Seconds between looks. A look is one indexed query; the run launch it may
#: cause dominates a refund's time to reversal, not this interval.
REFUND_EVENTS_INTERVAL_SECONDS = 5
#: A run in these states has not run its intake yet: new events will be in it.
WAITING_TO_START = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]


def reversal_run_taking_new_events(instance: dg.DagsterInstance) -> str | None:
    """Why no new run is needed: a ``reversal_job`` run that will take new events, or None.

    A run waiting to start has not run its intake yet; a listening run takes
    new events as they come. Shared with ``stripe_refunds_sensor``.
    """
    waiting_runs = instance.get_run_records(
        dg.RunsFilter(job_name=reversal_job.name, statuses=WAITING_TO_START), limit=1
    )
    if waiting_runs:
        return (
            f"run {waiting_runs[0].dagster_run.run_id} is waiting to start: "
            "its intake takes any new refund events and any that became actionable"
        )
    listening_runs = instance.get_run_records(
        dg.RunsFilter(
            job_name=reversal_job.name,
            statuses=[dg.DagsterRunStatus.STARTED],
            tags={LISTENING_TAG: "true"},
        ),
        limit=1,
    )
    if listening_runs:
        return (
            f"run {listening_runs[0].dagster_run.run_id} is listening: it takes "
            "new refund events as they come; what it leaves is requested when it ends"
        )
    return None


@dg.sensor(
    name="refund_events_sensor",
    job=reversal_job,
    minimum_interval_seconds=REFUND_EVENTS_INTERVAL_SECONDS,
    default_status=sensor_default_status(),
    description=(
        "Requests a reversal_job run when refund events arrive, or when an open one can be"
        " acted on (its order's transfer appeared, completed or failed)."
    ),
)
def refund_events_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    """Cursor: the highest new event id, and the actionable set's fingerprint, already acted on."""
    busy = reversal_run_taking_new_events(context.instance)
    if busy is not None:
        return dg.SensorResult(skip_reason=busy)
    listen_seconds = listen_seconds_from_env()
    last_seen, last_fingerprint = _read_cursor(context.cursor)
    with database.get_engine().connect() as connection:
        new_events = new_refund_events(connection, after_id=last_seen)
        actionable = actionable_fingerprint(connection)
    newest = new_events.newest_id or last_seen
    fingerprint = actionable.fingerprint
    cursor = json.dumps({"newest_id": newest, "actionable": fingerprint})
    if newest > last_seen:
        run_key = f"refund-events-through-{newest}"
    elif fingerprint and fingerprint != last_fingerprint:
        run_key = f"refund-events-actionable-{fingerprint}"
    else:
        return dg.SensorResult(
            skip_reason=(
                f"no unprocessed refund events after id {last_seen}, and no open one"
                " became actionable"
            ),
            cursor=cursor,
        )
    tags = {
        "trigger": "refund_events_sensor",
        "refund_events_waiting": str(new_events.waiting),
        "refund_events_actionable": str(actionable.count),
    }
    if listen_seconds > 0:
        tags[LISTENING_TAG] = "true"
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                run_config=listen_run_config(listen_seconds) if listen_seconds > 0 else {},
                tags=tags,
            )
        ],
        cursor=cursor,
    )
