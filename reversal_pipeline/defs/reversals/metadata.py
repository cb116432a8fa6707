"""Metadata shown in the Dagster UI for the reversal assets and checks.

Numeric values are plain ints/floats so the UI plots them over time. Lists
of rows are ``MetadataValue.table`` with a typed ``TableSchema``, not
markdown: the UI renders, sorts and copies them as data, and a ``|`` or a
line break inside an error message cannot break the layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from reversal_pipeline.reversals.batch import BatchReport
from reversal_pipeline.reversals.claim import ClaimSummary
from reversal_pipeline.table_cells import cell_of_kind

if TYPE_CHECKING:
    from reversal_pipeline.defs.reversals.listening import RunPasses


def _column(name: str, kind: str, description: str | None = None) -> dg.TableColumn:
    return dg.TableColumn(name, kind, description=description)


CLAIM_PREVIEW_COLUMNS = (
    _column("id", "int", "seller_transfers.id"),
    _column("order_id", "string"),
    _column("stripe_transfer_id", "string"),
    _column("amount", "int", "minor units"),
    _column("currency", "string"),
    _column("retry_count", "int"),
    _column("next_retry_at", "string", "UTC"),
)
FAILURE_COLUMNS = (
    _column("seller_transfer_id", "int"),
    _column("stripe_transfer_id", "string"),
    _column("status", "string", "the row's status after this run"),
    _column("outcome", "string"),
    _column("message", "string", "the row's error_message"),
)
OPEN_EVENT_COLUMNS = (
    _column("refund_id", "string"),
    _column("order_id", "string"),
    _column("outcome", "string", "what the event waits for"),
    _column("age_days", "float"),
    _column("outcome_detail", "string"),
)
REFUSED_EVENT_COLUMNS = (
    _column("refund_id", "string"),
    _column("order_id", "string"),
    _column("outcome", "string", "needs_scope, over_refund or currency_mismatch"),
    _column("outcome_detail", "string"),
)
EXPIRED_CLAIM_COLUMNS = (
    _column("id", "int", "seller_transfers.id"),
    _column("claimed_by", "string", "the run id that held the claim"),
    _column("claim_expires_at", "string", "UTC"),
)
PERMANENT_FAILURE_COLUMNS = (
    _column("id", "int", "seller_transfers.id"),
    _column("stripe_transfer_id", "string"),
    _column("error_message", "string"),
    _column("updated_at", "string", "UTC"),
)
PASS_COLUMNS = (
    _column("pass", "int", "0 is the run's own claim; then one per pass that found work"),
    _column("started_at", "string", "UTC"),
    _column("woken_by", "string", "first, notify (a refund event was inserted) or poll"),
    _column("events_processed", "int"),
    _column("rows_claimed", "int"),
    _column("reversed", "int"),
    _column("permanently_failed", "int"),
    _column("retry_scheduled", "int"),
    _column("released", "int"),
    _column("outcomes_not_written", "int"),
    _column("elapsed_seconds", "float"),
)
#: Passes listed on one materialization; the totals count all of them.
PASS_LIST_LIMIT = 200


def rows_table(
    rows: Sequence[Mapping[Any, Any]], columns: Sequence[dg.TableColumn]
) -> dg.MetadataValue:
    """Rows as a typed table; each cell is converted to its column's type.

    ``rows`` are dicts or a query's ``RowMapping``s (typed as keyed by str or Column).
    """
    records = [
        dg.TableRecord({c.name: cell_of_kind(row.get(c.name), c.type) for c in columns})
        for row in rows
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=list(columns)))


def open_events_table(events: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    return rows_table(events, OPEN_EVENT_COLUMNS)


def refused_events_table(events: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    return rows_table(events, REFUSED_EVENT_COLUMNS)


def claim_metadata(summary: ClaimSummary, token: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "rows_claimed": summary.rows_claimed,
        "oldest_due_seconds": round(summary.oldest_due_seconds, 1),
        "claim_token": token,
        "preview": rows_table(summary.preview, CLAIM_PREVIEW_COLUMNS),
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
        "failures": rows_table(report.failures, FAILURE_COLUMNS),
    }
    for outcome, count in sorted(report.outcomes.items()):
        metadata[f"outcome_{outcome}"] = count
    for kind, count in sorted(stripe_calls.items()):
        metadata[f"stripe_calls_{kind}"] = count
    for currency, amount in sorted(report.reversed_amount_by_currency.items()):
        metadata[f"amount_reversed_{currency}"] = amount
    return metadata


def listen_metadata(passes: RunPasses) -> dict[str, Any]:
    """How the run listened: its passes as a table, and why it ended."""
    rows = passes.table_rows()
    metadata: dict[str, Any] = {
        "passes": len(rows),
        "batches": rows_table(rows[:PASS_LIST_LIMIT], PASS_COLUMNS),
        "listened": passes.end is not None,
    }
    if passes.end is not None:
        metadata["listen_ended"] = passes.end.value
        metadata["events_processed_while_listening"] = sum(
            p.events_processed for p in passes.passes
        )
    return metadata
