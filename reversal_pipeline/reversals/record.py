"""Record: write each row's outcome and its audit rows in one transaction.

Every write is guarded by the claim (``claimed_by = token``, the batch that
holds it in ``claimed_by_batch``, and still ``reversal_pending``): if this
batch lost its lease and another run or batch took the row, the state change
is refused, but the audit rows of the Stripe calls this batch made are still
written, so no call goes unrecorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.statuses import TransferStatus
from reversal_pipeline.db.tables import reversal_attempts
from reversal_pipeline.db.tables import seller_transfers as st

PENDING = TransferStatus.REVERSAL_PENDING.value
REVERSED = TransferStatus.REVERSED.value
ACTOR = "reversal_job"

# Built once: every row's writes are guarded by the claim. Building the clause per
# call cost more CPU than executing it (benchmarks/pipeline_cost.py profile).
# A ``reversed`` outcome is also guarded by the target (issue 17): if a refund
# raised it while the call was in flight, what Stripe confirmed no longer covers
# it, so the row is not written (the calls are audited), is released at the end
# of the run, and the next run sends the difference.
_CLAIM_GUARD = sa.and_(
    st.c.id == sa.bindparam("guard_row_id"),
    st.c.claimed_by == sa.bindparam("guard_token"),
    st.c.claimed_by_batch == sa.bindparam("guard_batch"),
    st.c.status == PENDING,
    sa.or_(
        sa.bindparam("guard_status", type_=sa.Text) != REVERSED,
        sa.bindparam("guard_amount_reversed", type_=sa.BigInteger).is_(None),
        st.c.reversal_target <= sa.bindparam("guard_amount_reversed", type_=sa.BigInteger),
    ),
)


@dataclass(frozen=True)
class StripeCallRecord:
    """One Stripe call made for a row, as it goes into ``reversal_attempts``."""

    action: str
    outcome: str
    attempt_number: int | None = None
    idempotency_key: str | None = None
    http_status: int | None = None
    stripe_code: str | None = None
    stripe_request_id: str | None = None
    stripe_reversal_id: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class RowChange:
    """The new state of a row and why, as plain values (written per row or in a group)."""

    status_after: str
    error_message: str | None
    stripe_reversal_id: str | None = None
    retry_count: int | None = None
    # Only for a row left reversal_pending: when it comes due again, from the write's now().
    retry_delay_seconds: float | None = None
    calls: Sequence[StripeCallRecord] = field(default_factory=tuple)
    message: str | None = None
    # What Stripe confirmed of our reversals for the row (written with ``reversed``).
    amount_reversed: int | None = None

    @property
    def values(self) -> dict[str, Any]:
        """The ``seller_transfers`` assignments, with the database's clock for timestamps."""
        values: dict[str, Any] = {
            "status": self.status_after,
            "error_message": self.error_message,
            "next_retry_at": None
            if self.retry_delay_seconds is None
            else sa.func.now() + timedelta(seconds=self.retry_delay_seconds),
        }
        if self.status_after == REVERSED:
            values["stripe_reversal_id"] = self.stripe_reversal_id
            values["reversed_at"] = sa.func.now()
        if self.amount_reversed is not None:
            values["amount_reversed"] = self.amount_reversed
        if self.retry_count is not None:
            values["retry_count"] = self.retry_count
        return values


_START_ATTEMPTS = sa.text(
    """
    UPDATE seller_transfers SET stripe_attempts = stripe_attempts + 1
    WHERE id = ANY(:ids) AND claimed_by = :token AND claimed_by_batch = :batch
      AND status = 'reversal_pending'
    RETURNING id, stripe_attempts
    """
)


