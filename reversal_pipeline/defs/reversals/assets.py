"""The reversal assets: refund intake -> due rows (claimed) -> outcomes.

The database is the store between them: ``due_reversals`` claims rows under
the run's root run id, and ``reversal_outcomes`` reads that claim back in
pages. Nothing is pickled between steps, and re-executing a failed run from
the UI (same root run id) picks up exactly what the original run claimed.
"""

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.metadata import claim_metadata, outcome_metadata
from reversal_pipeline.reversals.batch import ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows
from reversal_pipeline.reversals.intake import process_refund_events
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe.resource import StripeResource

GROUP = "reversals"
STRIPE_POOL = "stripe_reversals"


def claim_token(context: dg.AssetExecutionContext) -> str:
    """The run's root run id: shared by a run and its re-executions."""
    return context.run.root_run_id or context.run.run_id


@dg.asset(group_name=GROUP, kinds={"postgres"})
def refund_intake(
    context: dg.AssetExecutionContext, database: DatabaseResource
) -> dg.MaterializeResult:
    """Refund-succeeded events turned into rows due for reversal (every event gets an outcome)."""
    summary = process_refund_events(database.get_engine(), run_id=context.run.run_id)
    for refund_id, outcome, why in summary.unactioned:
        context.log.warning(f"refund {refund_id}: {outcome}: {why}")
    return dg.MaterializeResult(
        metadata={
            "events_processed": summary.events_processed,
            "rows_requested": summary.rows_requested,
            **{f"events_{k}": v for k, v in sorted(summary.outcomes.items())},
        }
    )


@dg.asset(group_name=GROUP, deps=[refund_intake], kinds={"postgres"})
def due_reversals(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    reversal_settings: ReversalSettings,
) -> dg.MaterializeResult:
    """The rows due for reversal, claimed by this run (FOR UPDATE SKIP LOCKED, with a lease)."""
    token = claim_token(context)
    summary = claim_due_rows(
        database.get_engine(),
        token=token,
        max_rows=reversal_settings.max_rows_per_run,
        lease_seconds=reversal_settings.lease_seconds,
    )
    context.log.info(f"claimed {summary.rows_claimed} due row(s) under {token}")
    return dg.MaterializeResult(metadata=claim_metadata(summary, token))


@dg.asset(group_name=GROUP, deps=[due_reversals], kinds={"stripe", "postgres"}, pool=STRIPE_POOL)
def reversal_outcomes(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    stripe: StripeResource,
    reversal_settings: ReversalSettings,
) -> dg.MaterializeResult:
    """Each claimed row reversed at Stripe (or failed, or rescheduled), with its audit rows."""
    calls_before = stripe.calls_made
    report = ReversalBatch(
        database.get_engine(),
        stripe,
        token=claim_token(context),
        run_id=context.run.run_id,
        settings=reversal_settings,
    ).run()
    calls = {k: v - calls_before.get(k, 0) for k, v in stripe.calls_made.items()}
    if report.systemic_error is not None:
        raise dg.Failure(
            description=(
                f"Stripe refused our credentials ({report.systemic_error.message}); "
                f"stopped sending and released {report.rows_released} claimed row(s) "
                "without counting an attempt. Fix STRIPE_API_KEY and re-run."
            ),
            metadata=outcome_metadata(report, calls) | stripe.budget_usage(),
        )
    return dg.MaterializeResult(metadata=outcome_metadata(report, calls) | stripe.budget_usage())
