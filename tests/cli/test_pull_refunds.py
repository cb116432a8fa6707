"""``pull-refunds``: finds refunds made while the sensor was off; twice is the same as once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from click.testing import CliRunner, Result

from reversal_pipeline.cli import main
from reversal_pipeline.stripe_emulator import EmulatorServer


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _refund_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.scalars(sa.text("SELECT refund_id FROM refund_events ORDER BY id")).all()
        )


def test_pull_refunds_records_what_the_sensor_missed_and_a_second_run_finds_nothing_new(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    control = stripe_emulator.control()
    charge = control.create_charge(10_000, "usd", transfer_group="ord_offline")
    refund = control.create_refund(charge["id"], amount=2_500)
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()

    first = run(job_env, "pull-refunds", "--since", since)
    second = run(job_env, "pull-refunds", "--since", since)

    assert first.exit_code == 0, first.output
    assert _refund_ids(engine) == [refund["id"]]
    [line] = [ln for ln in first.stdout.splitlines() if ln.startswith(refund["id"])]
    assert "ord_offline" in line
    assert "25.00 USD" in line
    assert line.rstrip().endswith("recorded")
    assert "1 new refund(s) recorded" in first.stdout
    assert second.exit_code == 0, second.output
    assert "nothing new; 1 already known" in second.stdout
    assert _refund_ids(engine) == [refund["id"]]
    for result in (first, second):
        assert job_env["STRIPE_API_KEY"] not in result.output


def test_pull_refunds_exits_1_while_a_refund_is_unplaced(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    control = stripe_emulator.control()
    charge = control.create_charge(10_000, "usd")
    refund = control.create_refund(charge["id"], amount=300)

    result = run(job_env, "pull-refunds")

    assert result.exit_code == 1, result.output
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith(refund["id"])]
    assert "unplaced: no_order" in line
    assert _refund_ids(engine) == []


def test_pull_refunds_refuses_a_bad_date_and_a_revoked_key_in_one_line(
    job_env: dict[str, str], stripe_emulator: EmulatorServer
) -> None:
    bad_date = run(job_env, "pull-refunds", "--since", "yesterday")
    assert bad_date.exit_code == 2
    assert "--since wants a date as YYYY-MM-DD" in bad_date.stderr

    stripe_emulator.control().revoke_key(job_env["STRIPE_API_KEY"])
    revoked = run(job_env, "pull-refunds")
    assert revoked.exit_code == 2, revoked.output
    assert len(revoked.stderr.strip().splitlines()) == 1
    assert revoked.stderr.startswith("error: ")
    assert job_env["STRIPE_API_KEY"] not in revoked.output
