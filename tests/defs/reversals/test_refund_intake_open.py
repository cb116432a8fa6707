"""reversal_job with early refunds: they wait, are reversed at Stripe later, or are alerted.

Dagster, real PostgreSQL, and the real SDK over HTTP to the emulator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import materialization_metadata, run_reversal_job
from tests.plugins.marketplace import row_state, seed_rows


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_refund_before_its_transfer_row_is_reversed_at_stripe_once_the_row_exists(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_early_job", order_id="ord_early_job")

    first = run_reversal_job(dagster_instance)

    assert first.success
    intake = materialization_metadata(first, "refund_intake")
    assert (intake["events_waiting_for_transfer"], intake["open_events"]) == (1, 1)
    assert [r.data["refund_id"] for r in intake["open_events_oldest"].records] == ["re_early_job"]
    assert _checks(first)["no_refund_events_past_window"].passed is True

    [row] = seed_rows(
        engine, stripe_emulator.control(), 1, status="completed", order_id="ord_early_job"
    )
    second = run_reversal_job(dagster_instance)

    assert second.success
    state = row_state(engine, row.id)
    assert state["status"] == "reversed"
    [reversal] = stripe_emulator.control().get_transfer(row.stripe_transfer_id)["reversals"]
    assert reversal["amount"] == row.amount
    assert materialization_metadata(second, "refund_intake")["open_events"] == 0


def test_refund_open_past_the_window_fails_the_error_check_naming_it(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [unpaid] = seed_rows(
        engine, None, 1, status="pending", stripe_transfer_id=None, order_id="ord_stale"
    )
    with engine.begin() as connection:
        request_reversal(
            connection,
            refund_id="re_stale",
            order_id="ord_stale",
            received_at=datetime.now(UTC) - timedelta(days=31),
        )
        request_reversal(connection, refund_id="re_fresh", order_id="ord_fresh")

    result = run_reversal_job(dagster_instance)

    assert result.success  # the check alerts; the reversals of other rows are not held up
    check = _checks(result)["no_refund_events_past_window"]
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["refund_ids"].value == ["re_stale"]
    assert "re_stale" in (check.description or "")
    listed = check.metadata["events"].value.records
    assert [(r.data["refund_id"], r.data["outcome"]) for r in listed] == [
        ("re_stale", "expired_unmatched")
    ]
    errors = [e.message for e in dagster_instance.all_logs(result.run_id) if e.level >= 40]
    assert any("refund re_stale: expired_unmatched" in m for m in errors)
    assert row_state(engine, unpaid.id)["status"] == "pending"
