"""Issue 16: the operator commands' Stripe resource is the job's, from the same variables.

``stripe_from_env`` used to build its own ``StripeResource`` from the key and
base only, so ``STRIPE_REQUESTS_PER_SECOND`` and the shared budget did not
apply to ``resolve``, ``reopen`` and ``adjust``.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main
from reversal_pipeline.cli.ops import stripe_from_env
from reversal_pipeline.environment import STRIPE_REQUESTS_PER_SECOND_ENV
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import load_defs
from tests.plugins.marketplace import row_state, seed_rows

STRIPE_FIELDS = ("api_key", "api_base", "requests_per_second", "shared_budget_database_url")


@pytest.fixture
def cli_stripe(job_env: dict[str, str]) -> Iterator[StripeResource]:
    resource = stripe_from_env("reopen")
    yield resource
    resource.close()


def _resolved(value: object, environ: dict[str, str]) -> object:
    """A field of the job's resource as Dagster resolves it in the step's process."""
    return environ[str.__str__(value)] if isinstance(value, dg.EnvVar) else value


def test_the_cli_resource_has_the_jobs_settings(
    job_env: dict[str, str], cli_stripe: StripeResource
) -> None:
    job_stripe = load_defs().resources["stripe"]
    assert isinstance(job_stripe, StripeResource)

    for field in STRIPE_FIELDS:
        assert getattr(cli_stripe, field) == _resolved(getattr(job_stripe, field), job_env), field
    assert cli_stripe.effective_requests_per_second == float(
        job_env[STRIPE_REQUESTS_PER_SECOND_ENV]
    )


def test_the_cli_resource_paces_on_the_accounts_shared_budget(
    cli_stripe: StripeResource, stripe_emulator: EmulatorServer
) -> None:
    transfer_id = stripe_emulator.state.create_transfer(amount=1000).id

    cli_stripe.get_transfer(transfer_id)

    usage = cli_stripe.budget_usage()
    assert usage["stripe_budget_mode"] == "shared"
    assert usage["stripe_budget_requests_per_second"] == pytest.approx(500 * 0.98)
    assert usage["stripe_budget_granted"] >= 1


def test_a_bad_request_budget_is_refused_in_one_line_before_any_change(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")
    before = row_state(engine, row.id)

    result = CliRunner().invoke(
        main,
        ["adjust", "--id", str(row.id), "--target", "250", "--reason", "INC-16"],
        env={**job_env, STRIPE_REQUESTS_PER_SECOND_ENV: "fast"},
    )

    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert f"{STRIPE_REQUESTS_PER_SECOND_ENV}='fast' is not a number" in line
    assert row_state(engine, row.id) == before
