"""Cell values for the tables shown to people (Dagster table metadata): plain Python, no Dagster.

A table cell takes ``str``, ``int``, ``float``, ``bool`` or ``None``; rows come
from SQLAlchemy (datetimes, Decimals) and pandas (NA, numpy scalars). The
conversion lives here, not in the Dagster shell, so both domains' tables use
one rule and it is tested without Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

Cell = str | int | float | bool | None

#: Longest text kept in one cell: an error message can be long, the table should stay readable.
CELL_TEXT_LIMIT = 500


def plain_cell(value: Any) -> Cell:
    """NA becomes None, numpy/pandas scalars their Python value, anything else a string."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy / pandas scalars
        return value.item()
    return str(value)


def column_kind(rows: Sequence[Mapping[str, Any]], column: str) -> str:
    """``bool`` or ``int`` when every present value of ``column`` is one, else ``string``."""
    present = [v for v in (plain_cell(row.get(column)) for row in rows) if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    return "string"


def cell_of_kind(value: Any, kind: str) -> Cell:
    """``value`` as a column of ``kind`` (``int``, ``float``, ``bool``, else text) holds it.

    Datetimes as ISO 8601; text cut at ``CELL_TEXT_LIMIT`` characters.
    """
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return bool(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)[:CELL_TEXT_LIMIT]
