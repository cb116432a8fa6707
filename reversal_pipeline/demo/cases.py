"""What goes wrong on purpose, so the operator sees each case in the UI and the summary.

``plant_operator_cases`` runs before the job: the cases the reversal job
itself must handle. ``plant_drift`` runs after it, before reconciliation:
one disagreement between the database and Stripe per drift category. Every
planted row's ``updated_at`` is then moved two hours back, past
reconciliation's grace window, as if the drift had happened earlier.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers as st
from reversal_pipeline.demo.marketplace import DemoTransfer, Marketplace
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorClient
from reversal_pipeline.stripe_emulator.state import new_id

FLAKY_500S = 12


@dataclass
class PlantedCases:
    """Row ids per planted case, for the summary and the tests."""

    cases: dict[str, list[int]] = field(default_factory=dict)

    def add(self, case: str, row_id: int) -> None:
        self.cases.setdefault(case, []).append(row_id)


def _insert_row(connection: sa.Connection, day: date, **values: object) -> int:
    transferred_at = datetime(day.year, day.month, day.day, 15, tzinfo=UTC)
    base: dict[str, object] = {
        "seller_id": "seller_900",
        "stripe_account_id": "acct_demo900",
        "amount": 4_200,
        "currency": "usd",
        "status": "completed",
        "transferred_at": transferred_at,
    }
    return connection.execute(
        sa.insert(st).values(**{**base, **values}).returning(st.c.id)
    ).scalar_one()


def plant_operator_cases(
    engine: sa.Engine, control: EmulatorClient, market: Marketplace, rng: random.Random
) -> PlantedCases:
    """Out-of-band reversal, unknown transfer id, malformed row, lost response, flaky 500s."""
    planted = PlantedCases()
    refunded = [t for t in market.transfers if t.order_id in set(market.refunded_orders)]
    out_of_band, lost = rng.sample(refunded, 2)
    # Support reversed this one from the Dashboard before the job got to it.
    control.reverse_transfer(
        out_of_band.stripe_transfer_id, metadata={"reason": "support ticket 4711"}
    )
    planted.add("out_of_band_reversal", out_of_band.id)
    # The reply to this reversal is lost after Stripe commits it.
    control.add_script(respond="lost", method="POST", transfer_id=lost.stripe_transfer_id)
    planted.add("lost_response", lost.id)
    # Then a stretch of 500s: the next reversals fail and are retried after backoff.
    control.add_script(respond=500, method="POST", path_prefix="/v1/transfers/", times=FLAKY_500S)
    with engine.begin() as connection:
        unknown = _insert_row(
            connection,
            market.days[0],
            order_id="ord_case_unknown_transfer",
            stripe_transfer_id=new_id("tr_"),  # never created at Stripe: wrong account?
        )
        malformed = _insert_row(
            connection,
            market.days[1 % len(market.days)],
            order_id="ord_case_malformed_row",
            stripe_transfer_id=" TR-0042 (pasted from a spreadsheet)",
        )
        for order_id in ("ord_case_unknown_transfer", "ord_case_malformed_row"):
            request_reversal(connection, refund_id=f"re_{order_id}", order_id=order_id)
    planted.add("unknown_transfer_id", unknown)
    planted.add("malformed_row", malformed)
    return planted


def plant_drift(
    engine: sa.Engine,
    control: EmulatorClient,
    market: Marketplace,
    planted: PlantedCases,
    rng: random.Random,
) -> None:
    """At least one finding of each reconciliation category."""
    refunded = set(market.refunded_orders)
    orders = market.by_order()
    candidates = [
        t for t in market.transfers if t.order_id not in refunded and len(orders[t.order_id]) == 1
    ]
    picks = iter(rng.sample(candidates, 8))
    now = datetime.now(UTC)

    def pick(case: str) -> DemoTransfer:
        transfer = next(picks)
        planted.add(case, transfer.id)
        return transfer

    def reversed_row(t: DemoTransfer, reversal_id: str) -> dict[str, object]:
        return {
            "status": "reversed",
            "stripe_reversal_id": reversal_id,
            "reversal_requested_at": now - timedelta(days=1),
            "reversed_at": now - timedelta(hours=20),
        }

    changes: dict[int, dict[str, object]] = {}
    # The database says reversed; Stripe has no reversal at all.
    t = pick("db_reversed_stripe_not")
    changes[t.id] = reversed_row(t, new_id("trr_"))
    # Two reversals carry the same seller transfer id (a double reversal).
    t = pick("over_reversed")
    first = control.reverse_transfer(
        t.stripe_transfer_id, amount=t.amount // 2, metadata={"seller_transfer_id": str(t.id)}
    )
    control.reverse_transfer(
        t.stripe_transfer_id,
        amount=t.amount - t.amount // 2,
        metadata={"seller_transfer_id": str(t.id)},
    )
    changes[t.id] = reversed_row(t, first["id"])
    # Reversed at Stripe, but the database recorded another reversal id.
    t = pick("reversal_id_mismatch")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"seller_transfer_id": str(t.id)})
    changes[t.id] = reversed_row(t, new_id("trr_"))
    # The job gave up, yet someone reversed it at Stripe.
    t = pick("stripe_reversed_db_failed")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"reason": "manual, Dashboard"})
    changes[t.id] = {
        "status": "permanently_failed",
        "reversal_requested_at": now - timedelta(days=2),
        "error_message": "gave up after 8 attempts: HTTP 500 (demo)",
    }
    # Pending in the database (next try tomorrow), already reversed at Stripe.
    t = pick("stripe_reversed_db_pending")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"reason": "manual, Dashboard"})
    changes[t.id] = {
        "status": "reversal_pending",
        "reversal_requested_at": now - timedelta(hours=3),
        "next_retry_at": now + timedelta(hours=20),
        "retry_count": 3,
    }
    # Reversed at Stripe although no refund ever asked for it.
    t = pick("reversed_without_request")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"reason": "fat finger"})
    # The row's amount differs from the transfer's.
    t = pick("amount_or_currency_mismatch")
    changes[t.id] = {"amount": t.amount + 100}
    # Pending for eight days, its retry long overdue.
    t = pick("stuck_pending")
    changes[t.id] = {
        "status": "reversal_pending",
        "reversal_requested_at": now - timedelta(days=8),
        "next_retry_at": now - timedelta(days=2),
        "retry_count": 5,
    }
    # A transfer at Stripe that the database never recorded.
    day = market.days[-1]
    control.create_transfer(
        amount=12_345,
        currency="usd",
        destination="acct_demo999",
        created=int(datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp()),
        metadata={"order_id": "ord_never_saved"},
    )
    with engine.begin() as connection:
        for row_id, values in changes.items():
            connection.execute(sa.update(st).where(st.c.id == row_id).values(**values))
        # A row pointing at a transfer Stripe does not have (missing_at_stripe).
        planted.add(
            "missing_at_stripe",
            _insert_row(
                connection,
                market.days[-1],
                order_id="ord_case_missing_at_stripe",
                stripe_transfer_id=new_id("tr_"),
            ),
        )
    planted.cases["unknown_to_db"] = []


def backdate_changes(engine: sa.Engine, hours: float = 2.0) -> None:
    """Move every row's ``updated_at`` back, as if the demo's history had happened earlier.

    ``updated_at`` is kept by a trigger, so it is switched off inside this one
    transaction (the demo created the table, so it owns it); without this,
    every planted drift would be inside reconciliation's grace window.
    """
    with engine.begin() as connection:
        connection.execute(
            sa.text("ALTER TABLE seller_transfers DISABLE TRIGGER trg_seller_transfers_updated_at")
        )
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET updated_at = updated_at - make_interval(secs => :s)"
            ),
            {"s": hours * 3600},
        )
        connection.execute(
            sa.text("ALTER TABLE seller_transfers ENABLE TRIGGER trg_seller_transfers_updated_at")
        )
