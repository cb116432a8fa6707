"""Every open finding of every day: what is wrong *now*, whatever day was reconciled last.

The daily asset's checks speak for one partition, so the asset's check
status shows only the day reconciled last: reconciling a clean day after a
day with critical drift turns it green while money is at risk. The
unpartitioned ``open_drift`` asset reads this module instead, and its checks
cover every open finding of every day.

Also here: the *drift watermark* the refresh sensor compares tick to tick
(it moves on every reconciliation run and every finding opened, seen again
or resolved, whoever wrote it: a Dagster run, the CLI ``reconcile``, the
repair job or ``resolve``), and ``resolve_fixed_findings``, which the repair
job and ``resolve`` call so the fix they just made shows at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift, reconciliation_runs
from reversal_pipeline.reconciliation.categories import Severity
from reversal_pipeline.reconciliation.report import count_metadata, format_amount
from reversal_pipeline.reconciliation.store import (
    DRIFT_CONDITION,
    FindingSource,
    counts_as_drift,
    open_findings,
)

#: Columns of the findings table an operator reads, in order.
TABLE_COLUMNS = ("severity", "category", "day", "row", "transfer", "key", "amount")


@dataclass(frozen=True, slots=True)
class OpenDrift:
    """Open findings of every day, split into drift and those still in grace."""

    drift_findings: pd.DataFrame  # open, not in grace, most urgent and largest first
    in_grace: int

    @property
    def counts(self) -> dict[str, int]:
        """Per-category and per-severity counts (zeros kept, so the plots stay continuous)."""
        return count_metadata(self.drift_findings) | {"in_grace": self.in_grace}

    def count_of(self, severity: Severity) -> int:
        return int((self.drift_findings["severity"] == severity.value).sum())

    def categories_of(self, severity: Severity) -> str:
        """``category: count`` of ``severity``'s findings, largest first: what the alert names."""
        rows = self.drift_findings[self.drift_findings["severity"] == severity.value]
        counts = rows["category"].astype(str).value_counts()
        return ", ".join(f"{category}: {n}" for category, n in counts.items())

    def days_with(self, severity: Severity) -> list[date]:
        rows = self.drift_findings[self.drift_findings["severity"] == severity.value]
        return sorted(set(rows["partition_day"]))


def read_open_drift(connection: sa.Connection, now: datetime | None = None) -> OpenDrift:
    """Every unresolved finding of every day (one query; ordered by ``store.open_findings``).

    A finding whose grace has ended is drift (``store.counts_as_drift``), even
    before a later run of its day looks again: grace may delay an alarm, never
    hide one.
    """
    findings = open_findings(connection)
    drift_now = counts_as_drift(findings, now or datetime.now(UTC)).to_numpy()
    return OpenDrift(findings[drift_now].reset_index(drop=True), int((~drift_now).sum()))


def day_open_counts(
    connection: sa.Connection,
    day: date,
    now: datetime | None = None,
    source: FindingSource = FindingSource.TRANSFERS,
) -> dict[str, int]:
    """Counts (``count_metadata``) of one side's open findings of ``day``, past grace as drift.

    What a daily asset's checks judge: the day's open findings as they stand,
    not only what this run found, and only its own side's (the transfer-side
    and refund-side assets share a partition day, not their findings).
    """
    findings = open_findings(connection, day, source)
    drift_now = counts_as_drift(findings, now or datetime.now(UTC))
    return count_metadata(findings.assign(in_grace=~drift_now.to_numpy()))


def table_rows(drift_findings: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` findings as plain rows with ``TABLE_COLUMNS`` (None for unknown)."""
    rows = []
    for finding in drift_findings.head(limit).to_dict("records"):
        rows.append(
            {
                "severity": str(finding["severity"]),
                "category": str(finding["category"]),
                "day": finding["partition_day"].isoformat(),
                "row": _plain_int(finding["seller_transfer_id"]),
                "transfer": _plain_str(finding["stripe_transfer_id"]),
                "key": _plain_str(finding["finding_key"]),
                "amount": format_amount(finding["amount"], finding["currency"]),
            }
        )
    return rows


def _plain_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _plain_str(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def drift_watermark(connection: sa.Connection) -> str:
    """A value that changes whenever the answer of ``read_open_drift`` may have changed.

    The latest reconciliation run (complete or not: even a run that found
    nothing moves it), the latest time any finding was seen or resolved, and
    how many open findings count as drift now (it moves when a finding's grace
    ends, with no write at all). Cheap aggregates, read on every sensor tick.
    """
    r, d = reconciliation_runs.c, reconciliation_drift.c
    latest_run = sa.select(sa.func.coalesce(sa.func.max(r.id), 0)).scalar_subquery()
    latest_change = sa.select(
        sa.func.max(sa.func.greatest(d.last_seen_at, d.resolved_at))
    ).scalar_subquery()
    drift_now = (
        sa.select(sa.func.count())
        .select_from(reconciliation_drift)
        .where(d.resolved_at.is_(None), sa.text(DRIFT_CONDITION))
        .scalar_subquery()
    )
    run_id, changed_at, drifting = connection.execute(
        sa.select(latest_run, latest_change, drift_now), {"now": datetime.now(UTC)}
    ).one()
    changed = changed_at.isoformat() if changed_at else "-"
    return f"run:{run_id}|changed:{changed}|drift:{drifting}"


def resolve_fixed_findings(
    connection: sa.Connection,
    seller_transfer_id: int,
    categories: Iterable[str],
    *,
    now: datetime | None = None,
) -> int:
    """Mark resolved the open findings of ``categories`` on a row an operator just fixed.

    Call it inside the transaction that fixes the row (and writes its audit
    row), so the fix and the finding change commit together. It is never
    the last word: the fix changes the row, which makes its day stale, and
    the next reconciliation of the day reopens the finding if Stripe still
    disagrees (the store's upsert clears ``resolved_at``).
    """
    d = reconciliation_drift.c
    statement = (
        sa.update(reconciliation_drift)
        .where(
            d.seller_transfer_id == seller_transfer_id,
            d.category.in_(list(categories)),
            d.resolved_at.is_(None),
        )
        .values(resolved_at=now if now is not None else sa.func.now())
    )
    return connection.execute(statement).rowcount
