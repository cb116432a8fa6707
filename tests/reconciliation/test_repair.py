"""The repair fixes only what Stripe proves, audits it, and never overwrites a concurrent change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from reversal_pipeline.db.tables import reversal_attempts, seller_transfers
from reversal_pipeline.reconciliation.repair import (
    ACTOR,
    RepairPlan,
    apply_repairs,
    plan_repairs,
)
from reversal_pipeline.reconciliation.store import RunCounts, open_findings, store_findings
from reversal_pipeline.stripe.models import TransferSnapshot
from tests.reconciliation.builders import (
    DAY,
    DAY_START,
    NOW,
    db_row,
    drift_findings_for,
    insert_rows,
    reversal,
    reversed_row,
    snapshot,
)

OWN_REVERSAL_AT = DAY_START + timedelta(hours=7)


def pending_row(seller_transfer_id: int, **overrides: Any) -> dict[str, Any]:
    values = {
        "status": "reversal_pending",
        "reversal_requested_at": NOW - timedelta(hours=3),
        "next_retry_at": NOW + timedelta(minutes=10),
        "error_message": "timeout talking to Stripe",
    }
    return db_row(seller_transfer_id, **{**values, **overrides})


def failed_row(seller_transfer_id: int) -> dict[str, Any]:
    return db_row(
        seller_transfer_id,
        status="permanently_failed",
        reversal_requested_at=NOW - timedelta(days=1),
        error_message="gave up after 8 attempts",
    )


def day_of_drift() -> tuple[list[dict[str, Any]], list[TransferSnapshot]]:
    """Row 1 pending and 2 failed, both reversed at Stripe; 3 and 4 drift Stripe cannot fix."""
    rows = [pending_row(1), failed_row(2), db_row(3), reversed_row(4, stripe_reversal_id="trr_x")]
    snapshots = [
        snapshot(
            "tr_1",
            reversals=[reversal("trr_1", seller_transfer_id=1, created=OWN_REVERSAL_AT)],
        ),
        snapshot("tr_2", reversals=[reversal("trr_2")]),
        snapshot("tr_3", reversals=[reversal("trr_3", 10)]),  # reversed_without_request
        snapshot("tr_4", reversals=[reversal("trr_4", seller_transfer_id=4)]),  # id mismatch
    ]
    return rows, snapshots


@pytest.fixture
def drifted_day(engine: sa.Engine) -> list[TransferSnapshot]:
    rows, snapshots = day_of_drift()
    insert_rows(engine, rows)
    return snapshots


def plan(engine: sa.Engine, evidence: pd.DataFrame | list[TransferSnapshot]) -> RepairPlan:
    with engine.connect() as connection:
        return plan_repairs(connection, DAY, evidence, now=NOW)


def row_state(engine: sa.Engine, seller_transfer_id: int) -> dict[str, Any]:
    with engine.connect() as connection:
        query = sa.select(seller_transfers).where(seller_transfers.c.id == seller_transfer_id)
        return dict(connection.execute(query).mappings().one())


def audit_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        query = sa.select(reversal_attempts).order_by(reversal_attempts.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def all_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        query = sa.select(seller_transfers).order_by(seller_transfers.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def test_plan_covers_only_rows_stripe_proves_reversed(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    repair_plan = plan(engine, drifted_day)

    assert [(r.seller_transfer_id, r.category) for r in repair_plan.repairs] == [
        (2, "stripe_reversed_db_failed"),
        (1, "stripe_reversed_db_pending"),
    ]
    assert repair_plan.skipped == ()


def test_repair_marks_the_row_reversed_with_its_own_reversal(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    apply_repairs(engine, plan(engine, drifted_day), run_id="repair-1", dry_run=False)

    row = row_state(engine, 1)
    assert (row["status"], row["stripe_reversal_id"]) == ("reversed", "trr_1")
    assert row["reversed_at"] == OWN_REVERSAL_AT
    assert (row["next_retry_at"], row["claimed_by"], row["claim_expires_at"]) == (None, None, None)
    assert "Repaired by reconciliation" in row["error_message"]
    assert "No Stripe call was made" in row["error_message"]


def test_each_repair_is_audited_in_the_trail(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    apply_repairs(engine, plan(engine, drifted_day), run_id="repair-1", dry_run=False)

    audits = {a["seller_transfer_id"]: a for a in audit_rows(engine)}
    assert set(audits) == {1, 2}
    failed = audits[2]
    assert (failed["action"], failed["actor"], failed["run_id"]) == ("repair", ACTOR, "repair-1")
    assert (failed["status_before"], failed["status_after"]) == ("permanently_failed", "reversed")
    assert (failed["stripe_reversal_id"], failed["outcome"]) == ("trr_2", "repaired")
    assert "stripe_reversed_db_failed" in failed["message"]


def test_drift_stripe_cannot_prove_is_left_alone(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    before = {r["id"]: r for r in all_rows(engine)}

    apply_repairs(engine, plan(engine, drifted_day), run_id="repair-1", dry_run=False)

    after = {r["id"]: r for r in all_rows(engine)}
    assert after[3] == before[3]
    assert after[4] == before[4]


def test_dry_run_reports_the_repairs_and_changes_nothing(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    before = all_rows(engine)

    result = apply_repairs(engine, plan(engine, drifted_day), run_id="dry", dry_run=True)

    assert result.dry_run
    assert sorted(r.seller_transfer_id for r in result.repaired) == [1, 2]
    assert all_rows(engine) == before
    assert audit_rows(engine) == []


def test_dry_run_is_the_default(engine: sa.Engine, drifted_day: list[TransferSnapshot]) -> None:
    apply_repairs(engine, plan(engine, drifted_day), run_id="forgot-the-flag")

    assert row_state(engine, 1)["status"] == "reversal_pending"
    assert audit_rows(engine) == []


def test_repair_refuses_a_row_whose_status_changed_since_the_plan(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    repair_plan = plan(engine, drifted_day)
    with engine.begin() as connection:  # the job reverses row 1 meanwhile
        connection.execute(
            sa.update(seller_transfers)
            .where(seller_transfers.c.id == 1)
            .values(status="reversed", stripe_reversal_id="trr_job", reversed_at=NOW)
        )

    result = apply_repairs(engine, repair_plan, run_id="repair-1", dry_run=False)

    [refused] = result.refused
    assert refused.seller_transfer_id == 1
    assert "status changed to reversed" in refused.reason
    assert row_state(engine, 1)["stripe_reversal_id"] == "trr_job"
    assert [a["seller_transfer_id"] for a in audit_rows(engine)] == [2]


def test_repair_refuses_a_row_a_running_job_has_claimed(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    repair_plan = plan(engine, drifted_day)
    with engine.begin() as connection:  # a job claims row 1 after the plan
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET claimed_by = 'job-7', "
                "claim_expires_at = now() + interval '5 minutes' WHERE id = 1"
            )
        )

    result = apply_repairs(engine, repair_plan, run_id="r", dry_run=False)

    assert [(r.seller_transfer_id, "job-7" in r.reason) for r in result.refused] == [(1, True)]
    assert row_state(engine, 1)["status"] == "reversal_pending"


def test_repair_clears_an_expired_claim(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    repair_plan = plan(engine, drifted_day)
    with engine.begin() as connection:  # a job that died left its claim behind
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET claimed_by = 'dead-job', "
                "claim_expires_at = now() - interval '1 hour' WHERE id = 1"
            )
        )

    apply_repairs(engine, repair_plan, run_id="r", dry_run=False)

    row = row_state(engine, 1)
    assert (row["status"], row["claimed_by"], row["claim_expires_at"]) == ("reversed", None, None)


def test_repair_from_stored_findings_names_the_finding_id(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    rows, snapshots = day_of_drift()
    store_findings(
        engine,
        DAY,
        drift_findings_for(rows, snapshots),
        now=NOW,
        started_at=NOW,
        run_id="recon-1",
        counts=RunCounts(),
    )
    with engine.connect() as connection:
        stored = open_findings(connection, DAY)
    failed_finding_id = int(
        stored.loc[stored["category"] == "stripe_reversed_db_failed", "id"].iloc[0]
    )

    apply_repairs(engine, plan(engine, stored), run_id="repair-1", dry_run=False)

    audits = {a["seller_transfer_id"]: a for a in audit_rows(engine)}
    assert f"finding #{failed_finding_id} " in audits[2]["message"]
    assert row_state(engine, 2)["stripe_reversal_id"] == "trr_2"


def test_findings_in_grace_are_not_repaired(engine: sa.Engine) -> None:
    insert_rows(engine, [pending_row(1, updated_at=NOW - timedelta(minutes=5))])
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", seller_transfer_id=1)])]

    repair_plan = plan(engine, snapshots)

    assert repair_plan.repairs == ()
    assert "grace" in repair_plan.skipped[0].reason


def test_repair_refuses_when_the_row_amount_grew_beyond_the_reversal(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    repair_plan = plan(engine, drifted_day)
    with engine.begin() as connection:
        connection.execute(
            sa.update(seller_transfers).where(seller_transfers.c.id == 2).values(amount=5000)
        )

    result = apply_repairs(engine, repair_plan, run_id="r", dry_run=False)

    assert [r.seller_transfer_id for r in result.refused] == [2]
    # The whole sentence: its second half once sat on a line of its own after the
    # return, unreached, and the operator read a reason cut off mid-parenthesis.
    assert [r.reason for r in result.refused] == [
        "amount changed since the plan and exceeds what Stripe reversed (a refund "
        "raised the reversal target)"
    ]
    assert row_state(engine, 2)["status"] == "permanently_failed"


def test_repair_skips_a_row_whose_transfer_is_in_another_currency(engine: sa.Engine) -> None:
    """Issue 12: 1,000 JPY reversed says nothing about a 1,000 EUR row."""
    insert_rows(engine, [failed_row(2)])
    snapshots = [
        snapshot("tr_2", currency="jpy", reversals=[reversal("trr_2", seller_transfer_id=2)])
    ]

    repair_plan = plan(engine, snapshots)

    assert repair_plan.repairs == ()
    [skipped] = repair_plan.skipped
    assert "JPY" in skipped.reason
    assert "EUR" in skipped.reason
    assert row_state(engine, 2)["status"] == "permanently_failed"


def test_repair_refuses_a_row_whose_currency_changed_since_the_plan(
    engine: sa.Engine, drifted_day: list[TransferSnapshot]
) -> None:
    repair_plan = plan(engine, drifted_day)
    with engine.begin() as connection:
        connection.execute(
            sa.update(seller_transfers).where(seller_transfers.c.id == 2).values(currency="usd")
        )

    result = apply_repairs(engine, repair_plan, run_id="r", dry_run=False)

    assert [r.seller_transfer_id for r in result.refused] == [2]
    assert "currency" in result.refused[0].reason
    assert row_state(engine, 2)["status"] == "permanently_failed"
