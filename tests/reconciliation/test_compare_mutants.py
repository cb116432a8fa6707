"""``compare``: every field of a finding and every boundary of a rule (from mutation survivors).

``test_compare.py`` shows each category from a minimal scenario; these pin
what a finding carries (dtypes, ids, amounts, ``details`` value by value) and
the edges where a ``<`` becoming ``<=`` would move a row in or out of drift.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from reversal_pipeline.reconciliation.categories import explanation_of
from reversal_pipeline.reconciliation.compare import (
    FINDING_COLUMNS,
    compare,
    empty_findings,
    json_records,
)
from reversal_pipeline.reconciliation.frames import stripe_transfers_frame
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
from tests.reconciliation.test_compare import pending_row


def _records(findings: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["category"], r["finding_key"]): r for r in findings.to_dict("records")}


def test_findings_have_the_columns_and_dtypes_of_an_empty_findings_frame() -> None:
    rows = [pending_row(1, next_retry_at=NOW - timedelta(hours=2)), db_row(2, currency="usd")]
    snapshots = [
        snapshot("tr_1", reversals=[reversal("trr_1", seller_transfer_id=1)]),
        snapshot("tr_2"),
        snapshot("tr_stray"),
    ]

    findings = drift_findings_for(rows, snapshots)

    assert len(findings) == 4
    assert list(findings.columns) == list(FINDING_COLUMNS)
    assert findings.dtypes.astype(str).to_dict() == empty_findings().dtypes.astype(str).to_dict()
    assert list(findings.index) == [0, 1, 2, 3]


def test_every_field_of_a_repairable_finding() -> None:
    rows = [pending_row(7)]
    own = reversal("trr_own", 1000, seller_transfer_id=7, created=DAY_START + timedelta(hours=2))

    [finding] = drift_findings_for(rows, [snapshot("tr_7", reversals=[own])]).to_dict("records")

    assert finding == {
        "category": "stripe_reversed_db_pending",
        "severity": "medium",
        "finding_key": "7",
        "seller_transfer_id": 7,
        "stripe_transfer_id": "tr_7",
        "stripe_reversal_ids": "trr_own",
        "amount": 1000,
        "currency": "eur",
        "explanation": explanation_of("stripe_reversed_db_pending"),
        "details": {
            "status": "reversal_pending",
            "amount_reversed": 1000,
            "stripe_currency": "eur",
            "repair_reversal_id": "trr_own",
            "repair_reversed_at": "2026-11-20T02:00:00Z",
            # Issue 17: every finding about a row shows its target and what we reversed.
            "reversal_target": 1000,
            "db_amount_reversed": 0,
        },
        "in_grace": False,
        "grace_ends_at": pd.NaT,
    }


def test_every_field_of_a_stripe_only_finding() -> None:
    stray = snapshot("tr_9", 4321, currency="jpy", reversals=[reversal("trr_9", 21)])

    [finding] = drift_findings_for([], [stray]).to_dict("records")

    assert {k: v for k, v in finding.items() if k != "seller_transfer_id"} == {
        "category": "unknown_to_db",
        "severity": "medium",
        "finding_key": "tr_9",
        "stripe_transfer_id": "tr_9",
        "stripe_reversal_ids": "trr_9",
        "amount": 4321,
        "currency": "jpy",
        "explanation": explanation_of("unknown_to_db"),
        "details": {
            "stripe_created": "2026-11-20T01:00:00Z",
            "destination": "acct_seller",
            "livemode": False,
            "amount_reversed": 21,
        },
        "in_grace": False,
        "grace_ends_at": pd.NaT,
    }
    assert pd.isna(finding["seller_transfer_id"])


def test_repair_evidence_of_several_rows_each_gets_its_own() -> None:
    rows = [pending_row(1), pending_row(2), pending_row(3)]
    snapshots = [
        snapshot(  # two of its own: the newest own one, not the newest overall
            "tr_1",
            reversals=[
                reversal("trr_1a", 500, seller_transfer_id=1, created=DAY_START),
                reversal("trr_1b", 500, seller_transfer_id=1, created=DAY_START.replace(hour=3)),
                reversal("trr_x", 0, created=DAY_START.replace(hour=9)),
            ],
        ),
        snapshot("tr_2", reversals=[reversal("trr_2", created=DAY_START.replace(hour=4))]),
        snapshot("tr_3", reversals=[reversal("trr_3", seller_transfer_id=3)]),
    ]

    found = _records(drift_findings_for(rows, snapshots))

    def evidence(key: str) -> tuple[str, str]:
        details = found[("stripe_reversed_db_pending", key)]["details"]
        return details["repair_reversal_id"], details["repair_reversed_at"]

    assert evidence("1") == ("trr_1b", "2026-11-20T03:00:00Z")
    assert evidence("2") == ("trr_2", "2026-11-20T04:00:00Z")  # none of its own: the newest
    assert evidence("3") == ("trr_3", "2026-11-20T06:00:00Z")


@pytest.mark.parametrize(
    ("reversed_amount", "expected"),
    [
        (0, set()),
        (1, {"partial_reversal_unrecorded"}),
        (999, {"partial_reversal_unrecorded"}),
        (1000, {"stripe_reversed_db_failed"}),
        (1001, {"stripe_reversed_db_failed", "over_reversed"}),
    ],
)
def test_reversed_amount_boundaries_of_a_failed_row(reversed_amount: int, expected: set) -> None:
    rows = [db_row(1, status="permanently_failed", reversal_requested_at=NOW - timedelta(days=1))]
    reversals = [reversal("trr_1", reversed_amount)] if reversed_amount else []

    findings = drift_findings_for(rows, [snapshot("tr_1", reversals=reversals)])

    assert set(findings["category"].astype(str)) == expected


def test_our_reversals_are_over_reversed_only_beyond_the_target() -> None:
    """Since partial refunds (issue 17) several reversals of ours for one row are
    normal; only more than the row's target is ``over_reversed``."""
    once = [reversal("trr_1", 500, seller_transfer_id=1)]
    twice = [*once, reversal("trr_2", 500, seller_transfer_id=1, created=DAY_START)]
    beyond = [
        reversal("trr_3a", 600, seller_transfer_id=3),
        reversal("trr_3", 600, seller_transfer_id=3, created=DAY_START),
    ]
    rows = [
        reversed_row(1, amount=1000),
        reversed_row(2, amount=1000, stripe_reversal_id="trr_2"),
        reversed_row(3, amount=1500, reversal_target=1000, db_amount_reversed=1000),
    ]
    snapshots = [
        snapshot("tr_1", reversals=once),
        snapshot("tr_2", reversals=twice),
        snapshot("tr_3", amount=1500, reversals=beyond),
    ]

    found = _records(drift_findings_for(rows, snapshots))

    assert ("over_reversed", "1") not in found
    assert ("db_reversed_stripe_not", "1") in found  # 500 of 1000
    assert not [key for key in found if key[1] == "2"]  # 500 + 500 = its target
    assert found[("over_reversed", "3")]["details"]["our_reversal_count_max"] == 2
    assert found[("over_reversed", "3")]["details"]["amount_reversed"] == 1200


