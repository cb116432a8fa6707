"""Builders shared by the reconciliation tests: rows, Stripe snapshots, frames.

They live in a named module (not a conftest) because they are plain functions the tests
call with the one field that matters to the scenario; everything else takes
a value that is clean on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.reconciliation.compare import compare
from reversal_pipeline.reconciliation.frames import (
    DB_FRAME_COLUMNS,
    ID_DTYPE,
    UTC_DTYPE,
    stripe_transfers_frame,
)
from reversal_pipeline.stripe.models import ReversalRecord, TransferSnapshot

DAY = date(2026, 11, 20)
DAY_START = datetime(2026, 11, 20, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=2)  # outside any grace period used in the tests


def db_row(seller_transfer_id: int, **overrides: Any) -> dict[str, Any]:
    """A ``completed`` row of DAY whose Stripe transfer is ``tr_<id>`` for 10.00 EUR."""
    row: dict[str, Any] = {
        "seller_transfer_id": seller_transfer_id,
        "stripe_transfer_id": f"tr_{seller_transfer_id}",
        "stripe_account_id": "acct_seller",
        "amount": 1000,
        "currency": "eur",
        "status": "completed",
        "stripe_reversal_id": None,
        "transferred_at": DAY_START + timedelta(hours=1),
        "next_retry_at": None,
        "reversal_requested_at": None,
        "updated_at": LONG_AGO,
    }
    row.update(overrides)
    return row


def reversed_row(seller_transfer_id: int, **overrides: Any) -> dict[str, Any]:
    """A row reversed by the job with reversal ``trr_<id>``."""
    values = {
        "status": "reversed",
        "stripe_reversal_id": f"trr_{seller_transfer_id}",
        "reversal_requested_at": DAY_START + timedelta(hours=5),
    }
    return db_row(seller_transfer_id, **{**values, **overrides})


def _with_target(row: Mapping[str, Any]) -> dict[str, Any]:
    """Issue 17's columns as the database fills them when a row does not say."""
    on_its_way_back = row["status"] in ("reversal_pending", "reversed", "permanently_failed")
    return {
        "reversal_target": row["amount"] if on_its_way_back else 0,
        "db_amount_reversed": row["amount"] if row["status"] == "reversed" else 0,
        **row,
    }


def db_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A frame with the columns and dtypes ``frames.db_transfers_frame`` returns."""
    frame = pd.DataFrame([_with_target(row) for row in rows], columns=list(DB_FRAME_COLUMNS))
    return frame.astype(
        {
            "reversal_target": "int64",
            "db_amount_reversed": "int64",
            "seller_transfer_id": "int64",
            "stripe_transfer_id": ID_DTYPE,
            "stripe_account_id": "category",
            "amount": "int64",
            "currency": "category",
            "status": "category",
            "stripe_reversal_id": ID_DTYPE,
            "transferred_at": UTC_DTYPE,
            "next_retry_at": UTC_DTYPE,
            "reversal_requested_at": UTC_DTYPE,
            "updated_at": UTC_DTYPE,
        }
    )


def reversal(
    reversal_id: str,
    amount: int = 1000,
    *,
    seller_transfer_id: int | None = None,
    transfer_id: str = "tr_x",
    created: datetime | None = None,
) -> ReversalRecord:
    """A reversal; ours when it carries ``seller_transfer_id`` in its metadata."""
    metadata = {} if seller_transfer_id is None else {"seller_transfer_id": str(seller_transfer_id)}
    return ReversalRecord(
        id=reversal_id,
        transfer_id=transfer_id,
        amount=amount,
        currency="eur",
        created=created or DAY_START + timedelta(hours=6),
        metadata=metadata,
    )


def snapshot(
    transfer_id: str,
    amount: int = 1000,
    *,
    currency: str = "eur",
    reversals: Iterable[ReversalRecord] = (),
    created: datetime | None = None,
    destination: str | None = "acct_seller",
) -> TransferSnapshot:
    """A transfer of DAY as Stripe lists it, with totals derived from ``reversals``."""
    reversal_records = tuple(reversals)
    amount_reversed = sum(r.amount for r in reversal_records)
    return TransferSnapshot(
        id=transfer_id,
        amount=amount,
        currency=currency,
        destination=destination,
        created=created or DAY_START + timedelta(hours=1),
        amount_reversed=amount_reversed,
        reversed=amount_reversed >= amount,
        metadata={},
        reversals=reversal_records,
        livemode=False,
    )


def matching_snapshot(row: Mapping[str, Any], **overrides: Any) -> TransferSnapshot:
    """The Stripe transfer that agrees with ``row`` (reversed when the row is)."""
    reversals: tuple[ReversalRecord, ...] = ()
    if row["status"] == "reversed":
        reversals = (
            reversal(
                row["stripe_reversal_id"],
                row["amount"],
                seller_transfer_id=row["seller_transfer_id"],
                transfer_id=row["stripe_transfer_id"],
            ),
        )
    values: dict[str, Any] = {"currency": row["currency"], "reversals": reversals}
    return snapshot(row["stripe_transfer_id"], row["amount"], **{**values, **overrides})


def insert_rows(engine: sa.Engine, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert builder rows into ``seller_transfers``, ``updated_at`` included.

    The trigger that keeps ``updated_at`` fires on UPDATE only, so an insert
    can backdate it, as if the row had been written days before the run.
    """
    records = []
    for row in rows:
        record = {k: v for k, v in row.items() if k != "seller_transfer_id"}
        record["id"] = row["seller_transfer_id"]
        record["order_id"] = f"order_{row['seller_transfer_id']}"
        record["seller_id"] = "seller_1"
        if "db_amount_reversed" in record:  # the frame's name for the table's column
            record["amount_reversed"] = record.pop("db_amount_reversed")
        is_reversed = record["status"] == "reversed"
        record["reversed_at"] = DAY_START + timedelta(hours=6) if is_reversed else None
        records.append(record)
    with engine.begin() as connection:
        for record in records:  # one by one: rows may set different columns
            connection.execute(sa.insert(seller_transfers).values(**record))


def drift_findings_for(
    rows: Iterable[Mapping[str, Any]],
    snapshots: Iterable[TransferSnapshot],
    *,
    now: datetime = NOW,
) -> pd.DataFrame:
    """``compare`` of builder rows and snapshots, with the settings the tests assume.

    Grace 1 h, stuck after 1 h overdue or 3 days pending, high after 7 days.
    """
    return compare(
        db_frame(rows),
        stripe_transfers_frame(snapshots),
        now=now,
        grace_period=timedelta(hours=1),
        stuck_margin=timedelta(hours=1),
        stuck_max_age=timedelta(days=3),
        high_after=timedelta(days=7),
    )


def backdate_changes(engine: sa.Engine, ago: timedelta) -> None:
    """Every row last changed ``ago`` before now, as if written then (triggers off for this).

    With the default one-hour grace a row changed seconds before the run is
    work in progress; the drift the review found with the default
    configuration was on rows written long before the run.
    """
    with engine.begin() as connection:
        connection.execute(sa.text("SET LOCAL session_replication_role = replica"))
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET updated_at = :at, reconciliation_changed_at = :at"
            ),
            {"at": datetime.now(UTC) - ago},
        )


def update_row(engine: sa.Engine, row_id: int, **values: object) -> None:
    """A plain UPDATE of one row (the triggers stamp it changed now)."""
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE seller_transfers SET {assignments} WHERE id = :id"),
            {"id": row_id, **values},
        )
