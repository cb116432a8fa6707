"""``refund_reconciliation``: one UTC day of Stripe's refunds checked against what we reversed.

The asset body only wires resources and metadata; the work is
``reconciliation.refund_side.reconcile_refund_day``. Partitions are the
refund's UTC ``created`` day, with the same partitions definition as
``reversal_reconciliation`` (a day's partition key means "the day's
transfers" there and "the day's refunds" here). Its checks, like the
transfer side's, are emitted per partition from every refund-side finding
the day has open once the run is stored; ``open_drift`` reads both sides.
"""

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reconciliation.incomplete import fail_incomplete
from reversal_pipeline.defs.reconciliation.partitions import daily_partitions
from reversal_pipeline.defs.reconciliation.tables import findings_table
from reversal_pipeline.reconciliation.open_findings import day_open_counts
from reversal_pipeline.reconciliation.refund_side import (
    RefundDayReconciliation,
    reconcile_refund_day,
)
from reversal_pipeline.reconciliation.report import count_metadata, markdown_report
from reversal_pipeline.reconciliation.store import FindingSource
from reversal_pipeline.stripe.resource import StripeResource

ASSET = "refund_reconciliation"


class RefundReconciliationConfig(dg.Config):
    """The window that separates a refund on its way from one that was dropped."""

    grace_minutes: float = Field(
        default=60,
        ge=0,
        description="A refund made, received or allocated this recently is reported as in "
        "grace (the webhook or the job may still be working on it).",
    )


@dg.asset(
    name=ASSET,
    group_name="reconciliation",
    partitions_def=daily_partitions,
    kinds={"stripe", "postgres"},
    check_specs=[
        dg.AssetCheckSpec(
            "no_critical_refund_drift",
            asset=ASSET,
            description="No refund Stripe shows succeeded that we never received.",
        ),
        dg.AssetCheckSpec(
            "no_high_refund_drift",
            asset=ASSET,
            description="No refund received but not (fully) reversed, or with another amount.",
        ),
        dg.AssetCheckSpec(
            "refund_reconciliation_complete",
            asset=ASSET,
            description="Stripe's refund list for the day was read completely.",
        ),
    ],
)
def refund_reconciliation(
    context: dg.AssetExecutionContext,
    config: RefundReconciliationConfig,
    database: DatabaseResource,
    stripe: StripeResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Stripe's refunds created on one UTC day, against refund_events and their reversals."""
    day = date.fromisoformat(context.partition_key)
    engine = database.get_engine()
    outcome = reconcile_refund_day(
        engine,
        stripe,
        day,
        run_id=context.run.run_id,
        grace_period=timedelta(minutes=config.grace_minutes),
    )
    if not outcome.complete:
        yield from fail_incomplete(
            "refund_reconciliation_complete",
            f"incomplete refund reconciliation of {day}",
            outcome.error,
            {"stripe_refunds_listed": outcome.stripe_refunds},
        )
    metadata = _metadata(outcome) | stripe.budget_usage()
    if outcome.stored is not None and outcome.stored.superseded_by is not None:
        metadata["superseded_by_run"] = outcome.stored.superseded_by
    with engine.connect() as connection:
        counts = day_open_counts(connection, day, source=FindingSource.REFUNDS)
    yield dg.MaterializeResult(metadata=metadata, check_results=_check_results(counts))


def _metadata(outcome: RefundDayReconciliation) -> dict[str, Any]:
    counts = count_metadata(outcome.drift_findings)
    return {
        "complete": True,
        "stripe_refunds": outcome.stripe_refunds,
        "succeeded_refunds": outcome.succeeded_refunds,
        "pending_refunds": outcome.pending_refunds,
        "received_refunds": outcome.received_refunds,
        "charges_retrieved": outcome.charges_retrieved,
        "stripe_calls": outcome.stripe_calls,
        "open_findings": outcome.stored.open_findings if outcome.stored else 0,
        "resolved_findings": outcome.stored.resolved if outcome.stored else 0,
        "report": dg.MetadataValue.md(markdown_report(outcome.drift_findings)),
        "findings": findings_table(outcome.drift_findings),
        **{key.replace("/", "_"): value for key, value in counts.items()},
        **{f"seconds_{phase}": value for phase, value in outcome.seconds.items()},
    }


def _check_results(counts: dict[str, int]) -> list[dg.AssetCheckResult]:
    critical, high = counts["severity/critical"], counts["severity/high"]
    return [
        dg.AssetCheckResult(
            check_name="no_critical_refund_drift",
            passed=critical == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"critical_findings": critical},
            description=None
            if critical == 0
            else f"{critical} succeeded refund(s) never received (refund_not_received): "
            "the sellers were never reversed",
        ),
        dg.AssetCheckResult(
            check_name="no_high_refund_drift",
            passed=high == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"high_findings": high},
        ),
        dg.AssetCheckResult(
            check_name="refund_reconciliation_complete",
            passed=True,
            severity=dg.AssetCheckSeverity.ERROR,
        ),
    ]
