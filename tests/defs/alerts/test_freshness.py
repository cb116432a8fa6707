"""Freshness: yesterday's reconciliation (both sides) by 06:00 UTC, outcomes within 15 min."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time  # Dagster's own clock fake: no public one

from reversal_pipeline.defs.freshness.checks import FRESHNESS_CHECKS
from tests.plugins.dagster_job import load_defs

pytestmark = pytest.mark.slow  # several in-process runs, each loading the definitions


def evaluate_freshness(instance: dg.DagsterInstance, asset: str) -> dg.AssetCheckEvaluation:
    """Run only the freshness checks, as ``freshness_checks_sensor`` does; the one on ``asset``."""
    only_checks = dg.define_asset_job(
        "freshness_only", selection=dg.AssetSelection.checks(*FRESHNESS_CHECKS)
    )
    defs = dg.Definitions.merge(load_defs(), dg.Definitions(jobs=[only_checks]))
    result = defs.resolve_job_def("freshness_only").execute_in_process(instance=instance)
    [evaluation] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.asset_key == dg.AssetKey(asset)
    ]
    return evaluation


@pytest.mark.parametrize("asset", ["reversal_reconciliation", "refund_reconciliation"])
def test_reconciliation_is_stale_after_six_without_yesterday(
    dagster_instance: dg.DagsterInstance, asset: str
) -> None:
    with freeze_time(datetime(2026, 11, 21, 5, 59, tzinfo=UTC)):
        dagster_instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition="2026-11-19")
        )
        before_six = evaluate_freshness(dagster_instance, asset)
    assert before_six.passed  # before 06:00 the day before yesterday is what is due

    with freeze_time(datetime(2026, 11, 21, 6, 1, tzinfo=UTC)):
        after_six = evaluate_freshness(dagster_instance, asset)
        dagster_instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition="2026-11-20")
        )
        once_reconciled = evaluate_freshness(dagster_instance, asset)

    assert not after_six.passed
    assert after_six.severity == dg.AssetCheckSeverity.ERROR
    assert once_reconciled.passed


def test_reversal_outcomes_is_stale_fifteen_minutes_after_its_last_success(
    dagster_instance: dg.DagsterInstance,
) -> None:
    assert not evaluate_freshness(dagster_instance, "reversal_outcomes").passed  # never ran
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization("reversal_outcomes"))
    assert evaluate_freshness(dagster_instance, "reversal_outcomes").passed

    with freeze_time(datetime.now(UTC) + timedelta(minutes=14)):
        assert evaluate_freshness(dagster_instance, "reversal_outcomes").passed
    with freeze_time(datetime.now(UTC) + timedelta(minutes=16)):
        stale = evaluate_freshness(dagster_instance, "reversal_outcomes")
    assert not stale.passed
    assert stale.severity == dg.AssetCheckSeverity.ERROR