def test_a_requested_row_reversed_at_stripe_is_not_reversed_without_request() -> None:
    requested = db_row(1, reversal_requested_at=NOW - timedelta(days=1))  # completed, asked
    unasked = db_row(2)

    findings = drift_findings_for(
        [requested, unasked],
        [
            snapshot("tr_1", reversals=[reversal("trr_1", 5)]),
            snapshot("tr_2", reversals=[reversal("trr_2", 5)]),
        ],
    )

    assert findings["finding_key"].tolist() == ["2"]


def test_the_recorded_reversal_id_must_match_one_of_the_transfers_exactly() -> None:
    three = [
        reversal("trr_a", 1, created=DAY_START),
        reversal("trr_mid", 998, seller_transfer_id=1, created=DAY_START.replace(hour=1)),
        reversal("trr_c", 1, created=DAY_START.replace(hour=2)),
    ]
    rows = [
        reversed_row(1, stripe_reversal_id="trr_mid"),  # among several: fine
        reversed_row(2, stripe_reversal_id="trr_1"),  # a prefix of trr_10: not a match
    ]
    snapshots = [
        snapshot("tr_1", reversals=three),
        snapshot("tr_2", reversals=[reversal("trr_10", seller_transfer_id=2)]),
    ]

    found = drift_findings_for(rows, snapshots)

    assert found["finding_key"].tolist() == ["2"]
    assert found["category"].tolist() == ["reversal_id_mismatch"]
    assert found["details"].tolist() == [
        {
            "stripe_reversal_id": "trr_1",
            "reversal_count": 1,
            "reversal_target": 1000,
            "db_amount_reversed": 1000,
        }
    ]


