"""`report --format csv`: details as JSON, booleans as true/false, read back by a CSV reader."""

from __future__ import annotations

import csv
import io
import json

import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main
from reversal_pipeline.reconciliation.store import RunCounts, store_findings
from tests.reconciliation.builders import DAY, NOW, db_row, drift_findings_for, snapshot


def test_report_csv_writes_details_as_json_and_booleans_as_true_false(
    engine: sa.Engine, database_url: str
) -> None:
    # Row 1 is missing at Stripe; row 2's amount differs (its details hold Stripe's side).
    findings = drift_findings_for([db_row(1), db_row(2, amount=5)], [snapshot("tr_2")])
    store_findings(
        engine,
        DAY,
        findings,
        now=NOW,
        started_at=NOW,
        run_id="run-csv",
        counts=RunCounts(db_rows=2, stripe_transfers=1, stripe_calls=1),
    )

    result = CliRunner().invoke(
        main,
        ["report", "--day", DAY.isoformat(), "--format", "csv"],
        env={"REVERSAL_DATABASE_URL": database_url},
    )

    assert result.exit_code == 0, result.output
    rows = {row["finding_key"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert set(rows) == {"1", "2"}
    assert json.loads(rows["2"]["details"]) == {
        "status": "completed",
        "stripe_amount": 1000,
        "stripe_currency": "eur",
        "reversal_target": 0,
        "db_amount_reversed": 0,
    }
    assert (rows["2"]["reversal_target"], rows["2"]["refunds"]) == ("0", "")
    assert json.loads(rows["1"]["details"])["stripe_account_id"] == "acct_seller"
    assert {row["in_grace"] for row in rows.values()} == {"false"}
    assert rows["2"]["amount"] == "5"  # minor units, an integer as stored
