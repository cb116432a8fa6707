"""``reversal-pipeline``: the operator's command line.

Each command is a thin shell over plain functions; on bad input or an
unreachable dependency it prints one line saying why and exits non-zero,
having changed nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from reversal_pipeline.db import constraints, migrate
from reversal_pipeline.db.engine import check_connection, create_db_engine
from reversal_pipeline.db.url import DATABASE_URL_ENV, database_url_from_env, mask_url
from reversal_pipeline.errors import ReversalPipelineError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    """Turn the package's own errors into one line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ReversalPipelineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def resolve_database_url() -> str:
    """``REVERSAL_DATABASE_URL`` when set; otherwise start the embedded server.

    The embedded URL is exported to ``REVERSAL_DATABASE_URL`` so the Dagster
    processes this command starts use the same database.
    """
    url = database_url_from_env()
    if url is not None:
        return url
    from reversal_pipeline.db.embedded import ensure_database, start_embedded_server

    click.echo("REVERSAL_DATABASE_URL is unset: using the embedded PostgreSQL", err=True)
    url = ensure_database(start_embedded_server(), "reversal_pipeline")
    os.environ[DATABASE_URL_ENV] = url
    return url


def connected_engine() -> sa.Engine:
    engine = create_db_engine(resolve_database_url())
    check_connection(engine)
    return engine


@click.group()
def main() -> None:
    """Reverse Stripe Connect transfers when refunds succeed, and reconcile with Stripe."""


@main.command("migrate")
@click.option("--status", "show_status", is_flag=True, help="Show revisions; change nothing.")
@one_line_errors
def migrate_command(show_status: bool) -> None:
    """Upgrade the database schema to the latest revision (idempotent)."""
    engine = connected_engine()
    if not show_status:
        migrate.upgrade(engine)
    print_schema_status(engine)


def print_schema_status(engine: sa.Engine) -> None:
    status = migrate.schema_status(engine)
    click.echo(f"database: {mask_url(engine.url)}")
    click.echo(f"current revision: {status.current or '(none)'}")
    click.echo(f"head revision:    {status.head}")
    if status.up_to_date:
        click.echo("schema is up to date")
    else:
        click.echo("pending: " + ", ".join(migrate.describe_revision(r) for r in status.pending))


@main.command("validate-constraints")
@one_line_errors
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


@main.command("demo")
@one_line_errors
def demo_command() -> None:
    """Show the pipeline working on embedded defaults, with no configuration."""
    engine = connected_engine()
    migrate.upgrade(engine)
    print_schema_status(engine)


if __name__ == "__main__":  # pragma: no cover
    main()