@pytest.mark.parametrize(
    ("status", "transfer_id", "missing"),
    [
        ("pending", None, False),
        ("failed", None, False),
        ("completed", None, True),
        ("reversal_pending", None, True),
        ("pending", "tr_1", True),
    ],
)
def test_missing_at_stripe_spares_only_unpaid_rows_without_a_transfer(
    status: str, transfer_id: str | None, missing: bool
) -> None:
    rows = [db_row(1, status=status, stripe_transfer_id=transfer_id)]

    found = _records(drift_findings_for(rows, []))

    assert (("missing_at_stripe", "1") in found) is missing
    if missing:
        assert found[("missing_at_stripe", "1")]["details"] == {
            "status": status,
            "stripe_account_id": "acct_seller",
            "transferred_at": "2026-11-20T01:00:00Z",
            "reversal_target": 1000 if status == "reversal_pending" else 0,
            "db_amount_reversed": 0,
        }


@pytest.mark.parametrize(
    ("requested_ago", "retry_ago", "severity"),
    [
        (timedelta(days=7), timedelta(hours=2), "medium"),  # exactly high_after: not yet
        (timedelta(days=7, seconds=1), timedelta(hours=2), "high"),
        # The request time wins over next_retry_at when both are there.
        (timedelta(days=4), timedelta(days=9), "medium"),
    ],
)
def test_stuck_severity_boundaries(
    requested_ago: timedelta, retry_ago: timedelta, severity: str
) -> None:
    rows = [
        pending_row(1, reversal_requested_at=NOW - requested_ago, next_retry_at=NOW - retry_ago)
    ]

    found = _records(drift_findings_for(rows, [snapshot("tr_1")]))

    finding = found[("stuck_pending", "1")]
    assert finding["severity"] == severity
    assert finding["details"] == {
        "next_retry_at": json_time(NOW - retry_ago),
        "reversal_requested_at": json_time(NOW - requested_ago),
        "reversal_target": 1000,
        "db_amount_reversed": 0,
    }


def json_time(value: Any) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_row_without_an_account_is_not_compared_but_a_differing_one_is() -> None:
    rows = [db_row(1, stripe_account_id=None), db_row(2, stripe_account_id="acct_a")]
    snapshots = [snapshot("tr_1", destination=None), snapshot("tr_2", destination="acct_a")]

    assert drift_findings_for(rows, snapshots).empty


def test_day_ownership_falls_back_to_the_transfers_created_for_an_undated_row() -> None:
    rows = [
        db_row(1, transferred_at=None, status="reversed", stripe_reversal_id="trr_x"),
        db_row(2, transferred_at=None, status="reversed", stripe_reversal_id="trr_y"),
    ]
    snapshots = [
        snapshot("tr_1", created=DAY_START + timedelta(hours=5)),
        snapshot("tr_2", created=DAY_END + timedelta(minutes=5)),  # the next day's
    ]

    findings = compare(
        db_frame(rows),
        stripe_transfers_frame(snapshots),
        now=NOW,
        grace_period=timedelta(0),
        day=(DAY_START, DAY_END),
    )

    assert set(findings["finding_key"]) == {"1"}


def test_without_a_day_every_finding_is_kept() -> None:
    rows = [db_row(1, transferred_at=DAY_END + timedelta(hours=1))]

    findings = compare(db_frame(rows), stripe_transfers_frame([]), now=NOW)

    assert findings["finding_key"].tolist() == ["1"]


