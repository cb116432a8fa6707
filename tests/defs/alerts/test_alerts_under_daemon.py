"""reversal_alerts_sensor under a running ``dagster-daemon``: one alert per failed run, none lost.

The other alert tests evaluate sensor ticks by hand; this one starts the real
daemon (its own process, loading ``reversal_pipeline.definitions``) with
``REVERSAL_ALERT_WEBHOOK_URL`` pointing at a real local HTTP receiver, and makes
real ``reversal_job`` runs fail in the daemon's instance (the application
database unreachable). The receiver is then taken down (connection refused),
another run fails, and the receiver comes back on the same port: the alert
arrives then, once. The sensor ticks every 60 s, so this takes two to four
minutes; it is bounded well under five.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

# Not re-exported by dagster: the kind of instigator whose state and ticks are read.
from dagster._core.definitions.run_request import InstigatorType

from reversal_pipeline.alerts.delivery import WEBHOOK_URL_ENV
from reversal_pipeline.alerts.ledger import AlertLedger
from reversal_pipeline.alerts.problems import WEBSERVER_URL_ENV
from tests.alerts.receiver import Receiver, down_receiver_url, running_receiver
from tests.plugins.dagster_job import load_defs
from tests.plugins.stripe_emulator import TEST_API_KEY

REPO = Path(__file__).resolve().parents[3]
WEBSERVER = "http://dagster.example:3000"
SENSOR = "reversal_alerts_sensor"
#: The whole test must finish inside this (the sensor's interval is 60 s).
TEST_BUDGET_SECONDS = 240.0

# Above the test's own budget, so its assertion (naming what it waited for) fires first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(TEST_BUDGET_SECONDS + 120)]


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


@pytest.fixture
def failing_job_env(monkeypatch: pytest.MonkeyPatch, dagster_home: Path) -> None:
    """reversal_job's environment with the application database unreachable: its runs fail."""
    unreachable = down_receiver_url().split("/hooks")[0].replace("http://", "")
    monkeypatch.setenv("REVERSAL_DATABASE_URL", f"postgresql://nobody:x@{unreachable}/none")
    monkeypatch.setenv("STRIPE_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))


@pytest.fixture
def failed_run(failing_job_env: None, dagster_home: Path) -> str:
    """A real failed reversal_job run in the daemon's instance, there before the daemon starts."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = (
            load_defs()
            .resolve_job_def("reversal_job")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    assert not result.success
    return result.run_id


@pytest.fixture
def daemon(
    failed_run: str, dagster_home: Path, tmp_path: Path, receiver_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERSAL_", "STRIPE_"))}
    env.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            WEBHOOK_URL_ENV: f"http://127.0.0.1:{receiver_port}/hooks/T000/B000/secret-path",
            WEBSERVER_URL_ENV: WEBSERVER,
            # Only the alert sensor (and the two that are always on) run; no schedule starts runs.
            "REVERSAL_AUTOMATION": "off",
        }
    )
    command = [
        str(Path(sys.executable).parent / "dagster-daemon"),
        "run",
        "-m",
        "reversal_pipeline.definitions",
    ]
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def receiver_port() -> int:
    return int(down_receiver_url().split(":")[2].split("/")[0])


def _until(what: str, condition: Callable[[], bool], deadline: float) -> None:
    """Wait on an observable state (the receiver's bodies, the sensor's ticks), never on time."""
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _alerts_for(receiver: Receiver, run_id: str) -> list[str]:
    return [text for text in receiver.texts if f"{WEBSERVER}/runs/{run_id}" in text]


def _sensor_ticks(instance: dg.DagsterInstance) -> list[Any]:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == SENSOR:
            return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return []


def _delivery_failed(instance: dg.DagsterInstance) -> bool:
    return any("delivery failed" in (t.skip_reason or "") for t in _sensor_ticks(instance))


def _ledger_after_latest_tick(instance: dg.DagsterInstance) -> AlertLedger:
    ticks = sorted(_sensor_ticks(instance), key=lambda t: t.timestamp)
    return AlertLedger.from_cursor(ticks[-1].cursor if ticks else None)


def test_the_daemon_alerts_a_failed_run_once_when_the_receiver_is_back(
    failed_run: str,
    dagster_home: Path,
    receiver_port: int,
    daemon: subprocess.Popen[bytes],
) -> None:
    deadline = time.monotonic() + TEST_BUDGET_SECONDS
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # The receiver is down (connection refused): the daemon's tick cannot deliver.
        _until("a tick that could not deliver", lambda: _delivery_failed(instance), deadline)
        assert daemon.poll() is None, "the daemon died"
        assert f"run:{failed_run}" in {p.key for p in _ledger_after_latest_tick(instance).pending}

        with running_receiver(receiver_port) as receiver:
            _until("the kept alert", lambda: bool(_alerts_for(receiver, failed_run)), deadline)
            # The delivering tick leaves nothing pending: no later tick sends it again.
            _until(
                "the ledger to settle",
                lambda: not _ledger_after_latest_tick(instance).pending,
                deadline,
            )
            ledger = _ledger_after_latest_tick(instance)
            bodies = list(receiver.bodies)

    [alert] = [b["text"] for b in bodies if failed_run in b["text"]]  # exactly one
    assert f"{WEBSERVER}/runs/{failed_run}" in alert
    assert "reversal_job FAILED" in alert
    assert f"run:{failed_run}" in ledger.open_keys  # remembered as alerted
    assert "secret-path" not in " ".join(b["text"] for b in bodies)  # the webhook URL is secret
