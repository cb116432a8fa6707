"""Operator commands: ``status``, ``requeue``, ``resolve``, ``reopen``, ``adjust``, ``show``.

Thin shells over ``reversal_pipeline.runbook``: they parse, call, and print. Ids
and dates are parsed here rather than by click types so that bad input ends
in one line (click's own errors print a usage block).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from reversal_pipeline.cli.common import connected_engine, one_line_errors
from reversal_pipeline.cli.environment import require_stripe_key
from reversal_pipeline.environment import from_process, stripe_resource_config
from reversal_pipeline.errors import OperatorInputError
from reversal_pipeline.runbook.actions import adjust, failed_since_ids, reopen, requeue, resolve
from reversal_pipeline.runbook.parse import (
    parse_one_row_id,
    parse_row_ids,
    parse_since,
    require_reason,
)
from reversal_pipeline.runbook.views import RowDetail, row_detail, status_report, wrap_line
from reversal_pipeline.stripe.shared_budget import ACTIVE_HOLDER_SECONDS, active_holders

if TYPE_CHECKING:
    from reversal_pipeline.stripe.resource import StripeResource


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


@click.command("status")
@one_line_errors
def status_command() -> None:
    """Counts per status, due rows, expired claims, the last runs, who draws on the budget."""
    engine = connected_engine()
    report = status_report(engine)
    click.echo("rows per status:")
    for status, count in report.counts.items():
        click.echo(f"  {status:<20} {count}")
    if report.oldest_due:
        due = report.oldest_due
        click.echo(
            f"due now: {report.due_now}; oldest due: id={due['id']} "
            f"({due['stripe_transfer_id']}), due since {_when(due['next_retry_at'])}, "
            f"retry_count {due['retry_count']}"
        )
    else:
        click.echo("due now: 0")
    click.echo(f"expired claims: {len(report.expired_claims)}")
    for claim in report.expired_claims:
        click.echo(
            f"  id={claim['id']} claimed by {claim['claimed_by']} "
            f"expired {_when(claim['claim_expires_at'])}"
        )
    events = report.open_refund_events
    if events is not None:
        click.echo(
            f"open refund events: {events.open_count}"
            f" ({events.past_window_count} past the open window)"
        )
    if report.oldest_open_refund_event:
        oldest = report.oldest_open_refund_event
        click.echo(
            f"  oldest open: {oldest['refund_id']} (order {oldest['order_id']}), "
            f"{oldest['outcome'] or 'not yet evaluated'}, received "
            f"{_when(oldest['received_at'])}, {oldest['age_days']} days ago"
        )
    click.echo("last runs (from the audit trail):")
    if not report.recent_runs:
        click.echo("  none yet")
    for run in report.recent_runs:
        moved = ", ".join(f"{k} {v}" for k, v in sorted(run.rows_by_status.items())) or "no change"
        click.echo(f"  {run.run_id}  {_when(run.last_write_at)}  {moved}")
    with engine.connect() as connection:
        holders = active_holders(connection)
    click.echo(
        f"drawing on the shared Stripe budget (seen in the last {ACTIVE_HOLDER_SECONDS:.0f}s):"
    )
    if not holders:
        click.echo("  none")
    for holder in holders:
        click.echo(
            f"  {holder.description or holder.holder_id}  [{holder.holder_id}]  requests"
            f" {holder.granted_total} (listing {holder.granted_listing}), waited"
            f" {holder.waited_seconds:.1f}s, since {_when(holder.started_at)},"
            f" last {_when(holder.last_seen_at)}"
        )


@click.command("requeue")
@click.option("--id", "ids", multiple=True, metavar="N", help="Row id (repeatable, or 1,2,3).")
@click.option("--failed-since", metavar="DATE", help="Every row permanently failed since DATE.")
@click.option("--reason", metavar="TEXT", help="Why (kept in the audit row). Required.")
@one_line_errors
def requeue_command(ids: tuple[str, ...], failed_since: str | None, reason: str | None) -> None:
    """permanently_failed -> reversal_pending now (retry_count reset), with an audit row."""
    why = require_reason(reason)
    if bool(ids) == bool(failed_since):
        raise OperatorInputError("give either --id N... or --failed-since DATE (one of them)")
    engine = connected_engine()
    if failed_since:
        row_ids = failed_since_ids(engine, parse_since(failed_since))
        if not row_ids:
            click.echo(
                f"no permanently_failed row changed since {failed_since}: nothing to requeue"
            )
            return
    else:
        row_ids = parse_row_ids(ids)
    result = requeue(engine, row_ids, why)
    click.echo(f"requeued {len(result.row_ids)} row(s): {', '.join(map(str, result.row_ids))}")
    click.echo(
        "they are due now: the next reversal_job run (or `reversal-pipeline run-job`) sends them"
    )


@click.command("resolve")
@click.option("--id", "row_id", metavar="N", help="Row id.")
@click.option("--reversal", "reversal_id", metavar="trr_...", help="The reversal at Stripe.")
@click.option("--reason", metavar="TEXT", help="Why (kept in the audit row). Required.")
@one_line_errors
def resolve_command(row_id: str | None, reversal_id: str | None, reason: str | None) -> None:
    """Mark a permanently_failed row reversed, after checking the reversal on its transfer."""
    why = require_reason(reason)
    parsed_id = parse_one_row_id(row_id)
    if not reversal_id:
        raise OperatorInputError("give --reversal trr_... (the reversal as Stripe shows it)")
    require_stripe_key("resolve")  # before the database: a missing key starts nothing
    engine = connected_engine()
    result = resolve(engine, stripe_from_env("resolve"), parsed_id, reversal_id, why)
    click.echo(
        f"row {result.row_id} is reversed: {result.reversal_id} "
        f"({result.reversal_amount} {result.currency}) is on {result.stripe_transfer_id}"
    )


@click.command("reopen")
@click.option("--id", "row_id", metavar="N", help="Row id.")
@click.option("--reason", metavar="TEXT", help="Why (kept in the audit row). Required.")
@one_line_errors
def reopen_command(row_id: str | None, reason: str | None) -> None:
    """reversed -> reversal_pending now, audited; refused if Stripe shows the money back."""
    why = require_reason(reason)
    parsed_id = parse_one_row_id(row_id)
    engine = connected_engine()
    result = reopen(engine, stripe_from_env("reopen"), parsed_id, why)
    click.echo(
        f"row {result.row_id} reopened (was reversed with {result.previous_reversal_id}); "
        f"{result.shown} on {result.stripe_transfer_id}"
    )
    click.echo(
        "it is due now: the next reversal_job run (or `reversal-pipeline run-job`) reverses it"
    )


@click.command("adjust")
@click.option("--id", "row_id", metavar="N", help="Row id.")
@click.option("--target", metavar="X", help="New reversal target, minor units (0..amount).")
@click.option("--reason", metavar="TEXT", help="Why (kept in the audit row). Required.")
@one_line_errors
def adjust_command(row_id: str | None, target: str | None, reason: str | None) -> None:
    """Set a row's reversal target, audited; refused below what Stripe already reversed."""
    why = require_reason(reason)
    parsed_id = parse_one_row_id(row_id)
    try:
        parsed_target = int((target or "").strip())
    except ValueError:
        raise OperatorInputError(
            f"--target wants a whole number of minor units, got {target!r}"
        ) from None
    engine = connected_engine()
    result = adjust(engine, stripe_from_env("adjust"), parsed_id, parsed_target, why)
    click.echo(
        f"row {result.row_id}: reversal target {result.target_before} -> {result.target_after} "
        f"(ours at Stripe: {result.ours_at_stripe}); {result.status_before} -> "
        f"{result.status_after}"
    )


