"""Operator commands: ``status``, ``requeue``, ``resolve``, ``reopen``, ``show``.

Thin shells over ``reversal_pipeline.ops``: they parse, call, and print. Ids
and dates are parsed here rather than by click types so that bad input ends
in one line (click's own errors print a usage block).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import click

from reversal_pipeline.cli.common import connected_engine, one_line_errors
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.ops import OperatorInputError
from reversal_pipeline.ops.actions import failed_since_ids, reopen, requeue, resolve
from reversal_pipeline.ops.parse import (
    parse_one_row_id,
    parse_row_ids,
    parse_since,
    require_reason,
)
from reversal_pipeline.ops.views import row_detail, status_report


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


@click.command("status")
@one_line_errors
def status_command() -> None:
    """Counts per status, the oldest due row, expired claims, and the last runs' outcomes."""
    report = status_report(connected_engine())
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
    click.echo("last runs (from the audit trail):")
    if not report.recent_runs:
        click.echo("  none yet")
    for run in report.recent_runs:
        moved = ", ".join(f"{k} {v}" for k, v in sorted(run.rows_by_status.items())) or "no change"
        click.echo(f"  {run.run_id}  {_when(run.last_write_at)}  {moved}")


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
    result = resolve(connected_engine(), stripe_from_env(), parsed_id, reversal_id, why)
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
    result = reopen(connected_engine(), stripe_from_env(), parsed_id, why)
    click.echo(
        f"row {result.row_id} reopened (was reversed with {result.previous_reversal_id}); "
        f"{result.shown} on {result.stripe_transfer_id}"
    )
    click.echo(
        "it is due now: the next reversal_job run (or `reversal-pipeline run-job`) reverses it"
    )


def stripe_from_env() -> Any:
    """The same Stripe resource the job uses, configured from the same variables."""
    from reversal_pipeline.stripe.resource import StripeResource

    key = os.environ.get("STRIPE_API_KEY", "")
    if not key:
        raise ConfigurationError(
            "STRIPE_API_KEY is unset: this command must check the transfer at Stripe"
        )
    resource = StripeResource(api_key=key, api_base=os.environ.get("STRIPE_API_BASE") or None)
    resource.validate_config()
    return resource


@click.command("show")
@click.option("--id", "row_id", metavar="N", help="Row id.")
@one_line_errors
def show_command(row_id: str | None) -> None:
    """One row: its columns, its audit trail and its reconciliation findings."""
    parsed_id = parse_one_row_id(row_id)
    detail = row_detail(connected_engine(), parsed_id)
    click.echo(f"seller transfer {parsed_id}:")
    for name, value in detail.row.items():
        click.echo(f"  {name:<22} {'' if value is None else value}")
    click.echo(f"attempts ({len(detail.attempts)}):")
    for a in detail.attempts:
        http = f" HTTP {a['http_status']}" if a["http_status"] else ""
        change = f" {a['status_before']} -> {a['status_after']}" if a["status_after"] else ""
        click.echo(
            f"  {_when(a['created_at'])} {a['actor']}: {a['action']} {a['outcome']}{http}{change}"
            + (f" - {a['message']}" if a["message"] else "")
        )
    click.echo(f"findings ({len(detail.findings)}):")
    for f in detail.findings:
        state = "resolved" if f["resolved_at"] else ("in grace" if f["in_grace"] else "open")
        click.echo(
            f"  {f['partition_day']} {f['category']} ({f['severity']}, {state}): {f['explanation']}"
        )
