"""reconcile_day / reconcile_rows / stale_days on real PostgreSQL and the emulator over HTTP.

The clock is the one fake: ``now`` is passed in, so a test can stand at the
end of the default one-hour grace without waiting for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from reversal_pipeline.db.constraints import find_unvalidated
from reversal_pipeline.reconciliation.run import (
    ReconciliationWindows,
    day_bounds,
    reconcile_day,
    reconcile_rows,
)
from reversal_pipeline.reconciliation.stale_days import recheck_plan, stale_days
from reversal_pipeline.reconciliation.store import latest_findings_for_day, open_findings
from reversal_pipeline.stripe.resource import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import seed_rows
from tests.reconciliation.builders import backdate_changes, update_row

DAY = date(2026, 11, 20)
NEXT_DAY = date(2026, 11, 21)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
DEFAULTS = ReconciliationWindows()  # grace 60 min, margin 15 min: what production runs
ZERO_GRACE = ReconciliationWindows(grace_period=timedelta(0))
Clock = Callable[[], datetime]


@pytest.fixture(params=["grace_0", "default_config"])
def setting(request: pytest.FixtureRequest) -> tuple[ReconciliationWindows, Clock]:
    """The tests' own grace 0, and the default config read once the rows' grace has passed.

    The defects of issue 13 were found with the default configuration, where a
    row written seconds ago is work in progress: each defect test runs both ways.
    """
    if request.param == "grace_0":
        return ZERO_GRACE, lambda: datetime.now(UTC)
    return DEFAULTS, lambda: datetime.now(UTC) + timedelta(minutes=61)


@pytest.fixture
def stripe(stripe_emulator: EmulatorServer, stripe_api_key: str) -> Iterator[StripeResource]:
    resource = StripeResource(api_key=stripe_api_key, api_base=stripe_emulator.url)
    yield resource
    resource.close()


def _stale(engine: sa.Engine, now: datetime) -> dict[date, str]:
    with engine.connect() as connection:
        found = stale_days(connection, since=datetime(2026, 11, 1, tzinfo=UTC), until=now, now=now)
    return {s.day: s.reason for s in found}


def _open(engine: sa.Engine, day: date) -> list[tuple[str, str, bool]]:
    with engine.connect() as connection:
        findings = open_findings(connection, day)
    return sorted(
        zip(findings["category"], findings["finding_key"], findings["in_grace"], strict=True)
    )


def test_in_grace_finding_becomes_drift_and_its_day_stale_when_grace_ends(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe: StripeResource
) -> None:
    """Default config: a row saying reversed, nothing at Stripe, written just before the run."""
    [row] = seed_rows(
        engine,
        stripe_emulator.control(),
        1,
        status="reversed",
        stripe_reversal_id="trr_none",
        reversed_at=NOON,
    )
    started = datetime.now(UTC)

    first = reconcile_day(engine, stripe, DAY, run_id="r1", windows=DEFAULTS, now=lambda: started)

    assert first.stored is not None
    assert first.stored.open_findings == 0  # in grace, not drift yet
    assert ("db_reversed_stripe_not", str(row.id), True) in _open(engine, DAY)
    assert _stale(engine, started + timedelta(minutes=59)) == {}
    grace_over = started + timedelta(minutes=61)
    assert "findings in grace reached their end" in _stale(engine, grace_over)[DAY]
    with engine.connect() as connection:
        assert not latest_findings_for_day(connection, DAY, as_of=grace_over).is_clean

    again = reconcile_day(
        engine, stripe, DAY, run_id="r2", windows=DEFAULTS, now=lambda: grace_over
    )

    assert again.stored is not None
    assert again.stored.open_findings == 2  # db_reversed_stripe_not and reversal_id_mismatch
    assert ("db_reversed_stripe_not", str(row.id), False) in _open(engine, DAY)
    assert _stale(engine, grace_over + timedelta(hours=2)) == {}


def test_only_reconciliation_columns_mark_a_day_stale(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)  # reversal_pending, due now
    reconcile_day(engine, stripe, DAY, run_id="r1", windows=DEFAULTS)
    later = datetime.now(UTC) + timedelta(days=1)
    assert _stale(engine, later) == {}

    # What every reversal run does to a row: claim, lease, count, note, reschedule.
    update_row(
        engine,
        row.id,
        claimed_by="worker-1",
        claim_expires_at=later,
        retry_count=1,
        stripe_attempts=1,
        error_message="timeout",
        next_retry_at=later,
    )
    assert _stale(engine, later) == {}

    update_row(engine, row.id, status="permanently_failed")
    assert DAY in _stale(engine, later)


def test_transferred_at_corrected_to_another_day_makes_both_days_stale(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe: StripeResource,
    setting: tuple[ReconciliationWindows, Clock],
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")
    for day in (DAY, NEXT_DAY):
        reconcile_day(engine, stripe, day, run_id=f"r-{day}", windows=DEFAULTS)
    later = datetime.now(UTC) + timedelta(days=1)

    update_row(engine, row.id, transferred_at=NOON + timedelta(days=1))  # wrong, but it happens

    stale = _stale(engine, later)
    assert sorted(stale) == [DAY, NEXT_DAY]
    assert "moved to another day" in stale[DAY]
    windows, clock = setting
    for day in (DAY, NEXT_DAY):
        reconcile_day(engine, stripe, day, run_id=f"r2-{day}", windows=windows, now=clock)
    # The transfer's own day now shows it unrecorded; the row's new day shows it missing.
    assert [c for c, _, _ in _open(engine, DAY)] == ["unknown_to_db"]
    assert [c for c, _, _ in _open(engine, NEXT_DAY)] == ["missing_at_stripe"]


def test_midnight_skew_gives_no_finding_on_either_day(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe: StripeResource,
    setting: tuple[ReconciliationWindows, Clock],
) -> None:
    midnight = datetime(2026, 11, 21, tzinfo=UTC)
    [transfer_id] = stripe_emulator.control().create_transfers(
        [
            {
                "amount": 1000,
                "currency": "usd",
                "destination": "acct_seller0",
                "created": int((midnight + timedelta(seconds=1)).timestamp()),
            }
        ],
        returning="ids",
    )
    seed_rows(
        engine,
        None,
        1,
        status="completed",
        stripe_transfer_id=transfer_id,
        transferred_at=midnight - timedelta(seconds=1),
        stripe_account_id="acct_seller0",
    )
    windows, clock = setting

    for day in (DAY, NEXT_DAY):
        outcome = reconcile_day(engine, stripe, day, run_id=f"r-{day}", windows=windows, now=clock)
        assert outcome.complete, day
        assert outcome.drift_findings.empty, day
    no_margin = dataclasses.replace(windows, day_margin=timedelta(0))
    outcome = reconcile_day(engine, stripe, DAY, run_id="no-margin", windows=no_margin, now=clock)
    assert outcome.drift_findings["category"].tolist() == ["missing_at_stripe"]


def _add_legacy_row_without_transferred_at(engine: sa.Engine, transfer_id: str) -> int:
    """A row written before the CHECK existed (NOT VALID grandfathers it)."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "ALTER TABLE seller_transfers DROP CONSTRAINT chk_transfer_id_has_transferred_at"
            )
        )
        row_id = connection.execute(
            sa.text(
                "INSERT INTO seller_transfers (order_id, seller_id, stripe_account_id,"
                " stripe_transfer_id, amount, currency, status, stripe_reversal_id,"
                " reversal_requested_at, reversed_at)"
                " VALUES ('o1', 's1', 'acct_seller0', :t, 1000, 'usd', 'reversed', 'trr_none',"
                " now(), now()) RETURNING id"
            ),
            {"t": transfer_id},
        ).scalar_one()
        connection.execute(
            sa.text(
                "ALTER TABLE seller_transfers ADD CONSTRAINT chk_transfer_id_has_transferred_at"
                " CHECK (stripe_transfer_id IS NULL OR transferred_at IS NOT NULL) NOT VALID"
            )
        )
    return int(row_id)


