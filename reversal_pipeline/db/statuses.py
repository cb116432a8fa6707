"""Status names of seller transfers and the outcomes written to the audit trail (contract)."""

from __future__ import annotations

from enum import StrEnum


class TransferStatus(StrEnum):
    """``seller_transfers.status``; the names are contract (``../shared/DESIGN.md``)."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REVERSAL_PENDING = "reversal_pending"
    REVERSED = "reversed"
    PERMANENTLY_FAILED = "permanently_failed"


class AttemptAction(StrEnum):
    """What an audit row records: a Stripe call, or a state change made without one."""

    CREATE_REVERSAL = "create_reversal"
    LOOKUP_REVERSAL = "lookup_reversal"
    CONFIRM_REVERSED = "confirm_reversed"
    INTAKE = "intake"
    RELEASE = "release"
    VALIDATION = "validation"
    REQUEUE = "requeue"
    RESOLVE = "resolve"
    REPAIR = "repair"
    REOPEN = "reopen"


class RefundOutcome(StrEnum):
    """``refund_events.outcome``: what intake did with an event."""

    REQUESTED = "reversal_requested"
    UNKNOWN_ORDER = "unknown_order"
    NOTHING_TO_REVERSE = "no_completed_transfers"


STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in TransferStatus)
ACTION_VALUES: tuple[str, ...] = tuple(a.value for a in AttemptAction)
REFUND_OUTCOME_VALUES: tuple[str, ...] = tuple(o.value for o in RefundOutcome)
