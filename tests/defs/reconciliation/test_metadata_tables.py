"""Reconciliation metadata that is a table is a Dagster table, not hand-built markdown."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from tests.defs.reconciliation.conftest import JobWorld
from tests.defs.reconciliation.harness import (
    CRITICAL_DAY,
    plant_critical_drift,
    plant_failed_row_stripe_reversed,
    run_reconciliation,
    run_repair_job,
)
from tests.plugins.dagster_job import materialization_metadata


def test_the_day_findings_are_a_table_with_typed_columns(
    world: JobWorld,
) -> None:
    row_id = plant_critical_drift(world.engine, world.emulator)

    metadata = materialization_metadata(
        run_reconciliation(world.instance, CRITICAL_DAY), "reversal_reconciliation"
    )

    findings = metadata["findings"]
    assert isinstance(findings, dg.TableMetadataValue)
    first = findings.records[0].data
    assert (first["severity"], first["category"]) == ("critical", "db_reversed_stripe_not")
    assert first["seller_transfer_id"] == row_id
    assert first["amount"] == "10.00 USD (1000)"
    assert first["in_grace"] is False
    assert {c.name: c.type for c in findings.schema.columns}["seller_transfer_id"] == "int"
    assert Path(metadata["report_csv"]).is_file()  # the full report, a path to open or copy


def test_the_repair_job_lists_its_repairs_as_a_table(
    world: JobWorld,
) -> None:
    row_id, reversal_id = plant_failed_row_stripe_reversed(world.engine, world.emulator)
    assert run_reconciliation(world.instance).success

    result = run_repair_job(world.instance, dry_run=True)

    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    [repair] = [r.data for r in metadata["repairs"].records]
    assert (repair["seller_transfer_id"], repair["stripe_reversal_id"]) == (row_id, reversal_id)
    assert repair["category"] == "stripe_reversed_db_failed"
    assert metadata["refused"].records == []
