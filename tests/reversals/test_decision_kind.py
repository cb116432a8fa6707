"""``DecisionKind``: the closed vocabulary of what happened to a row (issue 16).

The values reach the audit trail, the run's metadata and the report, so they are
pinned here; the two mappings over them (the row's status, the row's write) must
agree for every kind, and a decision, which crosses threads, cannot be edited.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.outcome import change_for
from reversal_pipeline.reversals.record import StripeCallRecord
from reversal_pipeline.reversals.reverse import DecisionKind, RowDecision, final_status_for
from reversal_pipeline.reversals.settings import ReversalSettings

SETTINGS = ReversalSettings(
    max_attempts=4, backoff_base_seconds=10, backoff_cap_seconds=60, backoff_jitter=0.0
)
ROW = ClaimedRow(
    id=7,
    order_id="ord_7",
    seller_id="s",
    stripe_transfer_id="tr_7",
    amount=500,
    currency="usd",
    retry_count=1,
    stripe_attempts=1,
    reversal_requested_at=None,
)
CALLS = [StripeCallRecord(action="create_reversal", outcome="transient", http_status=500)]


def test_the_stored_values_are_the_eleven_strings_of_before() -> None:
    assert {kind.value for kind in DecisionKind} == {
        "reversed",
        "already_reversed",
        "found_existing",
        "not_found",
        "not_confirmed",
        "transient",
        "lookup_failed",
        "invalid",
        "systemic",
        "continue",
        "exhausted",
    }


@pytest.mark.parametrize("kind", list(DecisionKind))
def test_the_write_has_the_status_final_status_for_names(kind: DecisionKind) -> None:
    decision = RowDecision(kind=kind, calls=list(CALLS), reversal_id="trr_1", message="m")
    change = change_for(ROW, decision, SETTINGS, random.Random(1))
    expected = final_status_for(kind)
    if expected is not None:
        assert change.status_after == expected
    else:  # decided by the retry policy: retried, looked at again, or given up after looking
        assert change.status_after in {"reversal_pending", "permanently_failed"}
        assert kind not in {DecisionKind.REVERSED, DecisionKind.FOUND_EXISTING}


def test_a_decision_cannot_be_edited_only_replaced() -> None:
    decision = RowDecision(kind=DecisionKind.TRANSIENT, calls=list(CALLS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.kind = DecisionKind.LOOKUP_FAILED  # type: ignore[misc]
    replaced = dataclasses.replace(decision, kind=DecisionKind.LOOKUP_FAILED)
    assert (decision.kind, replaced.kind) == (DecisionKind.TRANSIENT, DecisionKind.LOOKUP_FAILED)


def test_a_plain_string_becomes_the_enum_and_an_unknown_one_fails_where_made() -> None:
    assert RowDecision(kind="found_existing").kind is DecisionKind.FOUND_EXISTING  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_lost"):
        RowDecision(kind="lease_lost")  # type: ignore[arg-type]
