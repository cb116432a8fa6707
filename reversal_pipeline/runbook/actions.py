"""``requeue``, ``resolve``, ``reopen`` and ``adjust``: the state changes an operator may make.

Both lock the rows (``SELECT ... FOR UPDATE``) and re-check their status in
the transaction that writes, so a run that changed a row since the operator
looked is never overwritten; the state change and its ``reversal_attempts``
row commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from reversal_pipeline.db.statuses import AttemptAction, TransferStatus
from reversal_pipeline.db.tables import reversal_attempts
from reversal_pipeline.db.tables import seller_transfers as st
from reversal_pipeline.errors import OperatorInputError, StripeSentinel
from reversal_pipeline.reconciliation.categories import Category
from reversal_pipeline.reconciliation.open_findings import resolve_fixed_findings
from reversal_pipeline.reversals.reverse import TRANSFER_ID_PATTERN

ACTOR = "operator"
FAILED = TransferStatus.PERMANENTLY_FAILED.value
PENDING = TransferStatus.REVERSAL_PENDING.value
REVERSED = TransferStatus.REVERSED.value


class TransferLookup(Protocol):
    """What ``resolve`` needs from the Stripe resource."""

    def get_transfer(self, transfer_id: str) -> Any: ...


@dataclass(frozen=True)
class RequeueResult:
    row_ids: list[int]


@dataclass(frozen=True)
class ReopenResult:
    row_id: int
    stripe_transfer_id: str
    previous_reversal_id: str | None
    shown: str


@dataclass(frozen=True)
class ResolveResult:
    row_id: int
    stripe_transfer_id: str
    reversal_id: str
    reversal_amount: int
    currency: str


def _audit(row_id: int, action: str, before: str, after: str, message: str) -> dict[str, Any]:
    return {
        "seller_transfer_id": row_id,
        "action": action,
        "outcome": action + ("d" if action.endswith("e") else "ed"),
        "status_before": before,
        "status_after": after,
        "message": message,
        "actor": ACTOR,
    }


def _locked_rows(connection: sa.Connection, row_ids: list[int]) -> dict[int, sa.Row]:
    """The rows an action checks before it writes, locked (in id order) until it commits.

    One column list for every action, so a check added to one cannot read a
    column another action's query forgot.
    """
    rows = connection.execute(
        sa.select(
            st.c.id,
            st.c.status,
            st.c.stripe_transfer_id,
            st.c.amount,
            st.c.currency,
            st.c.stripe_reversal_id,
            st.c.reversal_target,
            st.c.amount_reversed,
            st.c.claimed_by,
            (st.c.claim_expires_at > sa.func.now()).label("claim_live"),
        )
        .where(st.c.id.in_(row_ids))
        .order_by(st.c.id)
        .with_for_update()
    ).all()
    return {row.id: row for row in rows}


def _locked_row(connection: sa.Connection, row_id: int) -> sa.Row:
    """One row as ``_locked_rows`` reads it; refuses an id with no row."""
    row = _locked_rows(connection, [row_id]).get(row_id)
    if row is None:
        raise OperatorInputError(f"no seller transfer with id {row_id}; nothing changed")
    return row


def failed_since_ids(engine: sa.Engine, since: datetime) -> list[int]:
    """``permanently_failed`` rows whose last change is at or after ``since``."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(st.c.id)
                .where(st.c.status == FAILED, st.c.updated_at >= since)
                .order_by(st.c.id)
            ).scalars()
        )


def requeue(engine: sa.Engine, row_ids: list[int], reason: str) -> RequeueResult:
    """``permanently_failed`` -> ``reversal_pending`` due now, ``retry_count`` reset, audited.

    All or nothing: one unknown id or one row in another status refuses the
    whole request, so a typo never requeues half a list.
    """
    if not row_ids:
        raise OperatorInputError("nothing to requeue: give --id N or --failed-since DATE")
    with engine.begin() as connection:
        rows = _locked_rows(connection, row_ids)
        unknown = [i for i in row_ids if i not in rows]
        if unknown:
            raise OperatorInputError(f"no seller transfer with id {_ids(unknown)}; nothing changed")
        wrong = [f"{r.id} is {r.status}" for r in rows.values() if r.status != FAILED]
        if wrong:
            raise OperatorInputError(
                f"only permanently_failed rows can be requeued ({'; '.join(wrong)}); "
                "nothing changed"
            )
        connection.execute(
            sa.update(st)
            .where(st.c.id.in_(row_ids))
            .values(
                status=PENDING,
                next_retry_at=sa.func.now(),
                retry_count=0,
                claimed_by=None,
                claim_expires_at=None,
            )
        )
        connection.execute(
            sa.insert(reversal_attempts),
            [
                _audit(i, AttemptAction.REQUEUE.value, FAILED, PENDING, f"requeued: {reason}")
                for i in row_ids
            ],
        )
    return RequeueResult(row_ids)


