"""stripe_refunds_sensor: a refund made at Stripe reaches a reversal with no webhook, once."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.alerts.ledger import AlertLedger
from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.alerts.sensor import reversal_alerts_sensor
from reversal_pipeline.defs.reversals.stripe_refunds_sensor import stripe_refunds_sensor
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import load_defs, run_reversal_job
from tests.plugins.marketplace import row_state
from tests.plugins.refunds import paid_order, reversals_at_stripe, stripe_refund, webhook_refund


def _tick(
    instance: dg.DagsterInstance,
    env: dict[str, str],
    cursor: str | None,
) -> dg.SensorExecutionData:
    stripe = StripeResource(
        api_key=env["STRIPE_API_KEY"], api_base=env["STRIPE_API_BASE"], requests_per_second=500
    )
    # The stripe resource tears down (closes its pool) when the context closes.
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "database": DatabaseResource(url=env["REVERSAL_DATABASE_URL"]),
            "stripe": stripe,
        },
    ) as context:
        return stripe_refunds_sensor.evaluate_tick(context)


def test_a_refund_made_at_stripe_is_reversed_through_the_sensor_with_no_webhook(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    control = stripe_emulator.control()
    [row] = paid_order(engine, control, [9_000], "ord_dashboard")
    stripe_refund(control, row.order_id)  # made in the Dashboard: no webhook call

    tick = _tick(dagster_instance, job_env, None)
    [request] = tick.run_requests
    assert request.tags["trigger"] == "stripe_refunds_sensor"
    assert request.tags["stripe_refunds_recorded"] == "1"
    assert run_reversal_job(dagster_instance).success

    assert row_state(engine, row.id)["status"] == "reversed"
    [reversal] = reversals_at_stripe(control, row.stripe_transfer_id)
    assert reversal["amount"] == 9_000
    quiet = _tick(dagster_instance, job_env, tick.cursor)
    assert not quiet.run_requests
    assert "nothing new" in (quiet.skip_message or "")
    assert quiet.cursor == tick.cursor


@pytest.mark.slow  # two reversal_job runs in process
@pytest.mark.parametrize("first", ["webhook", "sensor"])
def test_the_same_refund_from_the_webhook_and_the_sensor_is_reversed_once(
    first: str,
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    control = stripe_emulator.control()
    [row] = paid_order(engine, control, [9_000], "ord_both_feeds")
    refund = stripe_refund(control, row.order_id, amount=4_000)

    def webhook() -> None:
        webhook_refund(engine, refund["id"], row.order_id, amount=4_000, currency="usd")

    def sensor() -> None:
        _tick(dagster_instance, job_env, None)

    feeds = [webhook, sensor] if first == "webhook" else [sensor, webhook]
    for feed in feeds:
        feed()
        assert run_reversal_job(dagster_instance).success

    [reversal] = reversals_at_stripe(control, row.stripe_transfer_id)
    assert reversal["amount"] == 4_000
    state = row_state(engine, row.id)
    assert (state["reversal_target"], state["amount_reversed"]) == (4_000, 4_000)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM refund_events")).scalar() == 1


def test_an_unplaced_refund_fails_the_error_check_naming_it_and_is_alerted(
    job_env: dict[str, str],
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    control = stripe_emulator.control()
    refund = stripe_refund(control, None, 5_000, "eur", amount=1_200)  # names no order

    tick = _tick(dagster_instance, job_env, None)
    [request] = tick.run_requests  # so the check runs now
    assert request.tags["stripe_refunds_unplaced"] == "1"
    result = run_reversal_job(dagster_instance)

    [check] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == "no_unplaced_stripe_refunds"
    ]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert refund["id"] in (check.description or "")
    assert "no_order" in (check.description or "")
    assert not _tick(dagster_instance, job_env, tick.cursor).run_requests  # alerted once

    monkeypatch.delenv("REVERSAL_ALERT_WEBHOOK_URL", raising=False)
    with dg.build_sensor_context(instance=dagster_instance, definitions=load_defs()) as context:
        alerts = reversal_alerts_sensor(context)
    ledger = AlertLedger.from_cursor(alerts.cursor)
    assert "check:refund_intake:no_unplaced_stripe_refunds" in ledger.open_keys
    told = [
        r.getMessage() for r in caplog.records if "no_unplaced_stripe_refunds" in r.getMessage()
    ]
    assert told
    assert all(refund["id"] in message for message in told)


def test_a_revoked_key_fails_the_tick_and_keeps_the_cursor(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    control = stripe_emulator.control()
    stripe_refund(control, "ord_401", amount=100)
    control.revoke_key(job_env["STRIPE_API_KEY"])

    with pytest.raises(Exception, match=r"(?i)api key|401|unauthori|invalid") as raised:
        _tick(dagster_instance, job_env, None)

    assert job_env["STRIPE_API_KEY"] not in str(raised.value)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM refund_events")).scalar() == 0


def test_the_sensor_is_registered_and_off_until_turned_on(job_env: dict[str, str]) -> None:
    sensor = load_defs().resolve_sensor_def("stripe_refunds_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "reversal_job"
    assert sensor.minimum_interval_seconds == 30


def test_a_pending_refund_is_reversed_once_when_it_succeeds_and_never_if_it_fails(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    control = stripe_emulator.control()
    [paid] = paid_order(engine, control, [9_000], "ord_succeeds")
    [kept] = paid_order(engine, control, [9_000], "ord_fails")
    succeeds = stripe_refund(control, paid.order_id, status="pending")
    fails = stripe_refund(control, kept.order_id, status="pending")

    pending = _tick(dagster_instance, job_env, None)
    assert not pending.run_requests
    control.set_refund_status(succeeds["id"], "succeeded")
    control.set_refund_status(fails["id"], "failed")
    settled = _tick(dagster_instance, job_env, pending.cursor)
    [request] = settled.run_requests
    assert request.tags["stripe_refunds_recorded"] == "1"
    assert run_reversal_job(dagster_instance).success
    assert not _tick(dagster_instance, job_env, settled.cursor).run_requests

    assert [r["amount"] for r in reversals_at_stripe(control, paid.stripe_transfer_id)] == [9_000]
    assert reversals_at_stripe(control, kept.stripe_transfer_id) == []
    assert row_state(engine, kept.id)["status"] == "completed"
