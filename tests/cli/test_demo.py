"""The demo, small: every planted case ends where an operator expects, and runs are stored."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.demo.run import DemoOptions, run_demo
from reversal_pipeline.demo.summary import major_units
from reversal_pipeline.devserver.home import psycopg2_url
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
        ticks=2,
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
    assert run_tags == ["tick-1", "tick-2"]
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
    assert any(f"saved to {state_file}" in line for line in lines)


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
