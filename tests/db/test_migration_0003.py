"""Migration 0003 reopens refund events the old intake closed too early, audited."""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.db import migrate
from reversal_pipeline.db.engine import create_db_engine


def _events(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT refund_id, outcome, processed_at IS NULL FROM refund_events")
        ).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_events_closed_as_unknown_or_unpaid_are_reopened_with_a_history_row(
    empty_database_url: str,
) -> None:
    engine = create_db_engine(empty_database_url)
    migrate.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO refund_events (refund_id, order_id, processed_at, outcome) VALUES"
                " ('re_unknown', 'o1', now(), 'unknown_order'),"
                " ('re_unpaid', 'o2', now(), 'no_completed_transfers'),"
                " ('re_done', 'o3', now(), 'reversal_requested')"
            )
        )

    migrate.upgrade(engine)

    assert _events(engine) == {
        "re_unknown": (None, True),
        "re_unpaid": (None, True),
        "re_done": ("reversal_requested", False),
    }
    with engine.connect() as connection:
        history = connection.execute(
            sa.text(
                "SELECT e.refund_id, h.outcome_before, h.actor FROM refund_event_history h"
                " JOIN refund_events e ON e.id = h.refund_event_id ORDER BY e.refund_id"
            )
        ).all()
    assert [tuple(h) for h in history] == [
        ("re_unknown", "unknown_order", "migration_0003"),
        ("re_unpaid", "no_completed_transfers", "migration_0003"),
    ]

    migrate.downgrade(engine, "0002")
    assert _events(engine)["re_done"] == ("reversal_requested", False)
    engine.dispose()
