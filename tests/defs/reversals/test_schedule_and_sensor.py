"""reversal_schedule and refund_events_sensor, evaluated as the daemon would."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.schedules import reversal_schedule
from reversal_pipeline.defs.reversals.sensors import refund_events_sensor
from reversal_pipeline.reversals.intake import request_reversal


def test_schedule_requests_a_reversal_job_run_every_five_minutes(
    dagster_instance: dg.DagsterInstance,
) -> None:
    assert reversal_schedule.cron_schedule == "*/5 * * * *"
    assert reversal_schedule.job_name == "reversal_job"
    context = dg.build_schedule_context(
        instance=dagster_instance,
        scheduled_execution_time=datetime(2026, 11, 26, 10, 5, tzinfo=UTC),
    )
    result = reversal_schedule.evaluate_tick(context)
    assert len(result.run_requests or []) == 1


def _tick(instance: dg.DagsterInstance, url: str, cursor: str | None) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": DatabaseResource(url=url)}
    )
    return refund_events_sensor.evaluate_tick(context)


def test_sensor_requests_one_run_per_new_refund_events_then_nothing(
    dagster_instance: dg.DagsterInstance, engine: sa.Engine, database_url: str
) -> None:
    empty = _tick(dagster_instance, database_url, None)
    assert not empty.run_requests
    assert "no unprocessed refund events" in (empty.skip_message or "")

    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_1", order_id="ord_1")
        request_reversal(connection, refund_id="re_2", order_id="ord_2")
    first = _tick(dagster_instance, database_url, None)
    [request] = first.run_requests
    assert request.run_key
    assert request.run_key.startswith("refund-events-through-")
    assert request.tags["refund_events_waiting"] == "2"

    again = _tick(dagster_instance, database_url, first.cursor)
    assert not again.run_requests

    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_3", order_id="ord_3")
    later = _tick(dagster_instance, database_url, first.cursor)
    [next_request] = later.run_requests
    assert next_request.run_key != request.run_key
