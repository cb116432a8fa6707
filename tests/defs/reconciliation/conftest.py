"""Fixtures of the reconciliation job tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer


@pytest.fixture
def reports_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("REVERSAL_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path / "reports"


@dataclass(frozen=True)
class JobWorld:
    """What a job test runs against: the database, the emulator, the Dagster instance.

    Requesting it also sets the job's environment and its reports folder.
    """

    engine: sa.Engine
    emulator: EmulatorServer
    instance: dg.DagsterInstance
    env: dict[str, str]


@pytest.fixture
def world(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    reports_dir: Path,
) -> JobWorld:
    return JobWorld(engine, stripe_emulator, dagster_instance, job_env)
