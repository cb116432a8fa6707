"""``frames``: every column of both sides, value by value (written from mutation survivors).

The comparison reads these columns blindly, so a column that silently holds a
wrong value (a dropped microsecond, a null where Stripe had a value, an empty
string read as NULL) would turn into a wrong finding or a missed one.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.reconciliation.frames import (
    DB_FRAME_COLUMNS,
    STRIPE_FRAME_COLUMNS,
    db_rows_frame,
    db_transfers_frame,
    rows_without_transferred_at,
    stripe_transfers_frame,
)
from reversal_pipeline.stripe.models import ReversalRecord
from tests.reconciliation.builders import (
    DAY_END,
    DAY_START,
    NOW,
    db_row,
    insert_rows,
    reversal,
    snapshot,
)

PRECISE = DAY_START + timedelta(hours=3, microseconds=123_457)


def _stamp(value: object) -> pd.Timestamp:
    return pd.Timestamp(value)  # type: ignore[arg-type]


def test_every_stripe_column_of_a_transfer_with_reversals() -> None:
    reversals = [
        reversal("trr_old", 100, seller_transfer_id=5, created=DAY_START + timedelta(hours=2)),
        reversal("trr_new", 200, seller_transfer_id=5, created=DAY_START + timedelta(hours=4)),
        reversal("trr_foreign", 50, created=DAY_START + timedelta(hours=3)),
    ]
    listed = snapshot("tr_5", 1000, currency="usd", reversals=reversals, created=PRECISE)

    [row] = stripe_transfers_frame([listed]).to_dict("records")

    assert list(row) == list(STRIPE_FRAME_COLUMNS)
    epoch = int((DAY_START + timedelta(hours=4)).timestamp())
    assert row == {
        "transfer_id": "tr_5",
        "stripe_amount": 1000,
        "stripe_currency": "usd",
        "stripe_created": _stamp(PRECISE),
        "destination": "acct_seller",
        "livemode": False,
        "amount_reversed": 350,
        "transfer_reversed": False,
        "reversal_count": 3,
        "reversal_ids": "trr_new|trr_foreign|trr_old",
        "latest_reversal_id": "trr_new",
        "latest_reversal_at": _stamp(DAY_START + timedelta(hours=4)),
        "our_reversal_count_max": 2,
        "seller_transfer_ids_in_metadata": "5",
        "our_reversals": f"5:trr_new:{epoch}|5:trr_old:{epoch - 7200}",
    }


def test_a_transfer_without_reversals_has_zero_counts_and_no_reversal_fields() -> None:
    plain = snapshot("tr_1", created=PRECISE, destination=None)
    reversed_fully = snapshot("tr_2", reversals=[reversal("trr_2", 1000, seller_transfer_id=2)])

    frame = stripe_transfers_frame([plain, reversed_fully]).set_index("transfer_id")

    first = frame.loc["tr_1"]
    assert (first["reversal_count"], first["our_reversal_count_max"]) == (0, 0)
    assert (first["amount_reversed"], bool(first["transfer_reversed"])) == (0, False)
    for name in ("reversal_ids", "latest_reversal_id", "our_reversals", "destination"):
        assert pd.isna(first[name]), name
    assert pd.isna(first["seller_transfer_ids_in_metadata"])
    assert pd.isna(first["latest_reversal_at"])
    assert first["stripe_created"] == _stamp(PRECISE)
    assert bool(frame.loc["tr_2", "transfer_reversed"]) is True
    assert frame.loc["tr_2", "reversal_count"] == 1


def test_only_all_digit_metadata_ids_count_as_ours() -> None:
    def with_metadata(reversal_id: str, metadata: dict[str, str]) -> ReversalRecord:
        return ReversalRecord(
            id=reversal_id,
            transfer_id="tr_1",
            amount=10,
            currency="eur",
            created=DAY_START + timedelta(hours=1),
            metadata=metadata,
        )

    reversals = [
        with_metadata("trr_a", {"seller_transfer_id": "12a"}),
        with_metadata("trr_b", {"seller_transfer_id": ""}),
        with_metadata("trr_c", {"other": "7"}),
        with_metadata("trr_d", {}),
    ]

    [row] = stripe_transfers_frame([snapshot("tr_1", reversals=reversals)]).to_dict("records")

    assert row["our_reversal_count_max"] == 0
    assert pd.isna(row["seller_transfer_ids_in_metadata"])
    assert pd.isna(row["our_reversals"])
    assert row["reversal_count"] == 4


def test_a_transfer_listed_twice_is_kept_once_as_first_listed_with_a_fresh_index() -> None:
    """Pagination under concurrent writes can list a transfer again, changed since (here a
    reversal landed between the pages): one row per transfer id, not per distinct content,
    the first listing kept, and a fresh 0..n-1 index like any other listing's frame."""
    again = snapshot("tr_1", reversals=[reversal("trr_1", 300, transfer_id="tr_1")])
    listed = [snapshot("tr_1"), snapshot("tr_2"), again, snapshot("tr_3")]

    frame = stripe_transfers_frame(listed)

    assert frame["transfer_id"].tolist() == ["tr_1", "tr_2", "tr_3"]
    assert frame.index.tolist() == [0, 1, 2]
    assert frame["amount_reversed"].tolist() == [0, 0, 0]


