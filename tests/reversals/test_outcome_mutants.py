"""``outcome.change_for``: each decision's write, checked field by field (issue 12 mutants).

A plain function of the decision, the row's counters and the settings; no
database needed to check what it asks the database to write.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from reversal_pipeline.errors import StripeRateLimited, TransientStripeError
from reversal_pipeline.reversals.backoff import retry_delay
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.outcome import change_for, describe
from reversal_pipeline.reversals.record import RowChange, StripeCallRecord
from reversal_pipeline.reversals.reverse import RowDecision
from reversal_pipeline.reversals.settings import ReversalSettings

SETTINGS = ReversalSettings(
    max_attempts=4, backoff_base_seconds=10, backoff_cap_seconds=60, backoff_jitter=0.0
)


def _row(retry_count: int = 0) -> ClaimedRow:
    return ClaimedRow(
        id=7,
        order_id="ord_7",
        seller_id="s",
        stripe_transfer_id="tr_7",
        amount=500,
        currency="usd",
        retry_count=retry_count,
        stripe_attempts=retry_count,
        reversal_requested_at=None,
    )


#: The calls a decision carries: every change must carry them to the audit trail.
CALLS = [StripeCallRecord(action="create_reversal", outcome="transient", http_status=500)]


def _change(
    decision: RowDecision, retry_count: int = 0, settings: ReversalSettings = SETTINGS
) -> RowChange:
    """The change for ``decision``; checks on the way that it carries the decision's calls."""
    if not decision.calls:
        decision = dataclasses.replace(decision, calls=list(CALLS))
    change = change_for(_row(retry_count), decision, settings, random.Random(1))
    assert change.calls == decision.calls
    assert change.calls
    return change


@pytest.mark.parametrize("kind", ["reversed", "already_reversed", "found_existing"])
def test_money_moved_is_reversed_with_its_reversal_id(kind: str) -> None:
    change = _change(RowDecision(kind=kind, reversal_id="trr_1", message="note"))
    assert change.status_after == "reversed"
    assert change.stripe_reversal_id == "trr_1"
    assert change.error_message == "note"
    assert change.message == "note"
    assert change.retry_count is None
    assert change.retry_delay_seconds is None


@pytest.mark.parametrize("kind", ["reversed", "already_reversed", "found_existing"])
def test_money_moved_writes_what_stripe_confirmed_else_the_target(kind: str) -> None:
    """Issue 17: the write lands only if this covers the target, so it must be Stripe's figure."""
    row = dataclasses.replace(_row(), reversal_target=300, amount_reversed=100)
    told = RowDecision(kind=kind, reversal_id="trr_1", calls=list(CALLS), amount_reversed=450)
    untold = RowDecision(kind=kind, reversal_id="trr_1", calls=list(CALLS))

    assert change_for(row, told, SETTINGS, random.Random(1)).amount_reversed == 450
    # A decision that does not say (a test's hand-made one): the row's target, not its amount.
    assert change_for(row, untold, SETTINGS, random.Random(1)).amount_reversed == 300


@pytest.mark.parametrize("kind", ["transient", "not_confirmed", "exhausted", "lookup_failed"])
def test_a_change_that_is_not_reversed_leaves_the_amount_reversed_alone(kind: str) -> None:
    decision = RowDecision(kind=kind, calls=list(CALLS), amount_reversed=450)
    assert _change(decision, retry_count=SETTINGS.max_attempts).amount_reversed is None


@pytest.mark.parametrize("kind", ["not_found", "not_confirmed", "invalid"])
def test_final_failures_keep_their_message_and_count_nothing(kind: str) -> None:
    change = _change(RowDecision(kind=kind, message="why"), retry_count=1)
    assert change.status_after == "permanently_failed"
    assert change.error_message == change.message == "why"
    assert change.retry_count is None
    assert change.retry_delay_seconds is None
    assert _change(RowDecision(kind=kind)).error_message == "failed"


def test_a_transient_error_is_counted_and_backed_off() -> None:
    error = TransientStripeError("boom", http_status=500, stripe_code="x", request_id="req_1")
    change = _change(RowDecision(kind="transient", error=error), retry_count=1)
    assert change.status_after == "reversal_pending"
    assert change.retry_count == 2
    assert change.retry_delay_seconds == 20  # base 10 x 2^(2-1), no jitter
    assert change.message == change.error_message
    assert change.message == (
        "attempt 2 failed, retrying in 20s: "
        "TransientStripeError (HTTP 500, code x, request req_1): boom"
    )


