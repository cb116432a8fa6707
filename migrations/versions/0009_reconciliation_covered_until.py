"""``reconciliation_runs.covered_until``: up to when a run surely saw every change.

Staleness compared a row's change time (the writing transaction's ``now()``,
its *start*) with the run's start, so a write that began before a run and
committed after the run read the day looked covered and was never re-checked
(issue 13). A run now records the earlier of its start and the start of the
oldest transaction open when it read the rows (``reconciliation/coverage.py``);
``stale_days`` and the incremental re-check compare with that. NULL (runs
stored before this migration) reads as ``started_at``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
ALTER TABLE reconciliation_runs ADD COLUMN covered_until timestamptz;
COMMENT ON COLUMN reconciliation_runs.covered_until IS
    'Changes up to here were visible to the run (NULL: started_at); stale_days compares with it.';
"""

DOWNGRADE_SQL = """
ALTER TABLE reconciliation_runs DROP COLUMN covered_until;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
