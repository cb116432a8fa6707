"""Dagster table metadata for reconciliation: rows as ``MetadataValue.table``, not markdown.

A table value keeps each column's type, so the UI renders, sorts and copies
it as data (and never breaks on a ``|`` inside a cell).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from reversal_pipeline.reconciliation.report import format_amount, ranked

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
    records = [dg.TableRecord({c: _plain(row.get(c)) for c in columns}) for row in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, _column_type(rows, c)) for c in columns])
    return dg.MetadataValue.table(records=records, schema=schema)


def findings_table(drift_findings: pd.DataFrame, limit: int = FINDINGS_LIMIT) -> dg.MetadataValue:
    """The ``limit`` most urgent findings of a day: drift before in-grace, then severity, amount."""
    records = [
        dg.TableRecord(
            {
                "severity": str(f["severity"]),
                "category": str(f["category"]),
                "seller_transfer_id": _plain(f["seller_transfer_id"]),
                "stripe_transfer_id": _plain(f["stripe_transfer_id"]),
                "reversals": ", ".join(str(f["stripe_reversal_ids"]).split("|"))
                if _plain(f["stripe_reversal_ids"]) is not None
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


def _plain(value: Any) -> Any:
    """Table cells take str, int, float, bool or None: NA becomes None, the rest a string."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy / pandas scalars
        return value.item()
    return str(value)


def _column_type(rows: Sequence[Mapping[str, Any]], column: str) -> str:
    values = [_plain(row.get(column)) for row in rows]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    return "string"
