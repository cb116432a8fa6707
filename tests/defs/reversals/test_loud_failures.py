"""Issue 12, defect 3: a failed outcome write fails the run, and the checks say so.

Real Dagster, PostgreSQL and the emulator; the write fault is a real PostgreSQL
trigger that refuses one row's outcome, as a constraint or a bad migration would.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import run_reversal_job
from tests.plugins.marketplace import attempts_of, row_state, seed_rows


def _refuse_outcome_of(engine: sa.Engine, row_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                """
                CREATE FUNCTION test_refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'test fault: outcome of row % refused', NEW.id;
                END;
                $$;
                """
            )
        )
        connection.execute(
            sa.text(
                "CREATE TRIGGER test_refuse_outcome BEFORE UPDATE ON seller_transfers"
                f" FOR EACH ROW WHEN (NEW.id = {int(row_id)} AND NEW.status = 'reversed')"
                " EXECUTE FUNCTION test_refuse_outcome()"
            )
        )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_an_outcome_that_cannot_be_written_fails_the_run_and_names_the_row(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    good, bad = seed_rows(engine, stripe_emulator.control(), 2)
    _refuse_outcome_of(engine, bad.id)

    result = run_reversal_job(dagster_instance)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.event_specific_data
    assert f"ids {bad.id}" in str(data)
    assert data.user_failure_data.metadata["outcomes_not_written"].value == 1
    check = _checks(result)["all_outcomes_written"]
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["seller_transfer_ids"].value == [bad.id]
    assert row_state(engine, good.id)["status"] == "reversed"
    state = row_state(engine, bad.id)
    assert (state["status"], state["claimed_by"]) == ("reversal_pending", None)
    assert state["stripe_attempts"] == 1  # the next run looks on Stripe first
    [create] = attempts_of(engine, bad.id)  # the call that moved money is still audited
    assert (create["action"], create["outcome"]) == ("create_reversal", "reversed")
    assert create["status_after"] is None


def test_open_permanent_failures_are_seen_by_a_later_run_too(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, None, 1, stripe_transfer_id="tr_DoesNotExist0000000000")
    first = run_reversal_job(dagster_instance)
    assert _checks(first)["no_new_permanent_failures"].passed is False

    later = run_reversal_job(dagster_instance)  # gives up on nothing itself

    assert later.success
    check = _checks(later)["no_new_permanent_failures"]
    assert check.passed is False
    assert [record.data["id"] for record in check.metadata["rows"].value.records] == [row.id]
    assert _checks(later)["all_outcomes_written"].passed is True
