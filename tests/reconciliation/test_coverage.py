"""``covered_until``: a run covers changes up to the oldest transaction open when it reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.reconciliation.coverage import HIDDEN_SESSIONS_MARGIN, covered_until

STARTED = datetime(2099, 1, 1, tzinfo=UTC)  # later than any real transaction


def test_with_no_other_transaction_open_the_run_covers_up_to_its_start(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        assert covered_until(connection, STARTED) == STARTED


def test_an_open_transaction_holds_the_coverage_just_before_its_start(engine: sa.Engine) -> None:
    with engine.connect() as writer:
        began = writer.execute(sa.text("SELECT now()")).scalar_one()  # opens the transaction

        with engine.connect() as connection:
            covered = covered_until(connection, STARTED)
        earlier_start = covered_until_at(engine, began - timedelta(seconds=1))

        writer.rollback()
    assert covered == began - timedelta(microseconds=1)  # a change stamped `began` is later
    assert earlier_start == began - timedelta(seconds=1)  # the run's own start when earlier


def covered_until_at(engine: sa.Engine, started_at: datetime) -> datetime:
    with engine.connect() as connection:
        return covered_until(connection, started_at)


def test_when_other_roles_sessions_are_hidden_a_margin_is_assumed(
    postgres_server_url: str, database_url: str, engine: sa.Engine
) -> None:
    role = f"rp_coverage_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'x'"))
    unprivileged = sa.create_engine(
        sa.make_url(database_url).set(username=role, password="x"), poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as superuser_session:  # a session the role may not look into
            superuser_session.execute(sa.text("SELECT 1"))
            with unprivileged.connect() as connection:
                covered = covered_until(connection, STARTED)
            superuser_session.rollback()
    finally:
        unprivileged.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()

    assert covered == STARTED - HIDDEN_SESSIONS_MARGIN
