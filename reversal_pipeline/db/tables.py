"""SQLAlchemy Core table definitions, used by every query in the package.

The migrations in ``migrations/`` are the authority on the schema (they
carry the Postgres-specific constraints, partial indexes and the trigger);
these definitions mirror the columns so queries are typed and checked, and
``tests/db/test_schema.py`` fails if the two drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

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
    # Stripe create-reversal calls ever started for this row. Never reset (an
    # operator requeue resets retry_count only), so idempotency keys built from
    # it are never reused; incremented before the call, so a crash after the
    # call still tells the next run to look for a reversal first.
    sa.Column("stripe_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    # Kept by a trigger (migration 0006): times the row left 'reversed'.
    sa.Column("reversal_generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
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
    sa.Column("first_seen_at", TZ, nullable=False),
    sa.Column("last_seen_at", TZ, nullable=False),
    sa.Column("resolved_at", TZ),
    sa.Column("last_run_id", sa.Text),
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
)
