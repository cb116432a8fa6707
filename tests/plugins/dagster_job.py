"""Running the real Dagster definitions against the test database and the emulator.

The definitions read their configuration from the environment exactly as in
production (``dg.EnvVar``), so the fixture sets the environment and loads
``reversal_pipeline.definitions:defs`` afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from reversal_pipeline.stripe_emulator import EmulatorServer


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def job_env(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    stripe_emulator: EmulatorServer,
    stripe_api_key: str,
) -> dict[str, str]:
    env = {
        "REVERSAL_DATABASE_URL": database_url,
        "STRIPE_API_KEY": stripe_api_key,
        "STRIPE_API_BASE": stripe_emulator.url,
        "STRIPE_REQUESTS_PER_SECOND": "500",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def load_defs() -> dg.Definitions:
    from reversal_pipeline.definitions import defs

    return defs()


def settings_config(**settings: Any) -> dict[str, Any]:
    """Run config that overrides ``reversal_settings`` fields."""
    return {"resources": {"reversal_settings": {"config": settings}}} if settings else {}


def run_reversal_job(instance: dg.DagsterInstance, **settings: Any) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("reversal_job")
    return job.execute_in_process(
        instance=instance, run_config=settings_config(**settings), raise_on_error=False
    )


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}
