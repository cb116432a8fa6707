"""The default status of schedules and sensors: running, unless ``dev`` says off.

``reversal-pipeline dev`` exports ``REVERSAL_AUTOMATION=off`` when it runs
with a live Stripe key without ``--live`` (see ``devserver.automation``).
Unset (every deployment) means running, as before. Only the default is
decided here: a schedule or sensor switched on or off in the UI keeps its
stored state.
"""

import dagster as dg

from reversal_pipeline.environment import AUTOMATION_ENV, setting


def automation_on() -> bool:
    return setting(AUTOMATION_ENV).lower() != "off"


def sensor_default_status() -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if automation_on() else dg.DefaultSensorStatus.STOPPED


def schedule_default_status() -> dg.DefaultScheduleStatus:
    if automation_on():
        return dg.DefaultScheduleStatus.RUNNING
    return dg.DefaultScheduleStatus.STOPPED
