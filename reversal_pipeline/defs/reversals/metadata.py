"""Metadata shown in the Dagster UI for the reversal assets.

Numeric values are plain ints/floats so the UI plots them over time.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from reversal_pipeline.reversals.batch import BatchReport
from reversal_pipeline.reversals.claim import ClaimSummary


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "_none_"
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "\n".join("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows)
    return header + body


def _cell(value: Any) -> str:
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")[:200]


def claim_metadata(summary: ClaimSummary, token: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "rows_claimed": summary.rows_claimed,
        "oldest_due_seconds": round(summary.oldest_due_seconds, 1),
        "claim_token": token,
        "preview": dg.MetadataValue.md(
            markdown_table(
                summary.preview,
                [
                    "id",
                    "order_id",
                    "stripe_transfer_id",
                    "amount",
                    "currency",
                    "retry_count",
                    "next_retry_at",
                ],
            )
        ),
    }
    for currency, amount in summary.amount_by_currency.items():
        metadata[f"amount_claimed_{currency}"] = amount
    return metadata


def outcome_metadata(report: BatchReport, stripe_calls: Mapping[str, int]) -> dict[str, Any]:
    elapsed = max(report.elapsed_seconds, 1e-9)
    reversed_rows = report.statuses.get("reversed", 0)
    metadata: dict[str, Any] = {
        "rows_finished": report.rows_finished,
        "rows_reversed": reversed_rows,
        "rows_permanently_failed": report.statuses.get("permanently_failed", 0),
        "rows_retry_scheduled": report.statuses.get("reversal_pending", 0),
        "rows_released": report.rows_released,
        "outcomes_not_written": len(report.outcomes_not_written),
        "stripe_calls": sum(v for k, v in stripe_calls.items() if k != "rate_limited_retries"),
        "stripe_rate_limited_retries": stripe_calls.get("rate_limited_retries", 0),
        "elapsed_seconds": round(report.elapsed_seconds, 3),
        "reversals_per_second": round(reversed_rows / elapsed, 2),
        "failures": dg.MetadataValue.md(
            markdown_table(
                report.failures,
                ["seller_transfer_id", "stripe_transfer_id", "status", "outcome", "message"],
            )
        ),
    }
    for outcome, count in sorted(report.outcomes.items()):
        metadata[f"outcome_{outcome}"] = count
    for kind, count in sorted(stripe_calls.items()):
        metadata[f"stripe_calls_{kind}"] = count
    for currency, amount in sorted(report.reversed_amount_by_currency.items()):
        metadata[f"amount_reversed_{currency}"] = amount
    return metadata
