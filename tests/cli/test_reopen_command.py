"""Issue 12, defect 2: a reversed row can be reopened (audited, checked at Stripe)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from reversal_pipeline.db.tables import reversal_attempts
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.cli.commands import run, run_job, table_snapshot
from tests.plugins.marketplace import attempts_of, row_state, seed_rows


def test_a_reversed_row_set_back_to_pending_is_written_again(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    run_job(engine, stripe_resource, "run-1")
    first = row_state(engine, row.id)
    assert first["status"] == "reversed"
    # What the runbook used to advise for db_reversed_stripe_not: set it back by hand.
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'reversal_pending', next_retry_at = now()"
                " WHERE id = :id"
            ),
            {"id": row.id},
        )

    run_job(engine, stripe_resource, "run-2")

    state = row_state(engine, row.id)
    assert (state["status"], state["stripe_reversal_id"]) == (
        "reversed",
        first["stripe_reversal_id"],
    )
    assert state["claimed_by"] is None
    outcomes = [a for a in attempts_of(engine, row.id) if a["status_after"] == "reversed"]
    assert [a["reversal_generation"] for a in outcomes] == [0, 1]
    assert len(stripe_emulator.control().get_transfer(row.stripe_transfer_id)["reversals"]) == 1


def test_two_reversed_outcomes_without_a_reopening_are_still_refused(engine: sa.Engine) -> None:
    [row] = seed_rows(engine, None, 1, stripe_transfer_id="tr_only")
    audit = {
        "seller_transfer_id": row.id,
        "action": "resolve",
        "outcome": "resolved",
        "status_after": "reversed",
        "actor": "test",
    }
    with engine.begin() as connection:
        connection.execute(sa.insert(reversal_attempts).values(**audit))
    with pytest.raises(sa.exc.IntegrityError, match="uq_reversal_attempts_one_reversed"):
        with engine.begin() as connection:
            connection.execute(sa.insert(reversal_attempts).values(**audit))


def test_reopen_sends_a_row_stripe_shows_unreversed_back_to_the_job(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
) -> None:
    [row] = seed_rows(
        engine,
        stripe_emulator.control(),
        1,
        status="reversed",
        stripe_reversal_id="trr_NeverAtStripe",
        reversed_at=datetime(2026, 11, 21, tzinfo=UTC),
    )

    result = run(
        job_env, "reopen", "--id", str(row.id), "--reason", "INC-12 db_reversed_stripe_not"
    )

    assert result.exit_code == 0, result.output
    assert "reopened" in result.output
    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)
    assert state["next_retry_at"] is not None
    assert state["stripe_reversal_id"] is None
    [audit] = attempts_of(engine, row.id)
    assert (audit["action"], audit["actor"]) == ("reopen", "operator")
    assert (audit["status_before"], audit["status_after"]) == ("reversed", "reversal_pending")
    assert "INC-12" in audit["message"]
    assert audit["stripe_reversal_id"] == "trr_NeverAtStripe"

    run_job(engine, stripe_resource, "run-after-reopen")

    [reversal] = stripe_emulator.control().get_transfer(row.stripe_transfer_id)["reversals"]
    state = row_state(engine, row.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", reversal["id"])


def test_reopen_refuses_when_stripe_shows_the_money_back(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    run_job(engine, stripe_resource, "run-1")
    before = table_snapshot(engine)

    result = run(job_env, "reopen", "--id", str(row.id), "--reason", "r")

    assert result.exit_code != 0
    assert "money back" in result.stderr
    assert table_snapshot(engine) == before


def test_reopen_of_a_row_with_a_partial_reversal_of_ours_sends_only_the_rest(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
) -> None:
    """Issue 17 changed this from a refusal: the job now completes a partial to the target."""
    [row] = seed_rows(
        engine,
        stripe_emulator.control(),
        1,
        status="reversed",
        stripe_reversal_id="trr_x",
        reversed_at=datetime(2026, 11, 21, tzinfo=UTC),
    )
    partial = stripe_emulator.control().reverse_transfer(
        row.stripe_transfer_id, amount=400, metadata={"seller_transfer_id": str(row.id)}
    )

    result = run(job_env, "reopen", "--id", str(row.id), "--reason", "r")

    assert result.exit_code == 0, result.output
    assert row_state(engine, row.id)["amount_reversed"] == 400
    run_job(engine, stripe_resource, "run-after-reopen")
    reversals = stripe_emulator.control().get_transfer(row.stripe_transfer_id)["reversals"]
    assert sorted(r["amount"] for r in reversals) == [400, 600]
    assert partial["id"] in {r["id"] for r in reversals}
    state = row_state(engine, row.id)
    assert (state["status"], state["amount_reversed"]) == ("reversed", 1_000)


def test_reopen_refuses_a_row_that_is_not_reversed(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="permanently_failed")
    before = table_snapshot(engine)

    result = run(job_env, "reopen", "--id", str(row.id), "--reason", "r")

    assert result.exit_code != 0
    assert "only reversed rows" in result.stderr
    assert table_snapshot(engine) == before


def test_resolve_refuses_a_reversal_in_another_currency(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    """Issue 12 defect 7: 1,000 USD reversed does not resolve a 1,000 EUR row."""
    control = stripe_emulator.control()
    [usd] = control.create_transfers(
        [{"amount": 1_000, "currency": "usd", "destination": "acct_x"}], returning="ids"
    )
    [row] = seed_rows(
        engine, None, 1, stripe_transfer_id=usd, currency="eur", status="permanently_failed"
    )
    reversal = control.reverse_transfer(usd, amount=1_000)
    before = table_snapshot(engine)

    result = run(
        job_env, "resolve", "--id", str(row.id), "--reversal", reversal["id"], "--reason", "r"
    )

    assert result.exit_code != 0
    assert "USD" in result.stderr
    assert "EUR" in result.stderr
    assert table_snapshot(engine) == before
