"""Render findings for people (markdown), for spreadsheets (CSV), for tools (JSON), for Dagster.

Money is stored in integer minor units; the reports show both the amount in
major units with its currency (what a person reads) and the minor units (what
they search the database and Stripe for), so nobody converts by hand.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from reversal_pipeline.reconciliation.categories import (
    SEVERITY_RANK,
    Category,
    Severity,
    explanation_of,
)
from reversal_pipeline.reconciliation.compare import FINDING_COLUMNS

DEFAULT_TOP_N = 20

# Stripe's currencies whose minor unit is not 1/100 of the major unit.
# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_unit_exponent(currency: str) -> int:
    """How many decimals the minor unit of ``currency`` has (2 unless Stripe says otherwise)."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def format_amount(amount: int | None, currency: str | None) -> str:
    """``1234, "eur"`` -> ``"12.34 EUR (1234)"``; unknown parts are shown as such."""
    if amount is None or pd.isna(amount):
        return "-"
    if not currency or pd.isna(currency):
        return f"{int(amount)} (minor units, currency unknown)"
    exponent = minor_unit_exponent(currency)
    major = Decimal(int(amount)).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))
    return f"{major:,} {currency.upper()} ({int(amount)})"


def ranked(drift_findings: pd.DataFrame) -> pd.DataFrame:
    """Findings most urgent first: drift before in-grace, then severity, then amount."""
    order = pd.DataFrame(
        {
            "grace": drift_findings["in_grace"].astype(bool).to_numpy(),
            "rank": drift_findings["severity"].astype(str).map(SEVERITY_RANK).to_numpy(),
            "amount": drift_findings["amount"].astype("Float64").fillna(-1).to_numpy(),
            "key": drift_findings["finding_key"].astype(str).to_numpy(),
        }
    )
    positions = order.sort_values(
        ["grace", "rank", "amount", "key"], ascending=[True, True, False, True], kind="stable"
    ).index
    return drift_findings.iloc[positions]


def markdown_report(
    drift_findings: pd.DataFrame,
    *,
    top_n: int = DEFAULT_TOP_N,
    complete: bool = True,
    full_report_path: str | Path | None = None,
) -> str:
    """A markdown summary for the asset's metadata: the top ``top_n`` findings and what to do.

    ``complete=False`` (the Stripe listing failed) puts a warning first and
    never says "no drift": a partial comparison proves nothing.
    """
    lines: list[str] = []
    if not complete:
        lines += [
            "**INCOMPLETE reconciliation: Stripe's listing did not finish. The findings below "
            "are partial and this day is NOT shown to be clean; re-run the partition.**",
            "",
        ]
    if drift_findings.empty:
        lines.append(
            "No drift: the database and Stripe agree for this day."
            if complete
            else "No findings before the listing stopped (which proves nothing)."
        )
        return "\n".join(lines) + "\n"
    lines += _summary_line(drift_findings, top_n, full_report_path)
    lines += _table(ranked(drift_findings).head(top_n))
    lines += _what_to_do(drift_findings)
    return "\n".join(lines) + "\n"


def _summary_line(
    drift_findings: pd.DataFrame, top_n: int, full_report_path: str | Path | None
) -> list[str]:
    in_grace = int(drift_findings["in_grace"].astype(bool).sum())
    shown = min(top_n, len(drift_findings))
    text = f"{len(drift_findings) - in_grace} findings ({in_grace} more in grace, not drift yet)"
    text += f"; top {shown} by severity, then amount."
    if full_report_path is not None:
        text += f" Full report: `{full_report_path}`."
    return [text, ""]


_TABLE_HEADER = (
    "| severity | category | seller transfer | Stripe transfer | reversals | amount "
    "| target (reversed) | refunds | grace |",
    "|---|---|---|---|---|---|---|---|---|",
)


def _table(top_findings: pd.DataFrame) -> list[str]:
    rows = [
        "| "
        + " | ".join(
            _cell(value)
            for value in (
                finding["severity"],
                finding["category"],
                finding["seller_transfer_id"],
                finding["stripe_transfer_id"],
                _reversal_list(finding["stripe_reversal_ids"]),
                format_amount(finding["amount"], finding["currency"]),
                target_text(finding["details"], finding["currency"]),
                refunds_text(finding["details"], finding["currency"]),
                "yes" if finding["in_grace"] else "",
            )
        )
        + " |"
        for finding in top_findings.to_dict("records")
    ]
    return [*_TABLE_HEADER, *rows, ""]


