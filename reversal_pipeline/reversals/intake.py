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
nothing was paid (``payout_failed``).

Partial refunds (issue 17): an event may carry an ``amount`` (in the seller
transfer's currency) and a ``seller_transfer_id``. Each transfer keeps a
cumulative ``reversal_target``; intake only raises targets (whole order: to
the amount; scoped: by the refund; unscoped, one paid seller: that one;
several: ``REVERSAL_PARTIAL_REFUND_POLICY``) and the job sends the difference.
A refund that cannot be placed for sure (``needs_scope``, ``over_refund``,
``currency_mismatch``) changes nothing and stays open for a person. An event still waiting past
``REVERSAL_REFUND_OPEN_DAYS`` becomes ``expired_unmatched``: still open (a
late row is still reversed) and alerted by an ERROR check. Every outcome an
event goes through is written to ``refund_event_history`` in the same
transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from reversal_pipeline.db.statuses import (
    REFUSED_OUTCOMES,
    AttemptAction,
    RefundOutcome,
    TransferStatus,
)
from reversal_pipeline.db.tables import (
    refund_allocations,
    refund_event_history,
    refund_events,
    reversal_attempts,
    seller_transfers,
)
from reversal_pipeline.errors import InvalidRowError
from reversal_pipeline.reversals.intake_window import OPEN_DAYS_ENV, refund_open_window
from reversal_pipeline.reversals.open_events import past_window
from reversal_pipeline.reversals.refund_policy import (
    POLICY_ENV,
    PartialRefundPolicy,
    partial_refund_policy,
    split_largest_remainder,
)

INTAKE_BATCH_SIZE = 500
_CURRENCY = re.compile(r"[a-z]{3}")


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
    amount: int | None = None,
    currency: str | None = None,
    seller_transfer_id: int | None = None,
) -> RefundEventReceipt:
    """Record a succeeded refund in the inbox; a repeated ``refund_id`` is a no-op.

    Runs in the caller's transaction so a webhook handler can commit it with
    its own writes. ``amount`` (minor units, in the seller transfer's currency;
    None = the whole order) needs ``currency``; ``seller_transfer_id`` names the
    transfer the refund concerns when the application knows it. A duplicate
    that differs in any of these is refused: the same refund cannot be two
    refunds, and guessing would reverse the wrong seller or the wrong amount.
    """
    refund_id, order_id = (refund_id or "").strip(), (order_id or "").strip()
    if not refund_id or not order_id:
        raise InvalidRowError(
            f"refund event needs refund_id and order_id (got {refund_id!r}, {order_id!r})"
        )
    currency = _checked_amount(refund_id, amount, currency)
    if seller_transfer_id is not None:
        _check_scope(connection, refund_id, order_id, seller_transfer_id)
    values: dict[str, object] = {
        "refund_id": refund_id,
        "order_id": order_id,
        "amount": amount,
        "currency": currency,
        "seller_transfer_id": seller_transfer_id,
    }
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
        sa.select(
            refund_events.c.id,
            refund_events.c.order_id,
            refund_events.c.amount,
            refund_events.c.currency,
            refund_events.c.seller_transfer_id,
        ).where(refund_events.c.refund_id == refund_id)
    ).one()
    if existing.order_id != order_id:
        raise InvalidRowError(
            f"refund {refund_id} was already received for order {existing.order_id}, "
            f"not {order_id}: refusing to guess which seller to reverse"
        )
    before = (existing.amount, existing.currency, existing.seller_transfer_id)
    if before != (amount, currency, seller_transfer_id):
        raise InvalidRowError(
            f"refund {refund_id} was already received as (amount, currency, seller_transfer_id)"
            f" = {before}, not {(amount, currency, seller_transfer_id)}: refusing to guess "
            "which one Stripe meant"
        )
    return RefundEventReceipt(existing.id, refund_id, order_id, duplicate=True)


def _checked_amount(refund_id: str, amount: int | None, currency: str | None) -> str | None:
    """The refund's currency, lowercased; a bad amount or currency is refused at the door."""
    if amount is None:
        if currency is not None:
            raise InvalidRowError(f"refund {refund_id}: a currency without an amount")
        return None
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidRowError(
            f"refund {refund_id}: amount must be a positive whole number of minor units, "
            f"got {amount!r}"
        )
    code = (currency or "").strip().lower()
    if not _CURRENCY.fullmatch(code):
        raise InvalidRowError(
            f"refund {refund_id}: an amount needs a 3-letter currency, got {currency!r}"
        )
    return code


