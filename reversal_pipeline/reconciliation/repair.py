"""Fix the database side of drift that Stripe proves, and nothing else.

Only two categories qualify (``categories.REPAIRABLE``): the row is
``reversal_pending`` or ``permanently_failed`` while Stripe shows the
transfer reversed for at least the row's ``reversal_target`` (issue 17: the
whole amount, or what partial refunds made the seller owe). A reversal at Stripe cannot
be undone, so that proof does not go stale; the row's status can, so each
repair re-reads the row under ``SELECT ... FOR UPDATE`` and refuses if it
changed since the plan. The row update and its ``reversal_attempts`` audit
row commit together. This module never calls Stripe, let alone a write
endpoint: it only reads the evidence the reconciliation gathered.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.db.statuses import AttemptAction, TransferStatus
from reversal_pipeline.db.tables import reconciliation_drift, reversal_attempts, seller_transfers
from reversal_pipeline.reconciliation.categories import REPAIRABLE, Category
from reversal_pipeline.reconciliation.compare import compare
from reversal_pipeline.reconciliation.frames import (
    TransferLike,
    db_transfers_frame,
    stripe_transfers_frame,
)
from reversal_pipeline.reconciliation.open_findings import resolve_fixed_findings

ACTOR = "reconciliation_repair"
OUTCOME = "repaired"

# The status a repairable finding says the row is in; the repair refuses any other.
EXPECTED_STATUS: dict[Category, TransferStatus] = {
    Category.STRIPE_REVERSED_DB_PENDING: TransferStatus.REVERSAL_PENDING,
    Category.STRIPE_REVERSED_DB_FAILED: TransferStatus.PERMANENTLY_FAILED,
}


@dataclass(frozen=True, slots=True)
class PlannedRepair:
    """One row to mark ``reversed``, with the Stripe evidence that proves it."""

    partition_day: date
    category: str
    finding_id: int | None  # reconciliation_drift.id, when the finding is stored
    seller_transfer_id: int
    stripe_transfer_id: str
    status_before: str
    stripe_reversal_id: str
    reversed_at: datetime
    amount: int
    amount_reversed: int
    #: The transfer's currency at Stripe: an amount in another currency proves nothing.
    currency: str = ""
    #: The row's reversal_target when planned: what Stripe's reversed amount must cover.
    reversal_target: int = 0

    @property
    def finding_label(self) -> str:
        """How audit messages name the finding, stored or not."""
        where = f"{self.category}, day {self.partition_day.isoformat()}"
        if self.finding_id is None:
            return f"finding {self.seller_transfer_id} ({where}, not stored yet)"
        return f"finding #{self.finding_id} ({where})"


@dataclass(frozen=True, slots=True)
class SkippedRepair:
    """A repairable-looking finding the repair leaves alone, and why."""

    seller_transfer_id: int | None
    category: str
    reason: str


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """What ``apply_repairs`` would do for one day; building it changes nothing."""

    partition_day: date
    repairs: tuple[PlannedRepair, ...]
    skipped: tuple[SkippedRepair, ...]


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What ``apply_repairs`` did (or, on a dry run, would do)."""

    dry_run: bool
    repaired: tuple[PlannedRepair, ...]
    refused: tuple[SkippedRepair, ...]


# --------------------------------------------------------------------------- planning


def plan_repairs(
    connection: sa.Connection,
    day: date,
    evidence: pd.DataFrame | Iterable[TransferLike],
    *,
    now: datetime | None = None,
) -> RepairPlan:
    """Plan the repairs of ``day`` from findings, or from Stripe snapshots of that day.

    ``evidence`` is either a findings frame (``compare``'s output, or
    ``store.open_findings``) or the day's ``TransferSnapshot``s, which are
    compared with the database first. Findings in grace are skipped: the job
    may be writing that row right now.
    """
    if isinstance(evidence, pd.DataFrame):
        drift_findings = evidence
    else:
        drift_findings = _findings_from_snapshots(connection, day, evidence, now=now)
    candidates = drift_findings[drift_findings["category"].astype(str).isin(_REPAIRABLE_NAMES)]
    finding_ids = _stored_finding_ids(connection, day, candidates)
    current_rows = _current_rows(connection, candidates)
    repairs: list[PlannedRepair] = []
    skipped: list[SkippedRepair] = []
    for finding in candidates.to_dict("records"):
        outcome = _plan_one(day, finding, finding_ids, current_rows)
        if isinstance(outcome, PlannedRepair):
            repairs.append(outcome)
        else:
            skipped.append(outcome)
    return RepairPlan(day, tuple(repairs), tuple(skipped))


_REPAIRABLE_NAMES = tuple(c.value for c in REPAIRABLE)


