"""Intake: refund-succeeded events become rows due for reversal.

The application's webhook handler calls ``request_reversal`` when a refund
succeeds; it only writes to the ``refund_events`` inbox, so it is fast and
idempotent per ``refund_id`` (Stripe delivers webhooks at least once). The
job's first step, ``process_refund_events``, turns each event into state
changes on that order's seller transfers.

A refund can arrive before the application has written its order's seller
transfer, or while that payout is still ``pending``. Such an event is not
closed: it stays open (``processed_at`` NULL) with an outcome saying what it
waits for, and is evaluated again when its order's transfers change
(``open_event_is_actionable``, also what ``refund_events_sensor`` watches).
An order with some transfers paid and some pending has the paid ones
requested at once and stays open for the rest: a transfer is requested only
from ``completed``, under a row lock, so each is requested once however often
the event is looked at. Only two outcomes close an event: every paid transfer
is being reversed (``reversal_requested``), or every transfer failed and
nothing was paid (``payout_failed``). An event still waiting past
``REVERSAL_REFUND_OPEN_DAYS`` becomes ``expired_unmatched``: still open (a
late row is still reversed) and alerted by an ERROR check. Every outcome an
event goes through is written to ``refund_event_history`` in the same
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from reversal_pipeline.db.statuses import AttemptAction, RefundOutcome, TransferStatus
from reversal_pipeline.db.tables import (
    refund_event_history,
    refund_events,
    reversal_attempts,
    seller_transfers,
)
from reversal_pipeline.errors import InvalidRowError
from reversal_pipeline.reversals.intake_window import OPEN_DAYS_ENV, refund_open_window
from reversal_pipeline.reversals.open_events import past_window

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
    """What one intake pass did, for the asset's metadata and log."""

    events_processed: int = 0
    rows_requested: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    waiting: list[tuple[str, str, str]] = field(default_factory=list)  # refund, outcome, why
    newly_expired: list[tuple[str, str]] = field(default_factory=list)  # refund, why


# Transfers already on their way back: requested by this event earlier, or by
# another refund of the same order. Nothing more to do for them.
_ALREADY_REQUESTED = (
    TransferStatus.REVERSAL_PENDING,
    TransferStatus.REVERSED,
    TransferStatus.PERMANENTLY_FAILED,
)


def open_event_is_actionable() -> sa.ColumnElement[bool]:
    """An open, already evaluated event whose order changed so that a new look would act.

    That is: a transfer row now exists where there was none, one is
    ``completed`` (to request), or none is ``pending`` any more (to close).
    Correlated on ``refund_events``; shared with ``refund_events_sensor`` so
    the sensor wakes a run exactly when intake would do something.
    """
    of_order = sa.select(seller_transfers.c.id).where(
        seller_transfers.c.order_id == refund_events.c.order_id
    )
    return sa.and_(
        refund_events.c.processed_at.is_(None),
        refund_events.c.outcome.is_not(None),
        sa.exists(of_order),
        sa.or_(
            refund_events.c.outcome == RefundOutcome.WAITING_FOR_TRANSFER.value,
            sa.exists(of_order.where(seller_transfers.c.status == TransferStatus.COMPLETED.value)),
            ~sa.exists(of_order.where(seller_transfers.c.status == TransferStatus.PENDING.value)),
        ),
    )


