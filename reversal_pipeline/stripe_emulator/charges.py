"""Charges and their refunds, as the emulator holds and renders them.

Rendered with the fields of API version 2023-08-16 (the version of the spec
extract in ``tests/data``): a charge no longer embeds its refunds there, and a
refund names its charge by id. Both are slotted: the refund benchmark builds
100,000 of each in a few seconds.

Amounts (decided from Stripe's docs, which say ``amount_refunded`` is what *was*
refunded): a charge's ``amount_refunded`` counts succeeded refunds only; a
pending refund *reserves* its amount, so two pending refunds can never together
exceed the charge, and a refund that fails releases it without ever having
counted. ``refunded`` is true once ``amount_refunded`` reaches ``amount``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


#: pending -> succeeded | failed | canceled; nothing leaves a final status.
FINAL_STATUSES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CANCELED})

#: Sort key of a listable object: (created, creation sequence, id). The sequence
#: keeps objects of one second in the order they were made, as Stripe lists them.
SortKey = tuple[int, int, str]


class Charge:
    """A succeeded, captured card charge."""

    __slots__ = (
        "amount",
        "amount_refunded",
        "created",
        "currency",
        "description",
        "id",
        "livemode",
        "metadata",
        "refunds",
        "reserved",
        "seq",
        "transfer_group",
    )

    def __init__(
        self,
        id: str,
        amount: int,
        currency: str,
        created: int,
        seq: int,
        *,
        transfer_group: str | None = None,
        metadata: dict[str, str] | None = None,
        description: str | None = None,
        livemode: bool = False,
    ) -> None:
        self.id = id
        self.amount = amount
        self.currency = currency
        self.created = created
        self.seq = seq
        self.transfer_group = transfer_group
        self.metadata = metadata
        self.description = description
        self.livemode = livemode
        self.amount_refunded = 0  # succeeded refunds only
        self.reserved = 0  # pending refunds: not refunded yet, but not refundable again
        self.refunds: list[Refund] | None = None  # creation order

    @property
    def refundable(self) -> int:
        return self.amount - self.amount_refunded - self.reserved

    @property
    def refunded(self) -> bool:
        return self.amount_refunded >= self.amount

    def to_dict(self) -> dict[str, Any]:
        suffix = self.id[3:]
        return {
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount,
            "amount_refunded": self.amount_refunded,
            "application": None,
            "application_fee": None,
            "application_fee_amount": None,
            "balance_transaction": "txn_" + suffix,
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "calculated_statement_descriptor": "EMULATOR",
            "captured": True,
            "created": self.created,
            "currency": self.currency,
            "customer": None,
            "description": self.description,
            "disputed": False,
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "fraud_details": {},
            "invoice": None,
            "livemode": self.livemode,
            "metadata": dict(self.metadata or {}),
            "on_behalf_of": None,
            "paid": True,
            "payment_intent": None,
            "payment_method": "card_" + suffix,
            "receipt_email": None,
            "receipt_number": None,
            "receipt_url": None,
            "refunded": self.refunded,
            "review": None,
            "shipping": None,
            "source_transfer": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "succeeded",
            "transfer_data": None,
            "transfer_group": self.transfer_group,
        }


class Refund:
    """A refund of (part of) a charge; only ``status`` ever changes."""

    __slots__ = ("amount", "charge", "created", "currency", "id", "metadata", "seq", "status")

    def __init__(
        self,
        id: str,
        charge: Charge,
        amount: int,
        created: int,
        seq: int,
        status: RefundStatus,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.charge = charge
        self.amount = amount
        self.currency = charge.currency
        self.created = created
        self.seq = seq
        self.status = status
        self.metadata = metadata

    @property
    def sort_key(self) -> SortKey:
        return (self.created, self.seq, self.id)

    @property
    def livemode(self) -> bool:
        return self.charge.livemode

    def to_dict(self, status: str | None = None) -> dict[str, Any]:
        """The ``refund`` object; ``status`` renders it as it was (for an event's snapshot)."""
        status = status or self.status
        suffix = self.id[3:]
        body: dict[str, Any] = {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": "txn_" + suffix,
            "charge": self.charge.id,
            "created": self.created,
            "currency": self.currency,
            "metadata": dict(self.metadata or {}),
            "payment_intent": None,
            "reason": None,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": str(status),
            "transfer_reversal": None,
        }
        if status == RefundStatus.FAILED:
            body["failure_balance_transaction"] = "txn_f" + suffix[1:]
            body["failure_reason"] = "unknown"
        return body
