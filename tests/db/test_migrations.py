"""Migrations reach head, are idempotent, and every downgrade works."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from reversal_pipeline.db import migrate
from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.db.tables import metadata

EXPECTED_TABLES = {
    "seller_transfers",
    "refund_events",
    "refund_event_history",
    "refund_allocations",
    "reversal_attempts",
    "reconciliation_drift",
    "reconciliation_runs",
    "seller_transfer_day_moves",
    "stripe_budget",
    "stripe_budget_holders",
    "unplaced_stripe_refunds",
    "unplaced_stripe_refund_history",
}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_empty_database_migrates_to_head(empty_database_url: str) -> None:
    engine = create_db_engine(empty_database_url)
    assert migrate.schema_status(engine).current is None
    migrate.upgrade(engine)
    status = migrate.schema_status(engine)
    assert status.current == status.head
    assert status.up_to_date
    assert _tables(engine) == EXPECTED_TABLES
    engine.dispose()


def test_migrating_again_changes_nothing(engine: sa.Engine) -> None:
    def snapshot() -> list[tuple[str, str]]:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE connamespace = 'public'::regnamespace ORDER BY conname"
                )
            ).all()

    before = snapshot()
    migrate.upgrade(engine)
    assert snapshot() == before
    assert migrate.schema_status(engine).up_to_date


def test_each_downgrade_works_and_upgrades_again(engine: sa.Engine) -> None:
    head = migrate.schema_status(engine).head
    migrate.downgrade(engine, "0001")
    assert migrate.schema_status(engine).current == "0001"
    pending = migrate.schema_status(engine).pending
    assert (pending[0], pending[-1]) == ("0002", head)
    migrate.downgrade(engine, "base")
    assert migrate.schema_status(engine).current is None
    assert _tables(engine) == set()
    migrate.upgrade(engine)
    assert migrate.schema_status(engine).current == head
    assert _tables(engine) == EXPECTED_TABLES


def test_table_definitions_match_the_migrated_schema(engine: sa.Engine) -> None:
    """tables.py mirrors the migrations; a column added to one only shows up here."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        diff = compare_metadata(context, metadata)
    column_kinds = {"add_column", "remove_column", "add_table", "remove_table"}
    modify_kinds = {"modify_type", "modify_nullable"}
    column_diffs = [
        d
        for d in diff
        if (isinstance(d, tuple) and d[0] in column_kinds)
        or (isinstance(d, list) and d[0][0] in modify_kinds)
    ]
    assert column_diffs == []
