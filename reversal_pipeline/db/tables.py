"""SQLAlchemy Core table definitions, used by every query in the package.

The migrations in ``migrations/`` are the authority on the schema (they
carry the Postgres-specific constraints, partial indexes and the trigger);
these definitions mirror the columns so queries are typed and checked, and
``tests/db/test_schema.py`` fails if the two drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = sa.MetaData()

TZ = sa.DateTime(timezone=True)

seller_transfers = sa.Table(
    "seller_transfers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("seller_id", sa.Text, nullable=False),
    sa.Column("stripe_account_id", sa.Text),
    sa.Column("stripe_transfer_id", sa.Text),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("retry_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_retry_at", TZ),
    sa.Column("stripe_reversal_id", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("transferred_at", TZ),
    sa.Column("reversal_requested_at", TZ),
    sa.Column("reversed_at", TZ),
    # Claim columns (the implementation's choice in DESIGN.md).
    sa.Column("claimed_by", sa.Text),
    sa.Column("claim_expires_at", TZ),
    # The batch inside run ``claimed_by`` that holds the row (migration 0007).
    sa.Column("claimed_by_batch", sa.Text),
    # Stripe create-reversal calls ever started for this row. Never reset (an
    # operator requeue resets retry_count only), so idempotency keys built from
    # it are never reused; incremented before the call, so a crash after the
    # call still tells the next run to look for a reversal first.
    sa.Column("stripe_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    # Kept by a trigger (migration 0006): times the row left 'reversed'.
    sa.Column("reversal_generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    # Moved by a trigger only when a column reconciliation compares changes
    # (migration 0004); NULL on older rows, which fall back to updated_at.
    sa.Column("reconciliation_changed_at", TZ),
    # Partial refunds (migration 0008): what the seller owes back on this transfer
    # (0..amount), and what Stripe has confirmed of our reversals for the row.
    sa.Column("reversal_target", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("amount_reversed", sa.BigInteger, nullable=False, server_default="0"),
)

# transferred_at moved to another UTC day (written by the trigger of migration 0004).
seller_transfer_day_moves = sa.Table(
    "seller_transfer_day_moves",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column(
        "seller_transfer_id", sa.BigInteger, sa.ForeignKey("seller_transfers.id"), nullable=False
    ),
    sa.Column("transferred_at_before", TZ, nullable=False),
    sa.Column("transferred_at_after", TZ),
    sa.Column("moved_at", TZ, nullable=False, server_default=sa.func.now()),
)

refund_events = sa.Table(
    "refund_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("refund_id", sa.Text, nullable=False, unique=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("received_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("processed_at", TZ),
    sa.Column("outcome", sa.Text),
    sa.Column("outcome_detail", sa.Text),
    # Partial refunds (migration 0008): NULL amount = the whole order; NULL
    # seller_transfer_id = REVERSAL_PARTIAL_REFUND_POLICY decides.
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.Text),
    sa.Column("seller_transfer_id", sa.BigInteger, sa.ForeignKey("seller_transfers.id")),
)

# Append-only (migration 0008): each refund's share of a seller transfer's target.
refund_allocations = sa.Table(
    "refund_allocations",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("refund_event_id", sa.BigInteger, sa.ForeignKey("refund_events.id"), nullable=False),
    sa.Column(
        "seller_transfer_id", sa.BigInteger, sa.ForeignKey("seller_transfers.id"), nullable=False
    ),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("target_before", sa.BigInteger, nullable=False),
    sa.Column("target_after", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

# Append-only audit of refund_events (migration 0003): every outcome an event
# goes through, and the seller transfers each step requested.
refund_event_history = sa.Table(
    "refund_event_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("refund_event_id", sa.BigInteger, sa.ForeignKey("refund_events.id"), nullable=False),
    sa.Column("outcome_before", sa.Text),
    sa.Column("outcome_after", sa.Text),
    sa.Column("closed", sa.Boolean, nullable=False),
    sa.Column(
        "seller_transfer_ids",
        ARRAY(sa.BigInteger),
        nullable=False,
        server_default=sa.text("'{}'"),
    ),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

reversal_attempts = sa.Table(
    "reversal_attempts",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column(
        "seller_transfer_id", sa.BigInteger, sa.ForeignKey("seller_transfers.id"), nullable=False
    ),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("attempt_number", sa.Integer),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("http_status", sa.Integer),
    sa.Column("stripe_code", sa.Text),
    sa.Column("stripe_request_id", sa.Text),
    sa.Column("stripe_reversal_id", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("status_before", sa.Text),
    sa.Column("status_after", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    # Set by a trigger on a reversed outcome (migration 0006): one per reopening.
    sa.Column("reversal_generation", sa.Integer, nullable=False, server_default="0"),
)

reconciliation_drift = sa.Table(
    "reconciliation_drift",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("partition_day", sa.Date, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    # Stable identity of a finding within (partition_day, category): the
    # seller transfer id, or the Stripe transfer id for unknown_to_db.
    sa.Column("finding_key", sa.Text, nullable=False),
    sa.Column("seller_transfer_id", sa.BigInteger),
    sa.Column("stripe_transfer_id", sa.Text),
    sa.Column("stripe_reversal_ids", sa.Text),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.Text),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("in_grace", sa.Boolean, nullable=False, server_default=sa.false()),
    # When an in-grace finding becomes drift and its day must be looked at again.
    sa.Column("grace_ends_at", TZ),
    sa.Column("first_seen_at", TZ, nullable=False),
    sa.Column("last_seen_at", TZ, nullable=False),
    sa.Column("resolved_at", TZ),
    sa.Column("last_run_id", sa.Text),
    # Migration 0012: "transfers" or "refunds"; a run resolves only its own side's findings.
    sa.Column("source", sa.Text, nullable=False, server_default="transfers"),
)

reconciliation_runs = sa.Table(
    "reconciliation_runs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("partition_day", sa.Date, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("started_at", TZ, nullable=False),
    sa.Column("finished_at", TZ),
    sa.Column("complete", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("db_rows", sa.Integer),
    sa.Column("stripe_transfers", sa.Integer),
    sa.Column("stripe_calls", sa.Integer),
    sa.Column("open_findings", sa.Integer),
    sa.Column("error_message", sa.Text),
    sa.Column("kind", sa.Text, nullable=False, server_default="full"),
    # Migration 0009: changes up to here were visible to the run (NULL: started_at).
    sa.Column("covered_until", TZ),
    # Migration 0012: which side ran, and (refund side) refunds listed / still pending.
    sa.Column("source", sa.Text, nullable=False, server_default="transfers"),
    sa.Column("stripe_refunds", sa.Integer),
    sa.Column("pending_refunds", sa.Integer),
)

# The shared Stripe request budget (migration 0005; reversal_pipeline/stripe/shared_budget.py).
stripe_budget = sa.Table(
    "stripe_budget",
    metadata,
    sa.Column("account_key", sa.Text, primary_key=True),
    sa.Column("requests_per_second", sa.Float, nullable=False),
    sa.Column("next_slot_at", TZ, nullable=False),
    sa.Column("listing_next_at", TZ, nullable=False),
    sa.Column("paused_until", TZ, nullable=False),
    sa.Column("rate_factor", sa.Float, nullable=False, server_default="1"),
    sa.Column("rate_factor_at", TZ, nullable=False),
    sa.Column("rate_limited_total", sa.BigInteger, nullable=False, server_default="0"),
    # When a reversal last booked: listing is held to its floor while this is recent.
    sa.Column("reversal_booked_at", TZ, nullable=False),
    # When listing last booked: reversals leave listing its floor while this is recent.
    sa.Column("listing_booked_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
)

stripe_budget_holders = sa.Table(
    "stripe_budget_holders",
    metadata,
    sa.Column("account_key", sa.Text, primary_key=True),
    sa.Column("holder_id", sa.Text, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("granted_total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("granted_listing", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("waited_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("started_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("last_seen_at", TZ, nullable=False, server_default=sa.func.now()),
)

# Succeeded Stripe refunds that name no order (migration 0011): open until placed.
unplaced_stripe_refunds = sa.Table(
    "unplaced_stripe_refunds",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("refund_id", sa.Text, nullable=False, unique=True),
    sa.Column("charge_id", sa.Text),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("first_seen_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("resolved_at", TZ),
    sa.Column("resolution", sa.Text),
)

# Append-only trail of unplaced_stripe_refunds (migration 0011).
unplaced_stripe_refund_history = sa.Table(
    "unplaced_stripe_refund_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column(
        "unplaced_refund_id",
        sa.BigInteger,
        sa.ForeignKey("unplaced_stripe_refunds.id"),
        nullable=False,
    ),
    sa.Column("change", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)
