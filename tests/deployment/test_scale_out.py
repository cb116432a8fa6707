"""Scale-out on Dagster itself: daemon, code server and webserver as separate processes.

The deployment shape of docs/deployment.md, minus Kubernetes: instance
storage on PostgreSQL, the instance template
``reversal_pipeline/devserver/dagster.yaml`` (run queue: 4 runs, 2
reconciliation runs, one reversal run), the code server on its own (``dagster api grpc``),
the daemon dequeuing runs, each run its own process (the default launcher).
Several ``reversal_job`` runs and reconciliation partition runs are queued at
once through GraphQL, as the UI or an API client would. Checks: every row
reversed exactly once, the shared Stripe budget held against an emulator
enforcing it, the queue's limits obeyed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from reversal_pipeline.devserver.home import psycopg2_url, template_path
from reversal_pipeline.stripe_emulator import EmulatorServer
from reversal_pipeline.stripe_emulator.faults import FaultConfig
from tests.plugins.database import _database_url, create_database, drop_database
from tests.plugins.marketplace import seed_rows
from tests.plugins.stripe_emulator import TEST_API_KEY

# Starts three Dagster processes and seven runs (a process each): minutes on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
BUDGET = 20  # requests/s: the emulator enforces it, every run is configured with it
START_TIMEOUT = 240.0
RUNS_TIMEOUT = 600.0
REVERSAL_RUNS = 4
ROWS_PER_RUN = 10
RECONCILED_DAYS = ("2026-11-17", "2026-11-18", "2026-11-19")
LOCATION = {"repositoryLocationName": "reversal_pipeline", "repositoryName": "__repository__"}

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN = "query R($id: ID!) { runOrError(runId: $id) { ... on Run { status startTime endTime } } }"
FAILURES = """
query F($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
    __typename
    ... on ExecutionStepFailureEvent { error { message } }
    ... on RunFailureEvent { message } } } } }
