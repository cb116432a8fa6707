"""``reversal_reconciliation``: one UTC day of the database compared with Stripe.

The asset body only wires resources and metadata; the work is
``reconciliation.run.reconcile_day`` (the full listing) or ``reconcile_rows``
(the incremental re-check the backfill sensor asks for with the run tag
``reconciliation/mode=auto``). Its checks are emitted by the asset itself,
per partition, from every finding the day has open once the run is stored
(not only what this run saw), so an incremental or superseded run cannot
turn a day with open critical drift green.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reconciliation.incomplete import fail_incomplete
from reversal_pipeline.defs.reconciliation.partitions import daily_partitions
from reversal_pipeline.defs.reconciliation.tables import findings_table
from reversal_pipeline.environment import REPORTS_DIR_ENV, setting
from reversal_pipeline.reconciliation.open_findings import day_open_counts
from reversal_pipeline.reconciliation.report import count_metadata, markdown_report
from reversal_pipeline.reconciliation.run import (
    DayReconciliation,
    ReconciliationWindows,
    day_bounds,
    reconcile_day,
    reconcile_rows,
)
from reversal_pipeline.reconciliation.stale_days import recheck_plan
from reversal_pipeline.stripe.resource import StripeResource

CHECKS = ("no_critical_drift", "no_high_drift", "reconciliation_complete")
# Run tag: "full" (default: the schedule, a manual launch) lists the whole day;
# "auto" (the backfill sensor) re-checks only the changed rows when that is cheaper.
MODE_TAG = "reconciliation/mode"


class ReconciliationConfig(dg.Config):
    """The windows that separate drift from work in progress."""

    grace_minutes: float = Field(
        default=60, ge=0, description="Rows changed this recently are reported as in grace."
    )
    stuck_margin_minutes: float = Field(
        default=60, ge=0, description="reversal_pending overdue by more than this is stuck."
    )
    stuck_max_age_days: float = Field(
        default=3, gt=0, description="reversal_pending requested longer ago than this is stuck."
    )
    stuck_high_after_days: float = Field(
        default=7, gt=0, description="A stuck row older than this is high severity."
    )
    day_margin_minutes: float = Field(
        default=15,
        ge=0,
        description="Both sides are read this far into the neighbouring days, so clock skew "
        "at midnight matches instead of making findings on two days.",
    )

    def windows(self) -> ReconciliationWindows:
        return ReconciliationWindows(
            grace_period=timedelta(minutes=self.grace_minutes),
            stuck_margin=timedelta(minutes=self.stuck_margin_minutes),
            stuck_max_age=timedelta(days=self.stuck_max_age_days),
            high_after=timedelta(days=self.stuck_high_after_days),
            day_margin=timedelta(minutes=self.day_margin_minutes),
        )


@dg.asset(
    group_name="reconciliation",
    partitions_def=daily_partitions,
    kinds={"stripe", "postgres", "pandas"},
    check_specs=[
        dg.AssetCheckSpec(
            "no_critical_drift",
            asset="reversal_reconciliation",
            description="No critical finding: money may be lost or doubled.",
        ),
        dg.AssetCheckSpec(
            "no_high_drift",
            asset="reversal_reconciliation",
            description="No high finding: a person should look today.",
        ),
        dg.AssetCheckSpec(
            "reconciliation_complete",
            asset="reversal_reconciliation",
            description="Stripe's listing for the day was read completely.",
        ),
    ],
)
def reversal_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconciliationConfig,
    database: DatabaseResource,
    stripe: StripeResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Drift between seller_transfers and Stripe's transfers for one UTC day of transferred_at."""
    day = date.fromisoformat(context.partition_key)
    engine = database.get_engine()
    scope, plan_reason = None, "full listing"
    if context.run.tags.get(MODE_TAG) == "auto":
        with engine.connect() as connection:
            plan = recheck_plan(connection, day, *day_bounds(day), now=datetime.now(UTC))
        scope, plan_reason = plan.scope, plan.reason
    context.log.info(f"reconciling {day}: {plan_reason}")
    if scope is not None:
        outcome = reconcile_rows(
            engine, stripe, day, scope, run_id=context.run.run_id, windows=config.windows()
        )
    else:
        outcome = reconcile_day(
            engine,
            stripe,
            day,
            run_id=context.run.run_id,
            windows=config.windows(),
            reports_dir=Path(setting(REPORTS_DIR_ENV)).resolve(),
        )
    if not outcome.complete:
        yield from fail_incomplete(
            "reconciliation_complete",
            f"incomplete reconciliation of {day}",
            outcome.error,
            {"stripe_transfers_listed": outcome.stripe_transfers},
        )
    counts = count_metadata(outcome.drift_findings)
    with engine.connect() as connection:
        day_counts = day_open_counts(connection, day)
    metadata = _metadata(outcome, counts) | {"mode": plan_reason} | stripe.budget_usage()
    if outcome.stored is not None and outcome.stored.superseded_by is not None:
        metadata["superseded_by_run"] = outcome.stored.superseded_by
    yield dg.MaterializeResult(metadata=metadata, check_results=_check_results(day_counts))


def _metadata(outcome: DayReconciliation, counts: dict[str, int]) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "complete": True,
        "incremental": outcome.incremental,
        "db_rows": outcome.db_rows,
        "stripe_transfers": outcome.stripe_transfers,
        "stripe_calls": outcome.stripe_calls,
        "open_findings": outcome.stored.open_findings if outcome.stored else 0,
        "resolved_findings": outcome.stored.resolved if outcome.stored else 0,
        "report": dg.MetadataValue.md(
            markdown_report(outcome.drift_findings, full_report_path=outcome.report_path)
        ),
        "findings": findings_table(outcome.drift_findings),
        **{key.replace("/", "_"): value for key, value in counts.items()},
        **{f"seconds_{phase}": value for phase, value in outcome.seconds.items()},
    }
    if outcome.report_path is not None:
        metadata["report_csv"] = dg.MetadataValue.path(str(outcome.report_path))
    return metadata


def _check_results(counts: dict[str, int]) -> list[dg.AssetCheckResult]:
    critical, high = counts["severity/critical"], counts["severity/high"]
    return [
        dg.AssetCheckResult(
            check_name="no_critical_drift",
            passed=critical == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"critical_findings": critical},
        ),
        dg.AssetCheckResult(
            check_name="no_high_drift",
            passed=high == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"high_findings": high},
        ),
        dg.AssetCheckResult(
            check_name="reconciliation_complete", passed=True, severity=dg.AssetCheckSeverity.ERROR
        ),
    ]
