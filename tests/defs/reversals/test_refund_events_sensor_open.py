"""refund_events_sensor wakes a run when a waiting refund event becomes actionable."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.sensors import refund_events_sensor
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from tests.plugins.marketplace import seed_rows


def _tick(instance: dg.DagsterInstance, url: str, cursor: str | None) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": DatabaseResource(url=url)}
    )
    return refund_events_sensor.evaluate_tick(context)


def test_sensor_requests_a_run_when_a_waiting_event_becomes_actionable(
    dagster_instance: dg.DagsterInstance, engine: sa.Engine, database_url: str
) -> None:
    [row] = seed_rows(
        engine, None, 1, status="pending", stripe_transfer_id=None, order_id="ord_wait"
    )
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_wait", order_id="ord_wait")
        request_reversal(connection, refund_id="re_norow", order_id="ord_norow")
    new = _tick(dagster_instance, database_url, None)
    [first] = new.run_requests
    assert first.run_key
    assert first.run_key.startswith("refund-events-through-")
    process_refund_events(engine, run_id="run-1")  # both wait now

    idle = _tick(dagster_instance, database_url, new.cursor)
    assert not idle.run_requests  # waiting, nothing changed: no run
    assert "no unprocessed refund events" in (idle.skip_message or "")

    with engine.begin() as connection:  # the application pays the seller out
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'completed', stripe_transfer_id = 'tr_w'"
                " WHERE id = :id"
            ),
            {"id": row.id},
        )
    paid = _tick(dagster_instance, database_url, idle.cursor)
    [request] = paid.run_requests
    assert request.run_key
    assert request.run_key.startswith("refund-events-actionable-")
    assert request.tags["refund_events_actionable"] == "1"
    assert not _tick(dagster_instance, database_url, paid.cursor).run_requests  # once

    process_refund_events(engine, run_id="run-2")
    seed_rows(engine, None, 1, status="pending", stripe_transfer_id=None, order_id="ord_norow")
    appeared = _tick(dagster_instance, database_url, paid.cursor)
    [row_request] = appeared.run_requests  # the row of the other event appeared
    assert row_request.run_key != request.run_key


def test_sensor_reads_the_plain_integer_cursor_of_its_earlier_version(
    dagster_instance: dg.DagsterInstance, engine: sa.Engine, database_url: str
) -> None:
    with engine.begin() as connection:
        receipt = request_reversal(connection, refund_id="re_old_cursor", order_id="ord_c")
    assert not _tick(dagster_instance, database_url, str(receipt.refund_event_id)).run_requests
    assert _tick(dagster_instance, database_url, str(receipt.refund_event_id - 1)).run_requests
