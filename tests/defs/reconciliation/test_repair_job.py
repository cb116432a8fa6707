"""reconciliation_repair_job fixes only what Stripe proves, audited, with no Stripe write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.defs.reconciliation.harness import run_reconciliation, run_repair_job
from tests.plugins.marketplace import attempts_of, row_state, seed_rows

NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_repair_marks_reversed_only_rows_stripe_proves(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    reports_dir: object,
) -> None:
    control = stripe_emulator.control()
    pending, failed, unproven = seed_rows(engine, control, 3, status="completed")
    out_of_band = {}
    for row, status in ((pending, "reversal_pending"), (failed, "permanently_failed")):
        out_of_band[row.id] = control.reverse_transfer(row.stripe_transfer_id)["id"]
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE seller_transfers SET status = :s, reversal_requested_at = :t,"
                    " next_retry_at = CASE WHEN :s = 'reversal_pending' THEN :n END WHERE id = :id"
                ),
                {"s": status, "t": NOON, "n": datetime.now(UTC) + timedelta(hours=1), "id": row.id},
            )
    with engine.begin() as connection:  # DB says reversed, Stripe does not: never "repaired"
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'reversed', stripe_reversal_id = 'trr_x',"
                " reversed_at = now(), reversal_requested_at = now() WHERE id = :id"
            ),
            {"id": unproven.id},
        )
    assert run_reconciliation(dagster_instance).success
    writes_before = control.counters()["by_endpoint"].get("POST /v1/transfers/{id}/reversals", 0)

    dry = run_repair_job(dagster_instance, dry_run=True)
    assert dry.success
    assert row_state(engine, pending.id)["status"] == "reversal_pending"
    assert row_state(engine, failed.id)["status"] == "permanently_failed"

    real = run_repair_job(dagster_instance, dry_run=False)
    assert real.success
    for row in (pending, failed):
        state = row_state(engine, row.id)
        assert state["status"] == "reversed"
        assert state["stripe_reversal_id"] == out_of_band[row.id]
        assert state["next_retry_at"] is None
        [audit] = [a for a in attempts_of(engine, row.id) if a["action"] == "repair"]
        assert audit["actor"] == "reconciliation_repair"
        assert audit["status_after"] == "reversed"
        assert "finding" in audit["message"]
    assert row_state(engine, unproven.id)["stripe_reversal_id"] == "trr_x"
    assert not [a for a in attempts_of(engine, unproven.id) if a["action"] == "repair"]
    writes_after = control.counters()["by_endpoint"].get("POST /v1/transfers/{id}/reversals", 0)
    assert writes_after == writes_before
