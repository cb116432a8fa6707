"""``open_drift``: every open finding of every day, with checks that stay red while any is open.

Why a separate, unpartitioned asset: ``reversal_reconciliation``'s checks are
per day, and the UI shows the check status of the day reconciled last, so a
clean day reconciled after a day with critical drift shows green. These
checks read every open finding instead.

How it stays current: ``open_drift_refresh_sensor`` compares the database's
drift watermark (``reconciliation.open_findings.drift_watermark``) with the
one it last refreshed for, and requests ``open_drift_job`` when it moved.
Not a run-status sensor on ``reconciliation_job`` (a partitioned and an
unpartitioned asset cannot share one job) and not an automation condition:
both would miss the writers outside Dagster (the CLI ``reconcile``, the
repair job and the CLI ``resolve``, which resolve findings through
``resolve_fixed_findings``), while the watermark moves for every one of them.
"""

from typing import Any

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.reconciliation.categories import Severity
from reversal_pipeline.reconciliation.open_findings import (
    OpenDrift,
    drift_watermark,
    read_open_drift,
    table_rows,
)

ASSET = "open_drift"
#: Rows shown in the UI table; the counts cover all of them (the CLI `report` lists every one).
TABLE_LIMIT = 200
FINDINGS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("severity", "string"),
        dg.TableColumn("category", "string"),
        dg.TableColumn("day", "string", description="partition day (UTC transferred_at)"),
        dg.TableColumn("row", "int", description="seller_transfers.id"),
        dg.TableColumn("transfer", "string", description="Stripe transfer id"),
        dg.TableColumn("key", "string", description="finding key (the refund id, refund side)"),
        dg.TableColumn("amount", "string", description="major units, currency (minor units)"),
    ]
)


@dg.asset(
    name=ASSET,
    group_name="reconciliation",
    deps=["reversal_reconciliation", "refund_reconciliation"],
    kinds={"postgres"},
    description="Every open reconciliation finding of every day (not one partition).",
    check_specs=[
        dg.AssetCheckSpec(
            "no_open_critical_drift",
            asset=ASSET,
            description="No open critical finding on any day: money may be lost or doubled.",
        ),
        dg.AssetCheckSpec(
            "no_open_high_drift",
            asset=ASSET,
            description="No open high finding on any day: a person should look today.",
        ),
    ],
)
def open_drift(database: DatabaseResource) -> dg.MaterializeResult:
    with database.get_engine().connect() as connection:
        drift = read_open_drift(connection)
    return dg.MaterializeResult(metadata=_metadata(drift), check_results=_checks(drift))


def _metadata(drift: OpenDrift) -> dict[str, Any]:
    rows = table_rows(drift.drift_findings, TABLE_LIMIT)
    return {
        "findings": dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in rows], schema=FINDINGS_SCHEMA
        ),
        "findings_shown": len(rows),
        "days_with_drift": int(drift.drift_findings["partition_day"].nunique()),
        **{key.replace("/", "_"): value for key, value in drift.counts.items()},
    }


def _checks(drift: OpenDrift) -> list[dg.AssetCheckResult]:
    return [
        _check("no_open_critical_drift", drift, Severity.CRITICAL, dg.AssetCheckSeverity.ERROR),
        _check("no_open_high_drift", drift, Severity.HIGH, dg.AssetCheckSeverity.WARN),
    ]


def _check(
    name: str, drift: OpenDrift, level: Severity, severity: dg.AssetCheckSeverity
) -> dg.AssetCheckResult:
    count, days = drift.count_of(level), drift.days_with(level)
    return dg.AssetCheckResult(
        check_name=name,
        passed=count == 0,
        severity=severity,
        metadata={
            f"open_{level.value}_findings": count,
            "days": dg.MetadataValue.json([d.isoformat() for d in days]),
        },
        description=None
        if count == 0
        else f"{count} open {level.value} finding(s) on {len(days)} day(s), oldest {days[0]} "
        f"({drift.categories_of(level)})",
    )


open_drift_job = dg.define_asset_job(
    name="open_drift_job",
    selection=dg.AssetSelection.assets(ASSET),
    description="Refresh open_drift (every open finding of every day) and its checks.",
    executor_def=dg.in_process_executor,
    tags={"domain": "reconciliation"},
)


@dg.sensor(
    name="open_drift_refresh_sensor",
    job=open_drift_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes open_drift whenever a reconciliation ran or a finding changed.",
)
def open_drift_refresh_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    with database.get_engine().connect() as connection:
        watermark = drift_watermark(connection)
    if watermark == context.cursor:
        return dg.SensorResult(skip_reason="no reconciliation run or finding change since")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"open-drift-{watermark}")], cursor=watermark
    )
