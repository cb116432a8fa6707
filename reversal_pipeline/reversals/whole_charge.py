"""The whole-charge rule, shared by the Stripe refunds intake and refund reconciliation.

A refund that returns the whole charge, or the one that *completes* a charge
refunded in parts, is recorded as a whole-order refund (amount NULL): the
charge includes the platform's fee, so its amount would be an over-refund
against the seller's smaller transfer. The intake records by this rule and
reconciliation checks events against it, so both must read it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

#: Stripe's refund status once the money is back with the customer.
SUCCEEDED = "succeeded"


class RefundFacts(Protocol):
    """What the rule reads of a refund (``RefundSnapshot`` and ``StripeRefund`` have it)."""

    @property
    def id(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def created(self) -> datetime: ...


def completing_refund_id(charge_amount: int, refunds: Sequence[RefundFacts]) -> str | None:
    """The succeeded refund whose running total, oldest first, reaches the charge's amount.

    ``refunds`` in Stripe's listing order (newest first). ``created`` is whole
    seconds and ids are random, so two refunds of one second are told apart
    only by the listing order, which is the order Stripe made them: reversed,
    then a stable sort on ``created``.
    """
    total = 0
    oldest_first = sorted(reversed(refunds), key=lambda r: r.created)
    for refund in (r for r in oldest_first if r.status == SUCCEEDED):
        total += refund.amount
        if total >= charge_amount:
            return refund.id
    return None
