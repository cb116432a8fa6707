"""A sensor that keeps failing is an alert: ``stripe_refunds_sensor`` failing loses refunds.

The ticks are the real ones: Dagster's own sensor daemon loop, run in this
process over a real code server of ``reversal_pipeline.definitions``, evaluates
``stripe_refunds_sensor`` against the emulator with a revoked key and records
each failed tick in the instance. Only the clock is Dagster's test clock
(``freeze_time``), so ten minutes of ticks take seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

# Not re-exported by dagster: the daemon's sensor loop, its workspace, and its test clock.
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.sensor import execute_sensor_iteration

from reversal_pipeline.alerts.failing_sensors import (
    SENSOR_FAILING_ALERT_AFTER,
    CompletedTick,
    failing_since,
)
from reversal_pipeline.alerts.ledger import AlertLedger
from reversal_pipeline.defs.alerts.sensor import reversal_alerts_sensor
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.alerts.receiver import running_receiver
from tests.plugins.dagster_job import load_defs

LOCATION = "reversal_pipeline"
WEBSERVER = "http://dagster.example:3000"
KEY = "sensor:stripe_refunds_sensor"


@pytest.fixture
def workspace(
    job_env: dict[str, str],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[WorkspaceProcessContext]:
    """A daemon's workspace over a code server (it inherits this environment) of the project."""
    monkeypatch.setenv("REVERSAL_AUTOMATION", "off")  # only the sensors started here tick
    target = ModuleTarget(
        module_name="reversal_pipeline.definitions",
        attribute=None,
        working_directory=None,
        location_name=LOCATION,
    )
    with create_test_daemon_workspace_context(target, dagster_instance) as context:
        location = context.create_request_context().get_code_location(LOCATION)
        [repository] = location.get_repositories().values()
        dagster_instance.start_sensor(repository.get_sensor("stripe_refunds_sensor"))
        yield context


def _daemon_tick(workspace: WorkspaceProcessContext, at: datetime) -> None:
    with freeze_time(at):
        list(execute_sensor_iteration(workspace, logging.getLogger(__name__), None, None))


def _alerts(instance: dg.DagsterInstance, cursor: str | None, at: datetime) -> dg.SensorResult:
    with (
        freeze_time(at),
        dg.build_sensor_context(instance=instance, cursor=cursor, definitions=load_defs()) as ctx,
    ):
        return reversal_alerts_sensor(ctx)


@pytest.mark.slow  # a code server process, and five daemon iterations
def test_a_sensor_failing_for_ten_minutes_is_alerted_once_and_forgotten_when_it_recovers(
    workspace: WorkspaceProcessContext,
    job_env: dict[str, str],
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    control = stripe_emulator.control()
    control.revoke_key(job_env["STRIPE_API_KEY"])  # every tick of the refunds intake fails
    start = datetime.now(UTC)
    _daemon_tick(workspace, start)
    _daemon_tick(workspace, start + timedelta(minutes=5))
    early = _alerts(dagster_instance, None, start + timedelta(minutes=5))
    assert KEY not in AlertLedger.from_cursor(early.cursor).open_keys  # a blip is not an alert

    failing_for_long = start + SENSOR_FAILING_ALERT_AFTER + timedelta(seconds=1)
    _daemon_tick(workspace, failing_for_long)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", WEBSERVER)
    with running_receiver() as receiver:
        monkeypatch.setenv("REVERSAL_ALERT_WEBHOOK_URL", receiver.url)
        alerted = _alerts(dagster_instance, early.cursor, failing_for_long)
        again = _alerts(dagster_instance, alerted.cursor, failing_for_long + timedelta(minutes=1))
    [alert] = [text for text in receiver.texts if "stripe_refunds_sensor" in text]  # once
    assert "sensor stripe_refunds_sensor is FAILING" in alert
    assert f"{start:%Y-%m-%d %H:%M} UTC" in alert  # failing since the first failed tick
    assert f"{WEBSERVER}/locations/{LOCATION}/sensors/stripe_refunds_sensor" in alert
    assert job_env["STRIPE_API_KEY"] not in alert
    # Only the failing sensor: the others ran (or were never started) without failing.
    sensor_keys = {k for k in AlertLedger.from_cursor(again.cursor).open_keys if "sensor:" in k}
    assert sensor_keys == {KEY}

    control.unrevoke_key(job_env["STRIPE_API_KEY"])
    recovered_at = failing_for_long + timedelta(minutes=2)
    _daemon_tick(workspace, recovered_at)
    recovered = _alerts(dagster_instance, again.cursor, recovered_at)
    assert KEY not in AlertLedger.from_cursor(recovered.cursor).open_keys  # failing again alerts


def test_failures_since_the_last_good_tick_count_only_once_they_last_the_bound() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def ticks(*spec: tuple[int, bool]) -> list[CompletedTick]:
        return [CompletedTick(now - timedelta(minutes=m), failed) for m, failed in spec]

    assert failing_since(ticks((1, True), (6, True), (11, True), (12, False)), now) == now - (
        timedelta(minutes=11)
    )
    assert failing_since(ticks((1, True), (6, True), (9, True), (12, False)), now) is None
    assert failing_since(ticks((0, False), (6, True), (11, True)), now) is None  # recovered
    assert failing_since(ticks((10, True)), now) == now - timedelta(minutes=10)  # exactly the bound
    assert failing_since([], now) is None  # never ticked
