"""Dagster table metadata for reconciliation: rows as ``MetadataValue.table``, not markdown.

A table value keeps each column's type, so the UI renders, sorts and copies
it as data (and never breaks on a ``|`` inside a cell).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from reversal_pipeline.reconciliation.report import format_amount, ranked
from reversal_pipeline.table_cells import column_kind, plain_cell

FINDINGS_LIMIT = 20
_FINDING_COLUMNS = (
    dg.TableColumn("severity", "string"),
    dg.TableColumn("category", "string"),
    dg.TableColumn("seller_transfer_id", "int"),
    dg.TableColumn("stripe_transfer_id", "string"),
    dg.TableColumn("reversals", "string", description="the transfer's reversal ids at Stripe"),
    dg.TableColumn("amount", "string", description="major units, currency (minor units)"),
    dg.TableColumn("in_grace", "bool", description="changed recently: not drift yet"),
)


def records_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dg.MetadataValue:
    """Plain rows as a table; a cell's type is taken from its Python value."""
    records = [dg.TableRecord({c: plain_cell(row.get(c)) for c in columns}) for row in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, column_kind(rows, c)) for c in columns])
    return dg.MetadataValue.table(records=records, schema=schema)


def findings_table(drift_findings: pd.DataFrame, limit: int = FINDINGS_LIMIT) -> dg.MetadataValue:
    """The ``limit`` most urgent findings of a day: drift before in-grace, then severity, amount."""
    records = [
        dg.TableRecord(
            {
                "severity": str(f["severity"]),
                "category": str(f["category"]),
                "seller_transfer_id": plain_cell(f["seller_transfer_id"]),
                "stripe_transfer_id": plain_cell(f["stripe_transfer_id"]),
                "reversals": ", ".join(str(f["stripe_reversal_ids"]).split("|"))
                if plain_cell(f["stripe_reversal_ids"]) is not None
                else None,
                "amount": format_amount(f["amount"], f["currency"]),
                "in_grace": bool(f["in_grace"]),
            }
        )
        for f in ranked(drift_findings).head(limit).to_dict("records")
    ]
    return dg.MetadataValue.table(
        records=records, schema=dg.TableSchema(columns=list(_FINDING_COLUMNS))
    )