def test_row_without_transferred_at_is_reconciled_by_its_transfers_day_and_flagged(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe: StripeResource,
    setting: tuple[ReconciliationWindows, Clock],
) -> None:
    [transfer_id] = stripe_emulator.control().create_transfers(
        [
            {
                "amount": 1000,
                "currency": "usd",
                "destination": "acct_seller0",
                "created": int(NOON.timestamp()),
            }
        ],
        returning="ids",
    )
    row_id = _add_legacy_row_without_transferred_at(engine, transfer_id)
    windows, clock = setting

    outcome = reconcile_day(engine, stripe, DAY, run_id="r1", windows=windows, now=clock)

    findings = {(c, in_grace) for c, key, in_grace in _open(engine, DAY) if key == str(row_id)}
    assert {("db_reversed_stripe_not", False), ("transferred_at_missing", False)} <= findings
    assert "unknown_to_db" not in {c for c, _, _ in _open(engine, DAY)}
    assert outcome.db_rows == 1


def _add_new_row_without_transferred_at(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO seller_transfers (order_id, seller_id, stripe_transfer_id, amount,"
                " currency, status) VALUES ('o2', 's1', 'tr_new', 1000, 'usd', 'completed')"
            )
        )


def test_new_row_with_transfer_id_needs_transferred_at_and_old_ones_are_named(
    engine: sa.Engine,
) -> None:
    legacy_id = _add_legacy_row_without_transferred_at(engine, "tr_legacy")

    with pytest.raises(sa.exc.IntegrityError, match="chk_transfer_id_has_transferred_at"):
        update_row(engine, legacy_id, amount=999)  # any write to it is checked now
    with pytest.raises(sa.exc.IntegrityError, match="chk_transfer_id_has_transferred_at"):
        _add_new_row_without_transferred_at(engine)
    with engine.connect() as connection:
        [check] = [
            c
            for c in find_unvalidated(connection)
            if c.name == "chk_transfer_id_has_transferred_at"
        ]
    assert (check.violating_count, check.violating_ids) == (1, (legacy_id,))


