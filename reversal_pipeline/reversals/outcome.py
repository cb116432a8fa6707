"""Turn a ``RowDecision`` into the row's new state, under the retry policy.

``change_for`` matches every ``DecisionKind`` (mypy checks it is exhaustive);
its statuses agree with ``reverse.final_status_for`` (a test holds them together).
"""

from __future__ import annotations

import random
from typing import assert_never

from reversal_pipeline.db.statuses import TransferStatus
from reversal_pipeline.reversals.backoff import retry_delay
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.record import RowChange
from reversal_pipeline.reversals.reverse import DecisionKind, RowDecision
from reversal_pipeline.reversals.settings import ReversalSettings

REVERSED = TransferStatus.REVERSED.value
FAILED = TransferStatus.PERMANENTLY_FAILED.value
PENDING = TransferStatus.REVERSAL_PENDING.value


def change_for(
    row: ClaimedRow, decision: RowDecision, settings: ReversalSettings, rng: random.Random
) -> RowChange:
    """The write for a decided row; transient errors go through backoff or give up."""
    match decision.kind:
        case DecisionKind.REVERSED | DecisionKind.ALREADY_REVERSED | DecisionKind.FOUND_EXISTING:
            return RowChange(
                status_after=REVERSED,
                error_message=decision.message,
                stripe_reversal_id=decision.reversal_id,
                calls=decision.calls,
                message=decision.message,
                amount_reversed=row.target
                if decision.amount_reversed is None
                else decision.amount_reversed,
            )
        case DecisionKind.NOT_FOUND | DecisionKind.NOT_CONFIRMED | DecisionKind.INVALID:
            return _give_up(decision, decision.message or "failed")
        case DecisionKind.EXHAUSTED:
            message = (
                f"gave up after {row.retry_count} attempt(s) "
                f"(max_attempts={settings.max_attempts}); looked once more: {decision.message}"
            )
            return _give_up(decision, message)
        case DecisionKind.LOOKUP_FAILED:
            return _look_again_later(row, decision, settings, rng)
        case DecisionKind.TRANSIENT | DecisionKind.SYSTEMIC | DecisionKind.CONTINUE:
            # The batch stops the run on SYSTEMIC and sends on CONTINUE before a decision
            # gets here; should one arrive, retrying later is the safe reading.
            return _transient(row, decision, settings, rng)
        case _:
            assert_never(decision.kind)


def _look_again_later(
    row: ClaimedRow, decision: RowDecision, settings: ReversalSettings, rng: random.Random
) -> RowChange:
    """Out of attempts, but Stripe did not answer the look-up: unknown, so not given up.

    ``retry_count`` stays at ``max_attempts``, which makes later runs only look,
    never send (``ReversalBatch._exhausted``); the longest backoff spaces the looks.
    """
    delay = retry_delay(
        settings.max_attempts,
        settings.backoff_base_seconds,
        settings.backoff_cap_seconds,
        settings.backoff_jitter,
        rng,
    )
    message = (
        f"out of attempts ({settings.max_attempts}), but the look-up for an earlier reversal "
        f"had no answer ({describe(decision)}): looking again in "
        f"{int(delay.total_seconds())}s before giving up; {decision.message or ''}"
    ).rstrip("; ")
    return RowChange(
        status_after=PENDING,
        error_message=message[:1000],
        retry_count=settings.max_attempts,
        retry_delay_seconds=delay.total_seconds(),
        calls=decision.calls,
        message=message[:1000],
    )


def _give_up(decision: RowDecision, message: str) -> RowChange:
    return RowChange(
        status_after=FAILED, error_message=message, calls=decision.calls, message=message
    )


def _transient(
    row: ClaimedRow, decision: RowDecision, settings: ReversalSettings, rng: random.Random
) -> RowChange:
    attempts = row.retry_count + 1
    last_error = describe(decision)
    if attempts >= settings.max_attempts:
        message = (
            f"gave up after {attempts} attempt(s) (max_attempts={settings.max_attempts}); "
            f"last error: {last_error}"
        )
        return RowChange(
            status_after=FAILED,
            error_message=message,
            retry_count=attempts,
            calls=decision.calls,
            message=message,
        )
    delay = retry_delay(
        attempts,
        settings.backoff_base_seconds,
        settings.backoff_cap_seconds,
        settings.backoff_jitter,
        rng,
    )
    message = f"attempt {attempts} failed, retrying in {int(delay.total_seconds())}s: {last_error}"
    return RowChange(
        status_after=PENDING,
        error_message=message,
        retry_count=attempts,
        retry_delay_seconds=delay.total_seconds(),
        calls=decision.calls,
        message=message,
    )


def describe(decision: RowDecision) -> str:
    """The decision's error as an operator reads it: class, HTTP status, code, request id."""
    error = decision.error
    if error is None:
        return decision.message or decision.kind.value
    status = f"HTTP {error.http_status}" if error.http_status else "no HTTP status"
    code = f", code {error.stripe_code}" if error.stripe_code else ""
    request = f", request {error.request_id}" if error.request_id else ""
    return f"{type(error).__name__} ({status}{code}{request}): {error.message}"[:1000]
