"""The code location's running sensors whose ticks keep failing, read from the instance.

The daemon records every sensor tick in the instance; a failed one is red only
on that sensor's page. ``reversal_alerts_sensor`` turns a sensor failing for
``SENSOR_FAILING_ALERT_AFTER`` into a problem (``alerts.failing_sensors``). A
stopped sensor is not watched (stopping ``stripe_refunds_sensor`` is a choice;
it is off by default), and neither is the alert sensor itself: it cannot report
its own failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

# Not re-exported by dagster: the stored state of a sensor and the statuses of its ticks.
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, TickStatus

from reversal_pipeline.alerts.failing_sensors import CompletedTick, failing_since
from reversal_pipeline.alerts.problems import Problem, sensor_failing

#: The newest completed ticks read per sensor: enough to span the alert bound for the
#: most frequent sensor (5 s interval: 120 ticks in ten minutes).
TICKS_READ_PER_SENSOR = 200
_COMPLETED = [TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE]


def failing_sensors(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition,
    now: datetime,
    watcher: str,
) -> Iterator[Problem]:
    """A problem for each running sensor of ``repository`` (but ``watcher``) failing long enough."""
    sensors = {s.name: s for s in repository.sensor_defs if s.name != watcher}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        sensor = sensors.get(state.instigator_name)
        if sensor is None or not _running(state, sensor):
            continue
        ticks = instance.get_ticks(
            state.instigator_origin_id,
            state.selector_id,
            limit=TICKS_READ_PER_SENSOR,
            statuses=_COMPLETED,
        )
        since = failing_since(
            [
                CompletedTick(
                    datetime.fromtimestamp(t.timestamp, UTC), t.status == TickStatus.FAILURE
                )
                for t in ticks
            ],
            now,
        )
        if since is not None:
            yield sensor_failing(sensor.name, _ui_location(state), since)


def _running(state: InstigatorState, sensor: dg.SensorDefinition) -> bool:
    """Started in the UI, or left to its default in code and running by default."""
    if state.status == InstigatorStatus.DECLARED_IN_CODE:
        return sensor.default_status == dg.DefaultSensorStatus.RUNNING
    return state.status == InstigatorStatus.RUNNING


def _ui_location(state: InstigatorState) -> str:
    """The code location as the UI's paths name it (``repo@location``; the default repo unnamed)."""
    selector = state.repository_selector
    if selector.repository_name == "__repository__":
        return selector.location_name
    return f"{selector.repository_name}@{selector.location_name}"
