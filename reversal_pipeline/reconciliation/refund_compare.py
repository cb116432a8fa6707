"""Compare one day of Stripe's succeeded refunds with what the database received and reversed.

Pure: takes the refunds listed at Stripe, what ``refund_events`` and the
reversals they caused say about each (``ReceivedRefund``), and the amounts of
the charges of whole-order events; returns findings in the shape
``store.store_findings`` takes (``compare.FINDING_COLUMNS``). The finding key
is the Stripe refund id, so a refund has at most one finding per category.

A reversal is done for a refund when every seller transfer it raised the
target of (its ``refund_allocations``) has had at least that target reversed
at Stripe (``amount_reversed >= target_after``): targets are cumulative, so a
later refund's larger target does not hide an earlier one's unpaid share.

Grace: a refund made (or an event received, or a target raised) within the
grace period may still be on its way through the webhook or the job; its
finding is kept with ``in_grace`` and ``grace_ends_at``, and the day is looked
at again when the grace ends (``refund_stale_days``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from reversal_pipeline.db.statuses import RefundOutcome
from reversal_pipeline.reconciliation.categories import Category, explanation_of, severity_of
from reversal_pipeline.reconciliation.compare import DEFAULT_GRACE_PERIOD, FINDING_COLUMNS
from reversal_pipeline.reversals.whole_charge import SUCCEEDED

# Stripe statuses from which a refund may still succeed: its day is looked at again.
MAY_STILL_SUCCEED = frozenset({"pending", "requires_action"})

# Open outcomes that mean the refund's money is not on its way back yet. Not
# ``waiting_for_payout``: there the paid transfers are already requested (their
# allocations are checked) and the others were never paid, so nothing is owed.
_NOT_ON_ITS_WAY = frozenset(
    {
        RefundOutcome.WAITING_FOR_TRANSFER.value,
        RefundOutcome.EXPIRED_UNMATCHED.value,
        RefundOutcome.NEEDS_SCOPE.value,
        RefundOutcome.OVER_REFUND.value,
        RefundOutcome.CURRENCY_MISMATCH.value,
    }
)


@dataclass(frozen=True, slots=True)
class StripeRefund:
    """The fields of a Stripe refund the comparison reads (a ``RefundSnapshot`` has them)."""

    id: str
    charge_id: str | None
    amount: int
    currency: str
    status: str
    created: datetime


@dataclass(frozen=True, slots=True)
class ChargeFacts:
    """What confirms a whole-order event: the charge's amount, and who completed it."""

    amount: int
    completing_refund_id: str | None = None  # see ``completing_refund_id``


@dataclass(frozen=True, slots=True)
class ReceivedRefund:
    """What the database holds for one refund id: its event and its unreversed shares."""

    refund_id: str
    order_id: str
    amount: int | None  # None: a whole-order event
    currency: str | None
    received_at: datetime
    outcome: str | None  # None: intake has not looked at it yet
    closed: bool
    last_change_at: datetime | None  # latest allocation or allocated row change
    short_shares: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def compare_refunds(
    refunds: Iterable[StripeRefund],
    missing: Set[str],
    received: Mapping[str, ReceivedRefund],
    charges: Mapping[str, ChargeFacts],
    *,
    now: datetime,
    grace_period: timedelta = DEFAULT_GRACE_PERIOD,
) -> pd.DataFrame:
    """Findings for the succeeded ``refunds`` (others are skipped: not a refund yet).

    ``missing``: the refund ids ``refund_events`` has no row for. ``received``:
    the events to look at (a refund in neither agrees with the database; the
    database read leaves out the events that cannot be a finding).

    ``charges`` holds the facts of every whole-order event's charge
    (``charge_id -> ChargeFacts``); one missing reads as a mismatch (the event
    says "the whole order" and nothing at Stripe confirms it).
    """
    findings: list[dict[str, Any]] = []
    for refund in refunds:
        if refund.status != SUCCEEDED:
            continue
        if refund.id in missing:
            findings.append(_finding(Category.REFUND_NOT_RECEIVED, refund, now, grace_period))
            continue
        event = received.get(refund.id)
        if event is None:
            continue
        mismatch = _amount_mismatch(refund, event, charges)
        if mismatch is not None:
            findings.append(
                _finding(Category.REFUND_AMOUNT_MISMATCH, refund, now, None, event, mismatch)
            )
        why = _not_reversed(event)
        if why is not None:
            findings.append(
                _finding(Category.REFUND_NOT_REVERSED, refund, now, grace_period, event, why)
            )
    return findings_frame(findings)


