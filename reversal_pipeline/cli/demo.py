"""``demo``: the whole flow on embedded defaults, with no configuration."""

from __future__ import annotations

import click

from reversal_pipeline.cli.common import connected_engine, one_line_errors
from reversal_pipeline.cli.database import print_schema_status
from reversal_pipeline.db import migrate


@click.command("demo")
@one_line_errors
def demo_command() -> None:
    """Show the pipeline working on embedded defaults, with no configuration."""
    engine = connected_engine()
    migrate.upgrade(engine)
    print_schema_status(engine)
