"""TRUNCATE guard on the audit trail; the shared Stripe request budget.

The row-level append-only trigger of 0001 does not fire on TRUNCATE, and
``TRUNCATE seller_transfers CASCADE`` would empty ``reversal_attempts`` with
it: a statement-level trigger refuses TRUNCATE of either table (a CASCADE
truncates the audit table too, so its trigger fires and the whole statement
fails), and of ``refund_event_history``, the refund events' append-only trail.

``stripe_budget`` holds one row per Stripe account (keyed by a hash of the
API key, never the key): the GCRA schedule every process books its send slots
from. ``stripe_budget_holders`` lists the processes drawing on it, for
``reversal-pipeline status`` and the runs' metadata. See
``reversal_pipeline/stripe/shared_budget.py``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
CREATE FUNCTION refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only or holds audited money state (TRUNCATE refused)',
        TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER trg_reversal_attempts_no_truncate
    BEFORE TRUNCATE ON reversal_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate();
CREATE TRIGGER trg_seller_transfers_no_truncate
    BEFORE TRUNCATE ON seller_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate();
CREATE TRIGGER trg_refund_event_history_no_truncate
    BEFORE TRUNCATE ON refund_event_history
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate();

CREATE TABLE stripe_budget (
    account_key        text        PRIMARY KEY,
    requests_per_second double precision NOT NULL,
    next_slot_at       timestamptz NOT NULL,
    listing_next_at    timestamptz NOT NULL,
    paused_until       timestamptz NOT NULL,
    rate_factor        double precision NOT NULL DEFAULT 1,
    rate_factor_at     timestamptz NOT NULL,
    rate_limited_total bigint      NOT NULL DEFAULT 0,
    reversal_booked_at timestamptz NOT NULL,
    listing_booked_at  timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chk_stripe_budget_rate_positive CHECK (requests_per_second > 0),
    CONSTRAINT chk_stripe_budget_factor CHECK (rate_factor > 0 AND rate_factor <= 1)
);
COMMENT ON TABLE stripe_budget IS
    'One Stripe request budget per account (key = hash of the API key), shared by every process.';

CREATE TABLE stripe_budget_holders (
    account_key     text        NOT NULL,
    holder_id       text        NOT NULL,
    description     text        NOT NULL,
    granted_total   bigint      NOT NULL DEFAULT 0,
    granted_listing bigint      NOT NULL DEFAULT 0,
    waited_seconds  double precision NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_key, holder_id)
);
COMMENT ON TABLE stripe_budget_holders IS
    'Processes drawing on a stripe_budget row; rows idle for a day are pruned.';
"""

DOWNGRADE_SQL = """
DROP TABLE stripe_budget_holders;
DROP TABLE stripe_budget;
DROP TRIGGER trg_refund_event_history_no_truncate ON refund_event_history;
DROP TRIGGER trg_seller_transfers_no_truncate ON seller_transfers;
DROP TRIGGER trg_reversal_attempts_no_truncate ON reversal_attempts;
DROP FUNCTION refuse_truncate();
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
