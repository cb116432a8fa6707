"""The demo, small: every planted case ends where an operator expects, and runs are stored."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main
from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.demo.run import DemoOptions, run_demo
from reversal_pipeline.demo.summary import major_units
from reversal_pipeline.devserver.home import psycopg2_url
from reversal_pipeline.runbook.views import WRAP_WIDTH
from reversal_pipeline.stripe_emulator import EmulatorState, load_snapshot
from tests.plugins.database import drop_database


def test_major_units_knows_zero_decimal_currencies() -> None:
    assert major_units(123_456, "usd") == "1,234.56 USD"
    assert major_units(500, "jpy") == "500 JPY"


def test_small_demo_plants_each_case_and_stores_its_runs(
    postgres_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = uuid.uuid4().hex[:8]
    options = DemoOptions(
        days=2,
        transfers=60,
        sellers=6,
        refunded_orders=20,
        ticks=3,  # the second part of a twice-refunded transfer waits for the first
        server_url=postgres_server_url,
        database=f"rp_demo_{suffix}",
        dagster_database=f"rp_demo_dagster_{suffix}",
        dagster_home=tmp_path / "dagster_home",
    )
    lines: list[str] = []
    # The default place (<REVERSAL_PIPELINE_HOME>/stripe_emulator_state.json), in a temp folder.
    monkeypatch.setenv("REVERSAL_PIPELINE_HOME", str(tmp_path / "home"))
    state_file = tmp_path / "home" / "stripe_emulator_state.json"
    state_file.parent.mkdir()
    state_file.write_text("left by an earlier demo")  # a fresh demo must replace it
    try:
        result = run_demo(options, lines.append)
        pending_transfer_ids = _pending_transfer_ids(result.database_url)
        partial = {
            case: _row(result.database_url, row_ids[0])
            for case, row_ids in result.planted.cases.items()
            if case.startswith("partial_refund_")
        }
        problems = _history_problems(result.database_url)
        planted_ids = sorted({i for ids in result.planted.cases.values() for i in ids})
        failed_ids = [row_id for row_id, _, _ in result.summary.failures]
        shown = {i: _show(result.database_url, i) for i in {*planted_ids, *failed_ids}}
        messages = _error_messages(result.database_url, list(shown))
        storage_url = psycopg2_url(postgres_server_url, options.dagster_database)
        monkeypatch.setenv("DAGSTER_PG_URL", storage_url)
        with dg.DagsterInstance.from_config(str(result.dagster_home)) as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="reversal_job"))
            run_tags = sorted(run.tags.get("demo", "") for run in runs)
    finally:
        drop_database(postgres_server_url, options.database)
        drop_database(postgres_server_url, options.dagster_database)

    statuses = {line.split()[0]: line.split()[-1] for line in _planted(lines)}
    assert statuses["out_of_band_reversal"].endswith("reversed")
    assert statuses["lost_response"].endswith("reversed")
    assert statuses["unknown_transfer_id"].endswith("permanently_failed")
    assert statuses["malformed_row"].endswith("permanently_failed")
    assert len(result.summary.failures) >= 2
    assert result.summary.reversed_by_currency
    assert all(outcome.success for outcome in result.runs.values())
    assert run_tags == ["tick-1", "tick-2", "tick-3"]
    assert lines[-1].startswith("next: uv run reversal-pipeline dev")
    if result.reconciled:
        assert result.summary.findings, "each planted drift should be found"
    # Stripe's side is saved for `dev`: every row still to reverse finds its transfer there.
    assert result.emulator_state_file == state_file
    stripe_side = EmulatorState()
    assert load_snapshot(stripe_side, state_file) >= options.transfers
    assert pending_transfer_ids
    for transfer_id in pending_transfer_ids:
        stripe_side.get_transfer(transfer_id)  # raises Stripe's 404 if it was not saved
    assert f"saved to {state_file}" in " ".join(" ".join(lines).split())  # wrapped lines
    # Issue 17: one item of a two-seller order refunded: that seller's transfer partly
    # reversed, the other untouched; a transfer refunded twice in parts: two reversals.
    item, sibling, twice = (
        partial[f"partial_refund_{c}"] for c in ("one_item", "sibling", "twice")
    )
    assert (item["status"], item["reversal_target"]) == ("reversed", item["amount"] // 2)
    assert item["amount_reversed"] == item["reversal_target"] < item["amount"]
    assert (sibling["status"], sibling["reversal_target"], sibling["amount_reversed"]) == (
        "completed",
        0,
        0,
    )
    assert twice["status"] == "reversed"
    assert twice["refunds"] == 2
    assert twice["amount_reversed"] == twice["reversal_target"] == 2 * (twice["amount"] // 4)
    at_stripe = stripe_side.get_transfer(twice["stripe_transfer_id"])
    assert [r.amount for r in at_stripe.reversals or []] == [twice["amount"] // 4] * 2
    assert at_stripe.amount_reversed == twice["amount_reversed"]
    assert statuses["partial_refund_twice"].endswith("reversed")
    assert statuses["partial_refund_sibling"].endswith("completed")
    # `show` tells a consistent story for every row the demo left behind ...
    assert problems == []
    # ... and prints it whole: wrapped between words, never cut.
    assert all(len(line) <= WRAP_WIDTH for line in lines if " " in line.strip()), lines
    for row_id, output in shown.items():
        assert all(len(line) <= WRAP_WIDTH or " " not in line.strip() for line in output), output
        if messages.get(row_id):
            assert " ".join(messages[row_id].split()) in " ".join(" ".join(output).split())
    for row_id, _, why in result.summary.failures:
        assert " ".join(why.split()) in " ".join(" ".join(lines).split()), row_id


def _history_problems(database_url: str) -> list[str]:
    """What would make `show` contradict itself, one line per row and problem.

    Every change of a row is in its audit trail: the trail's last status is the
    row's status, each counted retry has its create_reversal call, and nothing
    happens before the row was created.
    """
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    """
                    SELECT t.id, t.status, t.retry_count, t.error_message, t.created_at,
                           t.updated_at,
                           (SELECT a.status_after FROM reversal_attempts a
                             WHERE a.seller_transfer_id = t.id AND a.status_after IS NOT NULL
                             ORDER BY a.id DESC LIMIT 1) AS last_audited_status,
                           (SELECT count(*) FROM reversal_attempts a
                             WHERE a.seller_transfer_id = t.id
                               AND a.action = 'create_reversal') AS create_calls,
                           (SELECT min(a.created_at) FROM reversal_attempts a
                             WHERE a.seller_transfer_id = t.id) AS first_audit_at
                    FROM seller_transfers t ORDER BY t.id
                    """
                )
            ).mappings()
            problems = []
            for r in rows:
                seeded = r["status"] in ("completed", "pending", "failed")
                if r["updated_at"] < r["created_at"]:
                    problems.append(f"row {r['id']}: updated_at before created_at")
                if not seeded and r["last_audited_status"] != r["status"]:
                    problems.append(
                        f"row {r['id']}: {r['status']} but its audit trail ends at "
                        f"{r['last_audited_status']}"
                    )
                if r["retry_count"] > r["create_calls"]:
                    problems.append(
                        f"row {r['id']}: retry_count {r['retry_count']} "
                        f"but {r['create_calls']} create_reversal call(s) audited"
                    )
                said = re.search(r"after (\d+) attempts", r["error_message"] or "")
                if said and int(said.group(1)) > r["create_calls"]:
                    problems.append(f"row {r['id']}: '{said.group(0)}' with {r['create_calls']}")
                if r["first_audit_at"] is not None and r["first_audit_at"] < r["created_at"]:
                    problems.append(f"row {r['id']}: audited before it was created")
            return problems
    finally:
        engine.dispose()


def _show(database_url: str, row_id: int) -> list[str]:
    result = CliRunner().invoke(
        main, ["show", "--id", str(row_id)], env={"REVERSAL_DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def _error_messages(database_url: str, ids: list[int]) -> dict[int, str]:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return dict(
                connection.execute(
                    sa.text("SELECT id, error_message FROM seller_transfers WHERE id = ANY(:ids)"),
                    {"ids": ids},
                ).all()
            )
    finally:
        engine.dispose()


def _row(database_url: str, row_id: int) -> dict[str, object]:
    """A planted row's money columns, and how many refunds raised its target."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return dict(
                connection.execute(
                    sa.text(
                        "SELECT t.status, t.amount, t.reversal_target, t.amount_reversed,"
                        " t.stripe_transfer_id, (SELECT count(*) FROM refund_allocations a"
                        " WHERE a.seller_transfer_id = t.id) AS refunds"
                        " FROM seller_transfers t WHERE t.id = :id"
                    ),
                    {"id": row_id},
                )
                .mappings()
                .one()
            )
    finally:
        engine.dispose()


def _pending_transfer_ids(database_url: str) -> list[str]:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    sa.text(
                        "SELECT stripe_transfer_id FROM seller_transfers"
                        " WHERE status = 'reversal_pending' AND stripe_transfer_id IS NOT NULL"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()


def _planted(lines: list[str]) -> list[str]:
    start = lines.index(next(line for line in lines if line.startswith("planted cases")))
    return [line.strip().replace(" #", " ") for line in lines[start + 1 :] if line.startswith("  ")]


@pytest.fixture(autouse=True)
def _no_inherited_dagster_pg_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo must create its own storage database, not reuse a developer's."""
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
