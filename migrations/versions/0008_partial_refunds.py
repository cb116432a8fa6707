"""Partial refunds: a cumulative reversal target per seller transfer (issue 17).

Until now any refund of an order reversed every paid seller transfer of that
order in full. A refund now says how much it returns (``refund_events.amount``,
null = the whole order, in the seller transfer's ``currency``) and may name the
transfer it concerns (``seller_transfer_id``). Each ``seller_transfers`` row
keeps what its seller owes back (``reversal_target``, 0..``amount``) and what
Stripe has confirmed of our reversals for it (``amount_reversed``); the status
machine and its constraint stay as they were.

``refund_allocations`` (append-only, like ``reversal_attempts``) records each
refund's share of each transfer and the target before and after, so every
target change is audited and ``show`` and the reports can list each refund.

Backfill: rows already on their way back (``reversal_pending``,
``permanently_failed``) or done (``reversed``) owed their whole amount under the
old rule, so their target is their amount; a ``reversed`` row has had it all
confirmed. A row moved on its way back without a target by anything but intake
(the application, a hand edit) gets its whole amount as target from a trigger,
the seed's meaning of ``reversal_pending``. The new CHECKs are added NOT VALID
(a hand-edited row must not stop the deploy) and validated by
``reversal-pipeline db validate-constraints``.

Revision ID: 0008
Revises: 0007 (the lead re-chains at merge)
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ACTIONS = (
    "'create_reversal', 'lookup_reversal', 'confirm_reversed', 'intake', 'release',"
    " 'validation', 'requeue', 'resolve', 'repair', 'reopen'"
)
CLOSING = "'reversal_requested', 'payout_failed', 'closed_by_operator'"
OPEN = "'waiting_for_transfer', 'waiting_for_payout', 'expired_unmatched'"
# Refused: nothing changed, the event stays open (never dropped) until a person acts.
REFUSED = "'needs_scope', 'over_refund', 'currency_mismatch'"

UPGRADE_SQL = f"""
ALTER TABLE refund_events ADD COLUMN amount bigint;
ALTER TABLE refund_events ADD COLUMN currency text;
ALTER TABLE refund_events ADD COLUMN seller_transfer_id bigint REFERENCES seller_transfers (id);
COMMENT ON COLUMN refund_events.amount IS
    'Minor units in the seller transfer''s currency; NULL = the whole order.';
COMMENT ON COLUMN refund_events.seller_transfer_id IS
    'The seller transfer the refund concerns; NULL = let REVERSAL_PARTIAL_REFUND_POLICY decide.';
ALTER TABLE refund_events ADD CONSTRAINT chk_refund_events_amount CHECK (
    amount IS NULL OR (amount > 0 AND currency IS NOT NULL)) NOT VALID;
ALTER TABLE refund_events ADD CONSTRAINT chk_refund_events_currency_format CHECK (
    currency IS NULL OR currency ~ '^[a-z]{{3}}$') NOT VALID;

ALTER TABLE refund_events DROP CONSTRAINT chk_refund_events_outcome;
ALTER TABLE refund_events ADD CONSTRAINT chk_refund_events_outcome CHECK (
    (processed_at IS NULL AND (outcome IS NULL OR outcome IN ({OPEN}, {REFUSED})))
    OR (processed_at IS NOT NULL AND outcome IN ({CLOSING})));

ALTER TABLE seller_transfers ADD COLUMN reversal_target bigint NOT NULL DEFAULT 0;
ALTER TABLE seller_transfers ADD COLUMN amount_reversed bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN seller_transfers.reversal_target IS
    'What the seller owes back on this transfer (0..amount); reversed = Stripe confirms it.';
COMMENT ON COLUMN seller_transfers.amount_reversed IS
    'What Stripe has confirmed of our reversals for this row.';
-- The backfill below re-checks every CHECK on the rows it touches, including the
-- ones added NOT VALID (0002, 0004) that grandfathered rows still break: such a row
-- would fail the migration. Those checks are set aside for the backfill and put back
-- exactly as they were (pg_get_constraintdef keeps NOT VALID), so the rows stay
-- grandfathered and `validate-constraints` still reports them.
CREATE TEMPORARY TABLE grandfathered_checks ON COMMIT DROP AS
SELECT conname, pg_get_constraintdef(oid) AS definition
FROM pg_constraint
WHERE conrelid = 'seller_transfers'::regclass AND contype = 'c' AND NOT convalidated;
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM grandfathered_checks LOOP
        EXECUTE format('ALTER TABLE seller_transfers DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
UPDATE seller_transfers SET reversal_target = amount
WHERE status IN ('reversal_pending', 'reversed', 'permanently_failed');
UPDATE seller_transfers SET amount_reversed = amount WHERE status = 'reversed';
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, definition FROM grandfathered_checks LOOP
        EXECUTE format('ALTER TABLE seller_transfers ADD CONSTRAINT %I %s',
                       c.conname, c.definition);
    END LOOP;
END $$;
-- The seed's contract: a row put on its way back without a target (the application's
-- own insert or update, a hand edit) owes its whole amount, as every row did before
-- partial refunds; a reversed one has had it confirmed. Intake always sets a target
-- first, so this never overrides an allocation.
CREATE FUNCTION seller_transfers_default_target() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.reversal_target := NEW.amount;
    IF TG_OP = 'INSERT' AND NEW.status = 'reversed' AND NEW.amount_reversed = 0 THEN
        NEW.amount_reversed := NEW.amount;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER trg_seller_transfers_default_target
    BEFORE INSERT OR UPDATE OF status ON seller_transfers
    FOR EACH ROW WHEN (NEW.reversal_target = 0
        AND NEW.status IN ('reversal_pending', 'reversed', 'permanently_failed'))
    EXECUTE FUNCTION seller_transfers_default_target();
