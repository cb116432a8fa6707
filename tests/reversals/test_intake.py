"""Refund intake: every event ends with an outcome; only completed transfers are requested."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from reversal_pipeline.errors import InvalidRowError
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from tests.plugins.marketplace import attempts_of, row_state, seed_rows
from tests.plugins.refunds import refund_event


def test_refund_turns_completed_transfers_of_the_order_into_due_rows(engine: sa.Engine) -> None:
    [row] = seed_rows(engine, None, 1, status="completed", stripe_transfer_id="tr_A1")
    with engine.begin() as connection:
        receipt = request_reversal(connection, refund_id="re_1", order_id=row.order_id)
    assert not receipt.duplicate

    summary = process_refund_events(engine, run_id="run-1")

    state = row_state(engine, row.id)
    assert state["status"] == "reversal_pending"
    assert state["next_retry_at"] is not None
    assert state["reversal_requested_at"] is not None
    assert summary.rows_requested == 1
    assert refund_event(engine, "re_1")["outcome"] == "reversal_requested"
    [audit] = attempts_of(engine, row.id)
    assert (audit["action"], audit["status_after"], audit["run_id"]) == (
        "intake",
        "reversal_pending",
        "run-1",
    )


def test_duplicate_refund_event_is_a_no_op(engine: sa.Engine) -> None:
    [row] = seed_rows(engine, None, 1, status="completed", stripe_transfer_id="tr_A2")
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_dup", order_id=row.order_id)
    process_refund_events(engine, run_id="run-1")
    with engine.begin() as connection:
        again = request_reversal(connection, refund_id="re_dup", order_id=row.order_id)
    assert again.duplicate
    assert process_refund_events(engine, run_id="run-2").events_processed == 0
    assert len(attempts_of(engine, row.id)) == 1


def test_duplicate_refund_id_for_another_order_is_refused(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_x", order_id="ord_1")
    with pytest.raises(InvalidRowError, match="already received for order ord_1"):
        with engine.begin() as connection:
            request_reversal(connection, refund_id="re_x", order_id="ord_2")


def test_refund_for_unknown_order_stays_open_not_dropped(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_ghost", order_id="ord_ghost")
    summary = process_refund_events(engine, run_id="run-1")
    event = refund_event(engine, "re_ghost")
    assert event["outcome"] == "waiting_for_transfer"
    assert "ord_ghost" in event["outcome_detail"]
    assert event["processed_at"] is None
    assert summary.waiting[0][:2] == ("re_ghost", "waiting_for_transfer")


def test_refund_for_transfer_not_yet_completed_waits_and_says_why(engine: sa.Engine) -> None:
    [row] = seed_rows(engine, None, 1, status="pending", stripe_transfer_id=None)
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_early", order_id=row.order_id)
    process_refund_events(engine, run_id="run-1")
    event = refund_event(engine, "re_early")
    assert event["outcome"] == "waiting_for_payout"
    assert event["processed_at"] is None
    assert f"transfer(s) {row.id} of order" in event["outcome_detail"]
    assert row_state(engine, row.id)["status"] == "pending"


def test_refund_event_without_ids_is_rejected(engine: sa.Engine) -> None:
    with pytest.raises(InvalidRowError, match="needs refund_id and order_id"):
        with engine.begin() as connection:
            request_reversal(connection, refund_id=" ", order_id="ord_1")
