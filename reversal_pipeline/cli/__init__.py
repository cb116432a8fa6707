"""``reversal-pipeline``: the operator's command line.

One module per group of commands; each command is a thin shell over plain
functions. On bad input, a missing variable or an unreachable dependency a
command prints one line saying why and exits non-zero, having changed
nothing: the group (``cli.group``) does that for every command.
"""

from __future__ import annotations

import click

from reversal_pipeline.cli.database import migrate_command, validate_constraints_command
from reversal_pipeline.cli.demo import demo_command
from reversal_pipeline.cli.dev import dev_command
from reversal_pipeline.cli.emulator import stripe_emulator_command
from reversal_pipeline.cli.group import OneLineErrorGroup
from reversal_pipeline.cli.job import run_job_command
from reversal_pipeline.cli.ops import (
    adjust_command,
    reopen_command,
    requeue_command,
    resolve_command,
    show_command,
    status_command,
)
from reversal_pipeline.cli.reconciliation import reconcile_command, report_command
from reversal_pipeline.cli.refund_events import close_refund_event_command
from reversal_pipeline.cli.stripe_refunds import pull_refunds_command


@click.group(cls=OneLineErrorGroup)
@click.version_option(package_name="reversal_pipeline", prog_name="reversal-pipeline")
def main() -> None:
    """Reverse Stripe Connect transfers when refunds succeed, and reconcile with Stripe."""


for command in (
    migrate_command,
    validate_constraints_command,
    demo_command,
    dev_command,
    run_job_command,
    status_command,
    requeue_command,
    resolve_command,
    reopen_command,
    adjust_command,
    show_command,
    close_refund_event_command,
    pull_refunds_command,
    reconcile_command,
    report_command,
    stripe_emulator_command,
):
    main.add_command(command)
