"""Rows in the reversal metadata are typed tables an operator can sort and copy, not markdown."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from reversal_pipeline.defs.reversals.metadata import (
    FAILURE_COLUMNS,
    claim_metadata,
    outcome_metadata,
)
from reversal_pipeline.reversals.batch import BatchReport
from reversal_pipeline.reversals.claim import ClaimSummary


def test_failures_are_a_typed_table_and_a_pipe_in_a_message_stays_in_its_cell() -> None:
    report = BatchReport(statuses=Counter({"permanently_failed": 1}))
    report.failures.append(
        {
            "seller_transfer_id": 7,
            "stripe_transfer_id": "tr_1",
            "status": "permanently_failed",
            "outcome": "not_found",
            "message": "Stripe says | no such transfer\nsecond line",
        }
    )

    table = outcome_metadata(report, {})["failures"]

    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == [c.name for c in FAILURE_COLUMNS]
    assert {c.name: c.type for c in table.schema.columns}["seller_transfer_id"] == "int"
    [record] = table.records
    assert record.data["seller_transfer_id"] == 7
    assert record.data["message"] == "Stripe says | no such transfer\nsecond line"


def test_the_claim_preview_is_a_table_with_times_as_utc_text() -> None:
    due = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    summary = ClaimSummary(
        rows_claimed=1,
        oldest_due_seconds=3.0,
        amount_by_currency={"usd": 1000},
        preview=[
            {
                "id": 1,
                "order_id": "ord_1",
                "stripe_transfer_id": "tr_1",
                "amount": 1000,
                "currency": "usd",
                "retry_count": 0,
                "next_retry_at": due,
            }
        ],
    )

    metadata = claim_metadata(summary, "run-1")

    [record] = metadata["preview"].records
    assert record.data["next_retry_at"] == "2026-11-30T05:00:00+00:00"
    assert record.data["amount"] == 1000
    assert metadata["amount_claimed_usd"] == 1000


def test_no_rows_is_an_empty_table_not_a_placeholder() -> None:
    table = outcome_metadata(BatchReport(), {})["failures"]
    assert isinstance(table, dg.TableMetadataValue)
    assert table.records == []
