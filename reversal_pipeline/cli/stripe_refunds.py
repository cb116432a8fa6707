"""``pull-refunds``: one pass of the Stripe refunds intake from the command line.

For after an outage, or before ``stripe_refunds_sensor`` is turned on: it
reads Stripe's refund events created since ``--since`` (default
``REVERSAL_STRIPE_REFUNDS_SINCE``, else the last 3 days), records each
succeeded refund through ``request_reversal`` exactly as the sensor does, and
looks again at every open unplaced refund (after its charge was fixed at
Stripe). Idempotent: a second run records nothing new and says so. It does
not move the sensor's cursor (the sensor re-reading the same events is a
no-op). Exit code 1 while any refund it saw stays unplaced (a person must
act), 2 on a refused command or a Stripe error (one line, no secret).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from reversal_pipeline.cli.common import connected_engine
from reversal_pipeline.cli.environment import require_stripe_key
from reversal_pipeline.cli.ops import stripe_from_env
from reversal_pipeline.reconciliation.report import format_amount
from reversal_pipeline.reversals.stripe_refunds import (
    EVENT_RETENTION,
    RefundIntakeOutcome,
    RefundSeen,
    StripeRefundsSummary,
    first_pass_since,
    parse_since,
    pull_stripe_refunds,
    start_of_day,
)

#: Exit code when a refund succeeded at Stripe but could not be placed on an order.
UNPLACED_EXIT_CODE = 1


@click.command("pull-refunds")
@click.option(
    "--since",
    metavar="YYYY-MM-DD",
    help="Read refund events created since this UTC day (default: "
    "REVERSAL_STRIPE_REFUNDS_SINCE, else the last 3 days; Stripe keeps events 30 days).",
)
def pull_refunds_command(since: str | None) -> None:
    """Record succeeded refunds from Stripe's events in refund_events (idempotent)."""
    now = datetime.now(UTC)
    start = start_of_day(parse_since(since, "--since")) if since else first_pass_since(now)
    require_stripe_key("pull-refunds")
    engine = connected_engine()
    stripe = stripe_from_env("pull-refunds")
    if start < now - EVENT_RETENTION:
        click.echo(
            f"note: Stripe keeps events {EVENT_RETENTION.days} days; refunds before "
            f"{(now - EVENT_RETENTION):%Y-%m-%d} are found by refund_reconciliation, not here",
            err=True,
        )
    try:
        summary = pull_stripe_refunds(engine, stripe, cursor=None, since=start, retry_unplaced=True)
    finally:
        stripe.close()
    for line in summary_lines(summary):
        click.echo(line)
    if summary.unplaced:
        sys.exit(UNPLACED_EXIT_CODE)


def summary_lines(summary: StripeRefundsSummary) -> list[str]:
    """What ``pull-refunds`` prints: where it read from, one line per refund, the counts."""
    lines = [f"read {summary.events_read} refund event(s) from Stripe ({summary.started_from})"]
    if summary.cursor_expired:
        lines.append("WARNING: the cursor had expired at Stripe; see the log line above")
    seen = list(summary.refunds.values())
    if seen:
        lines.append(f"{'refund':<30} {'order':<28} {'amount':>24}  outcome")
        lines.extend(_refund_line(refund) for refund in seen)
    new = summary.recorded
    lines.append(
        (f"{new} new refund(s) recorded" if new else "nothing new")
        + f"; {summary.already_known} already known, {summary.differs_from_recorded} "
        f"recorded earlier with other values (the earlier row stands), "
        f"{summary.not_succeeded} not succeeded, {summary.unplaced} unplaced"
        + (f" ({summary.unplaced_new} new)" if summary.unplaced_new else "")
        + (f", {summary.unplaced_resolved} unplaced resolved" if summary.unplaced_resolved else "")
    )
    if summary.unplaced:
        lines.append(
            "unplaced refunds name no order: set the charge's transfer_group or order metadata "
            "at Stripe (or fix the refund's seller transfer metadata), then run pull-refunds "
            "again; see the runbook, 'Refunds from Stripe'"
        )
    return lines


def _refund_line(refund: RefundSeen) -> str:
    amount = format_amount(refund.amount, refund.currency)
    outcome = refund.outcome.value
    if refund.whole_order and refund.outcome is not RefundIntakeOutcome.UNPLACED:
        outcome += " (whole order)"
    if refund.outcome in (
        RefundIntakeOutcome.UNPLACED,
        RefundIntakeOutcome.DIFFERS_FROM_RECORDED,
        RefundIntakeOutcome.NOT_SUCCEEDED,
    ):
        outcome += f": {refund.detail}"
    return f"{refund.refund_id:<30} {refund.order_id or '-':<28} {amount:>24}  {outcome}"
