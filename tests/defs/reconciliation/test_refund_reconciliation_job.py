"""``refund_reconciliation`` through Dagster: its checks, ``open_drift``, the alerts, the backfill.

A refund made at the emulator and never received (the webhook dropped it) is
the money leak this side exists for: every place an operator looks must go red
and name it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.alerts.sensor import reversal_alerts_sensor
from reversal_pipeline.defs.reconciliation.sensors import reconciliation_backfill_sensor
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorClient
from tests.defs.reconciliation.conftest import JobWorld
from tests.defs.reconciliation.harness import check_results
from tests.plugins.dagster_job import load_defs, materialization_metadata
from tests.plugins.marketplace import seed_rows

DAY = "2026-11-20"
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


def run_refund_reconciliation(
    instance: dg.DagsterInstance, day: str = DAY, **config: Any
) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("refund_reconciliation_job")
    run_config = {"ops": {"refund_reconciliation": {"config": config}}} if config else None
    return job.execute_in_process(
        instance=instance, partition_key=day, run_config=run_config, raise_on_error=False
    )


def _dropped_refund(engine: sa.Engine, control: EmulatorClient, order_id: str) -> dict[str, Any]:
    """A paid-out order refunded at Stripe whose refund never reached the inbox."""
    seed_rows(engine, control, 1, status="completed", amount=9_000, order_id=order_id)
    created = int((NOON - timedelta(hours=1)).timestamp())
    charge = control.create_charge(10_000, "usd", transfer_group=order_id, created=created)
    return control.create_refund(charge["id"], 4_000, created=int(NOON.timestamp()))


def _evaluation(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == name
    ]
    return evaluation


def test_a_refund_nobody_received_is_red_in_the_asset_open_drift_and_the_alert(
    world: JobWorld, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    refund = _dropped_refund(world.engine, world.emulator.control(), "ord_dropped")

    result = run_refund_reconciliation(world.instance)

    assert result.success
    assert check_results(result) == {
        "no_critical_refund_drift": False,
        "no_high_refund_drift": True,
        "refund_reconciliation_complete": True,
    }
    assert _evaluation(result, "no_critical_refund_drift").severity == dg.AssetCheckSeverity.ERROR
    metadata = materialization_metadata(result, "refund_reconciliation")
    assert metadata["category_refund_not_received"] == 1
    assert (metadata["stripe_refunds"], metadata["stripe_calls"]) == (1, 1)
    assert refund["id"] in str(metadata["report"])

    drift = (
        load_defs()
        .resolve_job_def("open_drift_job")
        .execute_in_process(instance=world.instance, raise_on_error=False)
    )
    critical = _evaluation(drift, "no_open_critical_drift")
    assert not critical.passed
    assert "refund_not_received: 1" in (critical.description or "")
    record = materialization_metadata(drift, "open_drift")["findings"].records[0]
    assert (record.data["category"], record.data["key"]) == ("refund_not_received", refund["id"])

    monkeypatch.delenv("REVERSAL_ALERT_WEBHOOK_URL", raising=False)
    with caplog.at_level(logging.WARNING):
        reversal_alerts_sensor(
            dg.build_sensor_context(instance=world.instance, cursor=None, definitions=load_defs())
        )
    alerts = [r.getMessage() for r in caplog.records if "no_open_critical_drift" in r.getMessage()]
    assert alerts
    assert all("refund_not_received" in text for text in alerts)
    assert any("no_critical_refund_drift" in r.getMessage() for r in caplog.records)


def test_the_backfill_sensor_reruns_a_refund_day_once_its_refund_arrives(
    world: JobWorld, database_url: str
) -> None:
    refund = _dropped_refund(world.engine, world.emulator.control(), "ord_late")
    assert run_refund_reconciliation(world.instance).success

    def tick(cursor: str | None) -> dg.SensorExecutionData:
        context = dg.build_sensor_context(
            instance=world.instance,
            cursor=cursor,
            resources={"database": DatabaseResource(url=database_url)},
            repository_def=load_defs().get_repository_def(),
        )
        return reconciliation_backfill_sensor.evaluate_tick(context)

    def refund_requests(data: dg.SensorExecutionData) -> list[dg.RunRequest]:
        return [r for r in data.run_requests if r.job_name == "refund_reconciliation_job"]

    before = tick(None)
    assert refund_requests(before) == []  # the day is reconciled and nothing changed since

    with world.engine.begin() as connection:  # the webhook finally delivers it
        request_reversal(
            connection, refund_id=refund["id"], order_id="ord_late", amount=4_000, currency="usd"
        )
    after = tick(before.cursor)

    [request] = refund_requests(after)
    assert request.partition_key == DAY
    assert request.run_key is not None
    assert request.run_key.startswith(f"reconcile-refunds-{DAY}-changed-")
    assert "event or reversal changed" in request.tags["reason"]
    assert refund_requests(tick(after.cursor)) == []  # requested once


def test_a_refund_listing_that_fails_is_never_green(world: JobWorld) -> None:
    control = world.emulator.control()
    _dropped_refund(world.engine, control, "order_outage")
    control.add_script(respond=500, method="GET", path="/v1/refunds", times=20)

    result = run_refund_reconciliation(world.instance)

    assert not result.success
    assert check_results(result) == {"refund_reconciliation_complete": False}
    evaluation = _evaluation(result, "refund_reconciliation_complete")
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["error"].value  # what stopped it, for the operator
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"incomplete refund reconciliation of {DAY}, not reported as clean" in str(
        failure.step_failure_data.error
    )
    assert not result.get_asset_materialization_events()
