"""Reports: ranked markdown with both money forms, full CSV/JSON, and counts for Dagster."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from reversal_pipeline.reconciliation.categories import Category, Severity
from reversal_pipeline.reconciliation.report import (
    count_metadata,
    findings_json,
    format_amount,
    markdown_report,
    write_csv,
)
from tests.reconciliation.builders import (
    DAY_START,
    NOW,
    db_row,
    drift_findings_for,
    reversal,
    snapshot,
)


def mixed_findings() -> pd.DataFrame:
    """Two high (missing, 5.00 and 90.00 EUR), one critical (reversed without request, 1.00),
    one high in grace (missing, 999.99), and one unknown transfer (medium, no row)."""
    rows = [
        db_row(1, amount=500),
        db_row(2, amount=9000),
        db_row(3, amount=100),
        db_row(4, amount=99999, updated_at=NOW - timedelta(minutes=1)),
    ]
    snapshots = [
        snapshot(
            "tr_3", 100, reversals=[reversal("trr_a", 50, created=DAY_START), reversal("trr_b", 50)]
        ),
        snapshot("tr_stray", 700),
    ]
    return drift_findings_for(rows, snapshots)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (1234, "eur", "12.34 EUR (1234)"),
        (123456789, "usd", "1,234,567.89 USD (123456789)"),
        (500, "jpy", "500 JPY (500)"),
        (1234, "kwd", "1.234 KWD (1234)"),
        (5, "eur", "0.05 EUR (5)"),
    ],
)
def test_amounts_show_major_units_with_currency_and_minor_units(
    amount: int, currency: str, shown: str
) -> None:
    assert format_amount(amount, currency) == shown


def test_markdown_lists_top_findings_by_severity_then_amount_with_grace_last() -> None:
    text = markdown_report(mixed_findings(), top_n=10)

    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    order = [row.split(" | ")[2] for row in table_rows[1:]]  # the seller transfer column
    assert order == ["3", "2", "1", "", "4"]
    assert (
        "| critical | reversed_without_request | 3 | tr_3 | trr_b, trr_a | 1.00 EUR (100) |" in text
    )
    assert table_rows[-1].endswith("| yes |")


def test_markdown_shows_only_top_n_and_points_to_the_full_report() -> None:
    text = markdown_report(mixed_findings(), top_n=2, full_report_path="/reports/day.csv")

    assert "4 findings (1 more in grace, not drift yet); top 2" in text
    assert "`/reports/day.csv`" in text
    assert "| 1 |" not in text  # the smallest high finding is below the cut


def test_markdown_explains_what_to_do_for_each_category_present() -> None:
    text = markdown_report(mixed_findings())

    assert "- **reversed_without_request**: " in text
    assert "- **unknown_to_db**: " in text
    assert "test vs live" in text  # missing_at_stripe's likely cause
    assert "- **over_reversed**" not in text


def test_markdown_of_a_clean_complete_day_says_no_drift() -> None:
    assert markdown_report(drift_findings_for([], [])).startswith("No drift")


def test_markdown_of_an_incomplete_run_never_says_clean() -> None:
    text = markdown_report(drift_findings_for([], []), complete=False)

    assert text.startswith("**INCOMPLETE reconciliation")
    assert "No drift" not in text


def test_csv_holds_every_finding_with_details_as_json(tmp_path: Path) -> None:
    path = write_csv(mixed_findings(), tmp_path / "reports" / "day.csv")

    written = pd.read_csv(path)
    assert len(written) == 5
    assert written["finding_key"].astype(str).tolist()[0] == "3"
    assert written.loc[0, "amount_display"] == "1.00 EUR (100)"
    assert json.loads(written.loc[0, "details"])["amount_reversed"] == 100


def test_json_nests_details_and_writes_missing_values_as_null() -> None:
    records = json.loads(findings_json(mixed_findings()))

    stray = next(r for r in records if r["category"] == "unknown_to_db")
    assert stray["seller_transfer_id"] is None
    assert stray["details"]["destination"] == "acct_seller"
    assert (stray["amount"], stray["finding_key"]) == (700, "tr_stray")


def test_counts_cover_every_category_and_severity_and_keep_grace_apart() -> None:
    counts = count_metadata(mixed_findings())

    assert counts["drift_findings"] == 4
    assert counts["in_grace"] == 1
    assert counts["category/missing_at_stripe"] == 2  # the one in grace is not counted
    assert counts["category/over_reversed"] == 0
    assert counts["severity/critical"] == 1
    assert {f"category/{c.value}" for c in Category} <= counts.keys()
    assert {f"severity/{s.value}" for s in Severity} <= counts.keys()
    assert all(isinstance(v, int) for v in counts.values())