def start_attempts(
    engine: sa.Engine, *, row_ids: Sequence[int], token: str, batch_id: str
) -> dict[int, int]:
    """Count the create attempts of a page of rows before sending any: row id -> attempt number.

    Committed (one autocommitted statement) before any of these rows is sent,
    so a crash after a call still leaves ``stripe_attempts > 0`` and the next
    run looks for the reversal first. A row not in the answer lost
    its claim and must not be sent. A row counted here but never sent (the run
    stopped first) only costs the next run a look-up on Stripe.
    """
    if not row_ids:
        return {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        rows = connection.execute(
            _START_ATTEMPTS, {"ids": list(row_ids), "token": token, "batch": batch_id}
        )
        return {row.id: row.stripe_attempts for row in rows}


def write_change(
    engine: sa.Engine,
    *,
    row_id: int,
    token: str,
    batch_id: str,
    run_id: str | None,
    change: RowChange,
) -> bool:
    """Apply ``change`` and its audit rows atomically; False if the claim was lost."""
    values = {
        **change.values,
        "claimed_by": None,
        "claimed_by_batch": None,
        "claim_expires_at": None,
    }
    with engine.begin() as connection:
        updated = connection.execute(
            sa.update(st).where(_CLAIM_GUARD).values(**values),
            {
                "guard_row_id": row_id,
                "guard_token": token,
                "guard_batch": batch_id,
                "guard_status": change.status_after,
                "guard_amount_reversed": change.amount_reversed,
            },
        ).rowcount
        audit_rows = audit_rows_for(row_id, run_id, change, written=bool(updated))
        if audit_rows:
            connection.execute(sa.insert(reversal_attempts), audit_rows)
    return bool(updated)


def audit_rows_for(
    row_id: int, run_id: str | None, change: RowChange, *, written: bool
) -> list[dict[str, Any]]:
    """The audit rows of a change: one per Stripe call, the last carrying the state change.

    A change with no Stripe call (a malformed row) gets a row of its own. When
    the claim was lost the calls are still recorded, without a state change.
    """
    audit_rows = [_audit_row(row_id, run_id, call, status_after=None) for call in change.calls]
    if audit_rows:
        audit_rows[-1]["status_after"] = change.status_after if written else None
        audit_rows[-1]["status_before"] = PENDING
        if not written:
            audit_rows[-1]["message"] = _lease_lost(audit_rows[-1]["message"])
    elif written:
        audit_rows = [
            {
                "seller_transfer_id": row_id,
                "action": "validation",
                "attempt_number": None,
                "idempotency_key": None,
                "http_status": None,
                "stripe_code": None,
                "stripe_request_id": None,
                "stripe_reversal_id": None,
                "outcome": change.status_after,
                "status_before": PENDING,
                "status_after": change.status_after,
                "message": change.message,
                "run_id": run_id,
                "actor": ACTOR,
            }
        ]
    return audit_rows


def record_calls(
    engine: sa.Engine, *, row_id: int, run_id: str | None, calls: Sequence[StripeCallRecord]
) -> None:
    """Audit Stripe calls that changed no state (a released row's calls)."""
    if not calls:
        return
    with engine.begin() as connection:
        connection.execute(
            sa.insert(reversal_attempts),
            [_audit_row(row_id, run_id, call, status_after=None) for call in calls],
        )


def _audit_row(
    row_id: int, run_id: str | None, call: StripeCallRecord, *, status_after: str | None
) -> dict[str, Any]:
    return {
        "seller_transfer_id": row_id,
        "action": call.action,
        "attempt_number": call.attempt_number,
        "idempotency_key": call.idempotency_key,
        "http_status": call.http_status,
        "stripe_code": call.stripe_code,
        "stripe_request_id": call.stripe_request_id,
        "stripe_reversal_id": call.stripe_reversal_id,
        "outcome": call.outcome,
        "status_before": None,
        "status_after": status_after,
        "message": call.message,
        "run_id": run_id,
        "actor": ACTOR,
    }


def _lease_lost(message: object) -> str:
    prefix = (
        "claim lost before the outcome was written (another run holds the row), or a "
        "refund raised the reversal target meanwhile (the next run sends the difference)"
    )
    return f"{prefix}: {message}" if message else prefix
