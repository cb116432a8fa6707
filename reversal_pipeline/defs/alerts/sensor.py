"""``reversal_alerts_sensor``: tell someone when money is at risk, once per new problem.

Each tick it lists the problems open now, read from the Dagster instance:
a failed run of ``reversal_job``, ``reconciliation_job`` or
``refund_reconciliation_job`` (in the last day),
and every asset check whose latest evaluation failed with ERROR severity
(open critical drift, new permanent failures, outcomes not written, refund
events past their window, and the freshness checks: a stale asset), and
every running sensor of the code location whose ticks have all failed for
``SENSOR_FAILING_ALERT_AFTER`` (``stripe_refunds_sensor`` failing means refunds
made at Stripe are not taken in). The
ledger in the cursor turns that into one alert per new problem and keeps
undelivered alerts for the next tick. ``REVERSAL_ALERT_WEBHOOK_URL`` unset:
each alert is logged as a warning on the tick, and nothing is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

# Not re-exported by dagster; the statuses of an evaluation that has finished.
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)

# Dagster's clock (the one its tick timestamps come from; its tests can move it).
from dagster._time import get_current_datetime

from reversal_pipeline.alerts.delivery import (
    DeliveryFailed,
    post_webhook,
    scrub,
    secret_values,
)
from reversal_pipeline.alerts.ledger import AlertLedger
from reversal_pipeline.alerts.problems import (
    Problem,
    check_failed,
    run_failed,
)
from reversal_pipeline.defs.alerts.sensor_ticks import failing_sensors
from reversal_pipeline.environment import WEBHOOK_URL_ENV, WEBSERVER_URL_ENV, setting

log = logging.getLogger(__name__)

WATCHED_JOBS = ("reversal_job", "reconciliation_job", "refund_reconciliation_job")
#: A failed run stays a problem this long (then it drops out, already alerted).
FAILED_RUN_WINDOW = timedelta(days=1)
MAX_RUNS_PER_JOB = 100
SENSOR_NAME = "reversal_alerts_sensor"


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one alert per new failed run, failed ERROR check, stale asset or "
    f"failing sensor to {WEBHOOK_URL_ENV} (unset: logs it).",
)
def reversal_alerts_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    ledger = AlertLedger.from_cursor(context.cursor)
    new = ledger.observe(
        [
            *_failed_runs(context.instance),
            *_failing_error_checks(context),
            *failing_sensors(
                context.instance, _repository(context), get_current_datetime(), watcher=SENSOR_NAME
            ),
        ]
    )
    webhook_url = setting(WEBHOOK_URL_ENV) or None
    webserver_url = setting(WEBSERVER_URL_ENV) or None
    secrets = secret_values()

    def send(problem: Problem) -> None:
        text = scrub(problem.text(webserver_url), secrets)
        if webhook_url is None:
            message = f"alert (not sent: {WEBHOOK_URL_ENV} is unset): {text}"
            context.log.warning(message)  # on the sensor's tick in the UI
            log.warning(message)  # and in the daemon's own log, where log shippers read
        else:
            post_webhook(webhook_url, text)

    try:
        delivered = ledger.deliver(send)
        outcome = f"{len(new)} new problem(s); {len(delivered)} alert(s) delivered"
    except DeliveryFailed as error:
        # Kept in the cursor: the next tick sends them again, in order.
        context.log.error(f"{error}; {len(ledger.pending)} alert(s) kept for the next tick")
        outcome = f"{len(new)} new problem(s); delivery failed, {len(ledger.pending)} kept"
    return dg.SensorResult(skip_reason=outcome, cursor=ledger.to_cursor())


def _failed_runs(instance: dg.DagsterInstance) -> Iterator[Problem]:
    since = datetime.now(UTC) - FAILED_RUN_WINDOW
    for job_name in WATCHED_JOBS:
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job_name,
                statuses=[dg.DagsterRunStatus.FAILURE],
                updated_after=since,
            ),
            limit=MAX_RUNS_PER_JOB,
        )
        for record in records:
            yield run_failed(job_name, record.dagster_run.run_id)


def _failing_error_checks(context: dg.SensorEvaluationContext) -> Iterator[Problem]:
    """Checks whose latest *completed* evaluation failed with ERROR severity.

    Completed, not latest: while a check is being re-evaluated its latest record
    is only "planned", and reading that as "no longer failing" would forget the
    problem and alert it again when the evaluation fails once more.
    """
    storage = context.instance.event_log_storage
    for key in sorted(_repository(context).asset_graph.asset_check_keys, key=str):
        records = storage.get_asset_check_execution_history(
            key, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
        )
        event = records[0].event.dagster_event if records and records[0].event else None
        if event is None or event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        yield check_failed(key.asset_key.path, key.name, evaluation.description)


def _repository(context: dg.SensorEvaluationContext) -> dg.RepositoryDefinition:
    # A sensor evaluated by the daemon or a test harness always has its repository.
    assert context.repository_def is not None, "the alert sensor needs its code location"
    return context.repository_def
