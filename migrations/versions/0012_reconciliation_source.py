"""``source`` on reconciliation findings and runs: the transfer side and the refund side.

``refund_reconciliation`` (issue 18) stores its findings in the same
``reconciliation_drift`` table and its runs in ``reconciliation_runs``, on the
same partition days (a refund's UTC ``created`` day) as the transfer side's
(a transfer's ``transferred_at`` day). Without a side, the transfer run of day
D would resolve the refund findings of day D it never looked for (and the
other way round), and a refund run would count as the transfer side's last
reconciliation of the day. Every store, resolve and staleness query filters
on ``source``. Existing rows are the transfer side's (the default).

A refund run also records how many refunds it listed and how many of them
were still pending: a pending refund may succeed later, so such a day is
looked at again (``reconciliation/refund_stale_days.py``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
ALTER TABLE reconciliation_drift ADD COLUMN source text NOT NULL DEFAULT 'transfers'
    CONSTRAINT chk_reconciliation_drift_source CHECK (source IN ('transfers', 'refunds'));
COMMENT ON COLUMN reconciliation_drift.source IS
    'Which reconciliation found it: transfers (reversal_reconciliation) or refunds '
    '(refund_reconciliation); a run resolves only its own side''s findings.';
ALTER TABLE reconciliation_runs ADD COLUMN source text NOT NULL DEFAULT 'transfers'
    CONSTRAINT chk_reconciliation_runs_source CHECK (source IN ('transfers', 'refunds'));
ALTER TABLE reconciliation_runs ADD COLUMN stripe_refunds integer;
ALTER TABLE reconciliation_runs ADD COLUMN pending_refunds integer;
COMMENT ON COLUMN reconciliation_runs.pending_refunds IS
    'Refunds of the day still pending when a refund run listed them: the day is re-checked.';
CREATE INDEX ix_reconciliation_runs_source_day
    ON reconciliation_runs (source, partition_day, started_at);
"""

DOWNGRADE_SQL = """
DROP INDEX ix_reconciliation_runs_source_day;
ALTER TABLE reconciliation_runs DROP COLUMN pending_refunds;
ALTER TABLE reconciliation_runs DROP COLUMN stripe_refunds;
ALTER TABLE reconciliation_runs DROP COLUMN source;
ALTER TABLE reconciliation_drift DROP COLUMN source;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
