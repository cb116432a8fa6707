"""The matching rules: each drift category from a minimal scenario, and a clean day has none."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from reversal_pipeline.reconciliation.compare import FINDING_COLUMNS, compare
from reversal_pipeline.reconciliation.frames import (
    stripe_transfers_frame,
)
from tests.reconciliation.builders import (
    DAY_END,
    DAY_START,
    NOW,
    db_frame,
    db_row,
    drift_findings_for,
    matching_snapshot,
    reversal,
    reversed_row,
    snapshot,
)


def severities_by_category(findings: pd.DataFrame) -> dict[str, str]:
    return dict(
        zip(findings["category"].astype(str), findings["severity"].astype(str), strict=True)
    )


def pending_row(seller_transfer_id: int, **overrides: Any) -> dict[str, Any]:
    """A reversal_pending row requested recently and due in the future: not stuck."""
    values = {
        "status": "reversal_pending",
        "reversal_requested_at": NOW - timedelta(hours=3),
        "next_retry_at": NOW + timedelta(minutes=10),
    }
    return db_row(seller_transfer_id, **{**values, **overrides})


def test_clean_day_has_no_findings() -> None:
    rows = [
        db_row(1),
        reversed_row(2),
        pending_row(3),
        db_row(4, status="permanently_failed", reversal_requested_at=NOW - timedelta(days=1)),
        db_row(5, status="pending", stripe_transfer_id=None),
        db_row(6, status="failed", stripe_transfer_id=None),
    ]
    snapshots = [matching_snapshot(row) for row in rows if row["stripe_transfer_id"]]

    drift_findings = drift_findings_for(rows, snapshots)

    assert drift_findings.empty
    assert list(drift_findings.columns) == list(FINDING_COLUMNS)


SCENARIOS = {
    "db_reversed_stripe_not": (
        [reversed_row(1)],
        [snapshot("tr_1", reversals=[reversal("trr_1", 400, seller_transfer_id=1)])],
        "critical",
    ),
    "over_reversed": (
        # Issue 17: two reversals of ours are normal; more than the row's target is not.
        [reversed_row(1, reversal_target=500, db_amount_reversed=500)],
        [
            snapshot(
                "tr_1",
                reversals=[
                    reversal("trr_1", 500, seller_transfer_id=1),
                    reversal("trr_dup", 500, seller_transfer_id=1, created=DAY_START),
                ],
            )
        ],
        "critical",
    ),
    "reversal_id_mismatch": (
        [reversed_row(1, stripe_reversal_id="trr_other")],
        [snapshot("tr_1", reversals=[reversal("trr_1", seller_transfer_id=1)])],
        "high",
    ),
    "stripe_reversed_db_failed": (
        [db_row(1, status="permanently_failed", reversal_requested_at=NOW - timedelta(days=1))],
        [snapshot("tr_1", reversals=[reversal("trr_1", seller_transfer_id=1)])],
        "high",
    ),
    "stripe_reversed_db_pending": (
        [pending_row(1)],
        [snapshot("tr_1", reversals=[reversal("trr_1", seller_transfer_id=1)])],
        "medium",
    ),
    "reversed_without_request": (
        [db_row(1, status="completed")],
        [snapshot("tr_1", reversals=[reversal("trr_x", 10)])],
        "critical",
    ),
    "amount_or_currency_mismatch": (
        [db_row(1, currency="usd")],
        [snapshot("tr_1", currency="eur")],
        "high",
    ),
    "missing_at_stripe": ([db_row(1)], [], "high"),
    "unknown_to_db": ([], [snapshot("tr_stray")], "medium"),
    "stuck_pending": (
        [pending_row(1, next_retry_at=NOW - timedelta(hours=2))],
        [snapshot("tr_1")],
        "medium",
    ),
}


@pytest.mark.parametrize("category", SCENARIOS)
def test_each_category_is_found_alone_with_its_severity(category: str) -> None:
    rows, snapshots, severity = SCENARIOS[category]

    drift_findings = drift_findings_for(rows, snapshots)

    assert severities_by_category(drift_findings) == {category: severity}
    assert not drift_findings["in_grace"].any()
    assert drift_findings["explanation"].astype(str).str.len().min() > 40


def test_over_reversal_beyond_the_rows_amount_is_critical() -> None:
    rows = [reversed_row(1, amount=600, stripe_reversal_id="trr_1")]
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", 1000, seller_transfer_id=1)])]

    found = severities_by_category(drift_findings_for(rows, snapshots))

    assert found["over_reversed"] == "critical"
    assert found["amount_or_currency_mismatch"] == "high"


def test_unknown_transfer_is_keyed_by_its_stripe_id() -> None:
    drift_findings = drift_findings_for([], [snapshot("tr_stray", 777)])

    finding = drift_findings.iloc[0]
    assert finding["finding_key"] == "tr_stray"
    assert pd.isna(finding["seller_transfer_id"])
    assert (finding["stripe_transfer_id"], finding["amount"]) == ("tr_stray", 777)


def test_row_findings_are_keyed_by_seller_transfer_id() -> None:
    drift_findings = drift_findings_for([db_row(42, amount=1234)], [])

    finding = drift_findings.iloc[0]
    assert (finding["finding_key"], finding["seller_transfer_id"]) == ("42", 42)
    assert (finding["stripe_transfer_id"], finding["amount"], finding["currency"]) == (
        "tr_42",
        1234,
        "eur",
    )


def test_row_without_transfer_id_is_missing_only_once_a_payout_was_made() -> None:
    rows = [
        db_row(1, status="pending", stripe_transfer_id=None),
        db_row(2, status="failed", stripe_transfer_id=None),
        db_row(3, status="completed", stripe_transfer_id=None),
    ]

    drift_findings = drift_findings_for(rows, [])

    assert drift_findings["finding_key"].tolist() == ["3"]
    assert drift_findings["category"].astype(str).tolist() == ["missing_at_stripe"]


@pytest.mark.parametrize("status", ["reversal_pending", "permanently_failed"])
def test_partial_reversal_at_stripe_of_an_unreversed_row_is_flagged_with_amounts(
    status: str,
) -> None:
    rows = [pending_row(1, status=status)]
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", 999, seller_transfer_id=1)])]

    [finding] = drift_findings_for(rows, snapshots).to_dict("records")

    # Not "already reversed" (that would let the repair mark it reversed), but flagged.
    assert (finding["category"], finding["severity"]) == ("partial_reversal_unrecorded", "high")
    assert finding["details"] == {
        "status": status,
        "stripe_amount": 1000,
        "amount_reversed": 999,
        "reversal_count": 1,
        "reversal_target": 1000,
        "db_amount_reversed": 0,
    }


def test_repair_evidence_prefers_the_rows_own_reversal_over_the_newest() -> None:
    rows = [pending_row(7)]
    own = reversal("trr_own", 1000, seller_transfer_id=7, created=DAY_START + timedelta(hours=2))
    newer_foreign = reversal("trr_foreign", 0, seller_transfer_id=8)
    snapshots = [snapshot("tr_7", reversals=[newer_foreign, own])]

    details = drift_findings_for(rows, snapshots)["details"].iloc[0]

    assert details["repair_reversal_id"] == "trr_own"
    assert details["repair_reversed_at"] == "2026-11-20T02:00:00Z"


def test_repair_evidence_falls_back_to_the_newest_reversal() -> None:
    rows = [db_row(1, status="permanently_failed", reversal_requested_at=NOW)]
    older = reversal("trr_old", 500, created=DAY_START)
    newest = reversal("trr_new", 500, created=DAY_START + timedelta(hours=9))
    snapshots = [snapshot("tr_1", reversals=[older, newest])]

    details = drift_findings_for(rows, snapshots)["details"].iloc[0]

    assert details["repair_reversal_id"] == "trr_new"


def test_difference_on_a_recently_changed_row_is_in_grace() -> None:
    rows = [db_row(1, updated_at=NOW - timedelta(minutes=5)), db_row(2)]

    drift_findings = drift_findings_for(rows, []).set_index("finding_key")

    assert bool(drift_findings.loc["1", "in_grace"]) is True
    assert bool(drift_findings.loc["2", "in_grace"]) is False


def test_recently_created_unknown_transfer_is_in_grace() -> None:
    snapshots = [snapshot("tr_new", created=NOW - timedelta(minutes=5)), snapshot("tr_old")]

    drift_findings = drift_findings_for([], snapshots).set_index("finding_key")

    assert drift_findings["in_grace"].to_dict() == {"tr_new": True, "tr_old": False}


@pytest.mark.parametrize(
    ("overdue_by", "expected"), [(timedelta(minutes=30), []), (timedelta(hours=2), ["1"])]
)
def test_stuck_pending_needs_next_retry_overdue_beyond_the_margin(
    overdue_by: timedelta, expected: list[str]
) -> None:
    rows = [pending_row(1, next_retry_at=NOW - overdue_by)]

    drift_findings = drift_findings_for(rows, [snapshot("tr_1")])

    assert drift_findings["finding_key"].tolist() == expected


@pytest.mark.parametrize(
    ("requested_days_ago", "severity"), [(2, None), (4, "medium"), (8, "high")]
)
def test_stuck_pending_is_medium_after_max_age_and_high_after_seven_days(
    requested_days_ago: int, severity: str | None
) -> None:
    requested_at = NOW - timedelta(days=requested_days_ago)
    rows = [pending_row(1, reversal_requested_at=requested_at)]

    found = severities_by_category(drift_findings_for(rows, [snapshot("tr_1")]))

    assert found.get("stuck_pending") == severity


def test_pending_row_without_next_retry_at_is_stuck_and_high() -> None:
    rows = [pending_row(1, next_retry_at=None)]

    found = severities_by_category(drift_findings_for(rows, [snapshot("tr_1")]))

    assert found == {"stuck_pending": "high"}


def test_stripe_frame_summarises_reversals_newest_first() -> None:
    reversals = [
        reversal("trr_a", 100, seller_transfer_id=5, created=DAY_START),
        reversal("trr_b", 100, seller_transfer_id=5, created=DAY_START + timedelta(hours=1)),
        reversal("trr_c", 100, created=DAY_START + timedelta(hours=2)),
    ]
    snapshots = [snapshot("tr_5", reversals=reversals), snapshot("tr_6"), snapshot("tr_6")]

    frame = stripe_transfers_frame(snapshots).set_index("transfer_id")

    assert frame.index.tolist() == ["tr_5", "tr_6"]  # the listed-twice transfer is kept once
    first = frame.loc["tr_5"]
    assert first["reversal_ids"] == "trr_c|trr_b|trr_a"
    assert (first["reversal_count"], first["our_reversal_count_max"]) == (3, 2)
    assert first["seller_transfer_ids_in_metadata"] == "5"
    assert (first["latest_reversal_id"], first["amount_reversed"]) == ("trr_c", 300)
    assert pd.isna(frame.loc["tr_6", "reversal_ids"])
    assert str(frame["stripe_created"].dtype) == "datetime64[ns, UTC]"


def test_naive_now_is_refused_rather_than_compared_wrongly() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compare(db_frame([]), stripe_transfers_frame([]), now=NOW.replace(tzinfo=None))


# --------------------------------------------------------------- issue 13: nothing missed


def test_transfer_to_another_sellers_account_is_a_critical_destination_mismatch() -> None:
    rows = [db_row(1, stripe_account_id="acct_alice"), db_row(2, stripe_account_id="acct_bob")]
    snapshots = [  # the two sellers' transfer ids swapped
        snapshot("tr_1", destination="acct_bob"),
        snapshot("tr_2", destination="acct_alice"),
    ]

    drift_findings = drift_findings_for(rows, snapshots)

    assert drift_findings["category"].astype(str).tolist() == ["destination_mismatch"] * 2
    assert set(drift_findings["severity"].astype(str)) == {"critical"}
    assert drift_findings["details"].tolist() == [
        {
            "status": "completed",
            "stripe_account_id": "acct_alice",
            "destination": "acct_bob",
            "reversal_target": 0,
            "db_amount_reversed": 0,
        },
        {
            "status": "completed",
            "stripe_account_id": "acct_bob",
            "destination": "acct_alice",
            "reversal_target": 0,
            "db_amount_reversed": 0,
        },
    ]


def test_destination_is_not_compared_for_a_row_without_an_account() -> None:
    rows = [db_row(1, stripe_account_id=None)]

    assert drift_findings_for(rows, [snapshot("tr_1", destination="acct_bob")]).empty


def test_missing_destination_at_stripe_is_a_mismatch() -> None:
    drift_findings = drift_findings_for([db_row(1)], [snapshot("tr_1", destination=None)])

    assert drift_findings["category"].astype(str).tolist() == ["destination_mismatch"]


def test_one_minor_unit_out_of_band_reversal_of_an_unrequested_row_is_critical() -> None:
    rows = [db_row(1)]
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_oob", 1)])]

    [finding] = drift_findings_for(rows, snapshots).to_dict("records")

    assert (finding["category"], finding["severity"]) == ("reversed_without_request", "critical")
    assert finding["details"]["amount_reversed"] == 1
    assert finding["details"]["reversal_count"] == 1


def test_one_minor_unit_short_of_a_full_reversal_is_db_reversed_stripe_not() -> None:
    rows = [reversed_row(1)]
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", 999, seller_transfer_id=1)])]

    [finding] = drift_findings_for(rows, snapshots).to_dict("records")

    assert finding["category"] == "db_reversed_stripe_not"
    assert finding["details"] == {
        "status": "reversed",
        "stripe_reversal_id": "trr_1",
        "amount_reversed": 999,
        "reversal_count": 1,
        "reversal_target": 1000,
        "db_amount_reversed": 1000,
    }


def test_over_reversal_details_carry_every_number() -> None:
    rows = [reversed_row(1)]
    twice = [
        reversal("trr_1", 1000, seller_transfer_id=1),
        reversal("trr_2", 1, seller_transfer_id=1, created=DAY_START + timedelta(hours=7)),
    ]

    [finding] = drift_findings_for(rows, [snapshot("tr_1", 1000, reversals=twice)]).to_dict(
        "records"
    )

    assert finding["category"] == "over_reversed"
    assert finding["details"] == {
        "stripe_amount": 1000,
        "amount_reversed": 1001,
        "reversal_count": 2,
        "our_reversal_count_max": 2,
        "seller_transfer_ids_in_metadata": "1",
        "reversal_target": 1000,
        "db_amount_reversed": 1000,
    }


def test_stripe_only_finding_carries_stripes_amount_and_currency() -> None:
    [finding] = drift_findings_for([], [snapshot("tr_9", 4321, currency="jpy")]).to_dict("records")

    assert finding["category"] == "unknown_to_db"
    assert (finding["amount"], finding["currency"]) == (4321, "jpy")
    assert finding["details"]["amount_reversed"] == 0
    assert finding["details"]["destination"] == "acct_seller"


def test_stuck_severity_falls_back_to_next_retry_at_when_never_requested() -> None:
    """No reversal_requested_at: how long it is pending is read from next_retry_at."""
    old = pending_row(
        1, reversal_requested_at=None, next_retry_at=NOW - timedelta(days=7, seconds=1)
    )
    recent = pending_row(2, reversal_requested_at=None, next_retry_at=NOW - timedelta(days=6))
    rows = [old, recent]

    drift_findings = drift_findings_for(rows, [matching_snapshot(r) for r in rows])

    by_key = dict(
        zip(drift_findings["finding_key"], drift_findings["severity"].astype(str), strict=True)
    )
    assert by_key == {"1": "high", "2": "medium"}


def test_stuck_windows_are_strict_at_their_boundaries() -> None:
    """Overdue by exactly the margin, or requested exactly max-age ago, is not stuck yet."""
    at_margin = pending_row(1, next_retry_at=NOW - timedelta(hours=1))
    past_margin = pending_row(2, next_retry_at=NOW - timedelta(hours=1, seconds=1))
    at_age = pending_row(3, reversal_requested_at=NOW - timedelta(days=3))
    past_age = pending_row(4, reversal_requested_at=NOW - timedelta(days=3, seconds=1))
    rows = [at_margin, past_margin, at_age, past_age]

    drift_findings = drift_findings_for(rows, [matching_snapshot(r) for r in rows])

    assert drift_findings["finding_key"].tolist() == ["2", "4"]


def test_grace_boundary_a_change_exactly_grace_ago_is_drift() -> None:
    at_boundary = reversed_row(1, updated_at=NOW - timedelta(hours=1))
    inside = reversed_row(2, updated_at=NOW - timedelta(hours=1) + timedelta(seconds=1))
    rows = [at_boundary, inside]

    drift_findings = drift_findings_for(rows, [snapshot("tr_1"), snapshot("tr_2")])

    assert dict(zip(drift_findings["finding_key"], drift_findings["in_grace"], strict=True)) == {
        "1": False,
        "2": True,
    }
    ends = drift_findings["grace_ends_at"].tolist()
    assert pd.isna(ends[0])
    assert ends[1] == NOW + timedelta(seconds=1)


def _margin_compare(rows: list[dict[str, Any]], snapshots: list[Any]) -> pd.DataFrame:
    return compare(
        db_frame(rows),
        stripe_transfers_frame(snapshots),
        now=NOW,
        grace_period=timedelta(0),
        day=(DAY_START, DAY_END),
    )


def test_midnight_skew_is_matched_across_the_day_boundary_on_both_days() -> None:
    """23:59:59 in the DB and 00:00:01 at Stripe: no finding on either day."""
    row = db_row(1, transferred_at=DAY_END - timedelta(seconds=1))
    skewed = snapshot("tr_1", created=DAY_END + timedelta(seconds=1))

    assert _margin_compare([row], [skewed]).empty  # the row's day
    next_day = compare(
        db_frame([row]),
        stripe_transfers_frame([skewed]),
        now=NOW,
        grace_period=timedelta(0),
        day=(DAY_END, DAY_END + timedelta(days=1)),
    )
    assert next_day.empty  # the transfer's day: the row is matched, and owned by DAY


def test_day_owns_findings_by_the_rows_day_then_the_transfers() -> None:
    """Start inclusive, end exclusive: a finding belongs to exactly one day."""
    rows = [
        db_row(1, transferred_at=DAY_START),  # owned
        db_row(2, transferred_at=DAY_END),  # the next day's
        db_row(3, transferred_at=DAY_START - timedelta(microseconds=1)),  # the previous day's
    ]
    snapshots = [
        snapshot("tr_8", created=DAY_START),  # Stripe only, owned
        snapshot("tr_9", created=DAY_END),  # Stripe only, the next day's
    ]

    drift_findings = _margin_compare(rows, snapshots)

    assert sorted(drift_findings["finding_key"]) == ["1", "tr_8"]


def test_row_without_transferred_at_is_matched_by_the_transfers_created_and_flagged() -> None:
    row = reversed_row(1, transferred_at=None)

    drift_findings = _margin_compare([row], [snapshot("tr_1")])  # nothing reversed at Stripe

    assert sorted(drift_findings["category"].astype(str)) == [
        "db_reversed_stripe_not",
        "reversal_id_mismatch",
        "transferred_at_missing",
    ]
    missing = drift_findings[drift_findings["category"] == "transferred_at_missing"]
    assert missing["severity"].astype(str).tolist() == ["high"]
    assert missing["details"].tolist() == [
        {
            "status": "reversed",
            "stripe_created": "2026-11-20T01:00:00Z",
            "reversal_target": 1000,
            "db_amount_reversed": 1000,
        }
    ]