def resolve(
    engine: sa.Engine, stripe: TransferLookup, row_id: int, reversal_id: str, reason: str
) -> ResolveResult:
    """Mark a ``permanently_failed`` row ``reversed`` with a reversal Stripe shows on its transfer.

    The Stripe check runs while the row is locked, so the row cannot change
    between the check and the write. The reversal must be on this row's
    transfer and cover the row's amount: anything less is not "resolved".
    """
    reversal_id = reversal_id.strip()
    if not reversal_id.startswith("trr_") or len(reversal_id) < 6:
        raise OperatorInputError(
            f"--reversal wants a transfer reversal id (trr_...), got {reversal_id!r}"
        )
    with engine.begin() as connection:
        row = _locked_rows(connection, [row_id]).get(row_id)
        if row is None:
            raise OperatorInputError(f"no seller transfer with id {row_id}; nothing changed")
        if row.status != FAILED:
            raise OperatorInputError(
                f"row {row_id} is {row.status}; only permanently_failed rows can be resolved"
            )
        transfer = _transfer_of(row, stripe)
        found = [r for r in transfer.reversals if r.id == reversal_id]
        if not found:
            shown = ", ".join(r.id for r in transfer.reversals) or "none"
            raise OperatorInputError(
                f"reversal {reversal_id} is not on transfer {row.stripe_transfer_id} "
                f"(its reversals: {shown}); nothing changed"
            )
        reversal = found[0]
        if reversal.currency.lower() != row.currency.lower():
            raise OperatorInputError(
                f"reversal {reversal_id} is in {reversal.currency.upper()}, not row {row_id}'s "
                f"{row.currency.upper()}: its amount says nothing about this row; nothing changed"
            )
        if reversal.amount < row.reversal_target:
            raise OperatorInputError(
                f"reversal {reversal_id} is {reversal.amount} {reversal.currency}, less than "
                f"row {row_id}'s {row.reversal_target} {row.currency} (its reversal target); "
                "nothing changed"
            )
        connection.execute(
            sa.update(st)
            .where(st.c.id == row_id)
            .values(
                status=REVERSED,
                stripe_reversal_id=reversal_id,
                reversed_at=reversal.created,
                next_retry_at=None,
                claimed_by=None,
                claim_expires_at=None,
                amount_reversed=row.reversal_target,
            )
        )
        audit = _audit(
            row_id,
            AttemptAction.RESOLVE.value,
            FAILED,
            REVERSED,
            f"resolved with {reversal_id} ({reversal.amount} {reversal.currency}) "
            f"seen on {row.stripe_transfer_id}: {reason}",
        )
        audit["stripe_reversal_id"] = reversal_id
        connection.execute(sa.insert(reversal_attempts), [audit])
        # Shown at once in open_drift; the day's next reconciliation re-verifies it.
        resolve_fixed_findings(connection, row_id, [Category.STRIPE_REVERSED_DB_FAILED])
    return ResolveResult(
        row_id, row.stripe_transfer_id, reversal_id, reversal.amount, reversal.currency
    )


def reopen(engine: sa.Engine, stripe: TransferLookup, row_id: int, reason: str) -> ReopenResult:
    """``reversed`` -> ``reversal_pending`` due now, audited, if Stripe shows the money is not back.

    For ``db_reversed_stripe_not``: the row says reversed, Stripe does not. The
    check runs at Stripe while the row is locked, and refuses when any reversal
    on the transfer covers the row's amount in its currency (the money is back:
    nothing to do), or when a reversal made for this row exists at all (a partial
    one: the job would not add the difference on its own, and neither does
    this). The database counts the reopening (``reversal_generation``, migration
    0006), which lets the job record the row ``reversed`` once more.
    """
    with engine.begin() as connection:
        row = _locked_row(connection, row_id)
        if row.status != REVERSED:
            raise OperatorInputError(
                f"row {row_id} is {row.status}; only reversed rows can be reopened "
                "(a permanently_failed row is requeued)"
            )
        transfer = _transfer_of(row, stripe)
        shown = (
            f"Stripe shows {transfer.amount_reversed} of {transfer.amount} "
            f"{transfer.currency.upper()} reversed in {len(transfer.reversals)} reversal(s)"
        )
        refusal = _reopen_refusal(row, transfer)
        if refusal is not None:
            raise OperatorInputError(f"row {row_id} not reopened: {refusal} ({shown})")
        connection.execute(
            sa.update(st)
            .where(st.c.id == row_id)
            .values(
                status=PENDING,
                next_retry_at=sa.func.now(),
                retry_count=0,
                stripe_reversal_id=None,
                reversed_at=None,
                error_message=f"reopened by an operator: {reason}",
                claimed_by=None,
                claim_expires_at=None,
                amount_reversed=_ours_total(row, transfer),
            )
        )
        audit = _audit(
            row_id,
            AttemptAction.REOPEN.value,
            REVERSED,
            PENDING,
            f"reopened (was reversed with {row.stripe_reversal_id}); {shown}: {reason}",
        )
        audit["outcome"] = "reopened"
        audit["stripe_reversal_id"] = row.stripe_reversal_id
        connection.execute(sa.insert(reversal_attempts), [audit])
    return ReopenResult(row_id, row.stripe_transfer_id, row.stripe_reversal_id, shown)


