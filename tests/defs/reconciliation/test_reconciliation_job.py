"""reversal_reconciliation end to end: real PostgreSQL, the emulator over HTTP, through Dagster."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.defs.reconciliation.conftest import JobWorld
from tests.defs.reconciliation.harness import (
    check_results,
    open_findings_by_category,
    run_reconciliation,
)
from tests.plugins.dagster_job import materialization_metadata, run_reversal_job
from tests.plugins.marketplace import seed_rows
from tests.reconciliation.builders import backdate_changes, update_row

NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_clean_day_has_no_findings_and_green_checks(
    world: JobWorld,
) -> None:
    seed_rows(world.engine, world.emulator.control(), 4, status="completed")
    seed_rows(world.engine, world.emulator.control(), 4)
    assert run_reversal_job(world.instance).success

    result = run_reconciliation(world.instance)

    assert result.success
    metadata = materialization_metadata(result, "reversal_reconciliation")
    assert metadata["drift_findings"] == 0
    assert (metadata["db_rows"], metadata["stripe_transfers"]) == (8, 8)
    assert check_results(result) == {
        "no_critical_drift": True,
        "no_high_drift": True,
        "reconciliation_complete": True,
    }
    assert open_findings_by_category(world.engine) == {}
    assert Path(metadata["report_csv"]).is_file()
    assert "No drift" in metadata["report"]


@pytest.mark.parametrize("defaults", [False, True], ids=["grace_0", "default_config"])
def test_each_planted_drift_is_found_with_its_severity(
    defaults: bool,
    world: JobWorld,
) -> None:
    control = world.emulator.control()
    rows = seed_rows(world.engine, control, 6, status="completed")
    db_says_reversed, pending_reversed, failed_reversed, unrequested, mismatch, _ = rows
    update_row(
        world.engine,
        db_says_reversed.id,
        status="reversed",
        stripe_reversal_id="trr_NotAtStripe",
        reversed_at=NOON,
        reversal_requested_at=NOON,
    )
    control.reverse_transfer(pending_reversed.stripe_transfer_id)
    update_row(
        world.engine,
        pending_reversed.id,
        status="reversal_pending",
        reversal_requested_at=NOON,
        next_retry_at=datetime.now(UTC) + timedelta(hours=1),
    )
    control.reverse_transfer(failed_reversed.stripe_transfer_id)
    update_row(
        world.engine, failed_reversed.id, status="permanently_failed", reversal_requested_at=NOON
    )
    control.reverse_transfer(unrequested.stripe_transfer_id)
    update_row(world.engine, mismatch.id, amount=999)
    [ghost] = seed_rows(
        world.engine, None, 1, status="completed", stripe_transfer_id="tr_NotAtStripe1"
    )
    control.create_transfers([{"amount": 700, "currency": "eur", "created": int(NOON.timestamp())}])
    [stuck] = seed_rows(world.engine, None, 1, stripe_transfer_id="tr_StuckButAbsent")
    update_row(
        world.engine,
        stuck.id,
        reversal_requested_at=NOON - timedelta(days=10),
        next_retry_at=NOON - timedelta(days=9),
    )

    if defaults:  # the default one-hour grace: drift written long before the run
        backdate_changes(world.engine, timedelta(hours=2))

    result = run_reconciliation(world.instance, defaults=defaults)

    assert result.success
    found = open_findings_by_category(world.engine)
    expected = {
        "db_reversed_stripe_not": ("critical", db_says_reversed.id),
        "reversal_id_mismatch": ("high", db_says_reversed.id),
        "stripe_reversed_db_pending": ("medium", pending_reversed.id),
        "stripe_reversed_db_failed": ("high", failed_reversed.id),
        "reversed_without_request": ("critical", unrequested.id),
        "amount_or_currency_mismatch": ("high", mismatch.id),
        "missing_at_stripe": ("high", ghost.id),
        "stuck_pending": ("high", stuck.id),
    }
    for category, (severity, row_id) in expected.items():
        assert category in found, category
        assert {f["seller_transfer_id"] for f in found[category]} >= {row_id}, category
        assert all(
            f["severity"] == severity for f in found[category] if f["seller_transfer_id"] == row_id
        ), category
    assert [f["severity"] for f in found["unknown_to_db"]] == ["medium"]
    assert "wrong" in found["missing_at_stripe"][0]["explanation"].lower()
    checks = check_results(result)
    assert checks["no_critical_drift"] is False
    assert checks["no_high_drift"] is False
    assert checks["reconciliation_complete"] is True


def test_rerun_resolves_a_fixed_finding_and_is_idempotent(
    world: JobWorld,
) -> None:
    seed_rows(world.engine, world.emulator.control(), 2, status="completed")
    [ghost] = seed_rows(
        world.engine, None, 1, status="completed", stripe_transfer_id="tr_Ghost00001"
    )
    assert run_reconciliation(world.instance).success
    [first] = open_findings_by_category(world.engine)["missing_at_stripe"]
    assert run_reconciliation(world.instance).success
    [again] = open_findings_by_category(world.engine)["missing_at_stripe"]
    assert (again["id"], again["first_seen_at"]) == (first["id"], first["first_seen_at"])
    assert again["last_seen_at"] > first["last_seen_at"]

    with (
        world.engine.begin() as connection
    ):  # fixed: the row pointed at a transfer of another account
        connection.execute(
            sa.text("UPDATE seller_transfers SET transferred_at = :t WHERE id = :id"),
            {"t": NOON - timedelta(days=30), "id": ghost.id},
        )
    assert run_reconciliation(world.instance).success
    assert open_findings_by_category(world.engine) == {}
    with world.engine.connect() as connection:
        resolved = connection.execute(
            sa.text("SELECT resolved_at FROM reconciliation_drift WHERE id = :id"),
            {"id": first["id"]},
        ).scalar_one()
    assert resolved is not None


def test_listing_that_fails_midway_is_never_green(
    world: JobWorld,
) -> None:
    seed_rows(world.engine, world.emulator.control(), 150, status="completed")
    [ghost] = seed_rows(
        world.engine, None, 1, status="completed", stripe_transfer_id="tr_Ghost00002"
    )
    assert run_reconciliation(world.instance).success  # one finding to not resolve later
    control = world.emulator.control()
    control.add_script(respond="hold", method="GET", path="/v1/transfers")
    outcome: list[dg.ExecuteInProcessResult] = []
    worker = threading.Thread(target=lambda: outcome.append(run_reconciliation(world.instance)))
    worker.start()
    assert control.wait_for_held(1, timeout=60)
    # The first page is in flight; every later page fails, beyond the SDK's retries.
    control.add_script(respond=500, method="GET", path="/v1/transfers", times=20)
    control.release_holds()
    worker.join(timeout=120)

    [result] = outcome
    assert not result.success
    assert check_results(result) == {"reconciliation_complete": False}
    with world.engine.connect() as connection:
        run = connection.execute(
            sa.text(
                "SELECT complete, error_message FROM reconciliation_runs ORDER BY id DESC LIMIT 1"
            )
        ).one()
    assert run.complete is False
    assert "stopped after 100 transfer(s)" in run.error_message
    assert [
        f["seller_transfer_id"]
        for f in open_findings_by_category(world.engine)["missing_at_stripe"]
    ] == [ghost.id]


def test_a_thousand_transfers_take_ten_list_calls_plus_has_more_extras(
    world: JobWorld,
) -> None:
    rows = seed_rows(
        world.engine, world.emulator.control(), 1_000, status="completed", amount=5_000
    )
    for row in rows[:2]:  # two transfers with more reversals than a transfer embeds
        for _ in range(12):
            world.emulator.state.reverse_transfer(row.stripe_transfer_id, amount=100)
    before = world.emulator.control().counters()["by_endpoint"]

    result = run_reconciliation(world.instance)

    assert result.success
    after = world.emulator.control().counters()["by_endpoint"]
    lists = after.get("GET /v1/transfers", 0) - before.get("GET /v1/transfers", 0)
    extras = after.get("GET /v1/transfers/{id}/reversals", 0) - before.get(
        "GET /v1/transfers/{id}/reversals", 0
    )
    assert lists == 10
    assert extras == 2
    assert materialization_metadata(result, "reversal_reconciliation")["stripe_calls"] == 12


def test_a_key_for_another_account_raises_one_alarm_not_a_finding_per_row(
    world: JobWorld,
) -> None:
    seed_rows(world.engine, None, 60, status="completed", stripe_transfer_id=None)
    with world.engine.begin() as connection:  # 60 transfers that this account has never seen
        connection.execute(
            sa.text("UPDATE seller_transfers SET stripe_transfer_id = 'tr_OtherAccount' || id")
        )

    result = run_reconciliation(world.instance)

    assert not result.success
    assert check_results(result) == {"reconciliation_complete": False}
    with world.engine.connect() as connection:
        run = connection.execute(
            sa.text("SELECT complete, error_message FROM reconciliation_runs")
        ).one()
    assert run.complete is False
    assert "another account or mode" in run.error_message
    assert open_findings_by_category(world.engine) == {}


@pytest.mark.parametrize("defaults", [False, True], ids=["grace_0", "default_config"])
def test_swapped_seller_accounts_are_critical_and_the_check_is_red(
    defaults: bool,
    world: JobWorld,
) -> None:
    first, second = seed_rows(world.engine, world.emulator.control(), 2, status="completed")
    update_row(world.engine, first.id, stripe_account_id="acct_seller1")  # second's account
    update_row(world.engine, second.id, stripe_account_id="acct_seller0")
    if defaults:
        backdate_changes(world.engine, timedelta(hours=2))

    result = run_reconciliation(world.instance, defaults=defaults)

    found = open_findings_by_category(world.engine)
    assert sorted(f["seller_transfer_id"] for f in found["destination_mismatch"]) == [
        first.id,
        second.id,
    ]
    assert {f["severity"] for f in found["destination_mismatch"]} == {"critical"}
    assert check_results(result)["no_critical_drift"] is False


@pytest.mark.parametrize("defaults", [False, True], ids=["grace_0", "default_config"])
def test_sensor_mode_rechecks_only_the_changed_row_and_checks_count_the_whole_day(
    defaults: bool,
    world: JobWorld,
) -> None:
    rows = seed_rows(world.engine, world.emulator.control(), 150, status="completed")  # 2 pages
    update_row(
        world.engine, rows[0].id, stripe_account_id="acct_other"
    )  # critical, before the full run
    if defaults:
        backdate_changes(world.engine, timedelta(hours=2))
    assert run_reconciliation(world.instance, defaults=defaults).success
    update_row(
        world.engine, rows[1].id, status="permanently_failed", error_message="x"
    )  # a real change

    result = run_reconciliation(
        world.instance, tags={"reconciliation/mode": "auto"}, defaults=defaults
    )

    assert result.success
    metadata = materialization_metadata(result, "reversal_reconciliation")
    assert metadata["incremental"] is True
    assert metadata["stripe_calls"] == 1  # one retrieve, not two list pages
    # The incremental run saw no drift itself; the day still has its critical finding.
    assert metadata["drift_findings"] == 0
    assert check_results(result)["no_critical_drift"] is False
    assert [
        f["seller_transfer_id"]
        for f in open_findings_by_category(world.engine)["destination_mismatch"]
    ] == [rows[0].id]
