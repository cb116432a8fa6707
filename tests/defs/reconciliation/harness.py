"""Running the reconciliation jobs for a day, planting drift, and reading what was found.

Shared by the job tests of this folder, so each test states only its scenario.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import load_defs
from tests.plugins.marketplace import seed_rows

DAY = "2026-11-20"  # tests.plugins.marketplace.seed_rows puts transfers on this day
CRITICAL_DAY = "2026-11-18"


def run_reconciliation(
    instance: dg.DagsterInstance,
    day: str = DAY,
    tags: dict[str, str] | None = None,
    *,
    defaults: bool = False,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    """The day's reconciliation_job; ``grace_minutes: 0`` unless ``defaults`` (no run config)."""
    job = load_defs().resolve_job_def("reconciliation_job")
    settings = config if defaults else {"grace_minutes": 0, **config}
    run_config = {"ops": {"reversal_reconciliation": {"config": settings}}} if settings else None
    return job.execute_in_process(
        instance=instance,
        partition_key=day,
        run_config=run_config,
        raise_on_error=False,
        tags=tags,
    )


def run_repair_job(instance: dg.DagsterInstance, *, dry_run: bool) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("reconciliation_repair_job")
    config = {"ops": {"repair_proven_drift": {"config": {"dry_run": dry_run}}}}
    return job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)


def plant_critical_drift(engine: sa.Engine, emulator: EmulatorServer) -> int:
    """A row the DB calls reversed whose transfer Stripe never reversed: db_reversed_stripe_not."""
    [row] = seed_rows(
        engine,
        emulator.control(),
        1,
        status="reversed",
        transferred_at=datetime(2026, 11, 18, 12, tzinfo=UTC),
        stripe_reversal_id="trr_never_made",
        reversed_at=datetime(2026, 11, 18, 13, tzinfo=UTC),
    )
    return row.id


def plant_failed_row_stripe_reversed(
    engine: sa.Engine, emulator: EmulatorServer
) -> tuple[int, str]:
    """permanently_failed in the DB, reversed at Stripe: stripe_reversed_db_failed (high)."""
    control = emulator.control()
    [row] = seed_rows(engine, control, 1, status="completed")
    reversal_id = control.reverse_transfer(row.stripe_transfer_id)["id"]
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'permanently_failed',"
                " reversal_requested_at = now() WHERE id = :id"
            ),
            {"id": row.id},
        )
    return row.id, reversal_id


def open_categories(engine: sa.Engine, row_id: int) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT category FROM reconciliation_drift"
                    " WHERE seller_transfer_id = :id AND resolved_at IS NULL"
                ),
                {"id": row_id},
            ).scalars()
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
