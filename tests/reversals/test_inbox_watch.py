"""``reversals.inbox_watch``: what ``refund_events_sensor`` reads, asked without Dagster."""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.reversals.inbox_watch import actionable_fingerprint, new_refund_events
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from tests.plugins.marketplace import seed_rows


def _refunds(engine: sa.Engine, *orders: str) -> list[int]:
    with engine.begin() as connection:
        return [
            request_reversal(connection, refund_id=f"re_{order}", order_id=order).refund_event_id
            for order in orders
        ]


def test_new_events_are_those_after_the_cursor_that_intake_has_not_looked_at(
    engine: sa.Engine,
) -> None:
    first, _, third = _refunds(engine, "ord_a", "ord_b", "ord_c")
    with engine.connect() as connection:
        assert new_refund_events(connection, after_id=0).newest_id == third
        assert new_refund_events(connection, after_id=0).waiting == 3
        after_first = new_refund_events(connection, after_id=first)
        assert (after_first.newest_id, after_first.waiting) == (third, 2)
        nothing_after = new_refund_events(connection, after_id=third)
        assert (nothing_after.newest_id, nothing_after.waiting) == (None, 0)

    process_refund_events(engine, run_id="run-1")  # no transfer rows: all three stay open
    with engine.connect() as connection:
        looked_at = new_refund_events(connection, after_id=0)
    assert (looked_at.newest_id, looked_at.waiting) == (None, 0)


def test_the_fingerprint_moves_each_time_an_open_event_becomes_actionable(
    engine: sa.Engine,
) -> None:
    [row] = seed_rows(
        engine, None, 1, status="pending", stripe_transfer_id=None, order_id="ord_wait"
    )
    _refunds(engine, "ord_wait", "ord_norow")
    process_refund_events(engine, run_id="run-1")  # both wait: one for its payout, one its row
    with engine.connect() as connection:
        assert actionable_fingerprint(connection).count == 0
        assert actionable_fingerprint(connection).fingerprint == ""

    with engine.begin() as connection:  # the application pays the seller out
        connection.execute(
            sa.update(seller_transfers)
            .where(seller_transfers.c.id == row.id)
            .values(status="completed", stripe_transfer_id="tr_w")
        )
    with engine.connect() as connection:
        paid = actionable_fingerprint(connection)
        assert paid == actionable_fingerprint(connection)  # stable while nothing changes
    assert paid.count == 1
    assert paid.fingerprint.startswith("1-")

    process_refund_events(engine, run_id="run-2")  # the paid one is requested and closed
    seed_rows(engine, None, 1, status="pending", stripe_transfer_id=None, order_id="ord_norow")
    with engine.connect() as connection:
        appeared = actionable_fingerprint(connection)
    assert appeared.count == 1
    assert appeared.fingerprint != paid.fingerprint
