"""``open_drift``'s core: a finding held in grace counts as drift once its grace ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift
from reversal_pipeline.reconciliation.categories import Category, Severity
from reversal_pipeline.reconciliation.open_findings import (
    day_open_counts,
    drift_watermark,
    read_open_drift,
)
from reversal_pipeline.reconciliation.repair import days_with_repairable_findings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _plant_in_grace(engine: sa.Engine, grace_ends_at: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.insert(reconciliation_drift).values(
                partition_day=date(2026, 11, 29),
                category="db_reversed_stripe_not",
                severity=Severity.CRITICAL.value,
                finding_key="7",
                seller_transfer_id=7,
                stripe_transfer_id="tr_7",
                amount=1000,
                currency="usd",
                explanation="the database says reversed; Stripe shows no reversal",
                in_grace=True,
                grace_ends_at=grace_ends_at,
                first_seen_at=NOW - timedelta(minutes=5),
                last_seen_at=NOW - timedelta(minutes=5),
            )
        )


def test_in_grace_finding_is_not_drift_before_its_grace_ends(engine: sa.Engine) -> None:
    _plant_in_grace(engine, grace_ends_at=NOW + timedelta(minutes=1))
    with engine.connect() as connection:
        drift = read_open_drift(connection, now=NOW)
    assert drift.count_of(Severity.CRITICAL) == 0
    assert drift.in_grace == 1


def test_in_grace_finding_is_critical_drift_once_its_grace_has_ended(engine: sa.Engine) -> None:
    _plant_in_grace(engine, grace_ends_at=NOW)
    with engine.connect() as connection:
        drift = read_open_drift(connection, now=NOW)
    assert drift.count_of(Severity.CRITICAL) == 1
    assert drift.in_grace == 0
    assert drift.days_with(Severity.CRITICAL) == [date(2026, 11, 29)]


def test_watermark_moves_when_a_grace_ends_with_no_write(engine: sa.Engine) -> None:
    """The refresh sensor must re-materialize ``open_drift`` when grace runs out."""
    _plant_in_grace(engine, grace_ends_at=datetime.now(UTC) + timedelta(days=1))
    with engine.connect() as connection:
        before = drift_watermark(connection)
    with engine.begin() as connection:
        # Only the clock would move it in life; here the grace end is moved into the past.
        connection.execute(
            sa.update(reconciliation_drift).values(
                grace_ends_at=datetime.now(UTC) - timedelta(seconds=1),
                last_seen_at=reconciliation_drift.c.last_seen_at,
            )
        )
    with engine.connect() as connection:
        assert drift_watermark(connection) != before
        assert drift_watermark(connection).endswith("|drift:1")


def _plant(
    engine: sa.Engine,
    day: date,
    category: Category,
    key: int,
    *,
    resolved: bool = False,
    grace_ends_at: datetime | None = None,
) -> None:
    """One finding of ``day`` (drift unless ``grace_ends_at`` is given and still ahead)."""
    with engine.begin() as connection:
        connection.execute(
            sa.insert(reconciliation_drift).values(
                partition_day=day,
                category=category.value,
                severity=Severity.HIGH.value,
                finding_key=str(key),
                seller_transfer_id=key,
                stripe_transfer_id=f"tr_{key}",
                amount=1000,
                currency="usd",
                explanation="planted",
                in_grace=grace_ends_at is not None,
                grace_ends_at=grace_ends_at,
                first_seen_at=NOW - timedelta(hours=1),
                last_seen_at=NOW - timedelta(hours=1),
                resolved_at=NOW if resolved else None,
            )
        )


def test_day_open_counts_counts_the_days_open_findings_and_holds_grace_apart(
    engine: sa.Engine,
) -> None:
    day, other_day = date(2026, 11, 28), date(2026, 11, 27)
    _plant(engine, day, Category.STRIPE_REVERSED_DB_PENDING, 1)
    tomorrow = NOW + timedelta(days=1)
    _plant(engine, day, Category.STRIPE_REVERSED_DB_PENDING, 2, grace_ends_at=tomorrow)
    _plant(engine, day, Category.MISSING_AT_STRIPE, 3, resolved=True)
    _plant(engine, other_day, Category.MISSING_AT_STRIPE, 4)

    with engine.connect() as connection:
        counts = day_open_counts(connection, day, now=NOW)
        after_grace = day_open_counts(connection, day, now=NOW + timedelta(days=2))
    assert counts["severity/high"] == 1
    assert counts["category/stripe_reversed_db_pending"] == 1
    assert counts["category/missing_at_stripe"] == 0
    assert counts["in_grace"] == 1
    assert after_grace["severity/high"] == 2


def test_days_with_repairable_findings_lists_open_repairable_days_oldest_first(
    engine: sa.Engine,
) -> None:
    _plant(engine, date(2026, 11, 25), Category.STRIPE_REVERSED_DB_FAILED, 1)
    _plant(engine, date(2026, 11, 22), Category.STRIPE_REVERSED_DB_PENDING, 2)
    _plant(engine, date(2026, 11, 22), Category.STRIPE_REVERSED_DB_FAILED, 3)
    _plant(engine, date(2026, 11, 23), Category.STRIPE_REVERSED_DB_PENDING, 4, resolved=True)
    _plant(engine, date(2026, 11, 24), Category.DB_REVERSED_STRIPE_NOT, 5)

    with engine.connect() as connection:
        days = days_with_repairable_findings(connection)
    assert days == [date(2026, 11, 22), date(2026, 11, 25)]
