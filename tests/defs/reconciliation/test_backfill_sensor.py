"""reconciliation_backfill_sensor requests exactly the days that changed, once."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
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

    with engine.begin() as connection:  # a reversal days later changes day A only
        connection.execute(
            sa.text("UPDATE seller_transfers SET error_message = 'x' WHERE id = :i"),
            {"i": row_a.id},
        )
    changed = _tick(dagster_instance, database_url, quiet.cursor or never.cursor)
    [request] = changed.run_requests
    assert request.partition_key == "2026-11-18"
    assert request.run_key not in {r.run_key for r in never.run_requests}

    # Requested but not yet reconciled: the next tick does not ask again.
    again = _tick(dagster_instance, database_url, changed.cursor)
    assert not again.run_requests
