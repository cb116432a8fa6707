"""``reconciliation_repair_job``: opt-in, never scheduled; fixes the database side only.

It reads the open findings the reconciliation stored (the Stripe evidence is
in their details) and marks ``reversed`` only the rows Stripe proves
reversed. It makes no Stripe call at all. ``dry_run`` (the default) lists
what it would change and changes nothing.
"""

from datetime import date

import dagster as dg
from pydantic import Field

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reconciliation.tables import records_table
from reversal_pipeline.reconciliation.repair import (
    RepairResult,
    apply_repairs,
    days_with_repairable_findings,
    plan_repairs,
)
from reversal_pipeline.reconciliation.store import open_findings


class RepairConfig(dg.Config):
    """Which days to repair, and whether to write."""

    days: list[str] = Field(
        default_factory=list,
        description="UTC days (YYYY-MM-DD) to repair; empty: every day with open findings.",
    )
    dry_run: bool = Field(default=True, description="List what would change; write nothing.")


@dg.op(description="Mark reversed the rows whose reversal Stripe proves (audited).")
def repair_proven_drift(
    context: dg.OpExecutionContext, config: RepairConfig, database: DatabaseResource
) -> dg.Output[int]:
    engine = database.get_engine()
    days = [date.fromisoformat(d) for d in config.days]
    if not days:
        with engine.connect() as connection:
            days = days_with_repairable_findings(connection)
    repaired: list[dict[str, object]] = []
    refused: list[dict[str, object]] = []
    for day in days:
        with engine.connect() as connection:
            plan = plan_repairs(connection, day, open_findings(connection, day))
        result = apply_repairs(engine, plan, run_id=context.run.run_id, dry_run=config.dry_run)
        _collect(result, repaired, refused)
    verb = "would repair" if config.dry_run else "repaired"
    context.log.info(f"{verb} {len(repaired)} row(s); refused {len(refused)}")
    return dg.Output(
        len(repaired),
        metadata={
            "dry_run": config.dry_run,
            "rows_repaired" if not config.dry_run else "rows_would_repair": len(repaired),
            "rows_refused": len(refused),
            "repairs": records_table(repaired, _REPAIR_COLUMNS),
            "refused": records_table(refused, ["seller_transfer_id", "category", "reason"]),
        },
    )


_REPAIR_COLUMNS = (
    "partition_day",
    "category",
    "seller_transfer_id",
    "stripe_transfer_id",
    "status_before",
    "stripe_reversal_id",
    "amount",
)


def _collect(result: RepairResult, repaired: list, refused: list) -> None:
    for repair in result.repaired:
        repaired.append({name: getattr(repair, name) for name in _REPAIR_COLUMNS})
    for skipped in result.refused:
        refused.append(
            {
                "seller_transfer_id": skipped.seller_transfer_id,
                "category": skipped.category,
                "reason": skipped.reason,
            }
        )


@dg.job(
    name="reconciliation_repair_job",
    description="Opt-in: mark reversed the rows Stripe proves reversed. Dry run by default.",
    tags={"domain": "reconciliation"},
    executor_def=dg.in_process_executor,
)
def reconciliation_repair_job() -> None:
    repair_proven_drift()
