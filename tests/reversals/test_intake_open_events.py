"""Issue 12 defect 9: a refund that arrives before its payout is acted on later, never dropped.

Real PostgreSQL; the application's writes (a seller transfer row appearing,
a payout completing or failing) are plain SQL, as the application makes them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.reversals.intake_window import OPEN_DAYS_ENV, refund_open_window
from tests.plugins.marketplace import attempts_of, row_state, seed_rows
from tests.plugins.refunds import refund_event

WINDOW = timedelta(days=30)


def _history(engine: sa.Engine, refund_id: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(r)
            for r in connection.execute(
                sa.text(
                    "SELECT h.* FROM refund_event_history h"
                    " JOIN refund_events e ON e.id = h.refund_event_id"
                    " WHERE e.refund_id = :r ORDER BY h.id"
                ),
                {"r": refund_id},
            ).mappings()
        ]


def _refund(engine: sa.Engine, refund_id: str, order_id: str, **kwargs: Any) -> None:
    with engine.begin() as connection:
        request_reversal(connection, refund_id=refund_id, order_id=order_id, **kwargs)


def _intake(engine: sa.Engine, run_id: str = "run") -> Any:
    return process_refund_events(engine, run_id=run_id, open_window=WINDOW)


def _pay_out(engine: sa.Engine, row_id: int, status: str = "completed") -> None:
    """What the application does when the payout settles (or fails)."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = :s,"
                " stripe_transfer_id = CASE WHEN :s = 'completed' THEN 'tr_paid_' || id END"
                " WHERE id = :id"
            ),
            {"s": status, "id": row_id},
        )


def _pending_row(engine: sa.Engine, order_id: str) -> int:
    [row] = seed_rows(engine, None, 1, status="pending", stripe_transfer_id=None, order_id=order_id)
    return row.id


def test_refund_before_its_row_exists_is_requested_when_the_row_appears(
    engine: sa.Engine,
) -> None:
    _refund(engine, "re_before_row", "ord_late")
    _intake(engine, "run-1")
    assert refund_event(engine, "re_before_row")["outcome"] == "waiting_for_transfer"

    [row] = seed_rows(
        engine, None, 1, status="completed", stripe_transfer_id="tr_late", order_id="ord_late"
    )
    summary = _intake(engine, "run-2")

    assert summary.rows_requested == 1
    assert row_state(engine, row.id)["status"] == "reversal_pending"
    event = refund_event(engine, "re_before_row")
    assert (event["outcome"], event["processed_at"] is not None) == ("reversal_requested", True)
    history = _history(engine, "re_before_row")
    assert [(h["outcome_before"], h["outcome_after"], h["closed"]) for h in history] == [
        (None, "waiting_for_transfer", False),
        ("waiting_for_transfer", "reversal_requested", True),
    ]
    assert history[1]["seller_transfer_ids"] == [row.id]
    assert history[1]["run_id"] == "run-2"
    [audit] = attempts_of(engine, row.id)
    assert (audit["action"], audit["message"]) == ("intake", "refund re_before_row succeeded")


def test_refund_while_payout_pending_is_requested_when_it_completes(engine: sa.Engine) -> None:
    row_id = _pending_row(engine, "ord_pending")
    _refund(engine, "re_pending", "ord_pending")
    _intake(engine)
    assert refund_event(engine, "re_pending")["outcome"] == "waiting_for_payout"
    assert _intake(engine).events_processed == 0  # nothing changed: not looked at again

    _pay_out(engine, row_id)
    assert _intake(engine).rows_requested == 1

    assert row_state(engine, row_id)["status"] == "reversal_pending"
    assert refund_event(engine, "re_pending")["outcome"] == "reversal_requested"


def test_refund_whose_payout_failed_is_closed_with_that_outcome(engine: sa.Engine) -> None:
    row_id = _pending_row(engine, "ord_fails")
    _refund(engine, "re_fails", "ord_fails")
    _intake(engine)
    _pay_out(engine, row_id, "failed")

    summary = _intake(engine)

    event = refund_event(engine, "re_fails")
    assert event["outcome"] == "payout_failed"
    assert event["processed_at"] is not None
    assert f"({row_id})" in event["outcome_detail"]
    assert summary.rows_requested == 0
    assert row_state(engine, row_id)["status"] == "failed"
    assert attempts_of(engine, row_id) == []


def test_partly_paid_order_reverses_the_paid_now_and_waits_for_the_rest(
    engine: sa.Engine,
) -> None:
    """Each transfer is requested once, when it is paid; the event closes when none is pending."""
    [paid] = seed_rows(
        engine, None, 1, status="completed", stripe_transfer_id="tr_mix", order_id="ord_mix"
    )
    later = _pending_row(engine, "ord_mix")
    never = _pending_row(engine, "ord_mix")
    _refund(engine, "re_mix", "ord_mix")

    assert _intake(engine, "run-1").rows_requested == 1
    assert row_state(engine, paid.id)["status"] == "reversal_pending"
    event = refund_event(engine, "re_mix")
    assert (event["outcome"], event["processed_at"]) == ("waiting_for_payout", None)

    _pay_out(engine, later)
    assert _intake(engine, "run-2").rows_requested == 1  # only the newly paid one
    assert refund_event(engine, "re_mix")["processed_at"] is None  # `never` still pending

    _pay_out(engine, never, "failed")
    assert _intake(engine, "run-3").rows_requested == 0
    event = refund_event(engine, "re_mix")
    assert event["outcome"] == "reversal_requested"
    assert event["processed_at"] is not None

    assert [len(attempts_of(engine, i)) for i in (paid.id, later, never)] == [1, 1, 0]
    history = _history(engine, "re_mix")
    assert [h["seller_transfer_ids"] for h in history] == [[paid.id], [later], []]
    assert [h["run_id"] for h in history] == ["run-1", "run-2", "run-3"]
    assert _intake(engine, "run-4").events_processed == 0


def test_refund_open_past_the_window_is_expired_and_still_acted_on_later(
    engine: sa.Engine,
) -> None:
    old = datetime.now(UTC) - WINDOW - timedelta(hours=1)
    _refund(engine, "re_old", "ord_old", received_at=old)
    _refund(engine, "re_young", "ord_young")

    summary = _intake(engine)

    event = refund_event(engine, "re_old")
    assert (event["outcome"], event["processed_at"]) == ("expired_unmatched", None)
    assert "open longer than 30 day(s)" in event["outcome_detail"]
    assert [refund for refund, _ in summary.newly_expired] == ["re_old"]
    assert refund_event(engine, "re_young")["outcome"] == "waiting_for_transfer"
    assert _intake(engine).newly_expired == []  # alerted once in the log; the check keeps it red

    [row] = seed_rows(
        engine, None, 1, status="completed", stripe_transfer_id="tr_old", order_id="ord_old"
    )
    _intake(engine)
    assert row_state(engine, row.id)["status"] == "reversal_pending"
    assert refund_event(engine, "re_old")["outcome"] == "reversal_requested"
    assert [h["outcome_after"] for h in _history(engine, "re_old")] == [
        "expired_unmatched",
        "reversal_requested",
    ]


def test_redelivered_webhook_for_an_open_event_keeps_it_open(engine: sa.Engine) -> None:
    _refund(engine, "re_redelivered", "ord_redelivered")
    _intake(engine)
    with engine.begin() as connection:
        again = request_reversal(connection, refund_id="re_redelivered", order_id="ord_redelivered")
    assert again.duplicate
    assert refund_event(engine, "re_redelivered")["outcome"] == "waiting_for_transfer"

    [row] = seed_rows(
        engine,
        None,
        1,
        status="completed",
        stripe_transfer_id="tr_redelivered",
        order_id="ord_redelivered",
    )
    _intake(engine)
    assert row_state(engine, row.id)["status"] == "reversal_pending"


def test_second_refund_of_an_order_already_being_reversed_closes_without_a_second_request(
    engine: sa.Engine,
) -> None:
    [row] = seed_rows(
        engine, None, 1, status="completed", stripe_transfer_id="tr_twice", order_id="ord_twice"
    )
    _refund(engine, "re_first", "ord_twice")
    _refund(engine, "re_second", "ord_twice")

    assert _intake(engine).rows_requested == 1

    second = refund_event(engine, "re_second")
    assert second["outcome"] == "reversal_requested"
    assert f"already requested earlier: {row.id}" in second["outcome_detail"]
    assert len(attempts_of(engine, row.id)) == 1


def test_refund_event_history_is_append_only(engine: sa.Engine) -> None:
    _refund(engine, "re_audit", "ord_audit")
    _intake(engine)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM refund_event_history"))


def test_open_window_comes_from_the_environment_and_refuses_nonsense() -> None:
    assert refund_open_window({}) == timedelta(days=30)
    assert refund_open_window({OPEN_DAYS_ENV: "7"}) == timedelta(days=7)
    for bad in ("0", "-3", "seven", "1.5"):
        with pytest.raises(ConfigurationError, match=OPEN_DAYS_ENV):
            refund_open_window({OPEN_DAYS_ENV: bad})