def days_with_repairable_findings(connection: sa.Connection) -> list[date]:
    """Partition days with an open finding of a repairable category, oldest first.

    What the repair job works through when it is not given days.
    """
    d = reconciliation_drift.c
    query = (
        sa.select(d.partition_day)
        .distinct()
        .where(d.resolved_at.is_(None), d.category.in_(_REPAIRABLE_NAMES))
        .order_by(d.partition_day)
    )
    return list(connection.execute(query).scalars())


def _findings_from_snapshots(
    connection: sa.Connection,
    day: date,
    snapshots: Iterable[TransferLike],
    *,
    now: datetime | None,
) -> pd.DataFrame:
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    db_rows = db_transfers_frame(connection, day_start, day_start + timedelta(days=1))
    return compare(db_rows, stripe_transfers_frame(snapshots), now=now or datetime.now(UTC))


def _stored_finding_ids(
    connection: sa.Connection, day: date, candidates: pd.DataFrame
) -> dict[tuple[str, str], int]:
    if "id" in candidates.columns:  # read back from reconciliation_drift
        keys = zip(
            candidates["category"].astype(str), candidates["finding_key"].astype(str), strict=True
        )
        return dict(zip(keys, candidates["id"].astype(int), strict=True))
    d = reconciliation_drift.c
    query = sa.select(d.category, d.finding_key, d.id).where(
        d.partition_day == day,
        d.category.in_(_REPAIRABLE_NAMES),
        d.finding_key.in_(candidates["finding_key"].astype(str).tolist()),
    )
    return {(row.category, row.finding_key): row.id for row in connection.execute(query)}


def _current_rows(connection: sa.Connection, candidates: pd.DataFrame) -> dict[int, sa.RowMapping]:
    ids = [int(i) for i in candidates["seller_transfer_id"].dropna()]
    t = seller_transfers.c
    query = sa.select(
        t.id, t.status, t.stripe_transfer_id, t.amount, t.currency, t.reversal_target
    ).where(t.id.in_(ids))
    return {row["id"]: row for row in connection.execute(query).mappings()}


def _plan_one(
    day: date,
    finding: Mapping[Hashable, Any],
    finding_ids: Mapping[tuple[str, str], int],
    current_rows: Mapping[int, sa.RowMapping],
) -> PlannedRepair | SkippedRepair:
    category = Category(str(finding["category"]))
    seller_transfer_id = int(finding["seller_transfer_id"])
    details = finding["details"] or {}
    row = current_rows.get(seller_transfer_id)
    reason = _skip_reason(category, finding, details, row)
    if reason is not None:
        return SkippedRepair(seller_transfer_id, category.value, reason)
    assert row is not None  # _skip_reason refuses a missing row
    return PlannedRepair(
        partition_day=day,
        category=category.value,
        finding_id=finding_ids.get((category.value, str(finding["finding_key"]))),
        seller_transfer_id=seller_transfer_id,
        stripe_transfer_id=row["stripe_transfer_id"],
        status_before=row["status"],
        stripe_reversal_id=str(details["repair_reversal_id"]),
        reversed_at=pd.Timestamp(details["repair_reversed_at"]).to_pydatetime(),
        amount=int(row["amount"]),
        amount_reversed=int(details["amount_reversed"]),
        currency=str(details["stripe_currency"]).lower(),
        reversal_target=int(row["reversal_target"]),
    )


def _skip_reason(
    category: Category,
    finding: Mapping[Hashable, Any],
    details: Mapping[str, Any],
    row: sa.RowMapping | None,
) -> str | None:
    if bool(finding["in_grace"]):
        return "row changed within the grace period; re-run reconciliation later"
    if row is None:
        return "row no longer exists"
    if row["status"] != EXPECTED_STATUS[category]:
        return f"status is now {row['status']}, not {EXPECTED_STATUS[category].value}"
    if row["stripe_transfer_id"] != finding["stripe_transfer_id"]:
        return "row's stripe_transfer_id changed since the finding"
    if not details.get("repair_reversal_id") or not details.get("repair_reversed_at"):
        return "finding carries no Stripe reversal to record"
    stripe_currency = str(details.get("stripe_currency") or "").lower()
    if not stripe_currency:
        return "finding carries no Stripe currency; re-run reconciliation for the day"
    if stripe_currency != str(row["currency"]).lower():
        return (
            f"Stripe's transfer is in {stripe_currency.upper()}, not the row's "
            f"{str(row['currency']).upper()}: its amount proves nothing; needs a person"
        )
    if int(details.get("amount_reversed") or 0) < int(row["reversal_target"]):
        return "Stripe reversed less than the row's current amount (its reversal target)"
    return None


