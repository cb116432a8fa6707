"""Run settings out of range are rejected before any row is claimed."""

from __future__ import annotations

import dagster as dg
import pydantic
import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.settings import ReversalSettings
from tests.plugins.dagster_job import run_reversal_job
from tests.plugins.marketplace import row_state, seed_rows


@pytest.mark.parametrize(
    "bad",
    [
        {"max_rows_per_run": 0},
        {"backoff_base_seconds": -1},
        {"backoff_cap_seconds": 0},
        {"concurrency": 0},
        {"lease_seconds": 1},
        {"backoff_jitter": 1.5},
        {"backoff_base_seconds": 600, "backoff_cap_seconds": 60},
    ],
)
def test_out_of_range_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        ReversalSettings(**bad)


def test_bad_run_config_fails_the_run_before_any_claim(
    job_env: dict, engine: sa.Engine, dagster_instance: dg.DagsterInstance, stripe_emulator
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    result = run_reversal_job(dagster_instance, max_rows_per_run=0)
    assert not result.success
    state = row_state(engine, row.id)
    assert state["claimed_by"] is None
    assert state["status"] == "reversal_pending"
    assert stripe_emulator.control().counters()["calls_total"] == 0
