"""The read-only views of open refund events that the checks, metadata and ``status`` share.

Real PostgreSQL. Events are received through ``request_reversal`` (with a past
``received_at`` for the overdue one) and closed by a real intake pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.reversals.open_events import list_open_events, summarize_open_events
from tests.plugins.marketplace import seed_rows

WINDOW = timedelta(days=30)


def _receive(engine: sa.Engine, refund_id: str, order_id: str, days_ago: float) -> datetime:
    received_at = datetime.now(UTC) - timedelta(days=days_ago)
    with engine.begin() as connection:
        request_reversal(
            connection, refund_id=refund_id, order_id=order_id, received_at=received_at
        )
    return received_at


def _three_events(engine: sa.Engine) -> datetime:
    """An overdue open event, a young open one, and one intake closes; returns the oldest's time."""
    oldest = _receive(engine, "re_overdue", "ord_none_yet", days_ago=40)
    _receive(engine, "re_young", "ord_none_either", days_ago=2)
    seed_rows(
        engine, None, 1, status="completed", stripe_transfer_id="tr_paid", order_id="ord_paid"
    )
    _receive(engine, "re_closed", "ord_paid", days_ago=50)  # older, but closed: not shown
    process_refund_events(engine, run_id="run-views", open_window=WINDOW)
    return oldest


def test_summary_counts_open_and_overdue_events_and_names_the_oldest_open(
    engine: sa.Engine,
) -> None:
    oldest = _three_events(engine)
    with engine.connect() as connection:
        summary = summarize_open_events(connection, WINDOW)

    assert (summary.open_count, summary.past_window_count) == (2, 1)
    assert summary.oldest_received_at == oldest
    assert summary.oldest_age is not None
    assert timedelta(days=40) <= summary.oldest_age < timedelta(days=40, minutes=10)


def test_summary_of_an_empty_inbox_is_zero_and_no_oldest(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        summary = summarize_open_events(connection, WINDOW)
    assert (summary.open_count, summary.past_window_count) == (0, 0)
    assert (summary.oldest_received_at, summary.oldest_age) == (None, None)


def test_listing_is_oldest_first_with_age_in_days_and_can_keep_only_the_overdue(
    engine: sa.Engine,
) -> None:
    _three_events(engine)
    with engine.connect() as connection:
        every_open = list_open_events(connection, WINDOW)
        overdue = list_open_events(connection, WINDOW, past_window_only=True)
        first = list_open_events(connection, WINDOW, limit=1)

    assert [e["refund_id"] for e in every_open] == ["re_overdue", "re_young"]
    assert [e["age_days"] for e in every_open] == [40.0, 2.0]
    assert [e["outcome"] for e in every_open] == ["expired_unmatched", "waiting_for_transfer"]
    assert "age" not in every_open[0]  # replaced by its reading in days
    assert [e["refund_id"] for e in overdue] == ["re_overdue"]
    assert [e["refund_id"] for e in first] == ["re_overdue"]
