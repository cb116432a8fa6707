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
    ADJUST = "adjust"  # an operator set a row's reversal_target by hand (audited reason)


class RefundOutcome(StrEnum):
    """``refund_events.outcome``: what intake did with an event (migration 0003).

    The first three leave the event open (``processed_at`` NULL): it is looked
    at again when its order's transfers change. The three refusals (migration
    0008) leave it open too, with nothing changed, and are not looked at again
    on their own: a person must act (``no_refused_refund_events`` is red until
    then). Only the last three close it.
    """

    WAITING_FOR_TRANSFER = "waiting_for_transfer"  # no seller transfer row for the order yet
    WAITING_FOR_PAYOUT = (
        "waiting_for_payout"  # some transfer still pending (completed ones requested)
    )
    EXPIRED_UNMATCHED = "expired_unmatched"  # still waiting past the open window: alerted
    # Refused (issue 17): nothing reversed, nothing changed; surfaced and alerted.
    NEEDS_SCOPE = "needs_scope"  # partial refund of a multi-seller order, policy ``refuse``
    OVER_REFUND = "over_refund"  # would raise a transfer's target above its amount
    CURRENCY_MISMATCH = "currency_mismatch"  # the refund's currency is not the transfer's
    REQUESTED = "reversal_requested"  # closed: every paid transfer of the order is being reversed
    PAYOUT_FAILED = "payout_failed"  # closed: every transfer of the order failed, nothing was paid
    CLOSED_BY_OPERATOR = "closed_by_operator"  # closed by hand: nothing to reverse (audited reason)

    @property
    def closes(self) -> bool:
        return self in (
            RefundOutcome.REQUESTED,
            RefundOutcome.PAYOUT_FAILED,
            RefundOutcome.CLOSED_BY_OPERATOR,
        )

    @property
    def refused(self) -> bool:
        return self in REFUSED_OUTCOMES


REFUSED_OUTCOMES: frozenset[RefundOutcome] = frozenset(
    {RefundOutcome.NEEDS_SCOPE, RefundOutcome.OVER_REFUND, RefundOutcome.CURRENCY_MISMATCH}
)

STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in TransferStatus)
ACTION_VALUES: tuple[str, ...] = tuple(a.value for a in AttemptAction)
REFUND_OUTCOME_VALUES: tuple[str, ...] = tuple(o.value for o in RefundOutcome)
