"""Each finding's refunds: which refunds raised the row's target, and by how much.

Read from ``refund_allocations`` for the findings' rows only (a handful), not
joined into the day's COPY of every row, so reconciliation of a million rows
pays nothing for it. Added to ``details`` as ``refunds``: a list of
``{"refund_id", "amount"}`` in allocation order, the share of each refund this
row carries (minor units, the row's currency). A finding with no row (Stripe
only) has no ``refunds`` key.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.db.tables import refund_allocations, refund_events


def refund_shares(
    connection: sa.Connection, seller_transfer_ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """``{row id: [{"refund_id", "amount"}, ...]}`` for the rows that have allocations."""
    if not seller_transfer_ids:
        return {}
    a, e = refund_allocations.c, refund_events.c
    statement = (
        sa.select(a.seller_transfer_id, e.refund_id, a.amount)
        .join_from(refund_allocations, refund_events, a.refund_event_id == e.id)
        .where(a.seller_transfer_id.in_(seller_transfer_ids))
        .order_by(a.seller_transfer_id, a.id)
    )
    shares: dict[int, list[dict[str, Any]]] = {}
    for row_id, refund_id, amount in connection.execute(statement):
        shares.setdefault(int(row_id), []).append({"refund_id": refund_id, "amount": int(amount)})
    return shares


def with_refunds(engine: sa.Engine, drift_findings: pd.DataFrame) -> pd.DataFrame:
    """``drift_findings`` with ``details["refunds"]`` on every finding about a row."""
    if drift_findings.empty or "seller_transfer_id" not in drift_findings:
        return drift_findings
    ids = drift_findings["seller_transfer_id"].astype("Int64")
    wanted = sorted({int(i) for i in ids.dropna()})
    with engine.connect() as connection:
        shares = refund_shares(connection, wanted)
    details = [
        d if pd.isna(row_id) else {**d, "refunds": shares.get(int(row_id), [])}
        for d, row_id in zip(drift_findings["details"], ids, strict=True)
    ]
    return drift_findings.assign(
        details=pd.Series(details, index=drift_findings.index, dtype=object)
    )