def findings_frame(findings: list[dict[str, Any]]) -> pd.DataFrame:
    """Findings as the store's frame (empty: the columns, no rows)."""
    frame = pd.DataFrame(findings, columns=list(FINDING_COLUMNS))
    frame["seller_transfer_id"] = frame["seller_transfer_id"].astype("Int64")
    frame["amount"] = frame["amount"].astype("Int64")
    frame["in_grace"] = frame["in_grace"].astype(bool)
    return frame


def _amount_mismatch(
    refund: StripeRefund, event: ReceivedRefund, charges: Mapping[str, ChargeFacts]
) -> str | None:
    if event.amount is None:
        charge = charges.get(refund.charge_id or "")
        if charge is None:
            return (
                "the event is for the whole order, but Stripe's refund names no charge "
                "whose amount could confirm it"
            )
        if refund.amount < charge.amount and charge.completing_refund_id != refund.id:
            return (
                f"the event is for the whole order, but Stripe refunded {refund.amount} of "
                f"the charge's {charge.amount} {refund.currency.upper()} and this refund did "
                "not complete the charge"
            )
        return None
    if event.amount != refund.amount or event.currency != refund.currency:
        return (
            f"the event says {event.amount} {(event.currency or '?').upper()}, Stripe's refund "
            f"is {refund.amount} {refund.currency.upper()}"
        )
    return None


def _not_reversed(event: ReceivedRefund) -> str | None:
    if event.outcome is None:
        return "intake has not processed the refund event yet"
    if not event.closed and event.outcome in _NOT_ON_ITS_WAY:
        return f"the refund event is open as {event.outcome}: nothing was reversed for it"
    if event.short_shares:
        parts = ", ".join(
            f"seller transfer {s['seller_transfer_id']} ({s['status']}): "
            f"{s['amount_reversed']} reversed of target {s['target_after']}"
            for s in event.short_shares
        )
        return f"reversal missing, failed or short: {parts}"
    return None


def _finding(
    category: Category,
    refund: StripeRefund,
    now: datetime,
    grace_period: timedelta | None,
    event: ReceivedRefund | None = None,
    why: str | None = None,
) -> dict[str, Any]:
    grace_ends_at = None
    if grace_period is not None:
        since = [refund.created]
        if event is not None:
            since += [event.received_at, *([event.last_change_at] if event.last_change_at else [])]
        grace_ends_at = max(since) + grace_period
        if grace_ends_at <= now:
            grace_ends_at = None  # drift now: no grace to wait for
    shares = list(event.short_shares) if event is not None else []
    details: dict[str, Any] = {
        "refund_id": refund.id,
        "charge_id": refund.charge_id,
        "refund_created": refund.created.isoformat(),
        # Shown by the report's "refunds" column (report.refunds_text).
        "refunds": [{"refund_id": refund.id, "amount": refund.amount}],
    }
    if event is not None:
        details |= {
            "order_id": event.order_id,
            "event_amount": event.amount,
            "event_currency": event.currency,
            "event_outcome": event.outcome,
            "event_received_at": event.received_at.isoformat(),
        }
    if shares:
        details["short_shares"] = shares
    if why is not None:
        details["why"] = why
    only = shares[0] if len(shares) == 1 else None
    return {
        "category": category.value,
        "severity": severity_of(category).value,
        "finding_key": refund.id,
        "seller_transfer_id": None if only is None else int(only["seller_transfer_id"]),
        "stripe_transfer_id": None if only is None else only.get("stripe_transfer_id"),
        "stripe_reversal_ids": None,
        "amount": refund.amount,
        "currency": refund.currency,
        "explanation": explanation_of(category),
        "details": details,
        "in_grace": grace_ends_at is not None,
        "grace_ends_at": grace_ends_at,
    }
