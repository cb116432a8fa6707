"""Claim: take the rows that are due, so no other run sends them too.

A claim is a token (the Dagster run's own run id) plus a lease expiry on the
row. Rows are taken with ``FOR UPDATE SKIP LOCKED`` so overlapping runs split
the backlog instead of waiting on each other, and a claim whose lease has
expired (its run died) is taken over.

The token is the run's own id, never the root run id it shares with its
re-executions, and a row held by a live lease is never taken, not even by the
same token (issue 12): a terminated run whose thread pool was still draining
kept sending while its re-execution took the same rows under the same token,
and a 500 row on a 1,000 transfer was reversed twice. A re-execution takes
the rows of its failed original once they are released (a run releases
everything it did not finish) or their lease has expired (the run died), so a
claim is fenced to the one process that holds it: every write is guarded by
the token, and a row is sent only while its lease is sure to outlast the call
(``lease.py``).

Inside one run the claim is fenced once more, to the batch that holds it
(migration 0007): two ``ReversalBatch`` objects under one run id (a step
retried while the first attempt's threads still send) both passed every guard
keyed on the run id alone, and both sent the row. The claim takes rows for
the run (``claimed_by_batch`` NULL); a batch then takes the run's rows that no
other live batch holds (``take_for_batch``), and reads, renews and releases
only its own. Whatever looks at a run's claims as a whole (``count_held``,
the claim's preview, ``status``) still goes by the run id.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

from reversal_pipeline.db.statuses import TransferStatus
from reversal_pipeline.db.tables import refund_allocations as ra
from reversal_pipeline.db.tables import refund_events as ev
from reversal_pipeline.db.tables import seller_transfers as st

PENDING = TransferStatus.REVERSAL_PENDING.value

CLAIM_SQL = sa.text(
    """
    WITH due AS (
        SELECT id FROM seller_transfers
        WHERE status = 'reversal_pending'
          AND next_retry_at <= now()
          AND (claimed_by IS NULL OR claim_expires_at < now())
        ORDER BY next_retry_at, id
        LIMIT :max_rows
        FOR UPDATE SKIP LOCKED
    )
    UPDATE seller_transfers AS s
    SET claimed_by = :token, claimed_by_batch = NULL,
        claim_expires_at = now() + make_interval(secs => :lease)
    FROM due
    WHERE s.id = due.id
    RETURNING s.id, s.amount, s.currency, s.next_retry_at, now() - s.next_retry_at AS due_for
    """
)


# A run's rows that no live batch holds: fresh from the claim, or left by a batch of
# this run whose lease ran out (it died, or stopped renewing), like a claim takes over
# an expired lease of another run. Lowest ids first, up to :limit (NULL: all), so a
# batch that takes its first rows before the rest reads them all in id order.
TAKE_FOR_BATCH_SQL = sa.text(
    """
    UPDATE seller_transfers
    SET claimed_by_batch = :batch, claim_expires_at = now() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT id FROM seller_transfers
        WHERE claimed_by = :token AND status = 'reversal_pending'
          AND (claimed_by_batch IS NULL OR claim_expires_at < now())
        ORDER BY id
        LIMIT :limit
        FOR UPDATE
    )
    """
)


# The refunds that raised the row's target, oldest first: they go into the
# reversal's metadata so a reversal at Stripe names what it answers.
_REFUND_IDS = (
    sa.select(
        sa.func.coalesce(
            sa.func.array_agg(aggregate_order_by(ev.c.refund_id, ra.c.id)),
            sa.literal_column("'{}'::text[]"),
        )
    )
    .select_from(ra.join(ev, ev.c.id == ra.c.refund_event_id))
    .where(ra.c.seller_transfer_id == st.c.id)
    .scalar_subquery()
    .label("refund_ids")
)


@dataclass(frozen=True)
class ClaimSummary:
    """What a claim took, for the ``due_reversals`` metadata."""

    rows_claimed: int
    oldest_due_seconds: float
    amount_by_currency: dict[str, int]
    preview: list[dict[str, object]]


@dataclass(frozen=True)
class ClaimedRow:
    """A claimed seller transfer, as the reversal step needs it."""

    id: int
    order_id: str
    seller_id: str
    stripe_transfer_id: str | None
    amount: int
    currency: str
    retry_count: int
    stripe_attempts: int
    reversal_requested_at: datetime | None
    # Partial refunds (issue 17). None only for a row built by hand (a test): its
    # whole amount, the seed's meaning of reversal_pending.
    reversal_target: int | None = None
    amount_reversed: int = 0
    refund_ids: tuple[str, ...] = ()

    @property
    def target(self) -> int:
        """What Stripe must show of our reversals for this row to be ``reversed``."""
        return self.amount if self.reversal_target is None else self.reversal_target


def claim_due_rows(
    engine: sa.Engine, *, token: str, max_rows: int, lease_seconds: int, preview_rows: int = 10
) -> ClaimSummary:
    """Claim up to ``max_rows`` due rows, oldest due first, in one statement."""
    with engine.begin() as connection:
        claimed = connection.execute(
            CLAIM_SQL, {"token": token, "max_rows": max_rows, "lease": lease_seconds}
        ).all()
        preview = (
            connection.execute(
                sa.select(
                    st.c.id,
                    st.c.order_id,
                    st.c.stripe_transfer_id,
                    st.c.amount,
                    st.c.currency,
                    st.c.retry_count,
                    st.c.next_retry_at,
                )
                .where(st.c.claimed_by == token, st.c.status == PENDING)
                .order_by(st.c.next_retry_at, st.c.id)
                .limit(preview_rows)
            )
            .mappings()
            .all()
        )
    amounts: dict[str, int] = {}
    for row in claimed:
        amounts[row.currency] = amounts.get(row.currency, 0) + int(row.amount)
    oldest = max((row.due_for.total_seconds() for row in claimed), default=0.0)
    return ClaimSummary(
        rows_claimed=len(claimed),
        oldest_due_seconds=oldest,
        amount_by_currency=dict(sorted(amounts.items())),
        preview=[dict(row) for row in preview],
    )


def count_held(engine: sa.Engine, *, token: str) -> int:
    """How many due rows ``token`` holds now."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.select(sa.func.count())
                .select_from(st)
                .where(st.c.claimed_by == token, st.c.status == PENDING)
            ).scalar_one()
        )


