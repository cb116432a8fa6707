"""Refunds read from Stripe that name no order: kept, audited, resolved, never deleted.

``reversals.stripe_refunds`` puts a succeeded refund here when it cannot go
into ``refund_events`` (its charge names no order, its seller-transfer
metadata is wrong, or ``request_reversal`` refuses its values). Each row is
open (``resolved_at`` NULL) until a later pass places the refund or the
application records it; every change writes ``unplaced_stripe_refund_history``
in the same transaction (migration 0011). ``no_unplaced_stripe_refunds``
(ERROR) names the open ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from reversal_pipeline.db.tables import (
    refund_events,
    unplaced_stripe_refund_history,
    unplaced_stripe_refunds,
)

if TYPE_CHECKING:
    from reversal_pipeline.stripe.models import RefundSnapshot

ACTOR = "stripe_refunds"


class UnplacedReason(StrEnum):
    """Why a succeeded refund could not go into ``refund_events`` (migration 0011)."""

    NO_CHARGE = "no_charge"
    NO_ORDER = "no_order"
    BAD_SELLER_TRANSFER = "bad_seller_transfer"
    REFUSED = "refused"


def record_unplaced(
    connection: sa.Connection,
    refund: RefundSnapshot,
    reason: UnplacedReason,
    detail: str,
    run_id: str | None,
) -> bool:
    """Keep a refund that names no order; True when it is new. Audited in the same transaction."""
    inserted = connection.execute(
        pg_insert(unplaced_stripe_refunds)
        .values(
            refund_id=refund.id,
            charge_id=refund.charge_id,
            amount=refund.amount,
            currency=refund.currency.lower(),
            reason=reason.value,
            detail=detail,
        )
        .on_conflict_do_nothing(index_elements=["refund_id"])
        .returning(unplaced_stripe_refunds.c.id)
    ).scalar()
    if inserted is None:
        return False
    connection.execute(
        sa.insert(unplaced_stripe_refund_history).values(
            unplaced_refund_id=inserted,
            change="first_seen",
            detail=f"{reason}: {detail}",
            run_id=run_id,
            actor=ACTOR,
        )
    )
    return True


def resolve_unplaced(
    connection: sa.Connection, refund_id: str, resolution: str, run_id: str | None
) -> int:
    """Close the open unplaced row of a refund now in ``refund_events``; audited."""
    resolved = connection.execute(
        sa.update(unplaced_stripe_refunds)
        .where(
            unplaced_stripe_refunds.c.refund_id == refund_id,
            unplaced_stripe_refunds.c.resolved_at.is_(None),
        )
        .values(resolved_at=sa.func.now(), resolution=resolution)
        .returning(unplaced_stripe_refunds.c.id)
    ).scalar()
    if resolved is None:
        return 0
    connection.execute(
        sa.insert(unplaced_stripe_refund_history).values(
            unplaced_refund_id=resolved,
            change="resolved",
            detail=resolution,
            run_id=run_id,
            actor=ACTOR,
        )
    )
    return 1


def resolve_received(connection: sa.Connection, run_id: str | None) -> int:
    """Close open unplaced refunds that reached ``refund_events`` another way (the webhook)."""
    received = connection.execute(
        sa.select(unplaced_stripe_refunds.c.refund_id, refund_events.c.order_id)
        .join(refund_events, refund_events.c.refund_id == unplaced_stripe_refunds.c.refund_id)
        .where(unplaced_stripe_refunds.c.resolved_at.is_(None))
        .with_for_update(of=unplaced_stripe_refunds, skip_locked=True)
    ).all()
    return sum(
        resolve_unplaced(connection, row.refund_id, f"received for order {row.order_id}", run_id)
        for row in received
    )


def list_unplaced(connection: sa.Connection) -> list[dict[str, object]]:
    """Open unplaced refunds, oldest first: what ``no_unplaced_stripe_refunds`` names."""
    rows = connection.execute(
        sa.select(
            unplaced_stripe_refunds.c.refund_id,
            unplaced_stripe_refunds.c.charge_id,
            unplaced_stripe_refunds.c.amount,
            unplaced_stripe_refunds.c.currency,
            unplaced_stripe_refunds.c.reason,
            unplaced_stripe_refunds.c.detail,
            unplaced_stripe_refunds.c.first_seen_at,
        )
        .where(unplaced_stripe_refunds.c.resolved_at.is_(None))
        .order_by(unplaced_stripe_refunds.c.first_seen_at, unplaced_stripe_refunds.c.id)
    ).all()
    return [dict(row._mapping) for row in rows]
