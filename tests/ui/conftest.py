"""One dagster-webserver for the UI tests, on a free loopback port, against a test instance.

Module-scoped because starting the webserver and its code server costs
seconds of CPU: the GraphQL test launches ``reversal_job`` once, then one
partition of ``reversal_reconciliation`` with a planted drift, and the
browser test looks at what those runs materialized.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.database import _database_url, create_database, drop_database
from tests.plugins.marketplace import SeededRow, seed_rows
from tests.plugins.stripe_emulator import TEST_API_KEY

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT = 300.0  # a loaded shared machine starts the code server slowly


@dataclass
class Webserver:
    url: str
    engine: sa.Engine
    row: SeededRow
    emulator: EmulatorServer

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.25)  # polling a server that is starting, with a deadline
    pytest.fail(f"dagster-webserver did not answer within {START_TIMEOUT}s")


@pytest.fixture(scope="module")
def webserver(
    postgres_server_url: str, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webserver]:
    name = create_database(postgres_server_url, "rp_ui", template=migrated_template)
    database_url = _database_url(postgres_server_url, name)
    engine = create_db_engine(database_url)
    home = tmp_path_factory.mktemp("dagster_home")
    # No daemon here, so no run queue: a launched run starts at once in its own process.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    log = home / "webserver.log"
    with EmulatorServer(api_keys=[TEST_API_KEY]) as emulator:
        [row] = seed_rows(engine, emulator.control(), 1, status="completed")
        with engine.begin() as connection:
            request_reversal(connection, refund_id="re_ui_test", order_id=row.order_id)
        port = free_port()
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "REVERSAL_DATABASE_URL": database_url,
            "STRIPE_API_KEY": TEST_API_KEY,
            "STRIPE_API_BASE": emulator.url,
            "STRIPE_REQUESTS_PER_SECOND": "100",
            "REVERSAL_REPORTS_DIR": str(home / "reports"),
        }
        command = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml",
                   "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until_serving(url, process, log)
                yield Webserver(url, engine, row, emulator)
            finally:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    engine.dispose()
    drop_database(postgres_server_url, name)


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""
RUN_TIMEOUT = 120.0
LOCATION_SELECTOR = {
    "repositoryLocationName": "reversal_pipeline",
    "repositoryName": "__repository__",
}
#: The UTC day of ``seed_rows``' default ``transferred_at``: the reversal row's day.
RECONCILED_DAY = "2026-11-20"
MISSING_TRANSFER_ID = "tr_ui_test_missing_at_stripe"


@dataclass(frozen=True)
class ReconciliationRun:
    run_id: str
    status: str
    drift_row: SeededRow


def launch_and_wait(webserver: Webserver, params: dict[str, Any]) -> tuple[str, str]:
    """Launch through GraphQL, as the UI's Launch button does; poll to the end: (run id, status)."""
    launched = webserver.graphql(LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_TIMEOUT
    status = "NOT_STARTED"
    while time.monotonic() < deadline:
        status = webserver.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(0.5)  # polling a run in another process, with a deadline
    return run_id, status


@pytest.fixture(scope="module")
def launched_run(webserver: Webserver) -> tuple[str, str]:
    """reversal_job launched through GraphQL, as the UI's Launch button does: (run id, status)."""
    params = {"selector": {**LOCATION_SELECTOR, "jobName": "reversal_job"}, "runConfigData": {}}
    return launch_and_wait(webserver, params)


@pytest.fixture(scope="module")
def reconciliation_run(webserver: Webserver, launched_run: tuple[str, str]) -> ReconciliationRun:
    """One day of ``reversal_reconciliation``, launched like the UI's partition launch.

    Planted drift: a ``completed`` row whose transfer Stripe never had
    (``missing_at_stripe``). The day also holds the reversal row, whose
    transfer is at the emulator, so the day is not the "nothing of this day
    at Stripe" alarm. ``grace_minutes: 0``: the row was written seconds ago
    and would otherwise be reported as in grace, not as drift. Runs after
    ``launched_run`` so the two never share the emulator's rate budget.
    """
    [drift_row] = seed_rows(
        webserver.engine,
        None,
        1,
        status="completed",
        stripe_transfer_id=MISSING_TRANSFER_ID,
        order_prefix="ord_ui_missing",
    )
    params = {
        "selector": {**LOCATION_SELECTOR, "jobName": "reconciliation_job"},
        "runConfigData": {"ops": {"reversal_reconciliation": {"config": {"grace_minutes": 0}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": RECONCILED_DAY}]},
    }
    run_id, status = launch_and_wait(webserver, params)
    return ReconciliationRun(run_id, status, drift_row)
