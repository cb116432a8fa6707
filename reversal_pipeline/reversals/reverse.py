"""Reverse: the Stripe conversation for one claimed row, and what it means for the row.

``reverse_row`` makes the calls and returns a ``RowDecision``; it never writes
to the database itself except to count an attempt before sending it (see
``record.start_attempts``). The routing follows the contract in
``../shared/DESIGN.md``: not found fails at once, already reversed is
confirmed on the transfer, 401/403 stops the run, the rest is retried.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, assert_never

from reversal_pipeline.db.statuses import AttemptAction, TransferStatus
from reversal_pipeline.errors import (
    StripeRateLimited,
    StripeSentinel,
    StripeSystemicError,
    TransferAlreadyReversed,
    TransferNotFound,
)
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.record import StripeCallRecord

# Used with fullmatch(): with match() and a trailing "$", "tr_abc\n" would pass ("$"
# also matches before a final newline) and reach Stripe as a malformed id.
TRANSFER_ID_PATTERN = re.compile(r"tr_[A-Za-z0-9]{1,250}")


class ReversalGateway(Protocol):
    """What the reversal step needs from the Stripe resource."""

    def reverse_transfer(
        self, transfer_id: str, amount: int, idempotency_key: str, metadata: dict[str, str]
    ) -> Any: ...

    def get_transfer(self, transfer_id: str) -> Any: ...

    def reversals_on_transfer(self, transfer_id: str) -> list[Any]: ...


class DecisionKind(StrEnum):
    """What happened to a row: the closed set of ``RowDecision.kind`` values.

    The values reach the audit trail, the run's metadata and the operator's
    report (``outcomes``), so they are kept as they were when this was a str.
    """

    #: The create call succeeded: money moved now.
    REVERSED = "reversed"
    #: Stripe said "already reversed" and the transfer shows the target covered.
    ALREADY_REVERSED = "already_reversed"
    #: The look-up found reversals of ours covering the target (a lost reply): not sent again.
    FOUND_EXISTING = "found_existing"
    #: Stripe has no such transfer: a data-integrity incident, failed at once.
    NOT_FOUND = "not_found"
    #: What Stripe shows cannot be believed or acted on alone: failed for a person.
    NOT_CONFIRMED = "not_confirmed"
    #: May succeed later (a 429 beyond the resource's patience included): back off and retry.
    TRANSIENT = "transient"
    #: Out of attempts, and the look-up before giving up had no answer: look again later.
    LOOKUP_FAILED = "lookup_failed"
    #: The row cannot be sent as it stands (``row_problem``): failed with the reason.
    INVALID = "invalid"
    #: 401/403: every further call fails the same way, so the run stops.
    SYSTEMIC = "systemic"
    #: The look-up found nothing (or less than the target) of ours: go on and send.
    CONTINUE = "continue"
    #: Out of attempts; the last look on Stripe had an answer, and nothing more is sent.
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class RowDecision:
    """What happened to a row, before it is written.

    Frozen: a decision is made on a worker thread and written by the writer
    thread, so a change is a new decision (``dataclasses.replace``), never an
    edit of one another thread may hold.
    """

    kind: DecisionKind
    calls: list[StripeCallRecord] = field(default_factory=list)
    reversal_id: str | None = None
    error: StripeSentinel | None = None
    message: str | None = None
    idempotency_key: str | None = None
    attempt_number: int | None = None
    #: What Stripe shows of our reversals for the row once this decision holds (None: unknown).
    amount_reversed: int | None = None
    #: After a look-up that found less than the target: ours so far, to send only the rest.
    already_ours: int = 0

    def __post_init__(self) -> None:
        # A caller passing the plain string still gets the enum; an unknown one fails here,
        # where it was made, not later in a mapping that has no case for it.
        object.__setattr__(self, "kind", DecisionKind(self.kind))


def idempotency_key_for(row_id: int, attempt: int, target: int) -> str:
    """Unique per row, target and attempt.

    Per attempt: a key reused across attempts would replay a stored 500. The
    target is in it too (issue 17): a raised target must never replay the
    reversal of an older, smaller one, whatever the attempt counter says.
    """
    return f"reversal_pipeline:seller_transfer:{row_id}:target:{target}:attempt:{attempt}"


def row_problem(row: ClaimedRow) -> str | None:
    """Why a row cannot be sent to Stripe as it stands, or None."""
    transfer_id = row.stripe_transfer_id
    label = f"seller transfer {row.id} (order {row.order_id})"
    if transfer_id is None:
        return f"{label} has no stripe_transfer_id: nothing to reverse; fix the row and requeue"
    if not transfer_id.strip():
        return f"{label} has an empty stripe_transfer_id; fix the row and requeue"
    if not TRANSFER_ID_PATTERN.fullmatch(transfer_id):
        return (
            f"{label} has stripe_transfer_id {transfer_id[:64]!r}, not shaped like tr_...; "
            "fix the row and requeue"
        )
    if row.target <= 0 or row.target > row.amount:
        return (
            f"{label} has reversal_target {row.target}, outside 1..{row.amount}: nothing to "
            "send; set it with `reversal-pipeline adjust` and requeue"
        )
    return None


def call_record(
    action: AttemptAction, outcome: str, *, error: StripeSentinel | None = None, **values: Any
) -> StripeCallRecord:
    if error is not None:
        values.setdefault("http_status", error.http_status)
        values.setdefault("stripe_code", error.stripe_code)
        values.setdefault("stripe_request_id", error.request_id)
        values.setdefault("message", f"{type(error).__name__}: {error.message}")
    return StripeCallRecord(action=action.value, outcome=outcome, **values)


def look_for_earlier_reversal(row: ClaimedRow, stripe: ReversalGateway) -> RowDecision | None:
    """Find what earlier attempts reversed but never recorded (a lost reply), and sum it.

    Every reversal of ours carries the row id in its metadata. A row with
    partial refunds has one per raise of its target; their sum is what Stripe
    shows of our reversals for the row. It covers the target: the row is
    ``reversed`` without sending (``found_existing``). It falls short:
    ``continue`` with ``already_ours`` set, and only the difference is sent.
    A reversal of ours in another currency is never counted: the row's amount
    was taken in the wrong unit, a person must look (``not_confirmed``).

    The same listing shows the transfer's other (out-of-band) reversals: when
    what the target still lacks is more than the transfer has left, nothing is
    sent (``not_confirmed``, see ``_beyond_remaining``).
    """
    assert row.stripe_transfer_id is not None
    try:
        on_transfer = stripe.reversals_on_transfer(row.stripe_transfer_id)
    except StripeSentinel as error:
        return _route_error(
            row, error, [call_record(AttemptAction.LOOKUP_REVERSAL, "error", error=error)]
        )
    ours = [r for r in on_transfer if r.metadata.get("seller_transfer_id") == str(row.id)]
    others = [r for r in on_transfer if r.metadata.get("seller_transfer_id") != str(row.id)]
    ours_total = sum(r.amount for r in ours)
    beyond = _beyond_remaining(row, ours_total, others)
    if beyond is not None and not any(
        r.currency.lower() != row.currency.lower() for r in on_transfer
    ):
        return beyond
    if not ours:
        return RowDecision(
            kind=DecisionKind.CONTINUE,
            amount_reversed=0,
            calls=[
                call_record(
                    AttemptAction.LOOKUP_REVERSAL,
                    "not_found",
                    message="no reversal from an earlier attempt",
                )
            ],
        )
    listed = ", ".join(f"{r.id} of {r.amount} {r.currency.upper()}" for r in ours)
    other_currency = [r for r in ours if r.currency.lower() != row.currency.lower()]
    if other_currency:
        mismatch = (
            f"it is in {other_currency[0].currency.upper()}, not the row's {row.currency.upper()}"
        )
        return RowDecision(
            kind=DecisionKind.NOT_CONFIRMED,
            reversal_id=None,
            calls=[
                call_record(
                    AttemptAction.LOOKUP_REVERSAL,
                    "not_confirmed",
                    stripe_reversal_id=other_currency[0].id,
                    message=f"reversal(s) {listed} from earlier attempts found by their "
                    f"metadata; {mismatch}",
                )
            ],
            message=(
                f"an earlier attempt made reversal(s) {listed} for seller transfer {row.id}, "
                f"but {mismatch}: not sent again, needs a person (resolve, or correct the row)"
            ),
        )
    total = sum(r.amount for r in ours)
    newest = ours[-1]
    if total < row.target:
        return RowDecision(
            kind=DecisionKind.CONTINUE,
            amount_reversed=total,
            already_ours=total,
            calls=[
                call_record(
                    AttemptAction.LOOKUP_REVERSAL,
                    "partial",
                    stripe_reversal_id=newest.id,
                    message=(
                        f"ours at Stripe: {listed} ({total} in all), short of the target "
                        f"{row.target}: sending the difference {row.target - total}"
                    ),
                )
            ],
        )
    over = (
        f"; {total} is more than the target {row.target}: over-reversed, needs a person"
        if total > row.target
        else ""
    )
    return RowDecision(
        kind=DecisionKind.FOUND_EXISTING,
        reversal_id=newest.id,
        amount_reversed=total,
        message=f"over-reversed: ours at Stripe {listed}{over}" if over else None,
        calls=[
            call_record(
                AttemptAction.LOOKUP_REVERSAL,
                "found_existing",
                stripe_reversal_id=newest.id,
                message=(
                    f"reversal(s) {listed} from earlier attempts found by their metadata: "
                    f"{total} covers the target {row.target}{over}"
                ),
            )
        ],
    )


#: Stripe allows 500 characters per metadata value.
_METADATA_VALUE_LIMIT = 500


def _beyond_remaining(row: ClaimedRow, ours_total: int, others: list[Any]) -> RowDecision | None:
    """Refuse to send when the transfer has less left than the target still lacks.

    The transfer's remaining amount is its amount (the row's; reconciliation
    flags a row whose amount differs from Stripe's) minus every reversal on it.
    Only out-of-band reversals can make it fall short of ``target - ours``.
    Sending anyway would make Stripe refuse (400) on every retry; sending only
    what is left would leave a row neither reversed nor due. Either way a
    person decides (``adjust`` the target, or ``resolve``), so the row fails
    with both figures, and reconciliation shows the transfer. A transfer with
    nothing left is not this case (see below).
    """
    lacking = row.target - ours_total
    if lacking <= 0:
        return None
    others_total = sum(r.amount for r in others)
    remaining = row.amount - ours_total - others_total
    # Nothing left at all: Stripe answers "already fully reversed", and that has its own
    # contract (confirm_already_reversed: reversed when the transfer covers the target).
    if lacking <= remaining or remaining <= 0:
        return None
    listed = ", ".join(f"{r.id} of {r.amount}" for r in others) or "none"
    shown = (
        f"Stripe shows {ours_total} reversed by us and {others_total} out-of-band ({listed}) "
        f"on {row.stripe_transfer_id} of {row.amount} {row.currency.upper()}: "
        f"{remaining} left, the target {row.target} still lacks {lacking}"
    )
    return RowDecision(
        kind=DecisionKind.NOT_CONFIRMED,
        amount_reversed=ours_total,
        calls=[call_record(AttemptAction.LOOKUP_REVERSAL, "beyond_remaining", message=shown)],
        message=(
            f"{shown}: not sent (Stripe would refuse it), needs a person "
            "(adjust the target or resolve)"
        ),
    )


def reversal_metadata(row: ClaimedRow, attempt: int) -> dict[str, str]:
    """What a reversal says about itself at Stripe: the row, the target and the refunds.

    ``seller_transfer_id`` is what the look-up for lost replies matches on;
    the target and refund ids let a person at the Dashboard see what a
    reversal answers. The refund list is cut (oldest kept) at Stripe's limit.
    """
    refund_ids = ",".join(row.refund_ids)
    if len(refund_ids) > _METADATA_VALUE_LIMIT:
        refund_ids = refund_ids[: _METADATA_VALUE_LIMIT - 3].rsplit(",", 1)[0] + ",..."
    metadata = {
        "seller_transfer_id": str(row.id),
        "order_id": row.order_id,
        "attempt": str(attempt),
        "reversal_target": str(row.target),
    }
    if refund_ids:
        metadata["refund_ids"] = refund_ids
    return metadata


def send_reversal(
    row: ClaimedRow,
    stripe: ReversalGateway,
    *,
    attempt: int,
    key: str | None = None,
    earlier_calls: list[StripeCallRecord] | None = None,
    already_ours: int = 0,
) -> RowDecision:
    """Create the reversal of what the target still lacks (or send it again after a 429).

    ``already_ours`` is what the look-up found of our reversals for the row;
    only ``target - already_ours`` is sent. Never more than the transfer has
    left: the look-up refuses it before sending (``_beyond_remaining``), and
    a row sent without a look-up that Stripe refuses on its amount (400) is
    looked up once and failed for a person, never retried, split or forced.
    """
    assert row.stripe_transfer_id is not None
    key = key or idempotency_key_for(row.id, attempt, row.target)
    calls = list(earlier_calls or [])
    metadata = reversal_metadata(row, attempt)
    amount = row.target - already_ours
    sent: dict[str, Any] = {"attempt_number": attempt, "idempotency_key": key}
    try:
        reversal = stripe.reverse_transfer(row.stripe_transfer_id, amount, key, metadata)
    except StripeSentinel as error:
        calls.append(
            call_record(AttemptAction.CREATE_REVERSAL, _outcome_name(error), error=error, **sent)
        )
        if _is_amount_refusal(error):
            # A row never sent skips the look-up, so an out-of-band reversal is seen
            # only here: look once, and fail the row for a person instead of retrying
            # a request Stripe will refuse every time.
            lookup = look_for_earlier_reversal(row, stripe)
            if lookup is not None and lookup.kind not in (
                DecisionKind.CONTINUE,
                DecisionKind.TRANSIENT,
            ):
                return dataclasses.replace(
                    lookup,
                    calls=calls + lookup.calls,
                    idempotency_key=key,
                    attempt_number=attempt,
                )
        decision = _route_error(row, error, calls, stripe=stripe)
        return dataclasses.replace(decision, idempotency_key=key, attempt_number=attempt)
    calls.append(
        call_record(
            AttemptAction.CREATE_REVERSAL, "reversed", stripe_reversal_id=reversal.id, **sent
        )
    )
    return RowDecision(
        kind=DecisionKind.REVERSED,
        reversal_id=reversal.id,
        calls=calls,
        idempotency_key=key,
        attempt_number=attempt,
        amount_reversed=already_ours + int(getattr(reversal, "amount", amount)),
        message=_currency_warning(row, getattr(reversal, "currency", None), amount),
    )


def _is_amount_refusal(error: StripeSentinel) -> bool:
    """Stripe refused the amount (400 on ``amount``): more than the transfer has left."""
    original = getattr(error, "original", None)
    return error.http_status == 400 and getattr(original, "param", None) == "amount"


def _currency_warning(row: ClaimedRow, stripe_currency: str | None, amount: int) -> str | None:
    """Say so at once when the transfer's currency is not the row's.

    A reversal's amount is in the transfer's currency, so the row's amount was
    taken in the wrong unit. It is free to see here (the reversal carries the
    currency); the row stays ``reversed`` because Stripe did reverse it, and
    reconciliation reports ``amount_or_currency_mismatch`` for the same row.
    """
    if not stripe_currency or stripe_currency.lower() == row.currency.lower():
        return None
    return (
        f"reversed, but the transfer is in {stripe_currency.upper()}, not the row's "
        f"{row.currency.upper()}: {amount} minor units of {stripe_currency.upper()} "
        "were taken back; check the order and correct it by hand (needs a person)"
    )


def _outcome_name(error: StripeSentinel) -> str:
    """The audit row's ``outcome`` for a create call Stripe refused."""
    match error:
        case TransferNotFound():
            return "not_found"
        case TransferAlreadyReversed():
            return "already_reversed"
        case StripeSystemicError():
            return "systemic"
        case StripeRateLimited():
            return "rate_limited"
        case _:
            # TransientStripeError, or a bare StripeSentinel: retried like any transient error.
            return "transient"


