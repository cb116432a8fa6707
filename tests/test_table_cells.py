"""``table_cells``: one rule for what a cell of a table shown in the UI holds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from reversal_pipeline.table_cells import CELL_TEXT_LIMIT, cell_of_kind, column_kind, plain_cell


def test_plain_cell_turns_missing_values_into_none_and_scalars_into_python() -> None:
    assert plain_cell(None) is None
    assert plain_cell(pd.NA) is None
    assert plain_cell(float("nan")) is None
    assert plain_cell("") == ""  # an empty string is a value, not a missing one
    assert plain_cell(np.int64(7)) == 7
    assert type(plain_cell(np.int64(7))) is int
    assert plain_cell(np.bool_(True)) is True
    assert plain_cell(Decimal("1.50")) == "1.50"


def test_column_kind_is_int_or_bool_only_when_every_present_value_is() -> None:
    rows = [{"n": 1, "ok": True, "mixed": 1}, {"n": None, "ok": np.bool_(False), "mixed": "a"}]
    assert column_kind(rows, "n") == "int"
    assert column_kind(rows, "ok") == "bool"  # a bool is not counted as an int
    assert column_kind(rows, "mixed") == "string"
    assert column_kind(rows, "absent") == "string"


def test_cell_of_kind_converts_to_the_column_type_and_cuts_long_text() -> None:
    assert cell_of_kind("42", "int") == 42
    assert cell_of_kind(2, "float") == 2.0
    assert cell_of_kind(1, "bool") is True
    assert cell_of_kind(None, "int") is None
    when = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert cell_of_kind(when, "string") == "2026-11-30T08:00:00+00:00"
    assert cell_of_kind("x" * (CELL_TEXT_LIMIT + 10), "string") == "x" * CELL_TEXT_LIMIT
