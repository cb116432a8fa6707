"""A manual backfill of ``reversal_reconciliation`` over a date range, through Dagster's API.

What an operator does after an outage or a fix: select some days of the
asset and launch a backfill. The test runs the real thing: ``dagster dev``
(webserver and daemon), the run queue, the backfill daemon submitting one
run per day, those runs reconciling against PostgreSQL and the emulator.
The backfill daemon works in 30-second iterations (one submits the runs, a
later one sees them finished), so this test takes one to three minutes
depending on the machine's load; it only ever polls, with deadlines.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_runs
from reversal_pipeline.devserver.stack import (
    dagster_dev_command,
    stop_process_group,
    wait_until_serving,
)
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import seed_rows
from tests.plugins.stripe_emulator import TEST_API_KEY
from tests.ui.conftest import REPO, START_TIMEOUT, free_port

#: The daemon's backfill loop shares its ticks with every running sensor (alerts,
#: open_drift refresh, freshness, refund events every 5 s): on 2 busy cores it has
#: taken more than 150 s to pick a backfill up, so the deadline leaves room.
BACKFILL_TIMEOUT = 540.0
ASSET = "reversal_reconciliation"
#: Default SQLite storage in the temp DAGSTER_HOME; the queue, so the daemon launches the runs.
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    dequeue_interval_seconds: 1
    max_user_code_failure_retries: 3
    user_code_failure_retry_delay: 10
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status partitionNames }
    ... on Error { message }
  }
}
"""
BACKFILL_RUNS = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""
DONE = {"COMPLETED_SUCCESS", "COMPLETED"}
FAILED = {"COMPLETED_FAILED", "FAILED", "FAILING", "CANCELED", "CANCELING"}


@dataclass
class DagsterDev:
    url: str
    log: Path

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture
def backfill_days(engine: sa.Engine, stripe_emulator: EmulatorServer) -> list[date]:
    """Three consecutive past UTC days with transfers in both places, and a day before them.

    The day before is seeded too but left out of the backfill: a backfill that
    reconciled more than it was asked would show there. The days are a week
    back, outside the backfill sensor's look-back (set to one day below), so
    every reconciliation of them comes from the backfill.
    """
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in (8, 7, 6, 5)]
    control = stripe_emulator.control()
    for day in days:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        seed_rows(
            engine, control, 3, status="completed", transferred_at=noon, order_prefix=f"o{day}"
        )
    return days[1:]


@pytest.fixture
def dagster_dev(
    database_url: str, stripe_emulator: EmulatorServer, tmp_path: Path
) -> Iterator[DagsterDev]:
    """``dagster dev`` on a free port, its own process group, stopped as ``reversal-pipeline dev``
    stops it (SIGINT, then harder), so no webserver, daemon or run worker outlives the test."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "REVERSAL_DATABASE_URL": database_url,
        "STRIPE_API_KEY": TEST_API_KEY,
        "STRIPE_API_BASE": stripe_emulator.url,
        "STRIPE_REQUESTS_PER_SECOND": "100",
        "REVERSAL_REPORTS_DIR": str(tmp_path / "reports"),
        "RECONCILIATION_BACKFILL_LOOKBACK_DAYS": "1",
        # reversal_schedule would tick every 5 minutes; its runs only take CPU from this test.
        "REVERSAL_SCHEDULE_CRON": "0 0 1 1 *",
        # Launching a run waits (over gRPC) for a spawned worker to import Dagster and the
        # definitions: ~5 s of CPU each, and the backfill launches three at once. On 2 busy
        # cores that passed Dagster's 60 s default, and each re-queued attempt spawned
        # another worker on the same cores; with time to finish, the first attempt starts.
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "180",
    }
    env.pop("DAGSTER_PG_URL", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            dagster_dev_command(port, REPO / "workspace.yaml"),
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if not wait_until_serving(url, process, timeout=START_TIMEOUT):
                pytest.fail(f"dagster dev did not serve: {log.read_text()[-3000:]}")
            yield DagsterDev(url, log)
        finally:
            stop_process_group(process)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_backfill_over_three_days_reconciles_each_day_once(
    dagster_dev: DagsterDev, backfill_days: list[date], engine: sa.Engine
) -> None:
    partitions = [day.isoformat() for day in backfill_days]
    params = {
        "assetSelection": [{"path": [ASSET]}],
        "partitionNames": partitions,
        "title": "test: reconcile three days",
    }
    launched = dagster_dev.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    status = wait_for_backfill(dagster_dev, backfill_id)
    runs = dagster_dev.graphql(
        BACKFILL_RUNS, {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}
    )["runsOrError"]["results"]
    with engine.connect() as connection:
        reconciled = connection.execute(
            sa.select(
                reconciliation_runs.c.partition_day,
                reconciliation_runs.c.complete,
                reconciliation_runs.c.run_id,
                reconciliation_runs.c.db_rows,
                reconciliation_runs.c.stripe_transfers,
            ).order_by(reconciliation_runs.c.partition_day)
        ).all()

    assert status in DONE, f"backfill ended {status}:\n{_failures(dagster_dev.log)}"
    assert sorted(_tag(run, "dagster/partition") for run in runs) == partitions
    assert {run["status"] for run in runs} == {"SUCCESS"}
    # One complete reconciliation per backfilled day, by the backfill's runs, and no other day.
    assert [row.partition_day for row in reconciled] == backfill_days
    assert all(row.complete for row in reconciled)
    assert {row.run_id for row in reconciled} == {run["runId"] for run in runs}
    assert {(row.db_rows, row.stripe_transfers) for row in reconciled} == {(3, 3)}


def wait_for_backfill(dagster_dev: DagsterDev, backfill_id: str) -> str:
    """Poll the backfill until it ends (or fails), with a deadline; returns its last status."""
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    status = "REQUESTED"
    while time.monotonic() < deadline:
        answer = dagster_dev.graphql(BACKFILL_STATUS, {"id": backfill_id})
        backfill = answer["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        status = backfill["status"]
        if status in DONE | FAILED:
            return status
        time.sleep(1.0)  # polling the daemon's progress, with a deadline
    pytest.fail(f"backfill still {status} after {BACKFILL_TIMEOUT}s")


def _failures(log: Path) -> str:
    """The log's failure lines with what follows each, so a failed run says why in CI's output
    (the log's tail is mostly the daemon's later ticks)."""
    lines = log.read_text(errors="replace").splitlines()
    picked: list[str] = []
    for index, line in enumerate(lines):
        if any(mark in line for mark in ("STEP_FAILURE", "RUN_FAILURE", "Traceback", "Error")):
            picked.extend(lines[index : index + 25])
    return "\n".join(picked[-400:]) or "\n".join(lines[-60:])


def _tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)
