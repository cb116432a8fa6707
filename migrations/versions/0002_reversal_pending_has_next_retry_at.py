"""Every reversal_pending row must have a next_retry_at (NOT VALID: grandfathers old rows).

A ``reversal_pending`` row with NULL ``next_retry_at`` is never due, so the
job would never pick it up and the seller would keep the money. New writes
are checked at once; rows written before this migration are left alone until
``reversal-pipeline validate-constraints`` finds none violating and validates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE seller_transfers
            ADD CONSTRAINT chk_reversal_pending_has_next_retry_at
            CHECK (status <> 'reversal_pending' OR next_retry_at IS NOT NULL) NOT VALID
        """
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE seller_transfers DROP CONSTRAINT chk_reversal_pending_has_next_retry_at"
    )
