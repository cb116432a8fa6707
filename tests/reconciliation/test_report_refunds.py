"""Issue 17: findings and reports show the row's target, what we reversed, and its refunds.

Real PostgreSQL: the refunds come from ``refund_allocations`` written by intake.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main
from reversal_pipeline.reconciliation.refund_shares import with_refunds
from reversal_pipeline.reconciliation.report import markdown_report, write_csv
from reversal_pipeline.reconciliation.store import RunCounts, store_findings
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from tests.plugins.marketplace import seed_rows
from tests.reconciliation.builders import DAY, db_row, drift_findings_for, reversal, snapshot


def _row_with_two_refunds(engine: sa.Engine) -> int:
    [row] = seed_rows(
        engine, None, 1, status="completed", stripe_transfer_id="tr_gone", order_id="ord_r"
    )
    with engine.begin() as connection:
        for refund_id, amount in (("re_a", 300), ("re_b", 200)):
            request_reversal(
                connection,
                refund_id=refund_id,
                order_id="ord_r",
                amount=amount,
                currency="usd",
                seller_transfer_id=row.id,
            )
    process_refund_events(engine, run_id="intake")
    return row.id


def _findings(engine: sa.Engine, row_id: int) -> object:
    # The row is missing at Stripe; a stray transfer is a finding with no row.
    rows = [
        db_row(
            row_id,
            status="reversal_pending",
            currency="usd",
            stripe_transfer_id="tr_gone",
            reversal_target=500,
            db_amount_reversed=0,
        )
    ]
    stray = snapshot("tr_stray", reversals=[reversal("trr_s", 5)])
    return with_refunds(engine, drift_findings_for(rows, [stray]))


def test_a_finding_about_a_row_carries_its_target_reversed_amount_and_refunds(
    engine: sa.Engine,
) -> None:
    row_id = _row_with_two_refunds(engine)

    findings = _findings(engine, row_id)

    by_key = {f["finding_key"]: f["details"] for f in findings.to_dict("records")}
    assert by_key[str(row_id)]["reversal_target"] == 500
    assert by_key[str(row_id)]["db_amount_reversed"] == 0
    assert by_key[str(row_id)]["refunds"] == [
        {"refund_id": "re_a", "amount": 300},
        {"refund_id": "re_b", "amount": 200},
    ]
    assert "refunds" not in by_key["tr_stray"]  # no row, no refunds
    assert "reversal_target" not in by_key["tr_stray"]


def test_the_markdown_and_csv_reports_show_the_target_and_each_refund(
    engine: sa.Engine, tmp_path: Path
) -> None:
    row_id = _row_with_two_refunds(engine)
    findings = _findings(engine, row_id)

    text = markdown_report(findings)
    [line] = [x for x in text.splitlines() if f"missing_at_stripe | {row_id} |" in x]
    assert "5.00 USD (500) (0.00 USD (0))" in line
    assert "re_a 3.00 USD (300), re_b 2.00 USD (200)" in line

    path = write_csv(findings, tmp_path / "report.csv")
    rows = {r["finding_key"]: r for r in csv.DictReader(path.open())}
    mine = rows[str(row_id)]
    assert (mine["reversal_target"], mine["db_amount_reversed"]) == ("500", "0")
    assert mine["refunds"] == "re_a:300|re_b:200"
    assert (rows["tr_stray"]["reversal_target"], rows["tr_stray"]["refunds"]) == ("", "")


def test_the_report_command_shows_the_target_and_refunds_of_stored_findings(
    engine: sa.Engine, database_url: str
) -> None:
    row_id = _row_with_two_refunds(engine)
    # Started after intake changed the row: a run older than the change stores nothing of it.
    started_at = datetime.now(UTC)
    store_findings(
        engine,
        DAY,
        _findings(engine, row_id),
        now=started_at,
        started_at=started_at,
        run_id="run-targets",
        counts=RunCounts(db_rows=1, stripe_transfers=1, stripe_calls=1),
    )
    env = {"REVERSAL_DATABASE_URL": database_url}

    table = CliRunner().invoke(main, ["report", "--day", DAY.isoformat()], env=env)
    as_csv = CliRunner().invoke(
        main, ["report", "--day", DAY.isoformat(), "--format", "csv"], env=env
    )

    assert table.exit_code == 0, table.output
    [line] = [x for x in table.stdout.splitlines() if "missing_at_stripe" in x]
    assert "target 5.00 USD (500) (0.00 USD (0))" in line
    assert "refunds re_a 3.00 USD (300), re_b 2.00 USD (200)" in line
    assert as_csv.exit_code == 0, as_csv.output
    rows = {r["finding_key"]: r for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert rows[str(row_id)]["refunds"] == "re_a:300|re_b:200"
    assert rows[str(row_id)]["reversal_target"] == "500"
