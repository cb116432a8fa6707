"""The CLI's database commands: migrate, validate-constraints, and one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main
from reversal_pipeline.db import migrate
from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.db.tables import seller_transfers


def run_cli(database_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"REVERSAL_DATABASE_URL": database_url})
    return result.exit_code, result.stdout, result.stderr


def test_migrate_reaches_head_and_is_idempotent(empty_database_url: str) -> None:
    code, out, _ = run_cli(empty_database_url, "migrate", "--status")
    assert code == 0
    assert "current revision: (none)" in out
    assert "pending: 0001" in out
    for _ in range(2):
        code, out, _ = run_cli(empty_database_url, "migrate")
        assert code == 0, out
        assert "schema is up to date" in out


@pytest.fixture
def grandfathered_engine(empty_database_url: str) -> sa.Engine:
    """A database with one violating row written before the NOT VALID constraint came."""
    engine = create_db_engine(empty_database_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            sa.insert(seller_transfers).values(
                order_id="ord_legacy",
                seller_id="seller_legacy",
                stripe_transfer_id="tr_legacy",
                amount=500,
                currency="eur",
                status="reversal_pending",
                next_retry_at=None,
                transferred_at=datetime(2026, 1, 5, tzinfo=UTC),
            )
        )
    migrate.upgrade(engine)
    return engine


def _constraint_validated(engine: sa.Engine) -> bool:
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT convalidated FROM pg_constraint"
                " WHERE conname = 'chk_reversal_pending_has_next_retry_at'"
            )
        ).scalar_one()


def test_grandfathered_row_survives_and_blocks_validation(
    grandfathered_engine: sa.Engine, empty_database_url: str
) -> None:
    with grandfathered_engine.connect() as connection:
        legacy_id = connection.execute(
            sa.select(seller_transfers.c.id).where(seller_transfers.c.order_id == "ord_legacy")
        ).scalar_one()
    code, out, err = run_cli(empty_database_url, "validate-constraints")
    assert code == 1
    assert "chk_reversal_pending_has_next_retry_at" in out
    assert "violating rows: 1" in out
    assert f"id={legacy_id}" in out
    assert "nothing was changed" in err
    assert _constraint_validated(grandfathered_engine) is False

    with grandfathered_engine.begin() as connection:
        connection.execute(
            sa.update(seller_transfers)
            .where(seller_transfers.c.id == legacy_id)
            .values(next_retry_at=sa.func.now())
        )
    code, out, _ = run_cli(empty_database_url, "validate-constraints")
    assert code == 0, out
    # Every NOT VALID check of the schema is validated once no row breaks it: 0002's,
    # 0004's, and 0008's four (targets, refund amounts), whose backfill kept the
    # grandfathered row instead of failing the migration on it.
    assert "validated 6 constraint(s)" in out
    assert _constraint_validated(grandfathered_engine) is True


def test_unreachable_database_gives_one_line_with_host_and_masked_password() -> None:
    url = "postgresql://ops:hunter2secret@db.invalid.example:5433/payments"
    code, out, err = run_cli(url, "migrate", "--status")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "db.invalid.example:5433" in lines[0]
    assert "hunter2secret" not in err + out
    assert "Traceback" not in err


def test_malformed_database_url_is_rejected_in_one_line() -> None:
    code, _, err = run_cli("this is not a url", "migrate")
    assert code == 2
    assert "REVERSAL_DATABASE_URL is not a valid SQLAlchemy URL" in err