def test_grace_uses_the_given_period_and_the_stripe_created_time() -> None:
    rows = [db_row(1, updated_at=NOW - timedelta(minutes=20))]
    snapshots = [snapshot("tr_new", created=NOW - timedelta(minutes=20))]

    short = compare(
        db_frame(rows),
        stripe_transfers_frame(snapshots),
        now=NOW,
        grace_period=timedelta(minutes=10),
    )
    long = compare(
        db_frame(rows),
        stripe_transfers_frame(snapshots),
        now=NOW,
        grace_period=timedelta(minutes=30),
    )

    assert not short["in_grace"].any()
    assert long["in_grace"].all()
    assert set(long["grace_ends_at"]) == {NOW + timedelta(minutes=10)}


def test_stuck_windows_are_the_given_ones() -> None:
    rows = [pending_row(1, next_retry_at=NOW - timedelta(minutes=20))]

    def stuck(margin: timedelta, max_age: timedelta) -> bool:
        findings = compare(
            db_frame(rows),
            stripe_transfers_frame([matching_snapshot(rows[0])]),
            now=NOW,
            stuck_margin=margin,
            stuck_max_age=max_age,
        )
        return "stuck_pending" in set(findings["category"].astype(str))

    assert stuck(timedelta(minutes=10), timedelta(days=30))
    assert not stuck(timedelta(minutes=30), timedelta(days=30))
    assert stuck(timedelta(minutes=30), timedelta(hours=2))  # requested 3 h ago


def test_json_records_turn_every_dtype_into_plain_json_values() -> None:
    frame = pd.DataFrame(
        {
            "count": pd.array([3, None], dtype="Int64"),
            "big": pd.array([2**53 - 1, 0], dtype="int64"),
            "flag": [True, False],
            "when": pd.to_datetime(["2026-11-20T01:02:03.9Z", None], utc=True),
            "text": pd.array(["a", None], dtype="string[pyarrow]"),
            # An integer column that a join left with gaps (Stripe's side of a row
            # Stripe does not know): still whole numbers in the JSON, not 1000.0.
            "joined": [1000.0, float("nan")],
        }
    )

    records = json_records(frame)

    assert records == [
        {
            "count": 3,
            "big": 2**53 - 1,
            "flag": True,
            "when": "2026-11-20T01:02:03Z",
            "text": "a",
            "joined": 1000,
        },
        {"count": None, "big": 0, "flag": False, "when": None, "text": None, "joined": None},
    ]
    # == cannot tell 1 from True or 1000 from 1000.0; JSONB can ("true" vs "1", "1000.0").
    assert [type(records[0][name]) for name in ("count", "big", "flag", "joined")] == [
        int,
        int,
        bool,
        int,
    ]


def test_a_reversed_row_without_a_reversal_id_is_a_reversal_id_mismatch() -> None:
    rows = [reversed_row(1, stripe_reversal_id=None)]
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", seller_transfer_id=1)])]

    found = drift_findings_for(rows, snapshots)

    assert found["category"].astype(str).tolist() == ["reversal_id_mismatch"]
    assert found["details"].tolist() == [
        {
            "stripe_reversal_id": None,
            "reversal_count": 1,
            "reversal_target": 1000,
            "db_amount_reversed": 1000,
        }
    ]


def test_a_db_frame_without_target_columns_gives_unknown_targets_in_details() -> None:
    # A frame from before issue 17 (no reversal_target / db_amount_reversed): the finding
    # still names both, as unknown, rather than failing or dropping them from details.
    frame = db_frame([db_row(1, amount=999), db_row(2, currency="usd")]).drop(
        columns=["reversal_target", "db_amount_reversed"]
    )

    found = compare(
        frame,
        stripe_transfers_frame([snapshot("tr_1"), snapshot("tr_2")]),
        now=NOW,
        grace_period=timedelta(hours=1),
    )

    assert found["category"].astype(str).tolist() == ["amount_or_currency_mismatch"] * 2
    unknown_targets = {
        "status": "completed",
        "stripe_amount": 1000,
        "stripe_currency": "eur",
        "reversal_target": None,
        "db_amount_reversed": None,
    }
    assert found["details"].tolist() == [unknown_targets, unknown_targets]