def test_an_empty_listing_is_a_typed_empty_frame() -> None:
    frame = stripe_transfers_frame([])

    assert frame.empty
    assert list(frame.columns) == list(STRIPE_FRAME_COLUMNS)
    assert str(frame["stripe_created"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["stripe_amount"].dtype) == "int64"


def test_every_database_column_read_back_exactly(engine: sa.Engine) -> None:
    rows = [
        db_row(
            1,
            status="reversal_pending",
            stripe_reversal_id="",  # an empty string is not NULL
            transferred_at=PRECISE,
            next_retry_at=NOW + timedelta(microseconds=1),
            reversal_requested_at=NOW - timedelta(days=1, microseconds=999_999),
            updated_at=NOW - timedelta(hours=2),
            amount=2**40,
            currency="usd",
        ),
        db_row(2, transferred_at=DAY_START),  # the first instant of the day is the day's
        db_row(3, transferred_at=DAY_END - timedelta(microseconds=1)),
        db_row(4, transferred_at=DAY_END),  # the next day's
        db_row(5, transferred_at=DAY_START - timedelta(microseconds=1)),  # the previous day's
    ]
    insert_rows(engine, rows)

    with engine.connect() as connection:
        frame = db_transfers_frame(connection, DAY_START, DAY_END)

    by_id = frame.set_index("seller_transfer_id")
    assert sorted(by_id.index) == [1, 2, 3]
    first = by_id.loc[1]
    assert first["stripe_reversal_id"] == ""
    assert (first["amount"], first["currency"], first["status"]) == (
        2**40,
        "usd",
        "reversal_pending",
    )
    assert first["stripe_account_id"] == "acct_seller"
    assert first["transferred_at"] == _stamp(PRECISE)
    assert first["next_retry_at"] == _stamp(NOW + timedelta(microseconds=1))
    assert first["reversal_requested_at"] == _stamp(NOW - timedelta(days=1, microseconds=999_999))
    assert first["updated_at"] == _stamp(NOW - timedelta(hours=2))
    assert pd.isna(by_id.loc[2, "stripe_reversal_id"])
    assert pd.isna(by_id.loc[2, "next_retry_at"])
    assert by_id.loc[3, "transferred_at"] == _stamp(DAY_END - timedelta(microseconds=1))
    for name in ("currency", "status", "stripe_account_id"):
        assert isinstance(frame[name].dtype, pd.CategoricalDtype), name


def test_rows_without_transferred_at_are_only_those_with_a_transfer_id(engine: sa.Engine) -> None:
    # Row 3 keeps its transferred_at: a day's query reads it, so this one must not.
    insert_rows(
        engine, [db_row(1), db_row(2, status="pending", stripe_transfer_id=None), db_row(3)]
    )
    with engine.begin() as connection:  # a legacy row: the CHECK came later, NOT VALID
        connection.execute(sa.text("SET LOCAL session_replication_role = replica"))
        connection.execute(
            sa.text(
                "ALTER TABLE seller_transfers DROP CONSTRAINT chk_transfer_id_has_transferred_at"
            )
        )
        connection.execute(
            sa.text("UPDATE seller_transfers SET transferred_at = NULL WHERE id IN (1, 2)")
        )

    with engine.connect() as connection:
        frame = db_rows_frame(connection, rows_without_transferred_at())

    assert frame["seller_transfer_id"].tolist() == [1]
    assert list(frame.columns) == list(DB_FRAME_COLUMNS)
    assert pd.isna(frame.loc[0, "transferred_at"])