def test_incremental_recheck_of_k_rows_costs_k_retrieves_and_touches_only_them(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe: StripeResource,
    setting: tuple[ReconciliationWindows, Clock],
) -> None:
    rows = seed_rows(engine, stripe_emulator.control(), 250, status="completed")  # 3 pages
    [ghost] = seed_rows(engine, None, 1, status="completed", stripe_transfer_id="tr_Ghost1")
    backdate_changes(engine, timedelta(hours=2))  # written long before the full run
    windows, _ = setting  # the real clock: the changes below are seconds old
    reconcile_day(engine, stripe, DAY, run_id="full", windows=windows)
    assert _open(engine, DAY) == [("missing_at_stripe", str(ghost.id), False)]
    for row in rows[:2]:  # the job says reversed; Stripe has no reversal
        update_row(
            engine, row.id, status="reversed", stripe_reversal_id=f"trr_{row.id}", reversed_at=NOON
        )

    with engine.connect() as connection:
        plan = recheck_plan(connection, DAY, *day_bounds(DAY), now=datetime.now(UTC))
    assert plan.scope is not None
    assert plan.scope.seller_transfer_ids == (rows[0].id, rows[1].id)
    calls_before = stripe.calls_made
    outcome = reconcile_rows(engine, stripe, DAY, plan.scope, run_id="incremental", windows=windows)

    calls = {k: v - calls_before[k] for k, v in stripe.calls_made.items()}
    assert (calls["retrieve_transfer"], calls["list_transfers"]) == (2, 0)
    assert outcome.stripe_calls == 2
    assert outcome.incremental
    critical = {(key, g) for c, key, g in _open(engine, DAY) if c == "db_reversed_stripe_not"}
    in_grace = windows.grace_period > timedelta(0)  # default: found, held until its grace ends
    assert critical == {(str(rows[0].id), in_grace), (str(rows[1].id), in_grace)}
    assert ("missing_at_stripe", str(ghost.id), False) in _open(engine, DAY)  # left alone
    with engine.connect() as connection:
        kind = connection.execute(
            sa.text("SELECT kind FROM reconciliation_runs ORDER BY id DESC LIMIT 1")
        ).scalar_one()
        assert kind == "incremental"
        # k at or above the day's page count: the full listing is cheaper.
        for row in rows[2:5]:
            update_row(engine, row.id, status="failed")
        plan = recheck_plan(connection, DAY, *day_bounds(DAY), now=datetime.now(UTC))
    assert plan.scope is None
    assert "3 page(s)" in plan.reason


def test_a_write_begun_before_a_run_and_committed_after_it_keeps_the_day_stale(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe: StripeResource
) -> None:
    """The change carries its transaction's start, earlier than the run that missed it."""
    row, *_ = seed_rows(engine, stripe_emulator.control(), 101, status="completed")  # 2 pages
    reconcile_day(engine, stripe, DAY, run_id="r1", windows=DEFAULTS)
    with engine.connect() as writer:
        writer.execute(
            sa.text("UPDATE seller_transfers SET status = 'permanently_failed' WHERE id = :id"),
            {"id": row.id},
        )  # open, not committed: the run below reads the row as it was

        missed = reconcile_day(engine, stripe, DAY, run_id="r2", windows=DEFAULTS)

        writer.commit()
    assert missed.complete
    assert missed.drift_findings.empty
    later = datetime.now(UTC) + timedelta(days=1)
    assert "rows changed" in _stale(engine, later)[DAY]
    with engine.connect() as connection:
        plan = recheck_plan(connection, DAY, *day_bounds(DAY), now=later)
    assert plan.scope is not None
    assert plan.scope.seller_transfer_ids == (row.id,)
