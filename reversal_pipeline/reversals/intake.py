"""Intake: refund-succeeded events become rows due for reversal.

The application's webhook handler calls ``request_reversal`` when a refund
succeeds; it only writes to the ``refund_events`` inbox, so it is fast and
idempotent per ``refund_id`` (Stripe delivers webhooks at least once). The
job's first step, ``process_refund_events``, turns each unprocessed event
into state changes on that order's seller transfers. Every event ends with
an ``outcome``: one that changes nothing says why, so no refund is dropped
silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from reversal_pipeline.db.statuses import AttemptAction, RefundOutcome, TransferStatus
from reversal_pipeline.db.tables import refund_events, reversal_attempts, seller_transfers
from reversal_pipeline.errors import InvalidRowError

INTAKE_BATCH_SIZE = 500


@dataclass(frozen=True)
class RefundEventReceipt:
    """What ``request_reversal`` did: whether the event is new, and its inbox id."""

    refund_event_id: int
    refund_id: str
    order_id: str
    duplicate: bool


def request_reversal(
    connection: sa.Connection,
    *,
    refund_id: str,
    order_id: str,
    received_at: datetime | None = None,
) -> RefundEventReceipt:
    """Record a succeeded refund in the inbox; a repeated ``refund_id`` is a no-op.

    Runs in the caller's transaction so a webhook handler can commit it with
    its own writes. A duplicate with another ``order_id`` is refused: the same
    refund cannot belong to two orders, and guessing would reverse the wrong
    seller.
    """
    refund_id, order_id = (refund_id or "").strip(), (order_id or "").strip()
    if not refund_id or not order_id:
        raise InvalidRowError(
            f"refund event needs refund_id and order_id (got {refund_id!r}, {order_id!r})"
        )
    values: dict[str, object] = {"refund_id": refund_id, "order_id": order_id}
    if received_at is not None:
        values["received_at"] = received_at
    inserted = connection.execute(
        pg_insert(refund_events)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["refund_id"])
        .returning(refund_events.c.id)
    ).scalar()
    if inserted is not None:
        return RefundEventReceipt(inserted, refund_id, order_id, duplicate=False)
    existing = connection.execute(
        sa.select(refund_events.c.id, refund_events.c.order_id).where(
            refund_events.c.refund_id == refund_id
        )
    ).one()
    if existing.order_id != order_id:
        raise InvalidRowError(
            f"refund {refund_id} was already received for order {existing.order_id}, "
            f"not {order_id}: refusing to guess which seller to reverse"
        )
    return RefundEventReceipt(existing.id, refund_id, order_id, duplicate=True)


@dataclass
class IntakeSummary:
    """What one intake pass did, for the asset's metadata."""

    events_processed: int = 0
    rows_requested: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    unactioned: list[tuple[str, str, str]] = field(default_factory=list)  # refund, outcome, why


def process_refund_events(
    engine: sa.Engine, *, run_id: str | None, batch_size: int = INTAKE_BATCH_SIZE
) -> IntakeSummary:
    """Process every unprocessed refund event, one batch per transaction.

    ``FOR UPDATE SKIP LOCKED`` lets two runs share the inbox without both
    acting on one event.
    """
    summary = IntakeSummary()
    while True:
        with engine.begin() as connection:
            events = connection.execute(
                sa.select(refund_events.c.id, refund_events.c.refund_id, refund_events.c.order_id)
                .where(refund_events.c.processed_at.is_(None))
                .order_by(refund_events.c.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            for event in events:
                _process_one_event(connection, event, run_id, summary)
        if len(events) < batch_size:
            return summary


def _process_one_event(
    connection: sa.Connection, event: sa.Row, run_id: str | None, summary: IntakeSummary
) -> None:
    transfers = connection.execute(
        sa.select(seller_transfers.c.id, seller_transfers.c.status)
        .where(seller_transfers.c.order_id == event.order_id)
        .order_by(seller_transfers.c.id)
        .with_for_update()
    ).all()
    completed_ids = [t.id for t in transfers if t.status == TransferStatus.COMPLETED]
    if not transfers:
        outcome = RefundOutcome.UNKNOWN_ORDER
        detail = f"no seller transfer has order_id {event.order_id!r}; nothing to reverse"
    elif not completed_ids:
        outcome = RefundOutcome.NOTHING_TO_REVERSE
        states = ", ".join(f"{t.id}: {t.status}" for t in transfers)
        detail = (
            f"order {event.order_id} has no completed transfer to reverse ({states}); "
            "a pending payout must be stopped by the application, not reversed"
        )
    else:
        outcome = RefundOutcome.REQUESTED
        detail = f"reversal requested for seller transfer(s) {', '.join(map(str, completed_ids))}"
        _request_rows(connection, completed_ids, event.refund_id, run_id)
        summary.rows_requested += len(completed_ids)
    connection.execute(
        sa.update(refund_events)
        .where(refund_events.c.id == event.id)
        .values(processed_at=sa.func.now(), outcome=outcome.value, outcome_detail=detail)
    )
    summary.events_processed += 1
    summary.outcomes[outcome.value] = summary.outcomes.get(outcome.value, 0) + 1
    if outcome != RefundOutcome.REQUESTED:
        summary.unactioned.append((event.refund_id, outcome.value, detail))


def _request_rows(
    connection: sa.Connection, row_ids: list[int], refund_id: str, run_id: str | None
) -> None:
    connection.execute(
        sa.update(seller_transfers)
        .where(seller_transfers.c.id.in_(row_ids))
        .values(
            status=TransferStatus.REVERSAL_PENDING.value,
            next_retry_at=sa.func.now(),
            reversal_requested_at=sa.func.now(),
            retry_count=0,
            error_message=None,
        )
    )
    connection.execute(
        sa.insert(reversal_attempts),
        [
            {
                "seller_transfer_id": row_id,
                "action": AttemptAction.INTAKE.value,
                "outcome": "reversal_requested",
                "status_before": TransferStatus.COMPLETED.value,
                "status_after": TransferStatus.REVERSAL_PENDING.value,
                "message": f"refund {refund_id} succeeded",
                "run_id": run_id,
                "actor": "refund_intake",
            }
            for row_id in row_ids
        ],
    )
