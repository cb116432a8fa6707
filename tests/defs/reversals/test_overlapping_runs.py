"""Two reversal_job runs at once, in separate processes, never reverse a row twice."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import seed_rows

ROWS = 200


def test_two_overlapping_runs_reverse_every_row_exactly_once(
    job_env: dict[str, str], engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    rows = seed_rows(engine, stripe_emulator.control(), ROWS)
    # Slow Stripe down so both runs are sending at the same time.
    stripe_emulator.control().set_faults(latency_ms=20)
    env = {**os.environ, **job_env}
    env.pop("DAGSTER_HOME", None)
    command = [
        sys.executable,
        "-m",
        "reversal_pipeline.cli",
        "run-job",
        "--setting",
        "concurrency=8",
        "--setting",
        "page_size=20",
        # Each run may take half: both must claim, and their claims must not overlap.
        "--setting",
        f"max_rows_per_run={ROWS // 2}",
    ]
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240) for run in runs]
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-2000:]

    with engine.connect() as connection:
        statuses = dict(
            connection.execute(
                sa.text("SELECT status, count(*) FROM seller_transfers GROUP BY status")
            ).all()
        )
        creates_per_row = connection.execute(
            sa.text(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM reversal_attempts"
                " WHERE action = 'create_reversal' GROUP BY seller_transfer_id) c"
            )
        ).scalar()
    assert statuses == {"reversed": ROWS}
    assert creates_per_row == 1
    control = stripe_emulator.control()
    for row in rows:
        assert len(control.get_transfer(row.stripe_transfer_id)["reversals"]) == 1
    claimed = [int(out.split("claimed ")[1].split(" ")[0]) for out, _ in outputs]
    assert claimed == [ROWS // 2, ROWS // 2]
