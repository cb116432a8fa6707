"""Reconciliation commands: ``reconcile`` (run days now) and ``report`` (read findings)."""

from __future__ import annotations

import json
import sys
from datetime import date, timedelta

import click
import pandas as pd

from reversal_pipeline.cli.common import connected_engine
from reversal_pipeline.cli.environment import require_dagster_instance_env, require_stripe_key
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.reconciliation.report import (
    findings_json,
    format_amount,
    ranked,
    refunds_text,
    target_columns,
    target_text,
)
from reversal_pipeline.reconciliation.store import latest_findings_for_day, open_findings

REPORT_COLUMNS = (
    "partition_day",
    "severity",
    "category",
    "seller_transfer_id",
    "stripe_transfer_id",
    "amount",
    "explanation",
)


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"{option} wants a date as YYYY-MM-DD, got {value!r}") from None


@click.command("report")
@click.option("--day", help="UTC day (YYYY-MM-DD); default: every open finding.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def report_command(day: str | None, output_format: str) -> None:
    """Print the latest reconciliation findings of a day, or all open findings."""
    partition_day = parse_day(day, "--day")
    engine = connected_engine()
    with engine.connect() as connection:
        if partition_day is None:
            findings = open_findings(connection)
            header = f"{len(findings)} open finding(s), all days"
        else:
            day_findings = latest_findings_for_day(connection, partition_day)
            findings = day_findings.findings
            header = _day_header(day_findings)
    if output_format == "json":
        click.echo(findings_json(findings) if not findings.empty else "[]")
    elif output_format == "csv":
        click.echo(findings_csv(findings), nl=False)
    else:
        click.echo(header)
        click.echo(_table(findings))


def findings_csv(findings: pd.DataFrame) -> str:
    """The findings as CSV a spreadsheet and a script both read back.

    pandas would write ``details`` as a Python dict repr and booleans as
    ``True``/``False``; JSON text and ``true``/``false`` are what other tools parse.
    """
    table = findings.assign(**target_columns(findings))
    if "details" in table.columns:
        table["details"] = [
            json.dumps(value, sort_keys=True, default=str) for value in table["details"]
        ]
    for name in table.columns:
        if pd.api.types.is_bool_dtype(table[name]):
            table[name] = table[name].map({True: "true", False: "false"})
    return table.to_csv(index=False)


def _day_header(day_findings: object) -> str:
    run = getattr(day_findings, "latest_run", None)
    day = getattr(day_findings, "partition_day", None)
    if run is None:
        return f"{day}: never reconciled"
    state = "complete" if run["complete"] else f"INCOMPLETE ({run['error_message']})"
    clean = "clean" if getattr(day_findings, "is_clean", False) else "NOT clean"
    return (
        f"{day}: latest run {run['run_id']} at {run['started_at']:%Y-%m-%d %H:%M} {state}; {clean}"
    )


def _table(findings: pd.DataFrame) -> str:
    if findings.empty:
        return "no open findings"
    rows = ranked(findings)
    lines = []
    for finding in rows.to_dict("records"):
        grace = " (in grace)" if finding.get("in_grace") else ""
        amount = format_amount(finding.get("amount"), finding.get("currency"))
        target = target_text(finding.get("details"), finding.get("currency"))
        refunds = refunds_text(finding.get("details"), finding.get("currency"))
        owed = f"  target {target}" if target else ""
        owed += f"  refunds {refunds}" if refunds else ""
        lines.append(
            f"{finding.get('partition_day', '')}  {finding['severity']:<8} "
            f"{finding['category']:<27} row {finding.get('seller_transfer_id') or '-':<8} "
            f"{finding.get('stripe_transfer_id') or '-':<28} {amount:>14}{grace}{owed}"
        )
    return "\n".join(lines)


#: Which reconciliation ``reconcile`` runs: the job and how to summarise one day of it.
_SIDES = {
    "transfers": (
        "reconciliation_job",
        "reversal_reconciliation",
        lambda m: (
            f"{m.get('drift_findings', 0)} finding(s), "
            f"{m.get('stripe_transfers', 0)} Stripe transfer(s), {m.get('db_rows', 0)} row(s)"
        ),
    ),
    "refunds": (
        "refund_reconciliation_job",
        "refund_reconciliation",
        lambda m: (
            f"{m.get('drift_findings', 0)} finding(s), "
            f"{m.get('stripe_refunds', 0)} Stripe refund(s), "
            f"{m.get('received_refunds', 0)} received"
        ),
    ),
}


@click.command("reconcile")
@click.option("--day", help="One UTC day (YYYY-MM-DD).")
@click.option("--from", "from_day", help="First day of a range (YYYY-MM-DD).")
@click.option("--to", "to_day", help="Last day of a range, included (YYYY-MM-DD).")
@click.option(
    "--side",
    type=click.Choice(["transfers", "refunds", "both"]),
    default="transfers",
    show_default=True,
    help="transfers: reversal_reconciliation (days by transferred_at); refunds: "
    "refund_reconciliation (days by the refund's created day at Stripe); both.",
)
def reconcile_command(day: str | None, from_day: str | None, to_day: str | None, side: str) -> None:
    """Run reconciliation now for a day or a range of days (one run per day and side)."""
    from reversal_pipeline.cli.common import resolve_database_url
    from reversal_pipeline.jobs_runner import run_job_once

    days = _days(parse_day(day, "--day"), parse_day(from_day, "--from"), parse_day(to_day, "--to"))
    require_stripe_key("reconcile")
    require_dagster_instance_env("reconcile")
    resolve_database_url()
    sides = ["transfers", "refunds"] if side == "both" else [side]
    failed = 0
    for partition_day in days:
        for name in sides:
            job_name, asset, summary = _SIDES[name]
            outcome = run_job_once(job_name, partition_key=partition_day.isoformat())
            label = f"{partition_day}" if len(sides) == 1 else f"{partition_day} {name}"
            if outcome.success:
                click.echo(f"{label}: {summary(outcome.metadata.get(asset, {}))}")
            else:
                failed += 1
                click.echo(f"{label}: FAILED: {outcome.error}", err=True)
    if failed:
        sys.exit(1)


def _days(day: date | None, first: date | None, last: date | None) -> list[date]:
    if day is not None and (first or last):
        raise ConfigurationError("give --day, or --from and --to, not both")
    if day is not None:
        return [day]
    if first is None or last is None:
        raise ConfigurationError("give --day, or both --from and --to")
    if last < first:
        raise ConfigurationError(f"--to ({last}) is before --from ({first})")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