# --------------------------------------------------------------------------- applying


def apply_repairs(
    engine: sa.Engine, plan: RepairPlan, *, run_id: str | None, dry_run: bool = True
) -> RepairResult:
    """Apply ``plan``, one transaction per row; on ``dry_run`` (the default) write nothing.

    Each row is re-read ``FOR UPDATE`` (a plain read on a dry run) and
    refused if its status, transfer or amount changed since the plan, or if
    a job holds a live claim on it; otherwise the row and its audit row are
    written together. One refused or failing row does not stop the others.
    """
    repaired: list[PlannedRepair] = []
    refused: list[SkippedRepair] = list(plan.skipped)
    for repair in plan.repairs:
        reason = _apply_one(engine, repair, run_id=run_id, dry_run=dry_run)
        if reason is None:
            repaired.append(repair)
        else:
            refused.append(SkippedRepair(repair.seller_transfer_id, repair.category, reason))
    return RepairResult(dry_run, tuple(repaired), tuple(refused))


def _apply_one(
    engine: sa.Engine, repair: PlannedRepair, *, run_id: str | None, dry_run: bool
) -> str | None:
    try:
        with engine.begin() as connection:
            reason = _refusal(_locked_row(connection, repair, lock=not dry_run), repair)
            if reason is None and not dry_run:
                _write_repair(connection, repair, run_id=run_id)
                # Shown at once in open_drift; the day's next reconciliation re-verifies it.
                resolve_fixed_findings(connection, repair.seller_transfer_id, [repair.category])
            return reason
    except sa.exc.IntegrityError as exc:
        # e.g. the audit trail already records this row reaching 'reversed' once.
        return f"refused by the database: {str(exc.orig).splitlines()[0]}"


def _locked_row(
    connection: sa.Connection, repair: PlannedRepair, *, lock: bool
) -> sa.RowMapping | None:
    t = seller_transfers.c
    query = sa.select(
        t.status,
        t.stripe_transfer_id,
        t.amount,
        t.currency,
        t.reversal_target,
        t.claimed_by,
        (t.claim_expires_at > sa.func.now()).label("claim_live"),
    ).where(t.id == repair.seller_transfer_id)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).mappings().one_or_none()


def _refusal(row: sa.RowMapping | None, repair: PlannedRepair) -> str | None:
    if row is None:
        return "row no longer exists"
    if row["status"] != repair.status_before:
        return f"status changed to {row['status']} since the plan (was {repair.status_before})"
    if row["stripe_transfer_id"] != repair.stripe_transfer_id:
        return "stripe_transfer_id changed since the plan"
    if str(row["currency"]).lower() != repair.currency:
        return f"currency is {row['currency']}, not the {repair.currency} Stripe reversed in"
    if int(row["reversal_target"]) > repair.amount_reversed:
        return (
            "amount changed since the plan and exceeds what Stripe reversed (a refund "
            "raised the reversal target)"
        )
    if row["claim_live"]:
        return f"claimed by {row['claimed_by']} (a run is working on it); retry later"
    return None


def _write_repair(connection: sa.Connection, repair: PlannedRepair, *, run_id: str | None) -> None:
    message = _audit_message(repair)
    t = seller_transfers.c
    connection.execute(
        sa.update(seller_transfers)
        .where(t.id == repair.seller_transfer_id, t.status == repair.status_before)
        .values(
            status=TransferStatus.REVERSED.value,
            stripe_reversal_id=repair.stripe_reversal_id,
            reversed_at=repair.reversed_at,
            next_retry_at=None,
            claimed_by=None,
            claim_expires_at=None,
            error_message=message,
            amount_reversed=repair.reversal_target,
        )
    )
    connection.execute(
        sa.insert(reversal_attempts).values(
            seller_transfer_id=repair.seller_transfer_id,
            action=AttemptAction.REPAIR.value,
            stripe_reversal_id=repair.stripe_reversal_id,
            outcome=OUTCOME,
            status_before=repair.status_before,
            status_after=TransferStatus.REVERSED.value,
            message=message,
            run_id=run_id,
            actor=ACTOR,
        )
    )


def _audit_message(repair: PlannedRepair) -> str:
    return (
        f"Repaired by reconciliation from {repair.finding_label}: Stripe shows transfer "
        f"{repair.stripe_transfer_id} reversed ({repair.amount_reversed} of {repair.amount} "
        f"minor units, covering the reversal target {repair.reversal_target}), "
        f"reversal {repair.stripe_reversal_id} at "
        f"{repair.reversed_at.isoformat()}; status was {repair.status_before}. "
        "No Stripe call was made."
    )
