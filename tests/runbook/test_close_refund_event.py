"""``close-refund-event``: an open event with nothing to reverse is closed by hand, audited."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner, Result

from reversal_pipeline.cli import main
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from tests.plugins.marketplace import seed_rows


def _run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"REVERSAL_DATABASE_URL": database_url})


def _state(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        events = connection.execute(sa.text("SELECT * FROM refund_events ORDER BY id")).all()
        history = connection.execute(
            sa.text("SELECT * FROM refund_event_history ORDER BY id")
        ).all()
    return [*map(tuple, events), *map(tuple, history)]


def test_operator_closes_an_open_event_with_a_reason_in_the_history(
    engine: sa.Engine, database_url: str
) -> None:
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_platform", order_id="ord_platform_sale")
    process_refund_events(engine, run_id="run-1")

    result = _run(
        database_url, "close-refund-event", "--refund-id", "re_platform", "--reason", "no seller"
    )

    assert result.exit_code == 0, result.output
    assert "closed refund event re_platform" in result.output
    with engine.connect() as connection:
        event = connection.execute(
            sa.text(
                "SELECT outcome, processed_at FROM refund_events WHERE refund_id = 're_platform'"
            )
        ).one()
        last = (
            connection.execute(
                sa.text("SELECT * FROM refund_event_history ORDER BY id DESC LIMIT 1")
            )
            .mappings()
            .one()
        )
    assert event.outcome == "closed_by_operator"
    assert event.processed_at is not None
    assert (last["outcome_before"], last["outcome_after"], last["actor"]) == (
        "waiting_for_transfer",
        "closed_by_operator",
        "operator",
    )
    assert "no seller" in last["detail"]
    assert process_refund_events(engine, run_id="run-2").events_processed == 0


def test_close_is_refused_while_the_order_has_a_paid_transfer_or_is_closed(
    engine: sa.Engine, database_url: str
) -> None:
    [row] = seed_rows(engine, None, 1, status="pending", stripe_transfer_id=None, order_id="ord_p")
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_paid_later", order_id="ord_p")
        request_reversal(connection, refund_id="re_done", order_id="ord_done")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'completed', stripe_transfer_id = 'tr_p'"
                " WHERE id = :id"
            ),
            {"id": row.id},
        )
    before = _state(engine)

    paid = _run(database_url, "close-refund-event", "--refund-id", "re_paid_later", "--reason", "x")
    unknown = _run(database_url, "close-refund-event", "--refund-id", "re_nope", "--reason", "x")
    no_reason = _run(database_url, "close-refund-event", "--refund-id", "re_done")

    assert paid.exit_code != 0
    assert f"completed transfer(s) {row.id} to reverse" in paid.stderr
    assert unknown.exit_code != 0
    assert "no refund event with refund_id 're_nope'" in unknown.stderr
    assert no_reason.exit_code != 0
    assert "--reason is required" in no_reason.stderr
    assert _state(engine) == before

    _run(database_url, "close-refund-event", "--refund-id", "re_done", "--reason", "ok")
    again = _run(database_url, "close-refund-event", "--refund-id", "re_done", "--reason", "ok")
    assert again.exit_code != 0
    assert "already closed (closed_by_operator)" in again.stderr
