"""``reversals.health``: the questions behind the ``reversal_outcomes`` checks, without Dagster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.reversals.health import (
    EXPIRED_CLAIM_GRACE,
    long_expired_claims,
    pending_without_next_retry_at,
    permanent_failures,
)
from tests.plugins.marketplace import seed_rows


def _seed(engine: sa.Engine, prefix: str, **values: object) -> int:
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=f"tr_{prefix}", order_prefix=prefix)
    if values:
        with engine.begin() as connection:
            connection.execute(
                sa.update(seller_transfers).where(seller_transfers.c.id == row.id).values(values)
            )
    return row.id


def test_a_pending_row_never_due_is_named_and_a_due_one_is_not(engine: sa.Engine) -> None:
    _seed(engine, "due")
    _seed(engine, "done", status="completed", next_retry_at=None)
    # A row edited by hand before the NOT VALID constraint existed (it checks new writes).
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "ALTER TABLE seller_transfers"
                " DROP CONSTRAINT chk_reversal_pending_has_next_retry_at"
            )
        )
    never_due = [_seed(engine, f"stuck{i}", next_retry_at=None) for i in range(3)]

    with engine.connect() as connection:
        assert pending_without_next_retry_at(connection) == never_due
        assert pending_without_next_retry_at(connection, limit=2) == never_due[:2]


def test_only_claims_past_their_lease_by_more_than_the_grace_are_listed(engine: sa.Engine) -> None:
    now = datetime.now(UTC)
    just_expired = _seed(
        engine, "recent", claimed_by="run-a", claim_expires_at=now - timedelta(minutes=1)
    )
    oldest = _seed(engine, "oldest", claimed_by="run-b", claim_expires_at=now - timedelta(hours=3))
    older = _seed(
        engine,
        "older",
        claimed_by="run-c",
        claim_expires_at=now - EXPIRED_CLAIM_GRACE - timedelta(minutes=1),
    )
    _seed(engine, "live", claimed_by="run-d", claim_expires_at=now + timedelta(minutes=5))

    with engine.connect() as connection:
        rows = long_expired_claims(connection)
        assert [r["id"] for r in rows] == [oldest, older]  # oldest first
        assert [r["claimed_by"] for r in rows] == ["run-b", "run-c"]
        assert [r["id"] for r in long_expired_claims(connection, limit=1)] == [oldest]
        shorter = long_expired_claims(connection, grace=timedelta(seconds=30))
    assert [r["id"] for r in shorter] == [oldest, older, just_expired]


def test_permanent_failures_counts_all_and_lists_the_most_recently_changed(
    engine: sa.Engine,
) -> None:
    _seed(engine, "fine")
    # Seeded one transaction after another: the trigger-kept updated_at rises in this order.
    failed = [
        _seed(engine, f"gaveup{i}", status="permanently_failed", error_message=f"no {i}")
        for i in range(3)
    ]
    with engine.connect() as connection:
        failures = permanent_failures(connection, limit=2)
        none_listed = permanent_failures(connection, limit=0)
    assert failures.total == 3
    assert [r["id"] for r in failures.newest] == [failed[2], failed[1]]
    assert [r["error_message"] for r in failures.newest] == ["no 2", "no 1"]
    assert none_listed.total == 3
    assert not none_listed.newest


def test_a_clean_table_answers_nothing(engine: sa.Engine) -> None:
    _seed(engine, "due")
    with engine.connect() as connection:
        assert pending_without_next_retry_at(connection) == []
        assert long_expired_claims(connection) == []
        assert permanent_failures(connection).total == 0
