"""``open_drift``: every open finding of every day, whatever day was reconciled last."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reconciliation.open_drift import open_drift_refresh_sensor
from reversal_pipeline.reconciliation.open_findings import resolve_fixed_findings
from reversal_pipeline.runbook.actions import resolve
from reversal_pipeline.stripe.resource import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.defs.reconciliation.conftest import JobWorld
from tests.defs.reconciliation.harness import (
    CRITICAL_DAY,
    check_results,
    open_categories,
    plant_critical_drift,
    plant_failed_row_stripe_reversed,
    run_reconciliation,
    run_repair_job,
)
from tests.plugins.dagster_job import load_defs, materialization_metadata

EMPTY_DAY = "2026-11-19"


def refresh_open_drift(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("open_drift_job")
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_open_critical_drift_stays_red_after_a_clean_day_is_reconciled(
    world: JobWorld,
) -> None:
    plant_critical_drift(world.engine, world.emulator)
    assert run_reconciliation(world.instance, CRITICAL_DAY).success
    clean_day = run_reconciliation(world.instance, EMPTY_DAY)
    # The per-day checks of the day reconciled last are green: the trap this asset closes.
    assert check_results(clean_day)["no_critical_drift"] is True

    result = refresh_open_drift(world.instance)

    assert result.success
    # The planted row also names a reversal Stripe does not have (reversal_id_mismatch, high).
    assert check_results(result) == {"no_open_critical_drift": False, "no_open_high_drift": False}
    metadata = materialization_metadata(result, "open_drift")
    assert metadata["severity_critical"] == 1
    assert metadata["category_db_reversed_stripe_not"] == 1
    assert metadata["category_missing_at_stripe"] == 0  # zeros kept: the plot stays continuous
    record = metadata["findings"].records[0]  # most urgent first
    assert record.data["severity"] == "critical"
    assert record.data["day"] == CRITICAL_DAY
    assert record.data["category"] == "db_reversed_stripe_not"
    assert record.data["amount"] == "10.00 USD (1000)"
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == "no_open_critical_drift"
    ]
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["days"].value == [CRITICAL_DAY]


def test_a_finding_resolved_by_a_fix_turns_the_check_green(
    world: JobWorld,
) -> None:
    row_id = plant_critical_drift(world.engine, world.emulator)
    assert run_reconciliation(world.instance, CRITICAL_DAY).success
    with world.engine.begin() as connection:
        assert resolve_fixed_findings(connection, row_id, ["stripe_reversed_db_failed"]) == 0
        assert resolve_fixed_findings(connection, row_id, ["db_reversed_stripe_not"]) == 1

    result = refresh_open_drift(world.instance)

    assert check_results(result)["no_open_critical_drift"] is True
    metadata = materialization_metadata(result, "open_drift")
    # Only the category the fix addressed is resolved; the row's reversal_id_mismatch stays.
    assert (metadata["severity_critical"], metadata["drift_findings"]) == (0, 1)


def test_refresh_sensor_requests_a_run_only_when_findings_or_runs_changed(
    job_env: dict,
    database_url: str,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    reports_dir: Path,
) -> None:
    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=dagster_instance,
            cursor=cursor,
            resources={"database": DatabaseResource(url=database_url)},
        )
        return open_drift_refresh_sensor(context)

    first = tick(None)
    assert len(first.run_requests) == 1  # never refreshed: refresh now
    assert tick(first.cursor).run_requests == []

    assert run_reconciliation(dagster_instance, EMPTY_DAY).success  # even a clean run counts
    after_run = tick(first.cursor)
    assert len(after_run.run_requests) == 1
    assert after_run.run_requests[0].run_key != first.run_requests[0].run_key

    row_id = plant_critical_drift(engine, stripe_emulator)
    assert run_reconciliation(dagster_instance, CRITICAL_DAY).success
    before_fix = tick(after_run.cursor)
    assert len(before_fix.run_requests) == 1
    with engine.begin() as connection:
        resolve_fixed_findings(connection, row_id, ["db_reversed_stripe_not"])
    assert len(tick(before_fix.cursor).run_requests) == 1  # a fix by hand refreshes too


def test_the_repair_job_resolves_the_finding_it_repaired(
    world: JobWorld,
) -> None:
    row_id, _ = plant_failed_row_stripe_reversed(world.engine, world.emulator)
    assert run_reconciliation(world.instance).success
    assert open_categories(world.engine, row_id) == ["stripe_reversed_db_failed"]
    assert run_repair_job(world.instance, dry_run=True).success
    assert open_categories(world.engine, row_id) == [
        "stripe_reversed_db_failed"
    ]  # dry run: unchanged

    assert run_repair_job(world.instance, dry_run=False).success

    assert open_categories(world.engine, row_id) == []


def test_resolve_resolves_the_finding_of_the_row(
    world: JobWorld,
) -> None:
    row_id, reversal_id = plant_failed_row_stripe_reversed(world.engine, world.emulator)
    assert run_reconciliation(world.instance).success
    stripe = StripeResource(api_key=world.env["STRIPE_API_KEY"], api_base=world.emulator.url)

    resolve(world.engine, stripe, row_id, reversal_id, "seen in the Dashboard")

    assert open_categories(world.engine, row_id) == []
