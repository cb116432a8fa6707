"""Helpers shared by the CLI command tests: invoke a command, run the job, snapshot the tables."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner, Result

from reversal_pipeline.cli import main
from reversal_pipeline.reversals.batch import ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource


def run(env: dict[str, str], *args: str) -> Result:
    """``reversal-pipeline <args>`` in-process, with exactly ``env`` added to the environment."""
    return CliRunner().invoke(main, list(args), env=env)


def run_job(engine: sa.Engine, stripe: StripeResource, token: str) -> None:
    """What one reversal_job run does to the due rows, without Dagster."""
    claim_due_rows(engine, token=token, max_rows=10, lease_seconds=600)
    ReversalBatch(engine, stripe, token=token, run_id=token, settings=ReversalSettings()).run()


def table_snapshot(engine: sa.Engine) -> list[tuple]:
    """Every seller transfer row and the audit row count: unchanged = nothing was written."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM seller_transfers ORDER BY id")).all()
        audit = connection.execute(sa.text("SELECT count(*) FROM reversal_attempts")).scalar()
    return [*map(tuple, rows), ("audit", audit)]
