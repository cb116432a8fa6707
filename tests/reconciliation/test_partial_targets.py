"""Issue 17: reconciliation measures each row against its reversal_target, not its amount."""

from __future__ import annotations

from datetime import timedelta

from tests.reconciliation.builders import (
    DAY_START,
    db_row,
    drift_findings_for,
    reversal,
    reversed_row,
    snapshot,
)


def _categories(rows: list[dict], snapshots: list) -> set[str]:
    return set(drift_findings_for(rows, snapshots)["category"])


def _ours(*amounts: int) -> list:
    return [
        reversal(f"trr_{i}", amount, seller_transfer_id=1, created=DAY_START + timedelta(hours=i))
        for i, amount in enumerate(amounts, start=2)
    ]


def test_a_row_reversed_to_its_partial_target_in_two_parts_is_no_drift() -> None:
    row = reversed_row(1, stripe_reversal_id="trr_3", reversal_target=700, db_amount_reversed=700)
    assert _categories([row], [snapshot("tr_1", reversals=_ours(300, 400))]) == set()


def test_under_reversed_against_the_target_is_db_reversed_stripe_not() -> None:
    row = reversed_row(1, stripe_reversal_id="trr_2", reversal_target=700, db_amount_reversed=700)
    assert _categories([row], [snapshot("tr_1", reversals=_ours(300))]) == {
        "db_reversed_stripe_not"
    }


def test_reversed_beyond_the_target_is_over_reversed() -> None:
    row = reversed_row(1, stripe_reversal_id="trr_3", reversal_target=300, db_amount_reversed=300)
    assert "over_reversed" in _categories([row], [snapshot("tr_1", reversals=_ours(300, 100))])


def test_reversed_without_any_target_is_reversed_without_request() -> None:
    row = db_row(1)  # completed: target 0
    assert _categories([row], [snapshot("tr_1", reversals=_ours(100))]) == {
        "reversed_without_request"
    }


def test_a_raised_target_with_its_earlier_part_recorded_is_not_an_unrecorded_partial() -> None:
    pending = db_row(
        1,
        status="reversal_pending",
        reversal_target=900,
        db_amount_reversed=300,
        next_retry_at=DAY_START + timedelta(days=3),
        reversal_requested_at=DAY_START + timedelta(hours=2),
    )
    assert "partial_reversal_unrecorded" not in _categories(
        [pending], [snapshot("tr_1", reversals=_ours(300))]
    )
    unrecorded = {**pending, "db_amount_reversed": 0}
    assert "partial_reversal_unrecorded" in _categories(
        [unrecorded], [snapshot("tr_1", reversals=_ours(300))]
    )
