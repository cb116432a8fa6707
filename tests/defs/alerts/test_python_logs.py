"""The package's Python logs reach the run's event log (``python_logs.managed_python_loggers``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

from reversal_pipeline.event_log import PYTHON_LOGS_SETTINGS
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import run_reversal_job
from tests.plugins.marketplace import seed_rows

ROOT = Path(__file__).resolve().parents[3]


def test_a_package_log_line_from_inside_a_run_is_in_the_run_event_log(
    job_env: dict, engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    # One 429 on the reversal: reversal_pipeline.stripe.resource logs "Stripe rate-limited".
    stripe_emulator.control().add_script(
        respond=429, method="POST", transfer_id=row.stripe_transfer_id, times=1
    )
    with dg.instance_for_test(overrides=PYTHON_LOGS_SETTINGS) as instance:
        result = run_reversal_job(instance)
        assert result.success
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("Stripe rate-limited" in m and row.stripe_transfer_id in m for m in messages), (
        messages
    )


def test_the_instance_template_captures_the_same_loggers() -> None:
    # The template moves into the package (issue 14); look where it is.
    [template] = [
        path
        for path in (ROOT / "dagster.yaml", *ROOT.glob("reversal_pipeline/**/dagster.yaml"))
        if path.is_file()
    ]
    settings = yaml.safe_load(template.read_text())
    assert settings["python_logs"] == PYTHON_LOGS_SETTINGS["python_logs"]
