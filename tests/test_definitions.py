"""The code location loads, with the contract's names, through Dagster's own tooling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.plugins.dagster_job import load_defs

ROOT = Path(__file__).resolve().parents[1]


def test_contract_names_are_defined() -> None:
    repository = load_defs().get_repository_def()
    assert {"reversal_job"} <= set(repository.job_names)
    assert {"reversal_schedule"} <= {s.name for s in repository.schedule_defs}
    assert {"refund_events_sensor"} <= {s.name for s in repository.sensor_defs}
    asset_keys = {k.to_user_string() for k in repository.asset_graph.get_all_asset_keys()}
    assert {"refund_intake", "due_reversals", "reversal_outcomes"} <= asset_keys
    assert {"database", "stripe"} <= set(load_defs().resources or {})
    graph = repository.asset_graph
    assert dg.AssetKey("due_reversals") in graph.get(dg.AssetKey("reversal_outcomes")).parent_keys


def test_open_drift_alerts_and_freshness_are_defined() -> None:
    repository = load_defs().get_repository_def()
    graph = repository.asset_graph
    open_drift = graph.get(dg.AssetKey("open_drift"))
    assert dg.AssetKey("reversal_reconciliation") in open_drift.parent_keys
    assert not open_drift.is_partitioned
    check_keys = {k.to_user_string() for k in graph.asset_check_keys}
    assert {
        "open_drift:no_open_critical_drift",
        "open_drift:no_open_high_drift",
        "reversal_reconciliation:freshness_check",
        "reversal_outcomes:freshness_check",
    } <= check_keys
    assert {
        "open_drift_refresh_sensor",
        "reversal_alerts_sensor",
        "freshness_checks_sensor",
    } <= {s.name for s in repository.sensor_defs}


def test_dg_check_defs_passes(tmp_path: Path) -> None:
    # Next to the interpreter, not on PATH: `pytest` run from the venv without activating it.
    dg_cli = str(Path(sys.executable).parent / "dg")
    if not Path(dg_cli).is_file():
        pytest.fail("dg (dagster-dg-cli) is a pinned dependency and must be installed")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [dg_cli, "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr
