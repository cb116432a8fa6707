"""``reconcile --side``: the refund side is a command away, like the transfer side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.cli.commands import run
from tests.plugins.marketplace import seed_rows

pytestmark = pytest.mark.slow  # two in-process Dagster runs

DAY = "2026-11-20"
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_reconcile_both_sides_reports_a_refund_nobody_received(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    control = stripe_emulator.control()
    seed_rows(engine, control, 1, status="completed", amount=9_000, order_id="ord_cli")
    created = int((NOON - timedelta(hours=1)).timestamp())
    charge = control.create_charge(10_000, "usd", transfer_group="ord_cli", created=created)
    refund = control.create_refund(charge["id"], 4_000, created=int(NOON.timestamp()))

    result = run(job_env, "reconcile", "--day", DAY, "--side", "both")

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    transfers = next(line for line in lines if line.startswith(f"{DAY} transfers:"))
    refunds = next(line for line in lines if line.startswith(f"{DAY} refunds:"))
    assert "0 finding(s)" in transfers
    assert refunds == f"{DAY} refunds: 1 finding(s), 1 Stripe refund(s), 0 received"
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT category, source FROM reconciliation_drift WHERE finding_key = :k"),
            {"k": refund["id"]},
        ).one()
    assert tuple(stored) == ("refund_not_received", "refunds")


def test_reconcile_refuses_an_unknown_side(job_env: dict[str, str]) -> None:
    result = run(job_env, "reconcile", "--day", DAY, "--side", "charges")

    assert result.exit_code == 2
    assert "charges" in result.output
