"""Least privilege: what ``reversal_job`` and ``reversal_reader`` may and may not do.

Each test logs in as a fresh login user that holds only one of the roles,
exactly as a deployer would set it up (``CREATE ROLE ... LOGIN IN ROLE``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.db import migrate
from reversal_pipeline.db.roles import JOB_PRIVILEGES, Role
from reversal_pipeline.db.tables import metadata
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.defs.reconciliation.harness import run_reconciliation
from tests.plugins.dagster_job import materialization_metadata, run_reversal_job
from tests.plugins.marketplace import row_state, seed_rows

PASSWORD = "role-test-password"


def _login_user(admin_url: str, role: Role) -> Iterator[str]:
    """A login user holding only ``role``; yields its URL for the same database."""
    name = f"rp_login_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(
            sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}' IN ROLE {role}")
        )
    url = sa.make_url(admin_url).set(username=name, password=PASSWORD)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        # Other engines of the test may still hold sessions of this user.
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"),
            {"n": name},
        )
        connection.execute(sa.text(f"DROP ROLE {name}"))
    admin.dispose()


@pytest.fixture
def job_user_url(database_url: str) -> Iterator[str]:
    yield from _login_user(database_url, Role.JOB)


@pytest.fixture
def reader_user_url(database_url: str) -> Iterator[str]:
    yield from _login_user(database_url, Role.READER)


def _refused(url: str, statement: str) -> str:
    """Run ``statement`` as the user of ``url``; return the error it must raise."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection, pytest.raises(sa.exc.DBAPIError) as raised:
            connection.execute(sa.text(statement))
        return str(raised.value.orig)
    finally:
        engine.dispose()


def _allowed(url: str, statement: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_roles_exist_nologin_and_migrate_again_is_idempotent(engine: sa.Engine) -> None:
    report = migrate.upgrade(engine)  # second time: roles exist, grants re-applied
    assert report.created == ()
    assert report.missing == ()
    assert set(report.granted_tables) == set(JOB_PRIVILEGES)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'reversal_%'")
        ).all()
    assert dict(rows) == {"reversal_job": False, "reversal_reader": False}


def test_every_table_of_the_schema_has_its_job_privileges_listed() -> None:
    """A new table without an entry would be unusable by the job, or granted by guesswork."""
    assert set(metadata.tables) <= set(JOB_PRIVILEGES)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM reversal_attempts",
        "UPDATE reversal_attempts SET message = 'x'",
        "DELETE FROM seller_transfers",
        "TRUNCATE reversal_attempts",
        "TRUNCATE seller_transfers CASCADE",
        "DROP TABLE reconciliation_drift",
        "ALTER TABLE seller_transfers ADD COLUMN x int",
        "ALTER TABLE reversal_attempts DISABLE TRIGGER ALL",
        "CREATE TABLE sneaky (id int)",
        "INSERT INTO seller_transfers (order_id, seller_id, amount, currency)"
        " VALUES ('o', 's', 1, 'usd')",
        "CREATE ROLE sneaky_role",
    ],
)
def test_job_user_cannot_rewrite_history_or_change_the_schema(
    job_user_url: str, statement: str
) -> None:
    message = _refused(job_user_url, statement)
    assert "permission denied" in message or "must be owner" in message, message


def test_job_user_cannot_read_tables_it_does_not_need(
    engine: sa.Engine, job_user_url: str, reader_user_url: str
) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE customer_cards (pan text)"))
    migrate.upgrade(engine)  # a later migrate must not grant it either
    for url in (job_user_url, reader_user_url):
        assert "permission denied" in _refused(url, "SELECT * FROM customer_cards")


def test_reader_reads_everything_of_ours_and_writes_nothing(reader_user_url: str) -> None:
    for table in JOB_PRIVILEGES:
        _allowed(reader_user_url, f"SELECT count(*) FROM {table}")
    for statement in (
        "UPDATE seller_transfers SET status = status",
        "INSERT INTO refund_events (refund_id, order_id) VALUES ('re_x', 'o')",
        "UPDATE reconciliation_drift SET resolved_at = now()",
    ):
        assert "permission denied" in _refused(reader_user_url, statement)


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE reversal_attempts",
        "TRUNCATE seller_transfers CASCADE",
        "TRUNCATE refund_event_history",
    ],
)
def test_even_the_owner_cannot_truncate_the_audit_trail(
    engine: sa.Engine, stripe_emulator: EmulatorServer, statement: str
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO reversal_attempts (seller_transfer_id, action, outcome, actor)"
                " VALUES (:id, 'intake', 'reversal_requested', 'test')"
            ),
            {"id": row.id},
        )
    with (
        engine.connect() as connection,
        pytest.raises(sa.exc.DBAPIError, match="TRUNCATE refused"),
    ):
        connection.execute(sa.text(statement))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM reversal_attempts")).scalar() == 1
        assert connection.execute(sa.text("SELECT count(*) FROM seller_transfers")).scalar() == 1


def test_job_and_reconciliation_run_as_a_user_with_only_reversal_job(
    job_env: dict,
    monkeypatch: pytest.MonkeyPatch,
    job_user_url: str,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    rows = seed_rows(engine, stripe_emulator.control(), 3, status="completed")
    with engine.begin() as connection:
        for i, row in enumerate(rows):
            request_reversal(connection, refund_id=f"re_roles_{i}", order_id=row.order_id)
    monkeypatch.setenv("REVERSAL_DATABASE_URL", job_user_url)
    monkeypatch.setenv("REVERSAL_REPORTS_DIR", str(tmp_path / "reports"))

    reversal = run_reversal_job(dagster_instance)
    reconciliation = run_reconciliation(dagster_instance)

    assert reversal.success
    assert reconciliation.success
    assert {row_state(engine, r.id)["status"] for r in rows} == {"reversed"}
    with engine.connect() as connection:
        runs = connection.execute(
            sa.text("SELECT complete, error_message FROM reconciliation_runs")
        ).all()
        holders = connection.execute(sa.text("SELECT count(*) FROM stripe_budget_holders"))
        assert holders.scalar() >= 1  # the shared budget was drawn on, as this user
    assert runs == [(True, None)]
    outcome = materialization_metadata(reversal, "reversal_outcomes")
    assert outcome["stripe_budget_mode"] == "shared"
    assert outcome["stripe_budget_granted"] >= 3
