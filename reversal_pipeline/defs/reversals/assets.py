"""The reversal assets: refund intake -> due rows (claimed) -> outcomes.

The database is the store between them: ``due_reversals`` claims rows under
the run's own run id, and ``reversal_outcomes`` reads that claim back in
pages. Nothing is pickled between steps. A re-execution from the UI has a run
id of its own: its ``reversal_outcomes`` claims what is due then, which
includes its failed original's rows once that run released them or their
lease expired, never rows a live process still holds (issue 12).
"""

from collections.abc import Iterator

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.listening import ListenConfig, reverse_and_listen
from reversal_pipeline.defs.reversals.metadata import (
    claim_metadata,
    listen_metadata,
    open_events_table,
    outcome_metadata,
)
from reversal_pipeline.reversals.batch import BatchReport
from reversal_pipeline.reversals.claim import claim_due_rows, count_held
from reversal_pipeline.reversals.intake import process_refund_events
from reversal_pipeline.reversals.intake_window import refund_open_window
from reversal_pipeline.reversals.open_events import list_open_events, summarize_open_events
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe.resource import StripeResource

GROUP = "reversals"
STRIPE_POOL = "stripe_reversals"
OUTCOMES_WRITTEN_CHECK = "all_outcomes_written"
LIST_LIMIT = 50


def claim_token(context: dg.AssetExecutionContext) -> str:
    """The run's own id: never shared with a re-execution, so claims stay fenced."""
    return context.run.run_id


@dg.asset(group_name=GROUP, kinds={"postgres"})
def refund_intake(
    context: dg.AssetExecutionContext, database: DatabaseResource
) -> dg.MaterializeResult:
    """Refund-succeeded events turned into rows due for reversal; early ones wait, never dropped."""
    window = refund_open_window()
    engine = database.get_engine()
    summary = process_refund_events(engine, run_id=context.run.run_id, open_window=window)
    for refund_id, outcome, why in summary.waiting:
        context.log.warning(f"refund {refund_id}: {outcome}: {why}")
    for refund_id, why in summary.newly_expired:
        context.log.error(f"refund {refund_id}: expired_unmatched: {why}")
    for refund_id, outcome, why in summary.refused:
        context.log.error(f"refund {refund_id}: {outcome}: {why}")
    with engine.connect() as connection:
        still_open = summarize_open_events(connection, window)
        oldest = list_open_events(connection, window)
    return dg.MaterializeResult(
        metadata={
            "events_processed": summary.events_processed,
            "rows_requested": summary.rows_requested,
            **{f"events_{k}": v for k, v in sorted(summary.outcomes.items())},
            "open_events": still_open.open_count,
            "open_events_past_window": still_open.past_window_count,
            "oldest_open_age_days": round(
                still_open.oldest_age.total_seconds() / 86_400 if still_open.oldest_age else 0.0,
                1,
            ),
            "open_events_oldest": open_events_table(oldest),
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


@dg.asset(
    group_name=GROUP,
    deps=[due_reversals],
    kinds={"stripe", "postgres"},
    pool=STRIPE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            OUTCOMES_WRITTEN_CHECK,
            asset="reversal_outcomes",
            description="Every row sent to Stripe by the run had its outcome written.",
        )
    ],
)
def reversal_outcomes(
    context: dg.AssetExecutionContext,
    config: ListenConfig,
    database: DatabaseResource,
    stripe: StripeResource,
    reversal_settings: ReversalSettings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Each claimed row reversed at Stripe (or failed, or rescheduled), with its audit rows.

    With ``listen_seconds`` set (runs of ``refund_events_sensor``), the run then keeps
    taking newly due rows until it has been idle that long (``listening.py``); the
    totals below cover every batch it did.
    """
    if context.run.parent_run_id is not None:
        _claim_for_reexecution(context, database, reversal_settings)
    calls_before = stripe.calls_made
    passes = reverse_and_listen(
        context, config, database.get_engine(), stripe, reversal_settings, claim_token(context)
    )
    report = passes.total
    calls = {k: v - calls_before.get(k, 0) for k, v in stripe.calls_made.items()}
    metadata = outcome_metadata(report, calls) | listen_metadata(passes) | stripe.budget_usage()
    written_check = outcomes_written_check(report)
    problems: list[str] = []
    if report.systemic_error is not None:
        problems.append(
            f"Stripe refused our credentials ({report.systemic_error.message}); "
            f"stopped sending and released {report.rows_released} claimed row(s) "
            "without counting an attempt. Fix STRIPE_API_KEY and re-run."
        )
    if report.outcomes_not_written:
        problems.append(
            f"{len(report.outcomes_not_written)} row(s) had their Stripe answer but the "
            f"outcome could not be written (ids {_ids(report.outcomes_not_written)}); "
            "they were released and the next run looks on Stripe before sending. "
            "Read the step log for the database error."
        )
    if problems:
        # The check result goes out before the failure, so the UI shows the rows on
        # the check even though the asset does not materialize.
        yield written_check
        raise dg.Failure(description=" ".join(problems), metadata=metadata)
    yield dg.MaterializeResult(metadata=metadata, check_results=[written_check])


def _claim_for_reexecution(
    context: dg.AssetExecutionContext, database: DatabaseResource, settings: ReversalSettings
) -> None:
    """A re-execution may skip ``due_reversals``: claim what is due under this run's token.

    Only rows that are free or whose lease expired are taken (claim.py), so rows a
    still-live original holds are left to it.
    """
    engine = database.get_engine()
    token = claim_token(context)
    room = settings.max_rows_per_run - count_held(engine, token=token)
    if room <= 0:
        return
    summary = claim_due_rows(
        engine, token=token, max_rows=room, lease_seconds=settings.lease_seconds
    )
    context.log.info(f"re-execution: claimed {summary.rows_claimed} due row(s) under {token}")


def outcomes_written_check(report: BatchReport) -> dg.AssetCheckResult:
    """ERROR when any outcome was not written: Stripe may have moved money the rows do not show."""
    missing = report.outcomes_not_written
    return dg.AssetCheckResult(
        check_name=OUTCOMES_WRITTEN_CHECK,
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "outcomes_not_written": len(missing),
            "seller_transfer_ids": dg.MetadataValue.json(missing[:LIST_LIMIT]),
        },
        description=None
        if not missing
        else f"outcome not written for seller transfer(s) {_ids(missing[:LIST_LIMIT])}",
    )


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:LIST_LIMIT]))
    return shown + (f" and {len(ids) - LIST_LIMIT} more" if len(ids) > LIST_LIMIT else "")
