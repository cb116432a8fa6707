"""An intake pass: more events than one batch, and the window read from the environment.

Real PostgreSQL; events through ``request_reversal``, as the webhook handler writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.reversals.intake_window import OPEN_DAYS_ENV
from tests.plugins.marketplace import row_state, seed_rows


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