def test_the_last_attempt_gives_up_with_the_count() -> None:
    change = _change(RowDecision(kind="transient", message="late"), retry_count=3)
    assert change.status_after == "permanently_failed"
    assert change.retry_count == 4
    assert change.retry_delay_seconds is None
    assert change.message == change.error_message
    assert change.message == "gave up after 4 attempt(s) (max_attempts=4); last error: late"


def test_one_before_the_last_still_retries() -> None:
    change = _change(RowDecision(kind="transient", message="x"), retry_count=2)
    assert change.status_after == "reversal_pending"
    assert change.retry_count == 3


def test_exhausted_gives_up_after_looking_once_more() -> None:
    change = _change(RowDecision(kind="exhausted", message="nothing there"), retry_count=4)
    assert change.status_after == "permanently_failed"
    assert change.retry_count is None
    assert change.message == change.error_message
    assert change.message == (
        "gave up after 4 attempt(s) (max_attempts=4); looked once more: nothing there"
    )


def test_a_failed_look_up_keeps_the_row_pending_at_the_longest_backoff() -> None:
    error = StripeRateLimited("slow down", http_status=429)
    change = _change(RowDecision(kind="lookup_failed", error=error, message="m"), retry_count=4)
    assert change.status_after == "reversal_pending"
    assert change.retry_count == 4  # stays at max_attempts: later runs only look
    assert change.retry_delay_seconds == 60  # min(cap 60, 10 x 2^3)
    assert change.message == change.error_message
    assert change.message.startswith("out of attempts (4), but the look-up")
    assert "StripeRateLimited (HTTP 429): slow down" in change.message
    assert change.message.endswith("looking again in 60s before giving up; m")
    without = _change(RowDecision(kind="lookup_failed", error=error), retry_count=4)
    assert without.message.endswith("before giving up")


def test_describe_names_class_status_code_and_request() -> None:
    assert describe(RowDecision(kind="transient", message="m")) == "m"
    assert describe(RowDecision(kind="transient")) == "transient"
    bare = TransientStripeError("x")
    assert describe(RowDecision(kind="transient", error=bare)) == (
        "TransientStripeError (no HTTP status): x"
    )
    long = TransientStripeError("y" * 2000, http_status=503)
    assert len(describe(RowDecision(kind="transient", error=long))) == 1000


JITTERY = ReversalSettings(
    max_attempts=4, backoff_base_seconds=10, backoff_cap_seconds=60, backoff_jitter=0.5
)


def test_a_retry_draws_its_jitter_from_the_batch_generator() -> None:
    """The batch's seeded generator, not the module's ``random``: a run can be replayed."""
    change = _change(RowDecision(kind="transient", message="x"), retry_count=1, settings=JITTERY)
    expected = retry_delay(2, 10, 60, 0.5, random.Random(1))
    assert change.retry_delay_seconds == expected.total_seconds()
    assert change.message == f"attempt 2 failed, retrying in {int(expected.total_seconds())}s: x"


def test_a_failed_look_up_draws_its_jitter_from_the_batch_generator() -> None:
    decision = RowDecision(kind="lookup_failed", message="x")
    change = _change(decision, retry_count=4, settings=JITTERY)
    expected = retry_delay(4, 10, 60, 0.5, random.Random(1))
    assert change.retry_delay_seconds == expected.total_seconds()


def test_a_failed_look_up_keeps_a_message_ending_in_the_stripped_characters() -> None:
    """Only the empty tail ("; ") is cut, never the decision's own last characters."""
    change = _change(RowDecision(kind="lookup_failed", message="MAX"), retry_count=4)
    assert change.message.endswith("before giving up; MAX")


def test_a_long_failed_look_up_message_is_cut_to_the_column_size() -> None:
    error = StripeRateLimited("z" * 2000, http_status=429)
    change = _change(RowDecision(kind="lookup_failed", error=error), retry_count=4)
    assert change.message is not None
    assert len(change.message) == len(change.error_message or "") == 1000
