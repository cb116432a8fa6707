"""A new refund event wakes the listening reversal run: NOTIFY on insert into ``refund_events``.

A ``reversal_job`` run started by ``refund_events_sensor`` keeps listening for
new events after its due rows (``reversal_pipeline/reversals/listen.py``), so a
refund waits for no process launch. It ``LISTEN``s on channel
``refund_events``; this trigger sends one notification per inserting statement,
delivered when the application's transaction commits (an insert rolled back
wakes nobody). The payload is empty on purpose: the notification is only a
hint, the run reads the inbox itself, and a lost notification (no listener, a
dropped connection) costs at most the run's poll interval.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
CREATE FUNCTION refund_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('refund_events', '');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION refund_events_notify() IS
    'Wakes a listening reversal_job run (channel refund_events); a hint, never the data.';
CREATE TRIGGER trg_refund_events_notify
    AFTER INSERT ON refund_events
    FOR EACH STATEMENT EXECUTE FUNCTION refund_events_notify();
"""

DOWNGRADE_SQL = """
DROP TRIGGER IF EXISTS trg_refund_events_notify ON refund_events;
DROP FUNCTION IF EXISTS refund_events_notify();
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
