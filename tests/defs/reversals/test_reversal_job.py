"""reversal_job end to end: Dagster, real PostgreSQL, the real SDK over HTTP to the emulator."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.batch import ReversalBatch
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import materialization_metadata, run_reversal_job
from tests.plugins.marketplace import advance_clock, attempts_of, row_state, seed_rows

REVERSALS_PATH = "/v1/transfers/{}/reversals"


def _reversals_at_stripe(emulator: EmulatorServer, transfer_id: str) -> list[dict]:
    return emulator.control().get_transfer(transfer_id)["reversals"]


def _calls_for(emulator: EmulatorServer, transfer_id: str) -> int:
    return emulator.control().counters()["by_transfer"].get(transfer_id, 0)


def test_refund_event_to_reversed_happy_path(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_happy", order_id=row.order_id)

    result = run_reversal_job(dagster_instance)

    assert result.success
    state = row_state(engine, row.id)
    assert state["status"] == "reversed"
    assert state["next_retry_at"] is None
    assert state["claimed_by"] is None
    [reversal] = _reversals_at_stripe(stripe_emulator, row.stripe_transfer_id)
    assert state["stripe_reversal_id"] == reversal["id"]
    assert reversal["amount"] == row.amount
    assert reversal["metadata"]["seller_transfer_id"] == str(row.id)
    assert reversal["metadata"]["order_id"] == row.order_id
    audit = attempts_of(engine, row.id)
    assert [a["action"] for a in audit] == ["intake", "create_reversal"]
    assert audit[-1]["status_after"] == "reversed"
    assert audit[-1]["stripe_request_id"] is None or audit[-1]["stripe_request_id"]
    outcome = materialization_metadata(result, "reversal_outcomes")
    assert outcome["rows_reversed"] == 1
    assert outcome["amount_reversed_usd"] == row.amount
    assert materialization_metadata(result, "due_reversals")["rows_claimed"] == 1


def test_unknown_transfer_fails_after_one_call(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, None, 1, stripe_transfer_id="tr_DoesNotExist0000000000")

    result = run_reversal_job(dagster_instance)

    assert result.success
    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert state["next_retry_at"] is None
    assert "data-integrity incident" in state["error_message"]
    assert _calls_for(stripe_emulator, "tr_DoesNotExist0000000000") == 1
    [call] = [a for a in attempts_of(engine, row.id) if a["action"] == "create_reversal"]
    assert call["http_status"] == 404
    assert call["stripe_code"] == "resource_missing"
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["no_new_permanent_failures"].passed is False
    listed = checks["no_new_permanent_failures"].metadata["rows"].value
    assert [record.data["id"] for record in listed.records] == [row.id]
    assert checks["no_pending_without_next_retry_at"].passed is True
    assert checks["no_long_expired_claims"].passed is True


def test_already_reversed_out_of_band_records_that_reversal(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    dashboard = stripe_emulator.control().reverse_transfer(row.stripe_transfer_id)

    result = run_reversal_job(dagster_instance)

    assert result.success
    state = row_state(engine, row.id)
    assert state["status"] == "reversed"
    assert state["stripe_reversal_id"] == dashboard["id"]
    assert "already reversed out-of-band" in state["error_message"]
    assert len(_reversals_at_stripe(stripe_emulator, row.stripe_transfer_id)) == 1


def test_transient_errors_retry_with_backoff_then_succeed(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().add_script(
        respond=500, method="POST", transfer_id=row.stripe_transfer_id, times=2
    )
    settings = {"backoff_base_seconds": 60, "backoff_jitter": 0.0, "max_attempts": 5}

    assert run_reversal_job(dagster_instance, **settings).success
    first = row_state(engine, row.id)
    assert (first["status"], first["retry_count"]) == ("reversal_pending", 1)
    assert "HTTP 500" in first["error_message"]

    # Not yet due: a run now must not touch the row.
    assert run_reversal_job(dagster_instance, **settings).success
    assert row_state(engine, row.id)["retry_count"] == 1

    advance_clock(engine, 61)
    assert run_reversal_job(dagster_instance, **settings).success
    second = row_state(engine, row.id)
    assert second["retry_count"] == 2
    delay = (second["next_retry_at"] - second["updated_at"]).total_seconds()
    assert 119 <= delay <= 121  # base * 2 for the second failure, no jitter

    advance_clock(engine, 121)
    assert run_reversal_job(dagster_instance, **settings).success
    final = row_state(engine, row.id)
    assert final["status"] == "reversed"
    assert final["retry_count"] == 2
    assert len(_reversals_at_stripe(stripe_emulator, row.stripe_transfer_id)) == 1
    keys = [
        a["idempotency_key"]
        for a in attempts_of(engine, row.id)
        if a["action"] == "create_reversal"
    ]
    assert len(keys) == 3
    assert len(set(keys)) == 3


def test_always_failing_row_gives_up_at_max_attempts(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().add_script(
        respond=503, method="POST", transfer_id=row.stripe_transfer_id, times=100
    )
    for _ in range(3):
        assert run_reversal_job(dagster_instance, max_attempts=3, backoff_jitter=0.0).success
        advance_clock(engine, 3600)
    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert state["retry_count"] == 3
    assert "gave up after 3 attempt(s)" in state["error_message"]
    assert state["next_retry_at"] is None


def test_lost_response_is_recovered_by_the_same_key_retry(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().add_script(
        respond="lost", method="POST", transfer_id=row.stripe_transfer_id, times=1
    )
    assert run_reversal_job(dagster_instance).success
    state = row_state(engine, row.id)
    [reversal] = _reversals_at_stripe(stripe_emulator, row.stripe_transfer_id)
    assert state["status"] == "reversed"
    assert state["stripe_reversal_id"] == reversal["id"]


def test_lost_response_is_found_by_the_next_run_and_not_sent_again(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    # Committed at Stripe, reply dropped; the SDK's same-key retries then cannot connect.
    stripe_emulator.control().add_scripts(
        [
            {"respond": "lost", "method": "POST", "transfer_id": row.stripe_transfer_id},
            {
                "respond": "reset",
                "method": "POST",
                "transfer_id": row.stripe_transfer_id,
                "times": 10,
            },
        ]
    )

    assert run_reversal_job(dagster_instance, backoff_jitter=0.0).success
    assert row_state(engine, row.id)["status"] == "reversal_pending"
    stripe_emulator.control().clear_scripts()
    advance_clock(engine, 3600)
    assert run_reversal_job(dagster_instance).success

    state = row_state(engine, row.id)
    [reversal] = _reversals_at_stripe(stripe_emulator, row.stripe_transfer_id)
    assert state["status"] == "reversed"
    assert state["stripe_reversal_id"] == reversal["id"]
    actions = [a["action"] for a in attempts_of(engine, row.id)]
    assert actions[-1] == "lookup_reversal"
    assert actions.count("create_reversal") == 1


def test_revoked_key_fails_the_run_and_releases_claims(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    stripe_api_key: str,
) -> None:
    rows = seed_rows(engine, stripe_emulator.control(), 30)
    stripe_emulator.control().revoke_key(stripe_api_key)

    result = run_reversal_job(dagster_instance)

    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "Stripe refused our credentials" in str(failure[0].event_specific_data)
    for row in rows:
        state = row_state(engine, row.id)
        assert state["status"] == "reversal_pending"
        assert state["retry_count"] == 0
        assert state["claimed_by"] is None
    sent = stripe_emulator.control().counters()["calls_total"]
    assert sent < len(rows)  # stopped sending instead of failing every row
    assert stripe_api_key not in str(failure[0].event_specific_data)


def test_reexecution_takes_the_failed_runs_rows_only_once_their_lease_is_free(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = seed_rows(engine, stripe_emulator.control(), 5)

    def worker_died(self: ReversalBatch) -> None:
        raise RuntimeError("worker died after the claim")

    # The original run claims the rows, then its reversal step dies before sending anything
    # (and before it could release them: as if its process were killed).
    with monkeypatch.context() as patch:
        patch.setattr(ReversalBatch, "run", worker_died)
        original = run_reversal_job(dagster_instance)
    assert not original.success
    with engine.connect() as connection:
        holders = set(
            connection.execute(sa.text("SELECT claimed_by FROM seller_transfers")).scalars()
        )
    assert holders == {original.run_id}

    # Another run sees nothing due: the rows are held by a live lease.
    assert (
        materialization_metadata(run_reversal_job(dagster_instance), "due_reversals")[
            "rows_claimed"
        ]
        == 0
    )

    def reexecute() -> dg.DagsterRunResult:
        return dg.execute_job(
            dg.reconstructable(_reversal_job_for_reexecution),
            instance=dagster_instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(
                original.run_id, dagster_instance
            ),
        )

    # Nor does a re-execution while the lease lives: the original may still be sending
    # (issue 12: a draining original and its re-execution reversed one row twice).
    assert reexecute().success
    assert stripe_emulator.control().counters()["calls_total"] == 0
    assert all(row_state(engine, row.id)["status"] == "reversal_pending" for row in rows)

    advance_clock(engine, 601)  # the dead original's lease has run out
    assert reexecute().success
    for row in rows:
        assert row_state(engine, row.id)["status"] == "reversed"
    assert stripe_emulator.control().counters()["calls_total"] == len(rows)


def _reversal_job_for_reexecution() -> dg.JobDefinition:
    from tests.plugins.dagster_job import load_defs

    return load_defs().resolve_job_def("reversal_job")
