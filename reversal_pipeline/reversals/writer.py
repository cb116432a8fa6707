"""Group commit: many rows' outcomes written in one transaction by one thread.

A write per row (BEGIN, UPDATE, INSERT, COMMIT) costs more CPU and round trips
than the Stripe call itself (``benchmarks/pipeline_cost.py``, figures in
``benchmarks/RESULTS.md``). So workers hand their decided row to this
writer and go on with the next one; the writer takes whatever is waiting (up
to ``max_rows``) and writes it as one guarded ``UPDATE ... FROM unnest(...)``
and one multi-row audit ``INSERT``, in one transaction.

Money safety is unchanged: every row was counted in ``stripe_attempts``
before its call, so an outcome still queued when the process dies is found
by the next run's look-up, exactly as one lost between the call and a
per-row write. Each row's state change and its audit rows still commit
together, and only while this run's batch holds the row's claim. If a group fails
(a constraint, a bug), its rows are written one by one, so one bad row never
holds back the others; a row that still cannot be written is reported
``FAILED`` (the batch lists it and the run fails) after its Stripe calls are
audited on their own if the database takes them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from reversal_pipeline.db.tables import reversal_attempts
from reversal_pipeline.reversals.record import (
    RowChange,
    audit_rows_for,
    record_calls,
    write_change,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 200
# How long a group stays open for more rows after its first. Without it the
# writer, being quicker than the workers, committed groups of ~8 rows (385
# transactions for 3,000 rows), and a group's fixed cost (BEGIN, two
# statements, COMMIT, SQLAlchemy's bookkeeping) was the largest share of the
# job's own CPU beside the Stripe calls. An outcome reaching the database up to
# this much later changes no guarantee: its attempt was counted before the call.
DEFAULT_MAX_WAIT_SECONDS = 0.05

GROUP_UPDATE = sa.text(
    """
    UPDATE seller_transfers AS s SET
        status = v.status,
        error_message = v.error_message,
        stripe_reversal_id = CASE WHEN v.status = 'reversed'
                                  THEN v.stripe_reversal_id ELSE s.stripe_reversal_id END,
        reversed_at = CASE WHEN v.status = 'reversed' THEN now() ELSE s.reversed_at END,
        next_retry_at = CASE WHEN v.retry_delay_seconds IS NULL THEN NULL
                             ELSE now() + make_interval(secs => v.retry_delay_seconds) END,
        retry_count = COALESCE(v.retry_count, s.retry_count),
        amount_reversed = COALESCE(v.amount_reversed, s.amount_reversed),
        claimed_by = NULL,
        claimed_by_batch = NULL,
        claim_expires_at = NULL
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:error_messages AS text[]),
        CAST(:reversal_ids AS text[]), CAST(:retry_counts AS integer[]),
        CAST(:retry_delays AS double precision[]), CAST(:amounts_reversed AS bigint[])
    ) AS v(id, status, error_message, stripe_reversal_id, retry_count, retry_delay_seconds,
           amount_reversed)
    WHERE s.id = v.id AND s.claimed_by = :token AND s.claimed_by_batch = :batch
      AND s.status = 'reversal_pending'
      -- reversed only if what Stripe confirmed covers the target as it is now (issue 17)
      -- (NULL: the change does not say; every change the job makes does)
      AND (v.status <> 'reversed' OR v.amount_reversed IS NULL
           OR s.reversal_target <= v.amount_reversed)
    RETURNING s.id
    """
)


# The audit rows of a group in one statement, as columns: the same single round
# trip as the state change above. SQLAlchemy's ``insert(table)`` with a list of
# dicts compiles and binds every row in Python, about twice the CPU of this on the
# writer thread (benchmarks/RESULTS.md, change 10), which shares the GIL with the
# workers calling Stripe. The columns are the table's own, less those
# the database fills in (the identity and the defaults).
AUDIT_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (column.name, column.type.compile(dialect=postgresql.dialect()))
    for column in reversal_attempts.columns
    if column.identity is None and column.server_default is None
)
GROUP_AUDIT_INSERT = sa.text(
    f"INSERT INTO {reversal_attempts.name} ({', '.join(name for name, _ in AUDIT_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {sql_type}[])" for name, sql_type in AUDIT_COLUMNS)
    + ")"
)


class WriteResult(StrEnum):
    """What became of a row's outcome write."""

    WRITTEN = "written"
    #: Another run holds the row now: the calls were audited, the state left alone.
    CLAIM_LOST = "claim_lost"
    #: The write failed (a constraint, the connection): nothing of the outcome committed.
    FAILED = "failed"


