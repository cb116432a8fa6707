"""Read-only health questions about ``seller_transfers``: invariants an operator must not miss.

The asset checks on ``reversal_outcomes`` (``defs/reversals/checks.py``) only
turn these answers into pass/fail and metadata; the queries live here so they
use the status enum, run without Dagster and are tested on their own.
Each list is capped at ``limit`` rows (the UI shows a sample); a count says
how many there are in all where an operator needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from reversal_pipeline.db.statuses import TransferStatus
from reversal_pipeline.db.tables import seller_transfers

LIST_LIMIT = 20
#: A claim this long past its lease is reported: a run died holding rows.
EXPIRED_CLAIM_GRACE = timedelta(minutes=15)

_t = seller_transfers.c


def pending_without_next_retry_at(connection: sa.Connection, limit: int = LIST_LIMIT) -> list[int]:
    """Ids of ``reversal_pending`` rows with NULL ``next_retry_at``: never due, the money stays put.

    The database constraint forbids them for new writes only (it is NOT VALID
    until ``validate-constraints``), so a row edited by hand before it existed
    can still be one.
    """
    query = (
        sa.select(_t.id)
        .where(_t.status == TransferStatus.REVERSAL_PENDING.value, _t.next_retry_at.is_(None))
        .order_by(_t.id)
        .limit(limit)
    )
    return list(connection.execute(query).scalars())


def long_expired_claims(
    connection: sa.Connection,
    grace: timedelta = EXPIRED_CLAIM_GRACE,
    limit: int = LIST_LIMIT,
) -> list[sa.RowMapping]:
    """Rows still claimed ``grace`` after their lease ended (by the database's clock), oldest first.

    Such rows are reclaimed by the next run anyway; the list says a run died.
    """
    query = (
        sa.select(_t.id, _t.claimed_by, _t.claim_expires_at)
        .where(
            _t.claimed_by.is_not(None),
            _t.claim_expires_at < sa.func.now() - sa.bindparam("grace", grace, type_=sa.Interval),
        )
        .order_by(_t.claim_expires_at)
        .limit(limit)
    )
    return list(connection.execute(query).mappings())


@dataclass(frozen=True)
class PermanentFailures:
    """Rows the job gave up on and no person has dealt with: how many, and the newest few."""

    total: int
    newest: Sequence[sa.RowMapping]


def permanent_failures(connection: sa.Connection, limit: int = LIST_LIMIT) -> PermanentFailures:
    """Every ``permanently_failed`` row counted, the ``limit`` most recently changed listed.

    Read from the rows' state, not from a run's audit rows, so the answer is
    the same wherever it is asked (a check run alone from the UI included).
    """
    failed = _t.status == TransferStatus.PERMANENTLY_FAILED.value
    newest = connection.execute(
        sa.select(_t.id, _t.stripe_transfer_id, _t.error_message, _t.updated_at)
        .where(failed)
        .order_by(_t.updated_at.desc(), _t.id)
        .limit(limit)
    ).mappings()
    total = connection.execute(sa.select(sa.func.count()).where(failed)).scalar_one()
    return PermanentFailures(total=int(total), newest=list(newest))
