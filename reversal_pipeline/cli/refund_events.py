"""``close-refund-event``: thin shell over ``reversal_pipeline.runbook.refund_events``."""

from __future__ import annotations

import click

from reversal_pipeline.cli.common import connected_engine, one_line_errors
from reversal_pipeline.errors import OperatorInputError
from reversal_pipeline.runbook.parse import require_reason
from reversal_pipeline.runbook.refund_events import close_refund_event


@click.command("close-refund-event")
@click.option("--refund-id", metavar="re_…", help="The refund whose open event to close.")
@click.option("--reason", metavar="TEXT", help="Why (kept in refund_event_history). Required.")
@one_line_errors
def close_refund_event_command(refund_id: str | None, reason: str | None) -> None:
    """Open refund event with nothing to reverse -> closed_by_operator, audited."""
    why = require_reason(reason)
    refund = (refund_id or "").strip()
    if not refund:
        raise OperatorInputError("give --refund-id re_…")
    closed = close_refund_event(connected_engine(), refund_id=refund, reason=why)
    click.echo(
        f"closed refund event {closed.refund_id} (order {closed.order_id}; "
        f"was {closed.outcome_before or 'not yet evaluated'})"
    )