def _check_scope(
    connection: sa.Connection, refund_id: str, order_id: str, seller_transfer_id: int
) -> None:
    row_order = connection.execute(
        sa.select(seller_transfers.c.order_id).where(seller_transfers.c.id == seller_transfer_id)
    ).scalar()
    if row_order is None:
        raise InvalidRowError(
            f"refund {refund_id}: seller transfer {seller_transfer_id} does not exist"
        )
    if row_order != order_id:
        raise InvalidRowError(
            f"refund {refund_id}: seller transfer {seller_transfer_id} belongs to order "
            f"{row_order}, not {order_id}: refusing to guess which seller to reverse"
        )


@dataclass
class IntakeSummary:
    """What one intake pass did, for the asset's metadata and log."""

    events_processed: int = 0
    rows_requested: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    waiting: list[tuple[str, str, str]] = field(default_factory=list)  # refund, outcome, why
    newly_expired: list[tuple[str, str]] = field(default_factory=list)  # refund, why
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # refund, outcome, why


# Transfers whose payout was made: a refund may concern them (their target can rise).
_PAID = (
    TransferStatus.COMPLETED,
    TransferStatus.REVERSAL_PENDING,
    TransferStatus.REVERSED,
    TransferStatus.PERMANENTLY_FAILED,
)
# A raised target makes these due now; reversal_pending already is (or backs off),
# permanently_failed waits for an operator's requeue, which sends the new target.
_BECOMES_DUE = (TransferStatus.COMPLETED, TransferStatus.REVERSED)
_REFUSED_VALUES = tuple(o.value for o in REFUSED_OUTCOMES)