"""
LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name locationOrLoadError { __typename } } } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    def __init__(self, url: str) -> None:
        self.url = url

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait_for_code_location(self, processes: list[subprocess.Popen[bytes]], logs: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    pytest.fail(f"a Dagster process exited: {_tail(logs)}")
            try:
                entries = self.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
                kinds = [e["locationOrLoadError"]["__typename"] for e in entries]
                if kinds and all(k == "RepositoryLocation" for k in kinds):
                    return
            except (requests.ConnectionError, requests.HTTPError, TypeError):
                pass
            time.sleep(1)  # polling servers that are starting, with a deadline
        pytest.fail(f"the code location did not load within {START_TIMEOUT}s: {_tail(logs)}")

    def launch(self, params: dict[str, Any]) -> str:
        launched = self.graphql(LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return str(launched["run"]["runId"])

    def failures(self, run_id: str) -> list[str]:
        """What a failed run said: its step errors and its failure message."""
        events = self.graphql(FAILURES, {"id": run_id})["logsForRun"]["events"]
        said = []
        for event in events:
            if event["__typename"] == "ExecutionStepFailureEvent":
                said.append(event["error"]["message"][:500])
            elif event["__typename"] == "RunFailureEvent":
                said.append(event["message"][:500])
        return said

    def wait_for_runs(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + RUNS_TIMEOUT
        while True:
            runs = {r: self.graphql(RUN, {"id": r})["runOrError"] for r in run_ids}
            if all(run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for run in runs.values()):
                return runs
            if time.monotonic() > deadline:
                pytest.fail(f"runs not finished in {RUNS_TIMEOUT}s: {runs}")
            time.sleep(2)  # polling runs in other processes, with a deadline


def _tail(folder: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(folder.glob("*.log")))


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def _max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(
        faults=FaultConfig(rate_limit_per_second=BUDGET), api_keys=[TEST_API_KEY]
    ) as server:
        yield server


@pytest.fixture
def dagster_storage_url(postgres_server_url: str) -> Iterator[str]:
    name = create_database(postgres_server_url, "rp_dagster")
    yield psycopg2_url(_database_url(postgres_server_url, name), name)
    drop_database(postgres_server_url, name)


def _start(
    command: list[str], env: dict[str, str], log: Path, stack: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    stack.append(process)
    return process


def test_queued_runs_in_separate_processes_reverse_each_row_once_within_one_budget(
    database_url: str,
    engine: sa.Engine,
    dagster_storage_url: str,
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    control = emulator.control()
    due = seed_rows(engine, control, REVERSAL_RUNS * ROWS_PER_RUN)
    for day in RECONCILED_DAYS:
        at = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
        seed_rows(engine, control, 150, status="completed", transferred_at=at, order_prefix=day)

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(template_path(), home / "dagster.yaml")
    grpc_port, web_port = _free_port(), _free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n      location_name: reversal_pipeline\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_storage_url,
        "REVERSAL_DATABASE_URL": database_url,
        "STRIPE_API_KEY": TEST_API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "STRIPE_REQUESTS_PER_SECOND": str(BUDGET),
        "REVERSAL_REPORTS_DIR": str(tmp_path / "reports"),
    }
    bin_dir = Path(sys.executable).parent
    # The schema first, once, as the Helm chart's migration job does: the daemon and the
    # webserver started together on an empty database both create it, and one of them
    # dies on "type jobs already exists" (seen in CI).
    subprocess.run(
        [str(bin_dir / "dagster"), "instance", "migrate"],
        cwd=REPO, env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _start(
            [str(bin_dir / "dagster"), "api", "grpc", "--module-name",
             "reversal_pipeline.definitions", "--host", "127.0.0.1", "--port", str(grpc_port)],
            env, tmp_path / "code_server.log", processes,
        )  # fmt: skip
        _start(
            [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
            env, tmp_path / "daemon.log", processes,
        )  # fmt: skip
        _start(
            [str(bin_dir / "dagster-webserver"), "-w", str(workspace),
             "-h", "127.0.0.1", "-p", str(web_port)],
            env, tmp_path / "webserver.log", processes,
        )  # fmt: skip
        deployment = Deployment(f"http://127.0.0.1:{web_port}")
        deployment.wait_for_code_location(processes, tmp_path)

        reversal_ids = [
            deployment.launch(
                {
                    "selector": {**LOCATION, "jobName": "reversal_job"},
                    "runConfigData": {
                        "resources": {
                            "reversal_settings": {"config": {"max_rows_per_run": ROWS_PER_RUN}}
                        }
                    },
                }
            )
            for _ in range(REVERSAL_RUNS)
        ]
        reconciliation_ids = [
            deployment.launch(
                {
                    "selector": {**LOCATION, "jobName": "reconciliation_job"},
                    "runConfigData": {
                        "ops": {"reversal_reconciliation": {"config": {"grace_minutes": 0}}}
                    },
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
                }
            )
            for day in RECONCILED_DAYS
        ]
        runs = deployment.wait_for_runs(reversal_ids + reconciliation_ids)
        failed = {
            run_id: deployment.failures(run_id)
            for run_id, run in runs.items()
            if run["status"] != "SUCCESS"
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    assert not failed, failed
    # Every row reversed, exactly once at Stripe.
    with engine.connect() as connection:
        statuses = connection.execute(
            sa.text(
                "SELECT status, count(*) FROM seller_transfers WHERE id = ANY(:ids) GROUP BY 1"
            ),
            {"ids": [row.id for row in due]},
        ).all()
        holders = connection.execute(sa.text("SELECT count(*) FROM stripe_budget_holders"))
        holder_count = holders.scalar()
    assert dict(statuses) == {"reversed": len(due)}
    for row in due:
        assert len(control.get_transfer(row.stripe_transfer_id)["reversals"]) == 1
    # The run queue's limits (the instance template): 4 runs at once, 2 reconciliation runs.
    spans = {r: (run["startTime"], run["endTime"]) for r, run in runs.items()}
    assert _most_at_once(list(spans.values())) <= 4
    assert _most_at_once([spans[r] for r in reconciliation_ids]) <= 2
    # One budget: every run drew on it, and Stripe saw no more than the budget.
    assert holder_count >= len(runs)
    log = [e for e in control.request_log(limit=100_000) if e["path"].startswith("/v1/")]
    rate_limited = sum(1 for e in log if e["status"] == 429)
    assert rate_limited <= max(1, len(log) // 100), f"{rate_limited} 429s of {len(log)} calls"
    assert _max_in_any_second([e["time"] for e in log]) <= BUDGET * 1.05 + 1