-- A row that owed its whole amount still does when its amount is corrected by hand.
CREATE FUNCTION seller_transfers_target_follows_amount() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.reversal_target := NEW.amount;
    RETURN NEW;
END;
$$;
CREATE TRIGGER trg_seller_transfers_target_follows_amount
    BEFORE UPDATE OF amount ON seller_transfers
    FOR EACH ROW WHEN (OLD.reversal_target = OLD.amount AND OLD.reversal_target > 0
        AND NEW.reversal_target = OLD.reversal_target AND NEW.amount IS DISTINCT FROM OLD.amount)
    EXECUTE FUNCTION seller_transfers_target_follows_amount();
ALTER TABLE seller_transfers ADD CONSTRAINT chk_seller_transfers_amount_reversed_nonnegative
    CHECK (amount_reversed >= 0) NOT VALID;
ALTER TABLE seller_transfers ADD CONSTRAINT chk_seller_transfers_reversal_target_range
    CHECK (reversal_target >= 0 AND reversal_target <= amount) NOT VALID;

CREATE TABLE refund_allocations (
    id                  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    refund_event_id     bigint      NOT NULL REFERENCES refund_events (id),
    seller_transfer_id  bigint      NOT NULL REFERENCES seller_transfers (id),
    amount              bigint      NOT NULL,
    target_before       bigint      NOT NULL,
    target_after        bigint      NOT NULL,
    detail              text        NOT NULL,
    run_id              text,
    actor               text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chk_refund_allocations_amount CHECK (amount >= 0),
    CONSTRAINT chk_refund_allocations_target CHECK (target_after >= target_before)
);
COMMENT ON TABLE refund_allocations IS
    'Append-only: each refund''s share of a seller transfer''s reversal target.';
CREATE INDEX ix_refund_allocations_transfer ON refund_allocations (seller_transfer_id, id);
CREATE INDEX ix_refund_allocations_event ON refund_allocations (refund_event_id, id);
CREATE TRIGGER trg_refund_allocations_append_only
    BEFORE UPDATE OR DELETE ON refund_allocations
    FOR EACH ROW EXECUTE FUNCTION reversal_attempts_append_only();

ALTER TABLE reversal_attempts DROP CONSTRAINT chk_reversal_attempts_action;
ALTER TABLE reversal_attempts ADD CONSTRAINT chk_reversal_attempts_action
    CHECK (action IN ({ACTIONS}, 'adjust'));
"""

DOWNGRADE_SQL = f"""
ALTER TABLE reversal_attempts DROP CONSTRAINT chk_reversal_attempts_action;
ALTER TABLE reversal_attempts ADD CONSTRAINT chk_reversal_attempts_action
    CHECK (action IN ({ACTIONS})) NOT VALID;
DROP TABLE refund_allocations;
DROP TRIGGER trg_seller_transfers_target_follows_amount ON seller_transfers;
DROP FUNCTION seller_transfers_target_follows_amount();
DROP TRIGGER trg_seller_transfers_default_target ON seller_transfers;
DROP FUNCTION seller_transfers_default_target();
ALTER TABLE seller_transfers DROP COLUMN amount_reversed;
ALTER TABLE seller_transfers DROP COLUMN reversal_target;
-- The old schema knew no refusals: such an event waits, as an early refund did.
UPDATE refund_events SET outcome = 'waiting_for_payout'
WHERE processed_at IS NULL AND outcome IN ({REFUSED});
ALTER TABLE refund_events DROP CONSTRAINT chk_refund_events_outcome;
ALTER TABLE refund_events ADD CONSTRAINT chk_refund_events_outcome CHECK (
    (processed_at IS NULL AND (outcome IS NULL OR outcome IN ({OPEN})))
    OR (processed_at IS NOT NULL AND outcome IN ({CLOSING})));
ALTER TABLE refund_events DROP COLUMN seller_transfer_id;
ALTER TABLE refund_events DROP COLUMN currency;
ALTER TABLE refund_events DROP COLUMN amount;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
