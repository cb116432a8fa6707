"""``close-refund-event``: an operator closes an open refund event that has nothing to reverse.

Some refunds never get a paid seller transfer (an order sold by the platform
itself, a test order, a payout settled outside this application). Left open,
such an event keeps ``no_refund_events_past_window`` red for good, and an
alert nobody can clear stops being read. Closing one is a person's decision,
so it takes a reason, is written to ``refund_event_history`` with the state
change, and is refused while the order has a ``completed`` transfer: that
money must be reversed, not waved through. A partial refund intake refused
(``needs_scope``, ``over_refund``, ``currency_mismatch``) is the exception: it
concerns part of the order, and is closed once a person has placed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from reversal_pipeline.db.statuses import RefundOutcome, TransferStatus
from reversal_pipeline.db.tables import refund_event_history, refund_events, seller_transfers
from reversal_pipeline.errors import OperatorInputError

ACTOR = "operator"


@dataclass(frozen=True)
class ClosedEvent:
    refund_id: str
    order_id: str
    outcome_before: str | None


def close_refund_event(engine: sa.Engine, *, refund_id: str, reason: str) -> ClosedEvent:
    """Open event -> ``closed_by_operator``, audited; refuses anything else, changing nothing."""
    with engine.begin() as connection:
        event = connection.execute(
            sa.select(
                refund_events.c.id,
                refund_events.c.order_id,
                refund_events.c.outcome,
                refund_events.c.processed_at,
            )
            .where(refund_events.c.refund_id == refund_id)
            .with_for_update()
        ).first()
        if event is None:
            raise OperatorInputError(f"no refund event with refund_id {refund_id!r}")
        if event.processed_at is not None:
            raise OperatorInputError(
                f"refund event {refund_id} is already closed ({event.outcome}); nothing changed"
            )
        paid = (
            connection.execute(
                sa.select(seller_transfers.c.id)
                .where(
                    seller_transfers.c.order_id == event.order_id,
                    seller_transfers.c.status == TransferStatus.COMPLETED.value,
                )
                .order_by(seller_transfers.c.id)
                .with_for_update()
            )
            .scalars()
            .all()
        )
        # A refused partial refund (issue 17) concerns part of the order: once a person
        # has placed it (``adjust``), the order's other paid transfers owe nothing for it.
        refused = event.outcome is not None and RefundOutcome(event.outcome).refused
        if paid and not refused:
            raise OperatorInputError(
                f"order {event.order_id} of refund {refund_id} has completed transfer(s) "
                f"{', '.join(map(str, paid))} to reverse: run reversal_job, do not close it; "
                "nothing changed"
            )
        detail = f"closed by an operator: {reason}"
        connection.execute(
            sa.update(refund_events)
            .where(refund_events.c.id == event.id)
            .values(
                processed_at=sa.func.now(),
                outcome=RefundOutcome.CLOSED_BY_OPERATOR.value,
                outcome_detail=detail,
            )
        )
        connection.execute(
            sa.insert(refund_event_history).values(
                refund_event_id=event.id,
                outcome_before=event.outcome,
                outcome_after=RefundOutcome.CLOSED_BY_OPERATOR.value,
                closed=True,
                detail=detail,
                actor=ACTOR,
            )
        )
    return ClosedEvent(refund_id, event.order_id, event.outcome)
