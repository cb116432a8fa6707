"""``open_drift``'s core: a finding held in grace counts as drift once its grace ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift
from reversal_pipeline.reconciliation.categories import Severity
from reversal_pipeline.reconciliation.open_findings import drift_watermark, read_open_drift

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
