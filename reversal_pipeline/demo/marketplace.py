"""A few days of a marketplace: sellers paid by Connect transfers, some orders refunded.

Each transfer is created at the emulator with ``created`` on its day and
stored in ``seller_transfers`` with the same id and ``transferred_at``, as
the application would have done (``created_at`` too: the row is written when
the transfer is made, so ``show`` never lists a row created after its own
later changes). A tenth of the orders have two sellers, so one refund
reverses two transfers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorClient

#: currency -> (weight, smallest, largest amount in minor units). jpy has no minor unit.
CURRENCIES: dict[str, tuple[int, int, int]] = {
    "usd": (50, 500, 40_000),
    "eur": (20, 500, 30_000),
    "gbp": (12, 500, 25_000),
    "jpy": (10, 500, 50_000),
    "cad": (8, 500, 30_000),
}


@dataclass(frozen=True)
class DemoTransfer:
    """One seeded seller transfer, as both sides know it."""

    id: int
    order_id: str
    seller_id: str
    stripe_transfer_id: str
    amount: int
    currency: str
    day: date
    transferred_at: datetime


@dataclass
class Marketplace:
    days: list[date]
    transfers: list[DemoTransfer]
    refunded_orders: list[str]
    other_payouts: int  # pending / failed payouts: no transfer yet, nothing to reverse

    def by_order(self) -> dict[str, list[DemoTransfer]]:
        orders: dict[str, list[DemoTransfer]] = {}
        for transfer in self.transfers:
            orders.setdefault(transfer.order_id, []).append(transfer)
        return orders


def demo_days(count: int, today: date | None = None) -> list[date]:
    """The ``count`` UTC days before today, oldest first (complete days, ready to reconcile)."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=count - i) for i in range(count)]


def seed_marketplace(
    engine: sa.Engine,
    control: EmulatorClient,
    *,
    days: list[date],
    transfers: int,
    sellers: int,
    rng: random.Random,
) -> Marketplace:
    """Create ``transfers`` completed transfers across ``sellers`` sellers over ``days``."""
    names = list(CURRENCIES)
    weights = [CURRENCIES[c][0] for c in names]
    seller_currency = {f"seller_{i:03d}": rng.choices(names, weights)[0] for i in range(sellers)}
    seller_ids = list(seller_currency)
    specs: list[dict[str, object]] = []
    rows: list[dict[str, Any]] = []
    order_number = 0
    while len(specs) < transfers:
        order_number += 1
        day = days[len(specs) * len(days) // transfers]
        created = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(86_400)
        )
        order_id = f"ord_{day:%Y%m%d}_{order_number:05d}"
        for seller in rng.sample(seller_ids, 2 if rng.random() < 0.1 else 1):
            currency = seller_currency[seller]
            _, low, high = CURRENCIES[currency]
            amount = rng.randrange(low, high)
            account = f"acct_demo{seller[-3:]}"
            specs.append(
                {
                    "amount": amount,
                    "currency": currency,
                    "destination": account,
                    "created": int(created.timestamp()),
                    "metadata": {"order_id": order_id, "seller_id": seller},
                }
            )
            rows.append(
                {
                    "order_id": order_id,
                    "seller_id": seller,
                    "stripe_account_id": account,
                    "amount": amount,
                    "currency": currency,
                    "status": "completed",
                    "transferred_at": created,
                    "created_at": created,
                }
            )
    transfer_ids = control.create_transfers(specs, returning="ids")
    for row, transfer_id in zip(rows, transfer_ids, strict=True):
        row["stripe_transfer_id"] = transfer_id
    # Payouts the application has not made (pending) or could not make (failed):
    # they have no transfer, so a refund of their order has nothing to reverse.
    others = [
        {
            "order_id": f"ord_unpaid_{i:03d}",
            "seller_id": rng.choice(seller_ids),
            "amount": rng.randrange(500, 9_000),
            "currency": "usd",
            "status": "pending" if i % 2 else "failed",
        }
        for i in range(max(2, transfers // 50))
    ]
    with engine.begin() as connection:
        ids = (
            connection.execute(sa.insert(seller_transfers).returning(seller_transfers.c.id), rows)
            .scalars()
            .all()
        )
        connection.execute(sa.insert(seller_transfers), others)
    seeded = [
        DemoTransfer(
            row_id,
            str(row["order_id"]),
            str(row["seller_id"]),
            str(row["stripe_transfer_id"]),
            int(row["amount"]),
            str(row["currency"]),
            row["transferred_at"].date(),
            row["transferred_at"],
        )
        for row_id, row in zip(ids, rows, strict=True)
    ]
    return Marketplace(days, seeded, [], len(others))


def refund_orders(
    engine: sa.Engine, market: Marketplace, orders: list[str], *, prefix: str
) -> None:
    """Customers' refunds succeeded: the webhook handler records each in the inbox."""
    with engine.begin() as connection:
        for n, order_id in enumerate(orders):
            request_reversal(connection, refund_id=f"re_{prefix}_{n:04d}", order_id=order_id)
    market.refunded_orders.extend(orders)