def stripe_from_env(command: str) -> StripeResource:
    """The same Stripe resource the job uses, configured from the same variables.

    Call it after ``connected_engine()``: that exports the embedded database's
    URL when ``REVERSAL_DATABASE_URL`` is unset, and the resource books its
    requests on that database's shared budget, like the job's runs.
    """
    from reversal_pipeline.stripe.resource import StripeResource

    require_stripe_key(command)
    resource = StripeResource(**stripe_resource_config(from_process))
    resource.validate_config()
    return resource


@click.command("show")
@click.option("--id", "row_id", metavar="N", help="Row id.")
@one_line_errors
def show_command(row_id: str | None) -> None:
    """One row: its columns, its audit trail and its reconciliation findings."""
    parsed_id = parse_one_row_id(row_id)
    detail = row_detail(connected_engine(), parsed_id)
    for line in show_lines(parsed_id, detail):
        click.echo(line)


def show_lines(row_id: int, detail: RowDetail) -> list[str]:
    """What ``show`` prints, each line wrapped between words (``views.wrap_line``)."""
    lines = [f"seller transfer {row_id}:"]
    for name, value in detail.row.items():
        lines.append(f"  {name:<22} {'' if value is None else value}")
    lines.append(f"refunds ({len(detail.refunds)}):")
    for r in detail.refunds:
        lines.append(
            f"  {_when(r['created_at'])} {r['refund_id']}: {r['amount']} "
            f"{str(detail.row['currency']).upper()}, target {r['target_before']} -> "
            f"{r['target_after']}"
        )
    reversals = [a for a in detail.attempts if a["stripe_reversal_id"] and a["status_after"]]
    lines.append(
        f"reversals ({len(reversals)}; confirmed at Stripe {detail.row['amount_reversed']} "
        f"of target {detail.row['reversal_target']}):"
    )
    for a in reversals:
        lines.append(f"  {_when(a['created_at'])} {a['stripe_reversal_id']} ({a['action']})")
    lines.append(f"attempts ({len(detail.attempts)}):")
    for a in detail.attempts:
        http = f" HTTP {a['http_status']}" if a["http_status"] else ""
        change = f" {a['status_before']} -> {a['status_after']}" if a["status_after"] else ""
        lines.append(
            f"  {_when(a['created_at'])} {a['actor']}: {a['action']} {a['outcome']}{http}{change}"
            + (f" - {a['message']}" if a["message"] else "")
        )
    lines.append(f"findings ({len(detail.findings)}):")
    for f in detail.findings:
        state = "resolved" if f["resolved_at"] else ("in grace" if f["in_grace"] else "open")
        lines.append(
            f"  {f['partition_day']} {f['category']} ({f['severity']}, {state}): {f['explanation']}"
        )
    return [part for line in lines for part in wrap_line(line)]