def process_refund_events(
    engine: sa.Engine,
    *,
    run_id: str | None,
    batch_size: int = INTAKE_BATCH_SIZE,
    open_window: timedelta | None = None,
) -> IntakeSummary:
    """Evaluate every new event, every open one that became actionable, and newly expired ones.

    One batch per transaction, in id order (keyset), so each event is looked
    at once per pass even if it stays open. ``FOR UPDATE SKIP LOCKED`` lets
    two runs share the inbox without both acting on one event.
    """
    window = refund_open_window() if open_window is None else open_window
    summary = IntakeSummary()
    due = sa.and_(
        refund_events.c.processed_at.is_(None),
        sa.or_(
            refund_events.c.outcome.is_(None),
            open_event_is_actionable(),
            sa.and_(
                refund_events.c.outcome != RefundOutcome.EXPIRED_UNMATCHED.value,
                past_window(window),
            ),
        ),
    )
    after_id = 0
    while True:
        with engine.begin() as connection:
            events = connection.execute(
                sa.select(
                    refund_events.c.id,
                    refund_events.c.refund_id,
                    refund_events.c.order_id,
                    refund_events.c.outcome,
                    past_window(window).label("past_window"),
                )
                .where(due, refund_events.c.id > after_id)
                .order_by(refund_events.c.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True, of=refund_events)
            ).all()
            for event in events:
                _process_one_event(connection, event, run_id, summary, window)
        if len(events) < batch_size:
            return summary
        after_id = events[-1].id


def _process_one_event(
    connection: sa.Connection,
    event: sa.Row,
    run_id: str | None,
    summary: IntakeSummary,
    window: timedelta,
) -> None:
    transfers = connection.execute(
        sa.select(seller_transfers.c.id, seller_transfers.c.status)
        .where(seller_transfers.c.order_id == event.order_id)
        .order_by(seller_transfers.c.id)
        .with_for_update()
    ).all()
    completed = [t.id for t in transfers if t.status == TransferStatus.COMPLETED]
    pending = [t.id for t in transfers if t.status == TransferStatus.PENDING]
    already = [t.id for t in transfers if t.status in _ALREADY_REQUESTED]
    if completed:
        _request_rows(connection, completed, event.refund_id, run_id)
        summary.rows_requested += len(completed)
    requested_now = (
        [f"reversal requested now for seller transfer(s) {_ids(completed)}"] if completed else []
    )
    if not transfers:
        outcome = RefundOutcome.WAITING_FOR_TRANSFER
        detail = f"no seller transfer has order_id {event.order_id!r} yet; waiting for it"
    elif pending:
        outcome = RefundOutcome.WAITING_FOR_PAYOUT
        detail = "; ".join(
            [
                *requested_now,
                f"seller transfer(s) {_ids(pending)} of order {event.order_id} still pending "
                "(not paid out); waiting for each to complete or fail",
            ]
        )
    elif completed or already:
        outcome = RefundOutcome.REQUESTED
        earlier = [f"already requested earlier: {_ids(already)}"] if already else []
        detail = "; ".join([*requested_now, *earlier])
    else:
        outcome = RefundOutcome.PAYOUT_FAILED
        detail = (
            f"every seller transfer of order {event.order_id} failed "
            f"({_ids([t.id for t in transfers])}); "
            "nothing was paid out, nothing to reverse"
        )
    if not outcome.closes and event.past_window:
        outcome = RefundOutcome.EXPIRED_UNMATCHED
        detail = f"open longer than {window.days} day(s) ({OPEN_DAYS_ENV}); still {detail}"
        if event.outcome != RefundOutcome.EXPIRED_UNMATCHED:
            summary.newly_expired.append((event.refund_id, detail))
    elif not outcome.closes:
        summary.waiting.append((event.refund_id, outcome.value, detail))
    connection.execute(
        sa.update(refund_events)
        .where(refund_events.c.id == event.id)
        .values(
            processed_at=sa.func.now() if outcome.closes else None,
            outcome=outcome.value,
            outcome_detail=detail,
        )
    )
    if outcome != event.outcome or completed:
        connection.execute(
            sa.insert(refund_event_history).values(
                refund_event_id=event.id,
                outcome_before=event.outcome,
                outcome_after=outcome.value,
                closed=outcome.closes,
                seller_transfer_ids=completed,
                detail=detail,
                run_id=run_id,
                actor="refund_intake",
            )
        )
    summary.events_processed += 1
    summary.outcomes[outcome.value] = summary.outcomes.get(outcome.value, 0) + 1


def _ids(row_ids: list[int]) -> str:
    return ", ".join(map(str, row_ids))


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
