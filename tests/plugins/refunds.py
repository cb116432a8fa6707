"""Refunds as the tests make them: a paid-out order, a refund from the webhook or at Stripe.

Plain builders (no fixtures), shared by the partial-refund tests and the
Stripe refunds intake tests, which each repeated them. Everything is real: the
rows are in the test database, the transfers, charges and refunds at the
emulator, and a webhook refund goes through ``request_reversal`` as the
application's handler would call it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from reversal_pipeline.reversals.intake import (
    IntakeSummary,
    process_refund_events,
    request_reversal,
)
from reversal_pipeline.reversals.refund_policy import PartialRefundPolicy
from reversal_pipeline.stripe_emulator import EmulatorClient
from tests.plugins.marketplace import SeededRow, seed_rows


def paid_order(
    engine: sa.Engine, control: EmulatorClient, amounts: list[int], order_id: str
) -> list[SeededRow]:
    """A paid-out order: one completed seller transfer per amount, each real at the emulator."""
    return [
        seed_rows(
            engine,
            control,
            1,
            status="completed",
            amount=amount,
            order_id=order_id,
            seller_id=f"seller_{i}",
        )[0]
        for i, amount in enumerate(amounts)
    ]


def webhook_refund(engine: sa.Engine, refund_id: str, order_id: str, **refund: Any) -> None:
    """The application's webhook handler recording a refund (``request_reversal``)."""
    with engine.begin() as connection:
        request_reversal(connection, refund_id=refund_id, order_id=order_id, **refund)


def take_in(
    engine: sa.Engine, policy: PartialRefundPolicy = PartialRefundPolicy.REFUSE
) -> IntakeSummary:
    """One intake pass over the inbox (what the job does before it claims rows)."""
    return process_refund_events(engine, run_id="intake", policy=policy)


def refund_taken_in(
    engine: sa.Engine, refund_id: str, order_id: str, **refund: Any
) -> IntakeSummary:
    """A webhook refund, then an intake pass: its allocation is done, nothing sent yet."""
    webhook_refund(engine, refund_id, order_id, **refund)
    return take_in(engine)


def stripe_refund(
    control: EmulatorClient,
    order_id: str | None,
    charge_amount: int = 10_000,
    currency: str = "usd",
    **refund: Any,
) -> dict[str, Any]:
    """A refund made at Stripe (the Dashboard: no webhook) of a new charge of ``order_id``.

    The charge names its order by ``transfer_group``; ``None`` makes a charge
    that names no order.
    """
    charge = control.create_charge(charge_amount, currency, transfer_group=order_id)
    return control.create_refund(charge["id"], **refund)


def reversals_at_stripe(control: EmulatorClient, transfer_id: str | None) -> list[dict[str, Any]]:
    """The transfer's reversals as the emulator holds them, newest first."""
    return control.get_transfer(str(transfer_id))["reversals"]


def refund_event(engine: sa.Engine, refund_id: str) -> dict[str, Any]:
    """The inbox row of one refund."""
    with engine.connect() as connection:
        return dict(
            connection.execute(
                sa.text("SELECT * FROM refund_events WHERE refund_id = :r"), {"r": refund_id}
            )
            .mappings()
            .one()
        )