def _reopen_refusal(row: sa.Row, transfer: Any) -> str | None:
    if transfer.currency.lower() != row.currency.lower():
        return (
            f"transfer {transfer.id} is in {transfer.currency.upper()}, not the row's "
            f"{row.currency.upper()}: correct the row first"
        )
    covering = [
        r.id
        for r in transfer.reversals
        if r.currency.lower() == row.currency.lower() and r.amount >= row.reversal_target
    ]
    if covering or transfer.amount_reversed >= transfer.amount:
        which = ", ".join(covering) or "the transfer is fully reversed"
        return f"Stripe shows the money back ({which}); nothing to reverse again"
    ours = _ours_total(row, transfer)
    if ours >= row.reversal_target:
        return (
            f"our reversals for this row at Stripe total {ours}, which covers its reversal "
            f"target {row.reversal_target}; nothing to reverse again"
        )
    # Issue 17: ours short of the target is what the job completes (it sends only the
    # difference), so a partial reversal of ours does not refuse a reopening.
    return None


def _ours_total(row: sa.Row, transfer: Any) -> int:
    """What Stripe shows of our reversals for the row (by the metadata the job writes)."""
    return sum(
        r.amount
        for r in transfer.reversals
        if r.metadata.get("seller_transfer_id") == str(row.id)
        and r.currency.lower() == row.currency.lower()
    )


@dataclass(frozen=True)
class AdjustResult:
    row_id: int
    target_before: int
    target_after: int
    status_before: str
    status_after: str
    ours_at_stripe: int


#: A raised target makes these due now (as a refund does); others keep their status.
_DUE_ON_RAISE = (TransferStatus.COMPLETED.value, REVERSED)


def adjust(
    engine: sa.Engine, stripe: TransferLookup, row_id: int, target: int, reason: str
) -> AdjustResult:
    """Set a row's ``reversal_target`` by hand, audited; never below what Stripe reversed.

    For the refusals intake cannot place (``needs_scope``, ``over_refund``) and
    for corrections. Stripe is read while the row is locked: a target below
    what our reversals for the row already took back cannot be met (a reversal
    cannot be undone), so it is refused. A raised target makes a ``completed``
    or ``reversed`` row due now, like a refund.
    """
    with engine.begin() as connection:
        row = _locked_row(connection, row_id)
        if not 0 <= target <= row.amount:
            raise OperatorInputError(
                f"--target {target} is outside 0..{row.amount} (row {row_id}'s amount in "
                f"{row.currency.upper()} minor units); nothing changed"
            )
        if row.status in (TransferStatus.PENDING.value, TransferStatus.FAILED.value):
            raise OperatorInputError(
                f"row {row_id} is {row.status}: no payout to reverse; nothing changed"
            )
        if row.claim_live:
            raise OperatorInputError(
                f"row {row_id} is claimed by {row.claimed_by} (a run is working on it); retry "
                "later; nothing changed"
            )
        ours = _ours_total(row, _transfer_of(row, stripe))
        if target < ours:
            raise OperatorInputError(
                f"--target {target} is below what Stripe already reversed for row {row_id} "
                f"({ours} {row.currency.upper()}); a reversal cannot be undone; nothing changed"
            )
        values: dict[str, Any] = {"reversal_target": target}
        status_after = row.status
        if target > row.reversal_target and row.status in _DUE_ON_RAISE and target > ours:
            status_after = PENDING
            values.update(
                status=PENDING,
                next_retry_at=sa.func.now(),
                reversal_requested_at=sa.func.now(),
                retry_count=0,
                error_message=f"reversal target adjusted by an operator: {reason}",
            )
        connection.execute(sa.update(st).where(st.c.id == row_id).values(**values))
        audit = _audit(
            row_id,
            AttemptAction.ADJUST.value,
            row.status,
            status_after,
            f"reversal target {row.reversal_target} -> {target} of {row.amount} "
            f"{row.currency.upper()} (ours at Stripe: {ours}): {reason}",
        )
        audit["outcome"] = "adjusted"
        connection.execute(sa.insert(reversal_attempts), [audit])
    return AdjustResult(row_id, row.reversal_target, target, row.status, status_after, ours)


def _transfer_of(row: sa.Row, stripe: TransferLookup) -> Any:
    """The row's transfer as Stripe shows it now, or a refusal that changes nothing.

    ``resolve`` and ``reopen`` both decide from Stripe's own view of the
    transfer; the id is checked with the job's full-match pattern first, so an
    id the job would refuse to send is refused here too.
    """
    transfer_id = row.stripe_transfer_id
    if not transfer_id or not TRANSFER_ID_PATTERN.fullmatch(transfer_id):
        raise OperatorInputError(
            f"row {row.id} has no usable stripe_transfer_id ({transfer_id!r}); fix the row first"
        )
    try:
        return stripe.get_transfer(transfer_id)
    except StripeSentinel as error:
        raise OperatorInputError(
            f"cannot read transfer {transfer_id} at Stripe "
            f"({type(error).__name__}: {error.message}); nothing changed"
        ) from None


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))