def new_batch_id() -> str:
    """A name for one batch's hold on its run's rows: random, never reused."""
    return secrets.token_hex(8)


def take_for_batch(
    engine: sa.Engine, *, token: str, batch_id: str, lease_seconds: int, limit: int | None = None
) -> int:
    """Hold for ``batch_id`` the rows run ``token`` claimed that no live batch holds.

    All of them, or the ``limit`` lowest ids: the batch takes a first part, starts
    sending it, and takes the rest while those calls are on the wire (taking 10,000
    rows is 0.6 s in which nothing was sent; benchmarks/RESULTS.md, figure 1).
    Also starts the lease afresh: the step may begin long after the claim.
    Returns how many rows the batch now holds by this call.
    """
    with engine.begin() as connection:
        return connection.execute(
            TAKE_FOR_BATCH_SQL,
            {"token": token, "batch": batch_id, "lease": lease_seconds, "limit": limit},
        ).rowcount


def _held_by(token: str, batch_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        st.c.claimed_by == token, st.c.claimed_by_batch == batch_id, st.c.status == PENDING
    )


def iter_claimed_pages(
    engine: sa.Engine, *, token: str, batch_id: str, page_size: int
) -> Iterator[list[ClaimedRow]]:
    """The rows this batch still holds, a page at a time (keyset on id).

    Reading in pages keeps memory flat whatever the backlog; a row finished
    (or released) while earlier pages are processed simply is not returned.
    """
    after_id = 0
    while True:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    st.c.id,
                    st.c.order_id,
                    st.c.seller_id,
                    st.c.stripe_transfer_id,
                    st.c.amount,
                    st.c.currency,
                    st.c.retry_count,
                    st.c.stripe_attempts,
                    st.c.reversal_requested_at,
                    st.c.reversal_target,
                    st.c.amount_reversed,
                    _REFUND_IDS,
                )
                .where(_held_by(token, batch_id), st.c.id > after_id)
                .order_by(st.c.id)
                .limit(page_size)
            ).all()
        if not rows:
            return
        yield [ClaimedRow(**{**row._mapping, "refund_ids": tuple(row.refund_ids)}) for row in rows]
        after_id = rows[-1].id


def renew_leases(engine: sa.Engine, *, token: str, batch_id: str, lease_seconds: int) -> int:
    """Push the lease of every row this batch still holds; returns how many."""
    with engine.begin() as connection:
        return connection.execute(
            sa.update(st)
            .where(_held_by(token, batch_id))
            .values(
                claim_expires_at=sa.func.now()
                + sa.func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds)
            )
        ).rowcount


def release_claims(
    engine: sa.Engine, *, token: str, batch_id: str, untaken_too: bool = False
) -> int:
    """Let go of every row this batch still holds, without counting an attempt.

    Never the rows another batch of the same run holds: one may still be sending.
    ``untaken_too`` also lets go of the run's rows no batch has taken (a batch that
    stopped before taking the rest of its rows): a later run takes them at once
    instead of after the claim's lease. A batch of the same run that takes them
    first holds them, and this no longer matches them.
    """
    held = _held_by(token, batch_id)
    if untaken_too:
        held = sa.or_(
            held,
            sa.and_(
                st.c.claimed_by == token, st.c.claimed_by_batch.is_(None), st.c.status == PENDING
            ),
        )
    with engine.begin() as connection:
        return connection.execute(
            sa.update(st)
            .where(held)
            .values(claimed_by=None, claimed_by_batch=None, claim_expires_at=None)
        ).rowcount
