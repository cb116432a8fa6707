"""refund_events_sensor folds a burst into the reversal_job run that is waiting to start."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.listening import LISTENING_TAG, listen_run_config
from reversal_pipeline.defs.reversals.sensors import (
    REFUND_EVENTS_INTERVAL_SECONDS,
    refund_events_sensor,
)
from reversal_pipeline.devserver.home import template_path
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.reversals.listen import LISTEN_SECONDS_ENV


def _tick(instance: dg.DagsterInstance, url: str, cursor: str | None) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": DatabaseResource(url=url)}
    )
    return refund_events_sensor.evaluate_tick(context)


def _add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    run = dg.DagsterRun(job_name="reversal_job", status=status)
    instance.add_run(run)
    return run.run_id


def test_new_events_join_a_waiting_run_and_a_run_follows_once_it_started(
    dagster_instance: dg.DagsterInstance, engine: sa.Engine, database_url: str
) -> None:
    queued = _add_run(dagster_instance, dg.DagsterRunStatus.NOT_STARTED)  # queued needs an origin
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_1", order_id="ord_1")

    folded = _tick(dagster_instance, database_url, "0")
    assert not folded.run_requests
    assert queued in (folded.skip_message or "")
    assert folded.cursor in (None, "0")  # the events are still to be acted on

    # Once no run is waiting (this one started before the events came), a run is requested;
    # the instance queues it behind the running one.
    dagster_instance.delete_run(queued)
    _add_run(dagster_instance, dg.DagsterRunStatus.STARTED)
    after = _tick(dagster_instance, database_url, "0")
    [request] = after.run_requests
    assert request.run_key.startswith("refund-events-through-")


def test_the_sensor_looks_every_few_seconds_and_the_instance_runs_one_reversal_job() -> None:
    assert REFUND_EVENTS_INTERVAL_SECONDS <= 5
    limits = yaml.safe_load(template_path().read_text())["concurrency"]["runs"]
    assert {"key": "domain", "value": "reversals", "limit": 1} in limits["tag_concurrency_limits"]


def _add_listening_run(instance: dg.DagsterInstance) -> str:
    run = dg.DagsterRun(
        job_name="reversal_job",
        status=dg.DagsterRunStatus.STARTED,
        tags={LISTENING_TAG: "true"},
    )
    instance.add_run(run)
    return run.run_id


def test_no_run_is_requested_while_one_listens_and_an_event_it_left_is_requested_after(
    dagster_instance: dg.DagsterInstance,
    engine: sa.Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LISTEN_SECONDS_ENV, "90")
    listening = _add_listening_run(dagster_instance)
    # The race: the event is committed just after the listening run's last look.
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_late", order_id="ord_late")

    during = _tick(dagster_instance, database_url, "0")
    assert not during.run_requests  # one reversal run at a time: the listening one
    assert listening in (during.skip_message or "")
    assert during.cursor in (None, "0")  # kept: the event is still new to the sensor

    dagster_instance.handle_run_event(  # the listening run ends without having seen it
        listening,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name="reversal_job"
        ),
    )
    after = _tick(dagster_instance, database_url, "0")
    [request] = after.run_requests
    assert request.run_key.startswith("refund-events-through-")
    assert request.tags[LISTENING_TAG] == "true"
    assert request.run_config == listen_run_config(90.0)


def test_with_listening_off_the_sensor_requests_a_plain_run(
    dagster_instance: dg.DagsterInstance,
    engine: sa.Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LISTEN_SECONDS_ENV, "0")
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_1", order_id="ord_1")

    [request] = _tick(dagster_instance, database_url, "0").run_requests

    assert LISTENING_TAG not in request.tags
    assert not request.run_config
