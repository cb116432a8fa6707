"""Running reconciliation_job for a day, and reading what it found."""

from __future__ import annotations

from typing import Any

import dagster as dg
import sqlalchemy as sa

from tests.plugins.dagster_job import load_defs

DAY = "2026-11-20"  # tests.plugins.marketplace.seed_rows puts transfers on this day


def run_reconciliation(
    instance: dg.DagsterInstance,
    day: str = DAY,
    tags: dict[str, str] | None = None,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("reconciliation_job")
    run_config = {"ops": {"reversal_reconciliation": {"config": {"grace_minutes": 0, **config}}}}
    return job.execute_in_process(
        instance=instance,
        partition_key=day,
        run_config=run_config,
        raise_on_error=False,
        tags=tags,
    )


def open_findings_by_category(engine: sa.Engine, day: str = DAY) -> dict[str, list[dict]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT * FROM reconciliation_drift WHERE partition_day = :day"
                " AND resolved_at IS NULL ORDER BY category, finding_key"
            ),
            {"day": day},
        ).mappings()
        found: dict[str, list[dict]] = {}
        for row in rows:
            found.setdefault(row["category"], []).append(dict(row))
        return found


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    """The asset's own checks (the freshness check, which runs with the job, is tested apart)."""
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name != "freshness_check"
    }
