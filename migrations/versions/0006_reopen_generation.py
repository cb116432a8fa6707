"""A reversed row can be reopened: "reversed at most once" becomes "once per reopening".

``uq_reversal_attempts_one_reversed`` allowed one ``reversed`` audit row per
seller transfer, ever. A row set back to ``reversal_pending`` (the runbook's
answer to ``db_reversed_stripe_not``) could then never be written again: the
job's ``reversed`` audit row broke the index, the row was released, and so on
in every run (issue 12). Now every move of a row out of ``reversed`` (the
audited ``reopen`` command, or a hand edit) bumps the row's
``reversal_generation``; each ``reversed`` audit row takes the generation the
row has when it is written, and the index allows one per generation. The money
rule keeps its teeth: two ``reversed`` outcomes without a reopening between
them are still refused by the database.

Both generations are kept by the database (triggers), so no writer can forget
them and a hand edit is counted like the command.

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTIONS = (
    "'create_reversal', 'lookup_reversal', 'confirm_reversed', 'intake', 'release',"
    " 'validation', 'requeue', 'resolve', 'repair'"
)

UPGRADE_SQL = f"""
ALTER TABLE seller_transfers ADD COLUMN reversal_generation integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN seller_transfers.reversal_generation IS
    'Times the row left reversed (reopened); kept by trg_seller_transfers_reopened.';
ALTER TABLE reversal_attempts ADD COLUMN reversal_generation integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN reversal_attempts.reversal_generation IS
    'For a reversed outcome: the row''s reversal_generation when it was written.';

CREATE FUNCTION seller_transfers_reopened() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.reversal_generation := OLD.reversal_generation + 1;
    RETURN NEW;
END;
$$;
CREATE TRIGGER trg_seller_transfers_reopened
    BEFORE UPDATE ON seller_transfers
    FOR EACH ROW WHEN (OLD.status = 'reversed' AND NEW.status IS DISTINCT FROM 'reversed')
    EXECUTE FUNCTION seller_transfers_reopened();

CREATE FUNCTION reversal_attempts_take_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.reversal_generation := COALESCE(
        (SELECT reversal_generation FROM seller_transfers WHERE id = NEW.seller_transfer_id), 0);
    RETURN NEW;
END;
$$;
CREATE TRIGGER trg_reversal_attempts_take_generation
    BEFORE INSERT ON reversal_attempts
    FOR EACH ROW WHEN (NEW.status_after = 'reversed')
    EXECUTE FUNCTION reversal_attempts_take_generation();

DROP INDEX uq_reversal_attempts_one_reversed;
-- Money rule: a seller transfer reaches 'reversed' at most once per reopening.
CREATE UNIQUE INDEX uq_reversal_attempts_one_reversed
    ON reversal_attempts (seller_transfer_id, reversal_generation)
    WHERE status_after = 'reversed';

ALTER TABLE reversal_attempts DROP CONSTRAINT chk_reversal_attempts_action;
ALTER TABLE reversal_attempts ADD CONSTRAINT chk_reversal_attempts_action
    CHECK (action IN ({ACTIONS}, 'reopen'));
"""

DOWNGRADE_SQL = f"""
ALTER TABLE reversal_attempts DROP CONSTRAINT chk_reversal_attempts_action;
ALTER TABLE reversal_attempts ADD CONSTRAINT chk_reversal_attempts_action
    CHECK (action IN ({ACTIONS})) NOT VALID;
DROP INDEX uq_reversal_attempts_one_reversed;
CREATE UNIQUE INDEX uq_reversal_attempts_one_reversed
    ON reversal_attempts (seller_transfer_id) WHERE status_after = 'reversed';
DROP TRIGGER trg_reversal_attempts_take_generation ON reversal_attempts;
DROP FUNCTION reversal_attempts_take_generation();
DROP TRIGGER trg_seller_transfers_reopened ON seller_transfers;
DROP FUNCTION seller_transfers_reopened();
ALTER TABLE reversal_attempts DROP COLUMN reversal_generation;
ALTER TABLE seller_transfers DROP COLUMN reversal_generation;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    # Fails, as it should, once a row has been reversed twice: the old index cannot hold it.
    op.execute(DOWNGRADE_SQL)
