"""reconciliation_backfill_sensor requests exactly the days that changed, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reconciliation import sensors
from reversal_pipeline.defs.reconciliation.sensors import reconciliation_backfill_sensor
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.defs.reconciliation.harness import run_reconciliation
from tests.plugins.dagster_job import load_defs
from tests.plugins.marketplace import seed_rows

DAY_A = datetime(2026, 11, 18, 9, tzinfo=UTC)
DAY_B = datetime(2026, 11, 19, 9, tzinfo=UTC)


def _tick(instance: dg.DagsterInstance, url: str, cursor: str | None) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"database": DatabaseResource(url=url)},
        repository_def=load_defs().get_repository_def(),
    )
    return reconciliation_backfill_sensor.evaluate_tick(context)


def test_sensor_requests_changed_days_once_and_again_after_new_changes(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    database_url: str,
    reports_dir: object,
) -> None:
    [row_a] = seed_rows(
        engine, stripe_emulator.control(), 1, status="completed", transferred_at=DAY_A
    )
    seed_rows(engine, stripe_emulator.control(), 1, status="completed", transferred_at=DAY_B)

    never = _tick(dagster_instance, database_url, None)
    assert sorted(r.partition_key for r in never.run_requests) == ["2026-11-18", "2026-11-19"]
    assert all(r.tags["reason"] == "never reconciled completely" for r in never.run_requests)

    for day in ("2026-11-18", "2026-11-19"):
        assert run_reconciliation(dagster_instance, day).success
    quiet = _tick(dagster_instance, database_url, never.cursor)
    assert not quiet.run_requests

    with engine.begin() as connection:  # a refund days later changes day A only
        connection.execute(
            sa.text("UPDATE seller_transfers SET status = 'permanently_failed' WHERE id = :i"),
            {"i": row_a.id},
        )
    changed = _tick(dagster_instance, database_url, quiet.cursor or never.cursor)
    [request] = changed.run_requests
    assert request.partition_key == "2026-11-18"
    assert request.run_key not in {r.run_key for r in never.run_requests}

    # Requested but not yet reconciled: the next tick does not ask again.
    again = _tick(dagster_instance, database_url, changed.cursor)
    assert not again.run_requests


def _at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    """The sensor's clock (the one fake: backoff and grace are about time passing)."""
    monkeypatch.setattr(sensors, "_clock", lambda: when)


@pytest.mark.slow  # three runs, two of them through the SDK's retries of a failing listing
def test_a_failing_day_is_retried_with_backoff_until_it_completes_and_alerts(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    database_url: str,
    reports_dir: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_rows(engine, stripe_emulator.control(), 1, status="completed", transferred_at=DAY_A)
    control = stripe_emulator.control()
    control.add_script(respond=500, method="GET", path="/v1/transfers", times=1000)
    start = datetime.now(UTC)
    _at(monkeypatch, start)

    first = _tick(dagster_instance, database_url, None)
    [request] = first.run_requests
    assert request.tags["reconciliation/attempt"] == "1"
    assert not run_reconciliation(dagster_instance, "2026-11-18").success  # Stripe fails

    assert not _tick(dagster_instance, database_url, first.cursor).run_requests  # backing off
    _at(monkeypatch, start + timedelta(minutes=15))
    second = _tick(dagster_instance, database_url, first.cursor)
    [retry] = second.run_requests
    assert retry.partition_key == "2026-11-18"
    assert retry.run_key != request.run_key
    assert retry.tags["reconciliation/attempt"] == "2"
    assert sensors.REPEATED_FAILURE_TAG not in retry.tags
    assert not run_reconciliation(dagster_instance, "2026-11-18").success

    _at(monkeypatch, start + timedelta(minutes=15 + 29))  # the delay doubled to 30 min
    assert not _tick(dagster_instance, database_url, second.cursor).run_requests
    _at(monkeypatch, start + timedelta(minutes=15 + 30))
    third = _tick(dagster_instance, database_url, second.cursor)
    [alerting] = third.run_requests
    assert alerting.tags[sensors.REPEATED_FAILURE_TAG] == "2"

    control.clear_scripts()
    assert run_reconciliation(dagster_instance, "2026-11-18").success
    _at(monkeypatch, start + timedelta(days=1))
    assert not _tick(dagster_instance, database_url, third.cursor).run_requests


def test_retry_delay_doubles_and_is_capped() -> None:
    delays = [sensors.retry_delay(n) for n in (1, 2, 3, 10)]
    assert delays == [
        timedelta(minutes=15),
        timedelta(minutes=30),
        timedelta(minutes=60),
        sensors.RETRY_MAX_DELAY,
    ]


def test_day_with_in_grace_findings_is_requested_again_when_their_grace_ends(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    database_url: str,
    reports_dir: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Default grace (60 min): the row changed just before the run, so its finding is in grace."""
    seed_rows(
        engine,
        stripe_emulator.control(),
        1,
        status="reversed",
        stripe_reversal_id="trr_none",
        reversed_at=DAY_A,
        transferred_at=DAY_A,
    )
    result = run_reconciliation(dagster_instance, "2026-11-18", grace_minutes=60)
    assert result.success
    now = datetime.now(UTC)
    _at(monkeypatch, now)
    quiet = _tick(dagster_instance, database_url, None)
    assert not quiet.run_requests

    _at(monkeypatch, now + timedelta(minutes=61))
    [request] = _tick(dagster_instance, database_url, quiet.cursor).run_requests
    assert request.partition_key == "2026-11-18"
    assert "findings in grace reached their end" in request.tags["reason"]


def test_claims_leases_and_attempt_counts_do_not_request_a_day_again(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    database_url: str,
    reports_dir: object,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, transferred_at=DAY_A)
    assert run_reconciliation(dagster_instance, "2026-11-18").success
    quiet = _tick(dagster_instance, database_url, None)
    assert not quiet.run_requests

    with engine.begin() as connection:  # what every reversal run does to a row
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET claimed_by = 'w1', claim_expires_at = now(),"
                " retry_count = retry_count + 1, stripe_attempts = stripe_attempts + 1,"
                " error_message = 'timeout', next_retry_at = now() WHERE id = :i"
            ),
            {"i": row.id},
        )
    assert not _tick(dagster_instance, database_url, quiet.cursor).run_requests
