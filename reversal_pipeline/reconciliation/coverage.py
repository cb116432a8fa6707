"""Up to when a reconciliation run has certainly seen every committed change.

A row's ``reconciliation_changed_at`` is the writing transaction's ``now()``,
i.e. when that transaction *began*. A transaction that began before a run
started and committed after the run read the day carries a time earlier than
the run's start, yet the run never saw its change: compared with the start,
the change looked covered and the day was never re-checked.

So a run's coverage ends at its start or at the start of the oldest
transaction still open in the database when it reads the rows, whichever is
earlier. Any write the read could not see is in a transaction open at that
moment (its ``now()`` is at or after that oldest start) or one begun after it
(after the run started): either way its change is later than the coverage, so
the day stays stale and a later run looks at the row again.

Needs to see other roles' sessions in ``pg_stat_activity`` (superuser, or
membership of ``pg_read_all_stats``). Where some sessions are hidden, the
coverage falls back to the start minus ``HIDDEN_SESSIONS_MARGIN``, which
assumes no writing transaction lasts longer than that. Either way the error
is on the safe side: a change may be re-checked once more, never missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

# Longer than any transaction that writes seller_transfers should last (the job's
# are milliseconds); used only when pg_stat_activity hides some sessions.
HIDDEN_SESSIONS_MARGIN = timedelta(minutes=10)

# One microsecond before the oldest open transaction began: a change stamped with
# exactly that transaction's now() must compare as later than the coverage.
_BEFORE = timedelta(microseconds=1)

_OPEN_TRANSACTIONS = sa.text(
    """
    SELECT min(xact_start) AS oldest,
           count(*) FILTER (WHERE query = '<insufficient privilege>') AS hidden
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      -- Autovacuum and other workers write no rows of ours; a hidden session may say NULL.
      AND coalesce(backend_type, 'client backend') = 'client backend'
    """
)


def covered_until(connection: sa.Connection, started_at: datetime) -> datetime:
    """The time up to which changes are surely visible to a read made now on ``connection``.

    Call it right before the run reads ``seller_transfers``, on the connection
    that reads: a transaction that begins after this call began after the run
    started, so its changes already count as later than ``started_at``.
    """
    row = connection.execute(_OPEN_TRANSACTIONS).one()
    if row.hidden:
        return started_at - HIDDEN_SESSIONS_MARGIN
    if row.oldest is None:
        return started_at
    return min(started_at, row.oldest - _BEFORE)
