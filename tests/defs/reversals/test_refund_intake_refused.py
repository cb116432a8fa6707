"""Issue 17: a partial refund intake cannot place is surfaced and alerted by an ERROR check."""

from __future__ import annotations

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


def test_an_unscoped_partial_refund_of_two_sellers_is_needs_scope_and_fails_the_check(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    rows = [
        seed_rows(engine, stripe_emulator.control(), 1, status="completed", order_id="ord_2s")[0]
        for _ in range(2)
    ]
    with engine.begin() as connection:
        request_reversal(
            connection, refund_id="re_which", order_id="ord_2s", amount=500, currency="usd"
        )

    result = run_reversal_job(dagster_instance)

    assert result.success
    assert materialization_metadata(result, "refund_intake")["events_needs_scope"] == 1
    check = _checks(result)["no_refused_refund_events"]
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "re_which" in check.description
    assert [row_state(engine, r.id)["status"] for r in rows] == ["completed", "completed"]