def open_event_is_actionable() -> sa.ColumnElement[bool]:
    """An open, already evaluated event whose order changed so that a new look would act.

    That is: a transfer row now exists where there was none, one is
    ``completed`` (to request), or none is ``pending`` any more (to close).
    A refused event (``needs_scope``, ``over_refund``, ``currency_mismatch``)
    is not: nothing about the order's rows changes the refusal, a person must.
    Correlated on ``refund_events``; shared with ``refund_events_sensor`` so
    the sensor wakes a run exactly when intake would do something.
    """
    of_order = sa.select(seller_transfers.c.id).where(
        seller_transfers.c.order_id == refund_events.c.order_id
    )
    return sa.and_(
        refund_events.c.processed_at.is_(None),
        refund_events.c.outcome.is_not(None),
        refund_events.c.outcome.not_in(_REFUSED_VALUES),
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
    policy: PartialRefundPolicy | None = None,
) -> IntakeSummary:
    """Evaluate every new event, every open one that became actionable, and newly expired ones.

    One batch per transaction, in id order (keyset), so each event is looked
    at once per pass even if it stays open. ``FOR UPDATE SKIP LOCKED`` lets
    two runs share the inbox without both acting on one event.
    """
    window = refund_open_window() if open_window is None else open_window
    policy = partial_refund_policy() if policy is None else policy
    summary = IntakeSummary()
    due = sa.and_(
        refund_events.c.processed_at.is_(None),
        sa.or_(
            refund_events.c.outcome.is_(None),
            open_event_is_actionable(),
            sa.and_(
                refund_events.c.outcome != RefundOutcome.EXPIRED_UNMATCHED.value,
                refund_events.c.outcome.not_in(_REFUSED_VALUES),
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
                    refund_events.c.amount,
                    refund_events.c.currency,
                    refund_events.c.seller_transfer_id,
                    past_window(window).label("past_window"),
                )
                .where(due, refund_events.c.id > after_id)
                .order_by(refund_events.c.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True, of=refund_events)
            ).all()
            for event in events:
                _process_one_event(connection, event, run_id, summary, window, policy)
        if len(events) < batch_size:
            return summary
        after_id = events[-1].id


@dataclass(frozen=True)
class _Share:
    """One transfer's part of a refund, and the target it raises the transfer's to."""

    row: sa.Row
    amount: int
    target_after: int


@dataclass
class _Plan:
    """What an event means for its order's transfers, before anything is written."""

    outcome: RefundOutcome
    detail: str
    shares: list[_Share] = field(default_factory=list)


def _process_one_event(
    connection: sa.Connection,
    event: sa.Row,
    run_id: str | None,
    summary: IntakeSummary,
    window: timedelta,
    policy: PartialRefundPolicy,
) -> None:
    transfers = connection.execute(
        sa.select(
            seller_transfers.c.id,
            seller_transfers.c.status,
            seller_transfers.c.amount,
            seller_transfers.c.currency,
            seller_transfers.c.reversal_target,
        )
        .where(seller_transfers.c.order_id == event.order_id)
        .order_by(seller_transfers.c.id)
        .with_for_update()
    ).all()
    if event.amount is None:
        plan = _plan_whole_order(event, transfers)
    else:
        plan = _plan_partial(event, transfers, policy)
    requested = _apply_shares(connection, plan.shares, event, run_id)
    summary.rows_requested += len(requested)
    outcome, detail = plan.outcome, plan.detail
    if outcome.refused:
        summary.refused.append((event.refund_id, outcome.value, detail))
    elif not outcome.closes and event.past_window:
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
    changed = [share.row.id for share in plan.shares]
    if outcome != event.outcome or changed:
        connection.execute(
            sa.insert(refund_event_history).values(
                refund_event_id=event.id,
                outcome_before=event.outcome,
                outcome_after=outcome.value,
                closed=outcome.closes,
                seller_transfer_ids=changed,
                detail=detail,
                run_id=run_id,
                actor="refund_intake",
            )
        )
    summary.events_processed += 1
    summary.outcomes[outcome.value] = summary.outcomes.get(outcome.value, 0) + 1


def _plan_whole_order(event: sa.Row, transfers: Sequence[sa.Row]) -> _Plan:
    """The whole order is refunded: every paid transfer's target becomes its amount.

    The seed's rule (every completed transfer reversed in full) is this with
    targets at 0; a transfer partly reversed by earlier partial refunds owes
    the rest too, so its target rises to its amount as well.
    """
    paid = [t for t in transfers if t.status in _PAID]
    pending = [t.id for t in transfers if t.status == TransferStatus.PENDING]
    shares = [
        _Share(t, t.amount - t.reversal_target, t.amount)
        for t in paid
        if t.reversal_target < t.amount
    ]
    already = [t.id for t in paid if t.reversal_target >= t.amount]
    requested_now = (
        [f"reversal target raised to the full amount for seller transfer(s) {_share_ids(shares)}"]
        if shares
        else []
    )
    if not transfers:
        return _Plan(
            RefundOutcome.WAITING_FOR_TRANSFER,
            f"no seller transfer has order_id {event.order_id!r} yet; waiting for it",
        )
    if pending:
        detail = "; ".join(
            [
                *requested_now,
                f"seller transfer(s) {_ids(pending)} of order {event.order_id} still pending "
                "(not paid out); waiting for each to complete or fail",
            ]
        )
        return _Plan(RefundOutcome.WAITING_FOR_PAYOUT, detail, shares)
    if paid:
        earlier = [f"already requested earlier: {_ids(already)}"] if already else []
        return _Plan(RefundOutcome.REQUESTED, "; ".join([*requested_now, *earlier]), shares)
    return _Plan(
        RefundOutcome.PAYOUT_FAILED,
        f"every seller transfer of order {event.order_id} failed "
        f"({_ids([t.id for t in transfers])}); nothing was paid out, nothing to reverse",
    )


def _plan_partial(event: sa.Row, transfers: Sequence[sa.Row], policy: PartialRefundPolicy) -> _Plan:
    """Part of the order is refunded: place ``event.amount`` on one transfer, or split it.

    Refusals change nothing: the amount is not placed anywhere until a person
    decides (scope the refund, adjust a target, or close the event).
    """
    label = f"refund of {event.amount} {event.currency.upper()}"
    if event.seller_transfer_id is not None:
        candidates = [t for t in transfers if t.id == event.seller_transfer_id]
    else:
        candidates = list(transfers)
    if not candidates:
        return _Plan(
            RefundOutcome.WAITING_FOR_TRANSFER,
            f"no seller transfer has order_id {event.order_id!r} yet; waiting for it",
        )
    pending = [t.id for t in candidates if t.status == TransferStatus.PENDING]
    if pending:
        # Unscoped: how to share it depends on which transfers are paid; wait for all.
        return _Plan(
            RefundOutcome.WAITING_FOR_PAYOUT,
            f"{label}: seller transfer(s) {_ids(pending)} of order {event.order_id} still "
            "pending (not paid out); waiting for each to complete or fail",
        )
    paid = [t for t in candidates if t.status in _PAID]
    if not paid:
        return _Plan(
            RefundOutcome.PAYOUT_FAILED,
            f"{label}: seller transfer(s) {_ids([t.id for t in candidates])} failed; "
            "nothing was paid out, nothing to reverse",
        )
    other_currency = [t for t in paid if t.currency != event.currency]
    if other_currency:
        shown = ", ".join(f"{t.id} in {t.currency.upper()}" for t in other_currency)
        return _Plan(
            RefundOutcome.CURRENCY_MISMATCH,
            f"{label}, but seller transfer(s) {shown}: amounts must be in the seller "
            "transfer's currency (the application converts); nothing reversed",
        )
    if len(paid) == 1:
        parts = [event.amount]
        how = "to the order's one paid seller transfer" if event.seller_transfer_id is None else ""
    elif policy is PartialRefundPolicy.REFUSE:
        return _Plan(
            RefundOutcome.NEEDS_SCOPE,
            f"{label} of order {event.order_id} names no seller transfer, and the order has "
            f"{len(paid)} ({_ids([t.id for t in paid])}); {POLICY_ENV}=refuse: nothing "
            "reversed until a person says which seller it concerns",
        )
    else:
        parts = split_largest_remainder(event.amount, [t.amount for t in paid])
        how = f"split pro rata over {_ids([t.id for t in paid])} ({POLICY_ENV}=pro_rata)"
    over = [
        f"{t.id} (target {t.reversal_target} + {part} > amount {t.amount})"
        for t, part in zip(paid, parts, strict=True)
        if t.reversal_target + part > t.amount
    ]
    if over:
        return _Plan(
            RefundOutcome.OVER_REFUND,
            f"{label} would reverse more than was paid on seller transfer(s) "
            f"{'; '.join(over)}; nothing reversed",
        )
    shares = [
        _Share(t, part, t.reversal_target + part)
        for t, part in zip(paid, parts, strict=True)
        if part > 0
    ]
    placed = ", ".join(f"{s.amount} on {s.row.id}" for s in shares)
    return _Plan(RefundOutcome.REQUESTED, f"{label} {how}: {placed}".replace("  ", " "), shares)


def _ids(row_ids: Sequence[int]) -> str:
    return ", ".join(map(str, row_ids))


def _share_ids(shares: Sequence[_Share]) -> str:
    return _ids([share.row.id for share in shares])


def _apply_shares(
    connection: sa.Connection, shares: Sequence[_Share], event: sa.Row, run_id: str | None
) -> list[int]:
    """Raise each target; a paid-out or reversed row becomes due now. Audited per row.

    Returns the rows moved to ``reversal_pending``. Every target change is one
    ``refund_allocations`` row and one ``reversal_attempts`` row, in the
    caller's transaction with the change itself.
    """
    requested: list[int] = []
    for share in shares:
        row = share.row
        values: dict[str, object] = {"reversal_target": share.target_after}
        status_after = row.status
        if row.status in _BECOMES_DUE:
            status_after = TransferStatus.REVERSAL_PENDING.value
            values.update(
                status=status_after,
                next_retry_at=sa.func.now(),
                reversal_requested_at=sa.func.now(),
                retry_count=0,
                error_message=None,
            )
            requested.append(row.id)
        connection.execute(
            sa.update(seller_transfers).where(seller_transfers.c.id == row.id).values(**values)
        )
        message = (
            f"refund {event.refund_id} succeeded: reversal target {row.reversal_target} -> "
            f"{share.target_after} of {row.amount} {row.currency.upper()}"
        )
        # The seed's whole-order request keeps its audit wording (operators grep for it).
        plain = event.amount is None and row.reversal_target == 0
        connection.execute(
            sa.insert(refund_allocations).values(
                refund_event_id=event.id,
                seller_transfer_id=row.id,
                amount=share.amount,
                target_before=row.reversal_target,
                target_after=share.target_after,
                detail=message,
                run_id=run_id,
                actor="refund_intake",
            )
        )
        connection.execute(
            sa.insert(reversal_attempts).values(
                seller_transfer_id=row.id,
                action=AttemptAction.INTAKE.value,
                outcome="reversal_requested" if row.id in requested else "target_raised",
                status_before=row.status,
                status_after=status_after,
                message=f"refund {event.refund_id} succeeded" if plain else message,
                run_id=run_id,
                actor="refund_intake",
            )
        )
    return requested
