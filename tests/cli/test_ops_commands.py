"""status, requeue, resolve, show: what they change, and that bad input changes nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import Result

from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer
from tests.cli.commands import run, table_snapshot
from tests.plugins.marketplace import attempts_of, row_state, seed_rows


@pytest.fixture
def cli_env(job_env: dict[str, str]) -> dict[str, str]:
    return dict(job_env)


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> EmulatorClient:
    return stripe_emulator.control()


def assert_refused(result: Result, *words: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_requeue_moves_failed_rows_back_to_due_with_an_audit_row(
    cli_env: dict, engine: sa.Engine, control: EmulatorClient
) -> None:
    rows = seed_rows(engine, control, 2, status="permanently_failed", retry_count=8)

    result = run(cli_env, "requeue", "--id", f"{rows[0].id},{rows[1].id}", "--reason", "INC-7")

    assert result.exit_code == 0, result.output
    for row in rows:
        state = row_state(engine, row.id)
        assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)
        assert state["next_retry_at"] is not None
        [audit] = [a for a in attempts_of(engine, row.id) if a["action"] == "requeue"]
        assert audit["actor"] == "operator"
        assert (audit["status_before"], audit["status_after"]) == (
            "permanently_failed",
            "reversal_pending",
        )
        assert "INC-7" in audit["message"]


def test_requeue_refuses_a_mixed_list_and_changes_nothing(
    cli_env: dict, engine: sa.Engine, control: EmulatorClient
) -> None:
    [failed] = seed_rows(engine, control, 1, status="permanently_failed")
    [done] = seed_rows(engine, control, 1, status="completed")
    before = table_snapshot(engine)

    wrong_status = run(cli_env, "requeue", "--id", str(failed.id), "--id", str(done.id),
                       "--reason", "x")  # fmt: skip
    unknown = run(cli_env, "requeue", "--id", "999999", "--reason", "x")
    bad_date = run(cli_env, "requeue", "--failed-since", "2026-13-45", "--reason", "x")
    bad_id = run(cli_env, "requeue", "--id", "12abc", "--reason", "x")
    no_reason = run(cli_env, "requeue", "--id", str(failed.id))

    assert_refused(wrong_status, f"{done.id} is completed", "nothing changed")
    assert_refused(unknown, "999999")
    assert_refused(bad_date, "YYYY-MM-DD")
    assert_refused(bad_id, "12abc")
    assert_refused(no_reason, "--reason")
    assert table_snapshot(engine) == before


def test_requeue_failed_since_takes_only_rows_failed_after_the_date(
    cli_env: dict, engine: sa.Engine, control: EmulatorClient
) -> None:
    [row] = seed_rows(engine, control, 1, status="permanently_failed")

    old = run(cli_env, "requeue", "--failed-since", "2999-01-01", "--reason", "none match")
    recent = run(cli_env, "requeue", "--failed-since", "2000-01-01", "--reason", "all")

    assert old.exit_code == 0
    assert "nothing to requeue" in old.output
    assert recent.exit_code == 0, recent.output
    assert row_state(engine, row.id)["status"] == "reversal_pending"


def test_resolve_checks_the_reversal_is_on_that_transfer(
    cli_env: dict, engine: sa.Engine, control: EmulatorClient
) -> None:
    row, other = seed_rows(engine, control, 2, status="permanently_failed")
    on_row = control.reverse_transfer(row.stripe_transfer_id)["id"]
    on_other = control.reverse_transfer(other.stripe_transfer_id)["id"]
    before = table_snapshot(engine)

    wrong = run(cli_env, "resolve", "--id", str(row.id), "--reversal", on_other, "--reason", "r")
    assert_refused(wrong, on_other, row.stripe_transfer_id)
    assert table_snapshot(engine) == before

    ok = run(cli_env, "resolve", "--id", str(row.id), "--reversal", on_row, "--reason", "INC-9")
    assert ok.exit_code == 0, ok.output
    state = row_state(engine, row.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", on_row)
    [audit] = [a for a in attempts_of(engine, row.id) if a["action"] == "resolve"]
    assert audit["actor"] == "operator"
    assert "INC-9" in audit["message"]

    again = run(cli_env, "resolve", "--id", str(row.id), "--reversal", on_row, "--reason", "r")
    assert_refused(again, "is reversed")


def test_show_and_status_print_the_row_its_attempts_and_the_counts(
    cli_env: dict, engine: sa.Engine, control: EmulatorClient
) -> None:
    [row] = seed_rows(engine, control, 1, status="permanently_failed")
    assert run(cli_env, "requeue", "--id", str(row.id), "--reason", "look again").exit_code == 0

    shown = run(cli_env, "show", "--id", str(row.id))
    status = run(cli_env, "status")

    assert shown.exit_code == 0, shown.output
    assert row.stripe_transfer_id in shown.output
    assert "requeue" in shown.output
    assert "look again" in shown.output
    assert status.exit_code == 0, status.output
    assert "reversal_pending" in status.output
    assert f"oldest due: id={row.id}" in status.output
    assert_refused(run(cli_env, "show", "--id", "424242"), "424242")
