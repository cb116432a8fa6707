"""``run-job``: run reversal_job once from the terminal."""

from __future__ import annotations

import sys

import click

from reversal_pipeline.cli.common import resolve_database_url
from reversal_pipeline.cli.environment import require_dagster_instance_env, require_stripe_key
from reversal_pipeline.errors import ConfigurationError


@click.command("run-job")
@click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a reversal_settings field, e.g. --setting max_rows_per_run=500.",
)
def run_job_command(settings: tuple[str, ...]) -> None:
    """Run reversal_job once, now, in this process (as a schedule tick would).

    Uses the Dagster instance in DAGSTER_HOME when set (the run then shows in
    the UI), else a throwaway one. Stripe settings come from STRIPE_API_KEY,
    STRIPE_API_BASE and STRIPE_REQUESTS_PER_SECOND.
    """
    from reversal_pipeline.jobs_runner import run_reversal_job_once

    overrides = parse_settings(settings)
    require_stripe_key("run-job")
    require_dagster_instance_env("run-job")
    resolve_database_url()
    outcome = run_reversal_job_once(overrides)
    for line in outcome.summary_lines:
        click.echo(line)
    if not outcome.success:
        click.echo(f"error: reversal_job run {outcome.run_id} failed: {outcome.error}", err=True)
        sys.exit(1)


def parse_settings(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(f"--setting wants NAME=VALUE, got {pair!r}")
        overrides[name.strip()] = value.strip()
    return overrides