def _route_error(
    row: ClaimedRow,
    error: StripeSentinel,
    calls: list[StripeCallRecord],
    stripe: ReversalGateway | None = None,
) -> RowDecision:
    if isinstance(error, TransferNotFound):
        return RowDecision(
            kind=DecisionKind.NOT_FOUND,
            calls=calls,
            error=error,
            message=(
                f"data-integrity incident: Stripe has no transfer {row.stripe_transfer_id} "
                f"for seller transfer {row.id} (wrong account or test/live mode?); "
                "not retried, needs a person"
            ),
        )
    if isinstance(error, TransferAlreadyReversed) and stripe is not None:
        return confirm_already_reversed(row, stripe, error, calls)
    if isinstance(error, StripeSystemicError):
        return RowDecision(kind=DecisionKind.SYSTEMIC, calls=calls, error=error)
    # Everything else, a 429 beyond the resource's patience included, is transient:
    # the call is audited once, the attempt counts and the row backs off. Re-sending a
    # 429'd create later in the same run reused its key and so its audit row's key
    # (uq_reversal_attempts_idempotency_key), and the outcome could never be written.
    return RowDecision(kind=DecisionKind.TRANSIENT, calls=calls, error=error)


def confirm_already_reversed(
    row: ClaimedRow,
    stripe: ReversalGateway,
    error: StripeSentinel,
    calls: list[StripeCallRecord],
) -> RowDecision:
    """Believe "already reversed" only when the transfer shows it."""
    assert row.stripe_transfer_id is not None
    try:
        transfer = stripe.get_transfer(row.stripe_transfer_id)
    except StripeSentinel as confirm_error:
        calls.append(call_record(AttemptAction.CONFIRM_REVERSED, "error", error=confirm_error))
        decision = _route_error(row, confirm_error, calls)
        if decision.kind == DecisionKind.NOT_FOUND:
            return decision
        return RowDecision(kind=decision.kind, calls=calls, error=confirm_error)
    ours = [r for r in transfer.reversals if r.metadata.get("seller_transfer_id") == str(row.id)]
    # Our own reversal (the earliest, if an incident made several) names the row best;
    # otherwise the newest one, most likely the out-of-band reversal that answered us.
    earliest_ours = min(ours, key=lambda r: (r.created, r.id), default=None)
    newest = max(transfer.reversals, key=lambda r: (r.created, r.id), default=None)
    chosen = earliest_ours or newest
    shown = (
        f"Stripe shows {transfer.amount_reversed} of {transfer.amount} {transfer.currency} "
        f"reversed in {len(transfer.reversals)} reversal(s)"
    )
    if transfer.currency.lower() != row.currency.lower():
        calls.append(call_record(AttemptAction.CONFIRM_REVERSED, "not_confirmed", message=shown))
        return RowDecision(
            kind=DecisionKind.NOT_CONFIRMED,
            calls=calls,
            error=error,
            message=(
                f"Stripe said the transfer is already reversed, but {shown}, not in the row's "
                f"{row.currency.upper()}: needs a person"
            ),
        )
    # The transfer shows the target covered (by us or out-of-band): the row owes nothing
    # more, so its confirmed amount is its target (issue 17).
    if transfer.amount_reversed >= row.target and chosen is not None:
        source = "by an earlier attempt of ours" if ours else "out-of-band (not by this job)"
        calls.append(
            call_record(
                AttemptAction.CONFIRM_REVERSED,
                "confirmed",
                stripe_reversal_id=chosen.id,
                message=shown,
            )
        )
        return RowDecision(
            kind=DecisionKind.ALREADY_REVERSED,
            calls=calls,
            reversal_id=chosen.id,
            amount_reversed=row.target,
            error=error,
            message=f"already reversed {source}: {shown}; recorded {chosen.id}",
        )
    calls.append(call_record(AttemptAction.CONFIRM_REVERSED, "not_confirmed", message=shown))
    return RowDecision(
        kind=DecisionKind.NOT_CONFIRMED,
        calls=calls,
        error=error,
        message=(
            f"Stripe said the transfer is already reversed, but {shown}, "
            f"less than this row's {row.target} (its reversal target): needs a person"
        ),
    )


def final_status_for(kind: DecisionKind) -> TransferStatus | None:
    """The status a decision leads to (None: decided by retry policy or not a write).

    Exhaustive: a new kind does not type-check until it is given a status here.
    """
    match kind:
        case DecisionKind.REVERSED | DecisionKind.ALREADY_REVERSED | DecisionKind.FOUND_EXISTING:
            return TransferStatus.REVERSED
        case DecisionKind.NOT_FOUND | DecisionKind.NOT_CONFIRMED | DecisionKind.INVALID:
            return TransferStatus.PERMANENTLY_FAILED
        case (
            DecisionKind.TRANSIENT
            | DecisionKind.LOOKUP_FAILED
            | DecisionKind.SYSTEMIC
            | DecisionKind.CONTINUE
            | DecisionKind.EXHAUSTED
        ):
            return None
        case _:
            assert_never(kind)
