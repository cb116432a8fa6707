"""The Dagster side of a listening ``reversal_job`` run: config, and a record per pass.

The loop itself is plain code (``reversals/listen.py``). Here: the op config
that turns it on (``refund_events_sensor`` sets ``listen_seconds`` from
``REVERSAL_LISTEN_SECONDS``; a run launched from the UI, the CLI or the
schedule leaves it at 0 and ends after its due rows, as before), and what an
operator sees while a run listens: every pass that did work is logged and
recorded at once as an ``AssetObservation`` of ``reversal_outcomes`` (so the
asset's page shows progress during a long run), and the one materialization at
the end carries the run's totals and a table of its passes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from reversal_pipeline.reversals.batch import BatchReport, ReversalBatch
from reversal_pipeline.reversals.claim import count_held
from reversal_pipeline.reversals.intake_window import refund_open_window
from reversal_pipeline.reversals.listen import (
    MAX_LISTEN_SECONDS,
    ListenEnd,
    ListenWindow,
    PassReport,
    RefundEventWakeups,
    Wake,
    combined_report,
    listen,
    take_newly_due,
)
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe.resource import StripeResource

#: Run tag of a run started to listen: refund_events_sensor requests no other run meanwhile.
LISTENING_TAG = "reversals/listening"


class ListenConfig(dg.Config):
    """How long the run keeps taking newly due rows after its own (0: it ends at once)."""

    listen_seconds: float = Field(
        default=0.0,
        ge=0,
        le=MAX_LISTEN_SECONDS,
        description="End after this many seconds without work; 0 = do the due rows and end.",
    )
    listen_max_seconds: float = Field(
        default=600.0,
        gt=0,
        le=MAX_LISTEN_SECONDS,
        description=(
            "Listen at most this long, so the run materializes well inside the 15-minute"
            " freshness check of reversal_outcomes; the sensor then starts the next run."
        ),
    )
    poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description=(
            "Look this often even without a notification (a payout that completed, a retry"
            " that came due, a lost notification)."
        ),
    )


def listen_run_config(listen_seconds: float) -> dict[str, object]:
    """Run config that makes a ``reversal_job`` run listen (what the sensor requests)."""
    return {"ops": {"reversal_outcomes": {"config": {"listen_seconds": listen_seconds}}}}


@dataclass
class RunPasses:
    """Every batch the run did: the first over its claim, then one per pass that found work."""

    first: BatchReport
    first_rows_claimed: int
    first_started_at: datetime
    passes: list[PassReport] = field(default_factory=list)
    end: ListenEnd | None = None  # None: the run did not listen

    @property
    def total(self) -> BatchReport:
        return combined_report([self.first, *(p.batch for p in self.passes)])

    def table_rows(self) -> list[dict[str, object]]:
        first = PassReport(
            wake=Wake.FIRST,
            started_at=self.first_started_at,
            events_processed=0,
            rows_requested=0,
            rows_claimed=self.first_rows_claimed,
            batch=self.first,
        )
        return [p.as_row(n) for n, p in enumerate([first, *self.passes])]


def reverse_and_listen(
    context: dg.AssetExecutionContext,
    config: ListenConfig,
    engine: sa.Engine,
    stripe: StripeResource,
    settings: ReversalSettings,
    token: str,
) -> RunPasses:
    """The run's claimed rows, then, if configured, newly due rows until the run may end."""
    listening = config.listen_seconds > 0
    wakeups = RefundEventWakeups(engine) if listening else None
    with wakeups or contextlib.nullcontext():
        held, started_at = count_held(engine, token=token), datetime.now(UTC)
        run_id = context.run.run_id
        first = ReversalBatch(engine, stripe, token=token, run_id=run_id, settings=settings).run()
        record = RunPasses(first=first, first_rows_claimed=held, first_started_at=started_at)
        if wakeups is None or first.systemic_error or first.outcomes_not_written:
            return record
        window = refund_open_window()
        context.log.info(
            f"listening for refund events: ends after {config.listen_seconds:g} s without"
            f" work or {config.listen_max_seconds:g} s in all"
        )
        record.end = listen(
            wakeups,
            lambda wake: take_newly_due(
                engine,
                stripe,
                token=token,
                run_id=run_id,
                settings=settings,
                open_window=window,
                wake=wake,
            ),
            ListenWindow(config.listen_seconds, config.listen_max_seconds, config.poll_seconds),
            on_pass=lambda report: _record_pass(context, record, report),
        )
    context.log.info(f"stopped listening ({record.end}) after {len(record.passes)} pass(es)")
    return record


def _record_pass(context: dg.AssetExecutionContext, record: RunPasses, report: PassReport) -> None:
    record.passes.append(report)
    row = report.as_row(len(record.passes))
    for refund_id, outcome, why in report.intake.waiting:
        context.log.warning(f"refund {refund_id}: {outcome}: {why}")
    for refund_id, why in report.intake.newly_expired:
        context.log.error(f"refund {refund_id}: expired_unmatched: {why}")
    context.log.info(
        f"pass {row['pass']} ({row['woken_by']}): {row['events_processed']} event(s),"
        f" {row['rows_claimed']} row(s) claimed, {row['reversed']} reversed"
    )
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key,
            metadata={k: v for k, v in row.items() if k not in ("started_at", "woken_by")}
            | {"woken_by": str(row["woken_by"])},
        )
    )