def target_text(details: Any, currency: Any) -> str:
    """``reversal_target (db_amount_reversed)``: what the seller owes back, what we reversed."""
    if not isinstance(details, dict) or details.get("reversal_target") is None:
        return ""
    target = format_amount(details["reversal_target"], currency)
    return f"{target} ({format_amount(details.get('db_amount_reversed'), currency)})"


def refunds_text(details: Any, currency: Any) -> str:
    """Each refund that raised the row's target, with the share this row carries."""
    refunds = details.get("refunds") if isinstance(details, dict) else None
    return ", ".join(
        f"{r['refund_id']} {format_amount(r['amount'], currency)}" for r in refunds or []
    )


def _details_column(rows: pd.DataFrame, name: str) -> list[Any]:
    return [d.get(name) if isinstance(d, dict) else None for d in rows["details"]]


def target_columns(rows: pd.DataFrame) -> dict[str, Any]:
    """``reversal_target``, ``db_amount_reversed`` and ``refunds`` as CSV columns.

    ``refunds`` is ``refund_id:amount`` joined by ``|`` (minor units), empty
    when no refund raised the row's target.
    """
    if "details" not in rows:
        return {}
    return {
        "reversal_target": pd.array(_details_column(rows, "reversal_target"), dtype="Int64"),
        "db_amount_reversed": pd.array(_details_column(rows, "db_amount_reversed"), dtype="Int64"),
        "refunds": [
            "|".join(f"{r['refund_id']}:{r['amount']}" for r in refunds or [])
            for refunds in _details_column(rows, "refunds")
        ],
    }


def _reversal_list(joined: Any) -> str:
    return "" if joined is None or pd.isna(joined) else ", ".join(str(joined).split("|"))


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _what_to_do(drift_findings: pd.DataFrame) -> list[str]:
    present = set(drift_findings["category"].astype(str))
    ordered = [c for c in Category if c.value in present]
    return ["What to do:", *(f"- **{c.value}**: {explanation_of(c)}" for c in ordered)]


def write_csv(drift_findings: pd.DataFrame, path: str | Path) -> Path:
    """Write every finding, ranked, with ``amount_display`` and ``details`` as JSON text.

    ``reversal_target``, ``db_amount_reversed`` (minor units) and ``refunds``
    (``refund_id:amount`` joined by ``|``) are also their own columns (issue 17),
    so a spreadsheet filters on them without parsing JSON.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = ranked(drift_findings)
    table = rows[list(FINDING_COLUMNS)].assign(
        amount_display=[
            format_amount(a, c) for a, c in zip(rows["amount"], rows["currency"], strict=True)
        ],
        **target_columns(rows),
        details=[json.dumps(d, sort_keys=True, default=str) for d in rows["details"]],
    )
    table.to_csv(target, index=False)
    return target


def findings_json(drift_findings: pd.DataFrame) -> str:
    """Every finding, ranked, as a JSON array of objects (``details`` nested, not a string)."""
    records = [
        {name: _json_value(finding[name]) for name in FINDING_COLUMNS}
        for finding in ranked(drift_findings).to_dict("records")
    ]
    return json.dumps(records, default=str)


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    if value is None or pd.isna(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def count_metadata(drift_findings: pd.DataFrame) -> dict[str, int]:
    """Counts for Dagster numeric metadata: every category and severity, zeros included.

    Findings in grace are counted apart (``in_grace``) and nowhere else, so
    ``drift_findings`` and the per-category counts are real drift only.
    Zeros are kept so the metadata plots stay continuous across runs.
    """
    grace = drift_findings["in_grace"].astype(bool).to_numpy()
    drift = drift_findings[~grace]
    by_category = drift["category"].astype(str).value_counts()
    by_severity = drift["severity"].astype(str).value_counts()
    counts = {"drift_findings": len(drift), "in_grace": int(grace.sum())}
    counts |= {f"category/{c.value}": int(by_category.get(c.value, 0)) for c in Category}
    counts |= {f"severity/{s.value}": int(by_severity.get(s.value, 0)) for s in Severity}
    return counts