def _categories(found: pd.DataFrame) -> list[list[str]]:
    return found[["category", "finding_key"]].astype(str).to_numpy().tolist()


def test_a_raised_target_whose_confirmed_part_is_recorded_is_not_a_partial_reversal() -> None:
    # Partial refunds: each row owes 600; Stripe shows 300 of ours on each. Row 1
    # records those 300 as confirmed (work in progress), row 2 does not (drift).
    rows = [
        pending_row(1, reversal_target=600, db_amount_reversed=300),
        pending_row(2, reversal_target=600, db_amount_reversed=0),
    ]
    snapshots = [
        snapshot(f"tr_{n}", reversals=[reversal(f"trr_{n}", 300, seller_transfer_id=n)])
        for n in (1, 2)
    ]

    found = drift_findings_for(rows, snapshots)

    assert _categories(found) == [["partial_reversal_unrecorded", "2"]]


def test_nothing_reversed_at_stripe_is_not_a_partial_reversal() -> None:
    row = pending_row(1, reversal_target=600, db_amount_reversed=300)

    found = drift_findings_for([row], [snapshot("tr_1")])

    assert "partial_reversal_unrecorded" not in found["category"].astype(str).tolist()


def test_a_target_of_zero_is_never_fully_reversed_at_stripe() -> None:
    rows = [
        db_row(1, status="permanently_failed", reversal_target=0),
        pending_row(2, reversal_target=0),
    ]

    found = drift_findings_for(rows, [snapshot("tr_1"), snapshot("tr_2")])

    assert _categories(found) == []


def test_targets_of_one_minor_unit_are_compared() -> None:
    rows = [
        pending_row(1, reversal_target=1),  # Stripe reversed that 1: done at Stripe
        reversed_row(2, reversal_target=1, db_amount_reversed=1),  # Stripe reversed 2
    ]
    snapshots = [
        snapshot("tr_1", reversals=[reversal("trr_1", 1, seller_transfer_id=1)]),
        snapshot("tr_2", reversals=[reversal("trr_2", 2, seller_transfer_id=2)]),
    ]

    found = drift_findings_for(rows, snapshots)

    assert sorted(_categories(found)) == [
        ["over_reversed", "2"],
        ["stripe_reversed_db_pending", "1"],
    ]


def test_an_unknown_target_is_the_rows_whole_amount() -> None:
    frame = db_frame([pending_row(1)])
    frame["reversal_target"] = pd.array([None], dtype="Int64")
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", 1000, seller_transfer_id=1)])]

    found = compare(frame, stripe_transfers_frame(snapshots), now=NOW)

    assert _categories(found) == [["stripe_reversed_db_pending", "1"]]


def test_frames_read_in_pieces_are_matched_like_one_piece() -> None:
    # Ids of a frame concatenated from pieces (a day read in batches) are chunked
    # Arrow arrays: matched the same, one transfer id to one row.
    rows = [db_row(1), db_row(2, amount=5)]
    pieces = pd.concat([db_frame(rows[:1]), db_frame(rows[1:])], ignore_index=True)
    stripe = pd.concat(
        [stripe_transfers_frame([snapshot("tr_2")]), stripe_transfers_frame([snapshot("tr_1")])],
        ignore_index=True,
    )

    found = compare(pieces, stripe, now=NOW)

    assert _categories(found) == [["amount_or_currency_mismatch", "2"]]


def test_a_naive_now_is_refused_with_a_message_that_says_so() -> None:
    with pytest.raises(ValueError, match=r"^compare\(\) needs a timezone-aware 'now' \(UTC\)$"):
        compare(db_frame([]), stripe_transfers_frame([]), now=NOW.replace(tzinfo=None))


def test_an_unknown_recorded_amount_is_nothing_recorded() -> None:
    frame = db_frame([pending_row(1, reversal_target=600)])
    frame["db_amount_reversed"] = pd.array([None], dtype="Int64")
    snapshots = [snapshot("tr_1", reversals=[reversal("trr_1", 1, seller_transfer_id=1)])]

    found = compare(frame, stripe_transfers_frame(snapshots), now=NOW)

    assert _categories(found) == [["partial_reversal_unrecorded", "1"]]
