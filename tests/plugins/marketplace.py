"""Seller transfers that exist both in the database and at the Stripe emulator.

Plain helpers (no fixtures): tests build exactly the rows a scenario needs.
``advance_clock`` moves the database's notion of "later" by shifting the
timestamps the job compares with ``now()``, so tests advance time instead of
sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.stripe_emulator import EmulatorClient


@dataclass(frozen=True)
class SeededRow:
    id: int
    stripe_transfer_id: str | None
    amount: int
    currency: str
    order_id: str


def seed_rows(
    engine: sa.Engine,
    control: EmulatorClient | None,
    count: int,
    *,
    status: str = "reversal_pending",
    amount: int = 1_000,
    currency: str = "usd",
    transferred_at: datetime | None = None,
    order_prefix: str = "ord",
    **overrides: Any,
) -> list[SeededRow]:
    """``count`` rows, each with a real transfer at the emulator (unless overridden)."""
    transferred_at = transferred_at or datetime(2026, 11, 20, 12, tzinfo=UTC)
    transfer_ids: list[str | None]
    if "stripe_transfer_id" in overrides:
        transfer_ids = [overrides.pop("stripe_transfer_id")] * count
    else:
        assert control is not None
        transfer_ids = list(
            control.create_transfers(
                [
                    {
                        "amount": amount,
                        "currency": currency,
                        "destination": f"acct_seller{i % 7}",
                        "created": int(transferred_at.timestamp()),
                    }
                    for i in range(count)
                ],
                returning="ids",
            )
        )
    pending = status == "reversal_pending"
    now = datetime.now(UTC)
    values = [
        {
            "order_id": f"{order_prefix}_{i}_{transfer_ids[i]}",
            "seller_id": f"seller_{i % 7}",
            "stripe_account_id": f"acct_seller{i % 7}",
            "stripe_transfer_id": transfer_ids[i],
            "amount": amount,
            "currency": currency,
            "status": status,
            "transferred_at": transferred_at,
            "next_retry_at": now if pending else None,
            "reversal_requested_at": now if pending else None,
            **overrides,
        }
        for i in range(count)
    ]
    with engine.begin() as connection:
        ids = (
            connection.execute(sa.insert(seller_transfers).returning(seller_transfers.c.id), values)
            .scalars()
            .all()
        )
    return [
        SeededRow(row_id, transfer_ids[i], amount, currency, values[i]["order_id"])
        for i, row_id in enumerate(ids)
    ]


def advance_clock(engine: sa.Engine, seconds: float) -> None:
    """Make ``seconds`` pass for the job: every future deadline comes that much closer."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET"
                " next_retry_at = next_retry_at - make_interval(secs => :s),"
                " claim_expires_at = claim_expires_at - make_interval(secs => :s)"
                " WHERE next_retry_at IS NOT NULL OR claim_expires_at IS NOT NULL"
            ),
            {"s": seconds},
        )


def row_state(engine: sa.Engine, row_id: int) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(
            connection.execute(sa.select(seller_transfers).where(seller_transfers.c.id == row_id))
            .mappings()
            .one()
        )


def attempts_of(engine: sa.Engine, row_id: int) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(r)
            for r in connection.execute(
                sa.text(
                    "SELECT * FROM reversal_attempts WHERE seller_transfer_id = :id ORDER BY id"
                ),
                {"id": row_id},
            ).mappings()
        ]
