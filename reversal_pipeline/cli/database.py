"""Schema commands: ``migrate`` and ``validate-constraints``."""

from __future__ import annotations

import sys

import click
import sqlalchemy as sa

from reversal_pipeline.cli.common import connected_engine
from reversal_pipeline.db import constraints, migrate
from reversal_pipeline.db.roles import RoleReport
from reversal_pipeline.db.url import mask_url


@click.command("migrate")
@click.option("--status", "show_status", is_flag=True, help="Show revisions; change nothing.")
def migrate_command(show_status: bool) -> None:
    """Upgrade the database schema to the latest revision (idempotent)."""
    engine = connected_engine()
    if not show_status:
        print_role_report(migrate.upgrade(engine))
    print_schema_status(engine)


def print_role_report(report: RoleReport) -> None:
    for role in report.created:
        click.echo(f"created role {role} (NOLOGIN)")
    for role in report.missing:
        click.echo(
            f"role {role} does not exist and this user may not create it: ask a"
            f" superuser to run CREATE ROLE {role} NOLOGIN, then migrate again",
            err=True,
        )
    if report.granted_tables:
        click.echo("granted reversal_job/reversal_reader on: " + ", ".join(report.granted_tables))


def print_schema_status(engine: sa.Engine) -> None:
    status = migrate.schema_status(engine)
    click.echo(f"database: {mask_url(engine.url)}")
    click.echo(f"current revision: {status.current or '(none)'}")
    click.echo(f"head revision:    {status.head}")
    if status.up_to_date:
        click.echo("schema is up to date")
    else:
        click.echo("pending: " + ", ".join(migrate.describe_revision(r) for r in status.pending))


@click.command("validate-constraints")
def validate_constraints_command() -> None:
    """Validate NOT VALID constraints once no row violates them."""
    engine = connected_engine()
    found, validated = constraints.validate_all(engine)
    if not found:
        click.echo("no NOT VALID constraints: nothing to validate")
        return
    for item in found:
        click.echo(f"{item.table}.{item.name}: {item.definition}")
        click.echo(f"  violating rows: {item.violating_count}")
        for row_id in item.violating_ids:
            click.echo(f"    id={row_id}")
        if item.violating_count > len(item.violating_ids):
            click.echo(f"    ... and {item.violating_count - len(item.violating_ids)} more")
    if not validated:
        click.echo("not validated: fix the rows above first (nothing was changed)", err=True)
        sys.exit(1)
    click.echo(f"validated {len(found)} constraint(s)")
