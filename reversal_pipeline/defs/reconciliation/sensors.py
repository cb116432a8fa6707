"""``reconciliation_backfill_sensor``: re-reconcile past days that changed, until they complete.

One run per stale partition, with a run key that includes the day's latest
change, so the same change is never requested twice and a new change always
is. The cursor remembers, per day, the change last requested, when, and how
many times.

A day still stale after its run was requested (the run failed, or stopped
part-way) is requested again once no run of it is queued or running and its
backoff has passed (15 min, doubling, at most 6 h between attempts): it is
retried until it completes, never given up on. Each failed attempt is a
failed run of ``reconciliation_job`` (its ``reconciliation_complete`` ERROR
check fails, for an incomplete listing); from the third attempt on the
sensor also logs an error and tags the run ``reconciliation/repeated_failure``
so the alerting can tell "keeps failing" from a one-off.

Runs are tagged ``reconciliation/mode=auto``: the asset re-checks only the
changed rows when that is cheaper than listing the whole day.

The refund side (``refund_reconciliation_job``) joins the same sensor: its
stale days come from ``refund_stale_days`` (in-grace refund findings whose
grace ended, open refund findings whose refund changed in the database, days
whose last run saw pending refunds, runs that did not complete), with their
own run keys (``reconcile-refunds-...``) and cursor entries (``refunds/DAY``),
and the same retry and alerting rules.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time, timedelta

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.automation import sensor_default_status
from reversal_pipeline.defs.reconciliation.assets import MODE_TAG
from reversal_pipeline.defs.reconciliation.jobs import (
    reconciliation_job,
    refund_reconciliation_job,
)
from reversal_pipeline.defs.reconciliation.partitions import daily_partitions
from reversal_pipeline.environment import BACKFILL_LOOKBACK_DAYS_ENV, setting
from reversal_pipeline.reconciliation.refund_stale_days import refund_stale_days
from reversal_pipeline.reconciliation.stale_days import StaleDay, stale_days

MAX_RUNS_PER_TICK = 31
RETRY_BASE_DELAY = timedelta(minutes=15)
RETRY_MAX_DELAY = timedelta(hours=6)
ALERT_AFTER_ATTEMPTS = 3
REPEATED_FAILURE_TAG = "reconciliation/repeated_failure"

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _clock() -> datetime:
    """The sensor's notion of now (a seam for tests of the backoff)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Side:
    """One reconciliation side the sensor keeps current."""

    job_name: str
    run_key_prefix: str  # "reconcile" / "reconcile-refunds"
    cursor_prefix: str  # "" (the cursor's original format) / "refunds/"
    stale: Callable[..., list[StaleDay]]
    tags: dict[str, str]


_SIDES = (
    _Side(reconciliation_job.name, "reconcile", "", stale_days, {MODE_TAG: "auto"}),
    _Side(refund_reconciliation_job.name, "reconcile-refunds", "refunds/", refund_stale_days, {}),
)


@dataclass
class _Requested:
    """What the cursor keeps per day."""

    changed: str
    attempt: int
    at: str


def retry_delay(attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1`` of the same change: doubling, capped."""
    return min(RETRY_BASE_DELAY * 2 ** max(attempt - 1, 0), RETRY_MAX_DELAY)


@dg.sensor(
    name="reconciliation_backfill_sensor",
    jobs=[reconciliation_job, refund_reconciliation_job],
    minimum_interval_seconds=300,
    default_status=sensor_default_status(),
    description="Requests reconciliation of past days whose rows changed since last reconciled, "
    "and retries (with backoff) days whose reconciliation did not complete.",
)
def reconciliation_backfill_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    requested = _read_cursor(context.cursor)
    now = _clock()
    today = datetime.combine(now.date(), time.min, tzinfo=UTC)
    lookback = int(setting(BACKFILL_LOOKBACK_DAYS_ENV))
    start = max(today - timedelta(days=lookback), _first_partition_start())
    with database.get_engine().connect() as connection:
        candidates = [
            (side, stale)
            for side in _SIDES
            for stale in side.stale(connection, since=start, until=today, now=now)
        ]
    run_requests: list[dg.RunRequest] = []
    for side, stale in candidates:
        if len(run_requests) >= MAX_RUNS_PER_TICK:
            break
        key = side.cursor_prefix + stale.day.isoformat()
        request = _request_for(context, side, stale, requested.get(key), now)
        if request is not None:
            requested[key] = request[0]
            run_requests.append(request[1])
    if not run_requests:
        return dg.SensorResult(skip_reason="no day changed since its last reconciliation")
    # Forget days outside the look-back so the cursor stays small.
    kept = {
        key: asdict(r)
        for key, r in requested.items()
        if key.rpartition("/")[2] >= start.date().isoformat()
    }
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(kept, sort_keys=True))


def _request_for(
    context: dg.SensorEvaluationContext,
    side: _Side,
    stale: StaleDay,
    previous: _Requested | None,
    now: datetime,
) -> tuple[_Requested, dg.RunRequest] | None:
    day, changed = stale.day.isoformat(), stale.changed_at.isoformat()
    attempt = 1
    if previous is not None and previous.changed == changed:
        # Requested before and still stale: the run failed or has not finished.
        if _has_active_run(context, side.job_name, day):
            return None
        if now < datetime.fromisoformat(previous.at) + retry_delay(previous.attempt):
            return None
        attempt = previous.attempt + 1
    tags = {
        "trigger": "reconciliation_backfill_sensor",
        "reason": stale.reason,
        **side.tags,
        "reconciliation/attempt": str(attempt),
    }
    if attempt >= ALERT_AFTER_ATTEMPTS:
        tags[REPEATED_FAILURE_TAG] = str(attempt - 1)
        context.log.error(
            f"{side.job_name} of {day} has not completed after {attempt - 1} attempt(s) "
            f"for the change at {changed}; requesting attempt {attempt}"
        )
    suffix = "" if attempt == 1 else f"-attempt-{attempt}"
    run_request = dg.RunRequest(
        run_key=f"{side.run_key_prefix}-{day}-changed-{changed}{suffix}",
        partition_key=day,
        tags=tags,
        job_name=side.job_name,
    )
    return _Requested(changed, attempt, now.isoformat()), run_request


def _has_active_run(context: dg.SensorEvaluationContext, job_name: str, day: str) -> bool:
    records = context.instance.get_run_records(
        dg.RunsFilter(
            job_name=job_name,
            statuses=_ACTIVE,
            tags={"dagster/partition": day},
        ),
        limit=1,
    )
    return bool(records)


def _read_cursor(cursor: str | None) -> dict[str, _Requested]:
    raw = json.loads(cursor) if cursor else {}
    requested = {}
    for day, value in raw.items():
        if isinstance(value, str):  # the cursor before retries: {day: changed_at}
            value = {"changed": value, "attempt": 1, "at": datetime.min.replace(tzinfo=UTC)}
            value["at"] = value["at"].isoformat()
        requested[day] = _Requested(**value)
    return requested


def _first_partition_start() -> datetime:
    first = daily_partitions.get_first_partition_key()
    assert first is not None
    return datetime.fromisoformat(first).replace(tzinfo=UTC)
