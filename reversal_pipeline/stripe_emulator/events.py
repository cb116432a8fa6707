"""Stripe's events for refunds: what they hold, and how long Stripe keeps them.

An event is written when a refund is created (``refund.created``), when its
status changes (``refund.updated``, with ``previous_attributes``) and when a
refund succeeds (``charge.refunded``, the charge as it then stood, without
embedded refunds as in API 2023-08-16). The event keeps a reference to its
object plus the few fields that may change later (a refund's status, a
charge's refunded amount), and renders the object as it was when the event
happened: 200,000 events then cost a small tuple each, not a rendered dict.

Retention: Stripe keeps events for 30 days. On the emulator's clock, an event
older than that is neither listed nor retrievable (404), and used as a
``starting_after``/``ending_before`` cursor it is an unknown object (400, as
for any list cursor Stripe does not know). Refunds and charges stay forever.
"""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from typing import Any

from reversal_pipeline.stripe_emulator.charges import Charge, Refund

EVENT_RETENTION_SECONDS = 30 * 86_400
API_VERSION = "2023-08-16"


class EventType(StrEnum):
    REFUND_CREATED = "refund.created"
    REFUND_UPDATED = "refund.updated"
    CHARGE_REFUNDED = "charge.refunded"


class Event:
    """One event; ``state`` is the changing part of its object at the time.

    For a refund: ``(status,)``; for a charge: ``(amount_refunded,)``.
    ``previous`` is ``previous_attributes`` (``refund.updated`` only).
    """

    __slots__ = ("created", "id", "obj", "previous", "seq", "state", "type")

    def __init__(
        self,
        id: str,
        type: EventType,
        created: int,
        seq: int,
        obj: Charge | Refund,
        state: tuple[Any, ...],
        previous: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.type = type
        self.created = created
        self.seq = seq
        self.obj = obj
        self.state = state
        self.previous = previous

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return (self.created, self.seq, self.id)

    @property
    def livemode(self) -> bool:
        return self.obj.livemode

    def object_dict(self) -> dict[str, Any]:
        obj = self.obj
        if isinstance(obj, Refund):
            return obj.to_dict(status=self.state[0])
        body = obj.to_dict()
        amount_refunded = self.state[0]
        body["amount_refunded"] = amount_refunded
        body["refunded"] = amount_refunded >= obj.amount
        return body

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"object": self.object_dict()}
        if self.previous is not None:
            data["previous_attributes"] = dict(self.previous)
        return {
            "id": self.id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.created,
            "data": data,
            "livemode": self.livemode,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None},
            "type": str(self.type),
        }


def type_matcher(type_pattern: str | None, types: list[str] | None) -> Any:
    """``type`` (with ``*`` wildcards, as Stripe allows) or ``types[]`` (exact names)."""
    if types is not None:
        wanted = frozenset(types)
        return lambda event_type: event_type in wanted
    if type_pattern is not None:
        if "*" in type_pattern:
            return lambda event_type: fnmatch.fnmatchcase(event_type, type_pattern)
        return lambda event_type: event_type == type_pattern
    return None
