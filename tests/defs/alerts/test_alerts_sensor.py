"""reversal_alerts_sensor over a real instance and a real HTTP receiver, up and down."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from reversal_pipeline.alerts.ledger import AlertLedger
from reversal_pipeline.defs.alerts.sensor import reversal_alerts_sensor
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.alerts.receiver import down_receiver_url, running_receiver
from tests.defs.reconciliation.harness import run_reconciliation
from tests.defs.reconciliation.test_open_drift import (
    CRITICAL_DAY,
    plant_critical_drift,
    refresh_open_drift,
)
from tests.plugins.dagster_job import load_defs

WEBSERVER = "http://dagster.example:3000"


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=load_defs())
    return reversal_alerts_sensor(context)


def skipped(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None  # the sensor never requests runs: it reports
    return result.skip_reason.skip_message or ""


@pytest.fixture
def problems(
    job_env: dict,
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    reports_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Open critical drift (an ERROR check failed) and a failed reconciliation run (its id)."""
    plant_critical_drift(engine, stripe_emulator)
    assert run_reconciliation(dagster_instance, CRITICAL_DAY).success
    assert refresh_open_drift(dagster_instance).success
    with monkeypatch.context() as patch:  # Stripe unreachable: the listing fails, the run fails
        patch.setenv("STRIPE_API_BASE", down_receiver_url().rsplit("/hooks", 1)[0])
        failed = run_reconciliation(dagster_instance, "2026-11-19")
    assert not failed.success
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", WEBSERVER)
    return failed.run_id


def test_one_alert_per_new_problem_delivered_after_the_receiver_comes_back(
    problems: str,
    dagster_instance: dg.DagsterInstance,
    job_env: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed_run_id = problems
    monkeypatch.setenv("REVERSAL_ALERT_WEBHOOK_URL", down_receiver_url())
    first = tick(dagster_instance, None)
    kept = [p.key for p in AlertLedger.from_cursor(first.cursor).pending]
    assert "delivery failed, 5 kept" in skipped(first)
    # The failed run and its failed reconciliation_complete check; the critical day's own
    # no_critical_drift; open critical drift in open_drift; and the reconciliation is stale
    # (the real clock's yesterday was never reconciled).
    assert sorted(kept) == [
        "check:open_drift:no_open_critical_drift",
        "check:reversal_reconciliation:freshness_check",
        "check:reversal_reconciliation:no_critical_drift",
        "check:reversal_reconciliation:reconciliation_complete",
        f"run:{failed_run_id}",
    ]

    with running_receiver() as receiver:
        monkeypatch.setenv("REVERSAL_ALERT_WEBHOOK_URL", receiver.url)
        second = tick(dagster_instance, first.cursor)
        third = tick(dagster_instance, second.cursor)

    assert len(receiver.texts) == len(kept), receiver.texts  # each kept alert once; none after
    run_alert = next(t for t in receiver.texts if "reconciliation_job" in t)
    check_alert = next(t for t in receiver.texts if "no_open_critical_drift" in t)
    assert f"{WEBSERVER}/runs/{failed_run_id}" in run_alert
    assert "FAILED" in run_alert
    assert f"{WEBSERVER}/assets/open_drift?view=checks" in check_alert
    assert "1 open critical finding(s)" in check_alert
    assert any("reversal_reconciliation is STALE" in t for t in receiver.texts)
    assert any("reconciliation_complete" in t for t in receiver.texts)
    assert "0 new problem(s); 0 alert(s) delivered" in skipped(third)
    secrets = [
        job_env["STRIPE_API_KEY"],
        make_url(job_env["REVERSAL_DATABASE_URL"]).password or "password-unset",
        "secret-path",  # the webhook URL's path carries its token
    ]
    for text in receiver.texts:
        for secret in secrets:
            assert secret not in text


def test_unset_webhook_logs_the_alert_and_sends_nothing(
    problems: str,
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("REVERSAL_ALERT_WEBHOOK_URL", raising=False)
    with running_receiver() as receiver:
        result = tick(dagster_instance, None)
    assert receiver.bodies == []
    assert "5 alert(s) delivered" in skipped(result)
    assert "not sent: REVERSAL_ALERT_WEBHOOK_URL is unset" in caplog.text
    assert "no_open_critical_drift" in caplog.text
