"""``reversal-pipeline status`` shows the open refund events and the oldest of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.runbook.views import status_report


def test_status_counts_open_refund_events_and_names_the_oldest(
    engine: sa.Engine, database_url: str
) -> None:
    with engine.begin() as connection:
        request_reversal(
            connection,
            refund_id="re_oldest",
            order_id="ord_a",
            received_at=datetime.now(UTC) - timedelta(days=40),
        )
        request_reversal(connection, refund_id="re_newer", order_id="ord_b")
    process_refund_events(engine, run_id="run-1")

    report = status_report(engine)
    printed = CliRunner().invoke(main, ["status"], env={"REVERSAL_DATABASE_URL": database_url})

    assert report.open_refund_events is not None
    assert (report.open_refund_events.open_count, report.open_refund_events.past_window_count) == (
        2,
        1,
    )
    assert report.oldest_open_refund_event is not None
    assert report.oldest_open_refund_event["refund_id"] == "re_oldest"
    assert printed.exit_code == 0, printed.output
    assert "open refund events: 2 (1 past the open window)" in printed.output
    assert "oldest open: re_oldest (order ord_a), expired_unmatched" in printed.output
    assert "40.0 days ago" in printed.output


def test_status_with_no_open_refund_events_says_zero(engine: sa.Engine, database_url: str) -> None:
    printed = CliRunner().invoke(main, ["status"], env={"REVERSAL_DATABASE_URL": database_url})
    assert printed.exit_code == 0, printed.output
    assert "open refund events: 0 (0 past the open window)" in printed.output
    assert "oldest open" not in printed.output
