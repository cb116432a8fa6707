"""``stripe_refunds_sensor``: refunds read from Stripe's Events API, with or without a webhook.

Each tick runs one pass of ``reversals.stripe_refunds`` (events after the
cursor, oldest first) and records every succeeded refund in ``refund_events``
through ``request_reversal``, the webhook's own idempotent path. When it
recorded something, or kept a new unplaced refund (so
``no_unplaced_stripe_refunds`` is evaluated at once), it requests a
``reversal_job`` run, unless a run that will take the new events is already
waiting or listening (``reversal_run_taking_new_events``, shared with
``refund_events_sensor``): the events are committed before that look, so
skipping loses nothing.

Its Stripe calls go through the ``stripe`` resource: paced by the account's
shared budget at LISTING priority (reversals go first). A Stripe error (401,
an outage) fails the tick, red on the sensor's page; the cursor stays where it
was and the next tick reads the same events again (recording is idempotent).
Ticks that keep failing (10 minutes) are alerted by ``reversal_alerts_sensor``:
refunds made at Stripe are not being taken in.

Off by default, unlike the other automation: turned on, it records every
refund of the account, so the platform first checks that its charges name
their order (``transfer_group`` or ``REVERSAL_ORDER_METADATA_KEY``) and that
its webhook handler records the same amounts (a refund recorded here first
with other values makes the handler's ``request_reversal`` refuse it). See the
README, "Two refund feeds".
"""

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.jobs import reversal_job
from reversal_pipeline.defs.reversals.sensors import reversal_run_taking_new_events
from reversal_pipeline.reversals.stripe_refunds import (
    StripeRefundsCursor,
    pull_stripe_refunds,
)
from reversal_pipeline.stripe.resource import StripeResource

#: Seconds between passes. A pass with nothing new is one events listing at LISTING priority.
STRIPE_REFUNDS_INTERVAL_SECONDS = 30


@dg.sensor(
    name="stripe_refunds_sensor",
    job=reversal_job,
    minimum_interval_seconds=STRIPE_REFUNDS_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Reads refund events from Stripe's Events API and records succeeded refunds in"
        " refund_events (idempotent with the webhook); requests a reversal_job run when it"
        " recorded any."
    ),
)
def stripe_refunds_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, stripe: StripeResource
) -> dg.SensorResult:
    """Cursor: the newest Stripe event processed (id and created time)."""
    cursor = StripeRefundsCursor.from_json(context.cursor)
    summary = pull_stripe_refunds(database.get_engine(), stripe, cursor=cursor, logger=context.log)
    counts = summary.counts()
    context.log.info(f"stripe refunds pass ({summary.started_from}): {counts}")
    new_cursor = summary.cursor.to_json() if summary.cursor is not None else context.cursor
    said = (
        f"{summary.events_read} event(s), {summary.recorded} refund(s) recorded, "
        f"{summary.already_known} already known, {summary.differs_from_recorded} differing, "
        f"{summary.not_succeeded} not succeeded, {summary.unplaced_new} newly unplaced"
    )
    if not summary.recorded and not summary.unplaced_new:
        return dg.SensorResult(skip_reason=f"nothing new to reverse: {said}", cursor=new_cursor)
    busy = reversal_run_taking_new_events(context.instance)
    if busy is not None:
        return dg.SensorResult(skip_reason=f"{said}; {busy}", cursor=new_cursor)
    through = summary.cursor.event_id if summary.cursor is not None else "start"
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"stripe-refunds-through-{through}",
                tags={
                    "trigger": "stripe_refunds_sensor",
                    "stripe_refunds_recorded": str(summary.recorded),
                    "stripe_refunds_unplaced": str(summary.unplaced_new),
                },
            )
        ],
        cursor=new_cursor,
    )
