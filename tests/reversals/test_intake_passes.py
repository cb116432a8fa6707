"""An intake pass: more events than one batch, and the window read from the environment.

Real PostgreSQL; events through ``request_reversal``, as the webhook handler writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.reversals.intake_window import OPEN_DAYS_ENV
from tests.plugins.marketplace import attempts_of, row_state, seed_rows


def _receive(
    engine: sa.Engine, refund_id: str, order_id: str, received_at: datetime | None = None
) -> None:
    with engine.begin() as connection:
        request_reversal(
            connection, refund_id=refund_id, order_id=order_id, received_at=received_at
        )


def test_a_pass_reads_every_event_across_batches_once(engine: sa.Engine) -> None:
    rows = [
        seed_rows(
            engine, None, 1, status="completed", stripe_transfer_id=f"tr_b{i}", order_id=f"ord_b{i}"
        )[0]
        for i in range(5)
    ]
    for i in range(5):
        _receive(engine, f"re_b{i}", f"ord_b{i}")

    summary = process_refund_events(engine, run_id="run-pages", batch_size=2)

    assert summary.events_processed == 5
    assert summary.rows_requested == 5
    assert summary.outcomes == {"reversal_requested": 5}
    assert all(row_state(engine, row.id)["status"] == "reversal_pending" for row in rows)
    assert process_refund_events(engine, run_id="run-again", batch_size=2).events_processed == 0


def test_a_pass_without_a_window_takes_it_from_the_environment(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPEN_DAYS_ENV, "2")
    _receive(engine, "re_env", "ord_env", received_at=datetime.now(UTC) - timedelta(days=3))

    summary = process_refund_events(engine, run_id="run-env")

    [(refund_id, why)] = summary.newly_expired
    assert refund_id == "re_env"
    assert why.startswith(f"open longer than 2 day(s) ({OPEN_DAYS_ENV})")


def test_two_overdue_refunds_of_one_order_request_a_completed_transfer_once(
    engine: sa.Engine,
) -> None:
    """Both events wake when one of the order's payouts completes; the first requests it.

    The second, looked at in the same pass, finds it already requested and the other
    payout still pending: still overdue, no second request, no new history entry, no
    second alert.
    """
    paid_later, still_pending = seed_rows(
        engine, None, 2, status="pending", stripe_transfer_id=None, order_id="ord_split"
    )
    long_ago = datetime.now(UTC) - timedelta(days=40)
    _receive(engine, "re_split_1", "ord_split", received_at=long_ago)
    _receive(engine, "re_split_2", "ord_split", received_at=long_ago)
    first = process_refund_events(engine, run_id="run-1", open_window=timedelta(days=30))
    assert sorted(refund for refund, _ in first.newly_expired) == ["re_split_1", "re_split_2"]
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'completed', stripe_transfer_id = 'tr_split'"
                " WHERE id = :id"
            ),
            {"id": paid_later.id},
        )

    second = process_refund_events(engine, run_id="run-2", open_window=timedelta(days=30))

    assert second.events_processed == 2
    assert second.rows_requested == 1
    assert second.newly_expired == []
    assert second.outcomes == {"expired_unmatched": 2}
    assert row_state(engine, paid_later.id)["status"] == "reversal_pending"
    assert row_state(engine, still_pending.id)["status"] == "pending"
    assert [a["action"] for a in attempts_of(engine, paid_later.id)] == ["intake"]
    assert _history_run_ids(engine, "re_split_1") == ["run-1", "run-2"]
    assert _history_run_ids(engine, "re_split_2") == ["run-1"]


def _history_run_ids(engine: sa.Engine, refund_id: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT h.run_id FROM refund_event_history h"
                    " JOIN refund_events e ON e.id = h.refund_event_id"
                    " WHERE e.refund_id = :r ORDER BY h.id"
                ),
                {"r": refund_id},
            ).scalars()
        )