@dataclass(frozen=True)
class _Pending:
    row_id: int
    change: RowChange
    on_written: Callable[[WriteResult], None]


_CLOSE = object()


class GroupCommitWriter:
    """One background thread that writes decided rows in groups. Use as a context manager."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        token: str,
        batch_id: str,
        run_id: str | None,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        self.engine = engine
        self.token = token
        self.batch_id = batch_id
        self.run_id = run_id
        self.max_rows = max_rows
        self.max_wait_seconds = max_wait_seconds
        self.groups_written = 0
        self._queue: queue.Queue[_Pending | object] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reversal-writer", daemon=True)

    def __enter__(self) -> GroupCommitWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, row_id: int, change: RowChange, on_written: Callable[[WriteResult], None]
    ) -> None:
        """Queue a row's change; ``on_written(result)`` is called once it is settled."""
        self._queue.put(_Pending(row_id, change, on_written))

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        if self._thread.is_alive():
            self._closing.set()  # cuts an open group's wait short
            self._queue.put(_CLOSE)
            self._thread.join()

    def _loop(self) -> None:
        closing = False
        while not closing:
            group: list[_Pending] = []
            item = self._queue.get()
            if item is not _CLOSE:
                # Let the group fill by waiting once, not by waking for every row
                # as it is queued (each wake takes the GIL from the workers).
                self._closing.wait(self.max_wait_seconds)
            while True:
                if item is _CLOSE:
                    closing = True
                else:
                    assert isinstance(item, _Pending)
                    group.append(item)
                if closing or len(group) >= self.max_rows:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group:
                self._write(group)

    def _write(self, group: list[_Pending]) -> None:
        try:
            written_ids = self._write_group(group)
        except Exception:
            log.exception("group write of %d row(s) failed; writing them one by one", len(group))
            self._write_one_by_one(group)
            return
        self.groups_written += 1
        for pending in group:
            self._notify(pending, _result(pending.row_id in written_ids))

    def _write_group(self, group: list[_Pending]) -> set[int]:
        changes = [p.change for p in group]
        params = {
            "token": self.token,
            "batch": self.batch_id,
            "ids": [p.row_id for p in group],
            "statuses": [c.status_after for c in changes],
            "error_messages": [c.error_message for c in changes],
            "reversal_ids": [c.stripe_reversal_id for c in changes],
            "retry_counts": [c.retry_count for c in changes],
            "retry_delays": [c.retry_delay_seconds for c in changes],
            "amounts_reversed": [c.amount_reversed for c in changes],
        }
        with self.engine.begin() as connection:
            written_ids = set(connection.execute(GROUP_UPDATE, params).scalars())
            audit_rows = [
                audit_row
                for p in group
                for audit_row in audit_rows_for(
                    p.row_id, self.run_id, p.change, written=p.row_id in written_ids
                )
            ]
            if audit_rows:
                connection.execute(
                    GROUP_AUDIT_INSERT,
                    {name: [row[name] for row in audit_rows] for name, _ in AUDIT_COLUMNS},
                )
        return written_ids

    def _write_one_by_one(self, group: list[_Pending]) -> None:
        for pending in group:
            try:
                written = write_change(
                    self.engine,
                    row_id=pending.row_id,
                    token=self.token,
                    batch_id=self.batch_id,
                    run_id=self.run_id,
                    change=pending.change,
                )
            except Exception:
                # Released at the end of the run; its attempt was counted, so the next
                # run looks on Stripe first. Loud: the batch lists it, the run fails.
                log.exception("seller transfer %s: outcome not written", pending.row_id)
                self._audit_calls_alone(pending)
                self._notify(pending, WriteResult.FAILED)
                continue
            self._notify(pending, _result(written))

    def _audit_calls_alone(self, pending: _Pending) -> None:
        """Keep the record of the Stripe calls even when the state change cannot commit."""
        try:
            record_calls(
                self.engine, row_id=pending.row_id, run_id=self.run_id, calls=pending.change.calls
            )
        except Exception:
            log.exception("seller transfer %s: its Stripe calls not audited", pending.row_id)

    @staticmethod
    def _notify(pending: _Pending, result: WriteResult) -> None:
        try:
            pending.on_written(result)
        except Exception:  # a reporting bug must not stop the writes of other rows
            log.exception("seller transfer %s: outcome callback failed", pending.row_id)


def _result(written: bool) -> WriteResult:
    return WriteResult.WRITTEN if written else WriteResult.CLAIM_LOST
