"""``dev``: the Dagster UI on PostgreSQL storage, with everything it needs started."""

from __future__ import annotations

import sys

import click


@click.command("dev")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workspace",
    default="workspace.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Dagster workspace file.",
)
@click.option(
    "--live",
    is_flag=True,
    help=(
        "With a live STRIPE_API_KEY (sk_live_/rk_live_), start schedules and sensors too "
        "(without it they start off; with a test key they are always on)."
    ),
)
def dev_command(port: int, workspace: str, live: bool) -> None:
    """Serve the Dagster UI on 127.0.0.1 (Ctrl-C stops everything this command started).

    Starts the embedded PostgreSQL unless REVERSAL_DATABASE_URL is set, and the
    Stripe emulator unless STRIPE_API_BASE is set (from the transfers the demo
    saved in .reversal_pipeline/stripe_emulator_state.json, saved back on
    Ctrl-C); fills DAGSTER_HOME
    (default .reversal_pipeline/dagster_home) from the packaged dagster.yaml with
    storage in database "dagster" on the same server; then runs `dagster dev`
    and says whether schedules and sensors are on.
    """
    from pathlib import Path

    from reversal_pipeline.devserver.stack import run_dev

    sys.exit(
        run_dev(port, lambda line: click.echo(line, err=True), workspace=Path(workspace), live=live)
    )
