"""The shipped Dagster instance template, read by Dagster's own config loader.

The template is what ``reversal-pipeline dev`` and the deployment docs start
from; a setting that Dagster rejects, or one quietly back at its default, would
only show when runs go missing. These tests read it the way the daemon does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator

from reversal_pipeline.devserver.home import template_path


@pytest.fixture
def run_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> QueuedRunCoordinator:
    shutil.copyfile(template_path(), tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://unused@localhost/unused")
    config, _ = dagster_instance_config(str(tmp_path))
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    return QueuedRunCoordinator(**coordinator["config"])


def test_a_run_the_code_server_cannot_take_at_once_is_requeued_not_failed(
    run_queue: QueuedRunCoordinator,
) -> None:
    # Dagster's default (0) fails a queued run whose launch times out at a busy
    # code server: a reconciliation day or a reversal run lost to a moment of load.
    assert run_queue.get_run_queue_config().max_user_code_failure_retries >= 3
    assert run_queue.get_run_queue_config().user_code_failure_retry_delay <= 30


def test_the_queue_starts_runs_within_a_second(run_queue: QueuedRunCoordinator) -> None:
    # Part of a refund's time to reversal (benchmarks/timeliness.py).
    assert run_queue.dequeue_interval_seconds == 1
