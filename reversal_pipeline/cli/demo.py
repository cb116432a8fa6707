"""``demo``: the whole flow on embedded defaults, with no configuration."""

from __future__ import annotations

import click


@click.command("demo")
@click.option(
    "--keep", is_flag=True, help="Add to the existing demo state instead of starting clean."
)
@click.option(
    "--ticks", default=3, show_default=True, type=click.IntRange(1, 20), help="reversal_job runs."
)
@click.option(
    "--server-url",
    metavar="URL",
    default=None,
    help=(
        "A PostgreSQL server where the demo may DROP and create database reversal_pipeline "
        "(default: the embedded one; REVERSAL_DATABASE_URL is never used, so the demo "
        "cannot wipe a real database)."
    ),
)
def demo_command(keep: bool, ticks: int, server_url: str | None) -> None:
    """Seed a marketplace, plant what goes wrong, run the jobs, and summarize.

    Everything runs locally: embedded PostgreSQL, the Stripe emulator, and the
    Dagster instance `reversal-pipeline dev` opens, so the runs are in the UI;
    the emulator's transfers are saved for `dev`'s emulator to start from.
    """
    from reversal_pipeline.db.url import normalize_url
    from reversal_pipeline.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        keep=keep, ticks=ticks, server_url=normalize_url(server_url) if server_url else None
    )
    run_demo(options, lambda line: click.echo(line))
