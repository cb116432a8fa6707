"""Issue 17: ``adjust`` sets a row's reversal target by hand, audited, never below Stripe."""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.cli.commands import run, run_job
from tests.plugins.marketplace import attempts_of, row_state, seed_rows


def test_adjust_raises_a_completed_rows_target_and_the_job_reverses_exactly_that(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")

    result = run(
        job_env, "adjust", "--id", str(row.id), "--target", "250", "--reason", "INC-17 scope"
    )

    assert result.exit_code == 0, result.output
    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"]) == ("reversal_pending", 250)
    [audit] = attempts_of(engine, row.id)
    assert (audit["action"], audit["actor"], audit["status_after"]) == (
        "adjust",
        "operator",
        "reversal_pending",
    )
    assert "0 -> 250" in audit["message"]
    assert "INC-17" in audit["message"]
    run_job(engine, stripe_resource, "run-1")
    [reversal] = stripe_emulator.control().get_transfer(row.stripe_transfer_id)["reversals"]
    assert reversal["amount"] == 250
    assert row_state(engine, row.id)["status"] == "reversed"


def test_adjust_refuses_a_target_below_what_stripe_already_reversed(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")
    stripe_emulator.control().reverse_transfer(
        row.stripe_transfer_id, amount=400, metadata={"seller_transfer_id": str(row.id)}
    )

    result = run(job_env, "adjust", "--id", str(row.id), "--target", "300", "--reason", "r")

    assert result.exit_code != 0
    assert "below what Stripe already reversed" in result.stderr
    assert "400" in result.stderr
    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"]) == ("completed", 0)
    assert attempts_of(engine, row.id) == []


def test_adjust_refuses_a_target_above_the_amount(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")

    result = run(job_env, "adjust", "--id", str(row.id), "--target", "1001", "--reason", "r")

    assert result.exit_code != 0
    assert "outside 0..1000" in result.stderr
    assert attempts_of(engine, row.id) == []
