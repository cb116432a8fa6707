"""A claim is fenced to the one batch that holds it, not only to its run.

``claimed_by`` is the run's id. Two ``ReversalBatch`` objects of one run (a
step retried inside the run while the first attempt's threads still send)
both passed every guard keyed on it, so both sent the same row, and a partial
amount was reversed twice (issue 12, defect 4, the core-level half).

``claimed_by_batch`` names the batch inside that run that holds the row. The
claim leaves it NULL (held by the run, no batch yet); a batch takes the run's
rows when it starts, only those no other live batch holds; every read of its
pages, every attempt counted before a send, every lease renewal, every
outcome write and its release are guarded by both columns. Places that look
at a run's claims (``status``, the re-execution's ``count_held``, metadata)
keep reading ``claimed_by``. Not audited, like ``claimed_by``: a claim is not
a state change of the row. Covered by the table-level grants of
``db/roles.py``.

A NULL ``claimed_by`` makes the column meaningless, and a new claim always
resets it, so operator commands that clear ``claimed_by`` need not know it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
ALTER TABLE seller_transfers ADD COLUMN claimed_by_batch text;
COMMENT ON COLUMN seller_transfers.claimed_by_batch IS
    'The ReversalBatch inside run claimed_by that holds the row; NULL until a batch takes it.';
"""

DOWNGRADE_SQL = """
ALTER TABLE seller_transfers DROP COLUMN claimed_by_batch;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
