"""The database side's frame read from real PostgreSQL compares like the in-memory one.

Apart from ``test_compare.py`` so that the comparison's own tests need no
database (mutation testing runs them once per mutant).
"""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.reconciliation.compare import compare
from reversal_pipeline.reconciliation.frames import (
    DB_FRAME_COLUMNS,
    db_transfers_frame,
    stripe_transfers_frame,
)
from tests.reconciliation.builders import (
    DAY_END,
    DAY_START,
    NOW,
    db_frame,
    db_row,
    insert_rows,
    matching_snapshot,
    reversed_row,
)
from tests.reconciliation.test_compare import severities_by_category


def test_db_frame_from_postgres_compares_like_the_in_memory_one(engine: sa.Engine) -> None:
    rows = [
        db_row(1),
        reversed_row(2),
        db_row(3, transferred_at=DAY_END),  # next day: not read
        db_row(4, status="pending", stripe_transfer_id=None, stripe_account_id=None),
        db_row(5, amount=999),
    ]
    insert_rows(engine, rows)

    with engine.connect() as connection:
        frame = db_transfers_frame(connection, DAY_START, DAY_END)

    assert list(frame.columns) == list(DB_FRAME_COLUMNS)
    assert sorted(frame["seller_transfer_id"]) == [1, 2, 4, 5]
    expected_dtypes = db_frame([]).dtypes.astype(str).to_dict()
    assert frame.dtypes.astype(str).to_dict() | {"stripe_account_id": "category"} == (
        expected_dtypes | {"stripe_account_id": "category"}
    )
    snapshots = [matching_snapshot(row) for row in (rows[0], rows[1], db_row(5))]
    drift_findings = compare(frame, stripe_transfers_frame(snapshots), now=NOW)
    assert severities_by_category(drift_findings) == {"amount_or_currency_mismatch": "high"}


def test_db_frame_of_an_empty_day_is_empty_with_the_same_columns(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        frame = db_transfers_frame(connection, DAY_START, DAY_END)

    assert frame.empty
    assert list(frame.columns) == list(DB_FRAME_COLUMNS)
    assert compare(frame, stripe_transfers_frame([]), now=NOW).empty
