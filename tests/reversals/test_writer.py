"""The group-commit writer: rows written together, guarded by the claim, isolated on failure."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from reversal_pipeline.db.tables import reversal_attempts
from reversal_pipeline.reversals.claim import claim_due_rows, take_for_batch
from reversal_pipeline.reversals.record import (
    RowChange,
    StripeCallRecord,
    audit_rows_for,
    write_change,
)
from reversal_pipeline.reversals.writer import AUDIT_COLUMNS, GroupCommitWriter, WriteResult
from tests.plugins.marketplace import attempts_of, row_state, seed_rows

BATCH = "batch-1"


def _hold(engine: sa.Engine, token: str, *, max_rows: int) -> None:
    """Claim for run ``token`` and take the rows for its batch ``BATCH``, as a batch starts."""
    claim_due_rows(engine, token=token, max_rows=max_rows, lease_seconds=60)
    take_for_batch(engine, token=token, batch_id=BATCH, lease_seconds=60)


def _reversed(reversal_id: str, key: str) -> RowChange:
    call = StripeCallRecord(
        action="create_reversal",
        outcome="reversed",
        idempotency_key=key,
        stripe_reversal_id=reversal_id,
        attempt_number=1,
    )
    return RowChange(
        status_after="reversed", error_message=None, stripe_reversal_id=reversal_id, calls=(call,)
    )


def test_group_writes_each_row_with_its_audit_and_reports_lost_claims(engine: sa.Engine) -> None:
    rows = seed_rows(engine, None, 3, stripe_transfer_id=None)
    _hold(engine, "run-a", max_rows=2)  # the third stays free
    results: dict[int, WriteResult] = {}
    retry = RowChange(
        status_after="reversal_pending",
        error_message="attempt 1 failed",
        retry_count=1,
        retry_delay_seconds=120,
    )
    with GroupCommitWriter(engine, token="run-a", batch_id=BATCH, run_id="run-a") as writer:
        writer.submit(rows[0].id, _reversed("trr_1", "k1"), lambda w: results.update({0: w}))
        writer.submit(rows[1].id, retry, lambda w: results.update({1: w}))
        writer.submit(rows[2].id, _reversed("trr_3", "k3"), lambda w: results.update({2: w}))

    assert results == {
        0: WriteResult.WRITTEN,
        1: WriteResult.WRITTEN,
        2: WriteResult.CLAIM_LOST,
    }
    first, second, third = (row_state(engine, r.id) for r in rows)
    assert (first["status"], first["stripe_reversal_id"]) == ("reversed", "trr_1")
    assert first["reversed_at"] is not None
    assert first["claimed_by"] is None
    assert (second["status"], second["retry_count"]) == ("reversal_pending", 1)
    delay = (second["next_retry_at"] - second["updated_at"]).total_seconds()
    assert 119 <= delay <= 121
    assert third["status"] == "reversal_pending"  # not ours: untouched
    assert [a["status_after"] for a in attempts_of(engine, rows[0].id)] == ["reversed"]
    [lost] = attempts_of(engine, rows[2].id)  # the call is audited even without the claim
    assert lost["status_after"] is None
    assert "claim lost" in lost["message"]


def test_one_bad_row_does_not_hold_back_the_group(engine: sa.Engine) -> None:
    rows = seed_rows(engine, None, 2, stripe_transfer_id=None)
    _hold(engine, "run-b", max_rows=2)
    with engine.begin() as connection:  # a key already used: its audit insert must fail
        connection.execute(
            sa.text(
                "INSERT INTO reversal_attempts"
                " (seller_transfer_id, action, idempotency_key, outcome, actor)"
                " VALUES (:id, 'create_reversal', 'used-key', 'transient', 'test')"
            ),
            {"id": rows[0].id},
        )
    results: dict[int, WriteResult] = {}
    with GroupCommitWriter(engine, token="run-b", batch_id=BATCH, run_id="run-b") as writer:
        writer.submit(rows[0].id, _reversed("trr_a", "used-key"), lambda w: results.update({0: w}))
        writer.submit(rows[1].id, _reversed("trr_b", "fresh-key"), lambda w: results.update({1: w}))

    # The row that cannot be written is reported, not passed over in silence (issue 12).
    assert results == {0: WriteResult.FAILED, 1: WriteResult.WRITTEN}
    assert row_state(engine, rows[1].id)["status"] == "reversed"
    bad = row_state(engine, rows[0].id)
    assert bad["status"] == "reversal_pending"
    assert bad["claimed_by"] == "run-b"  # left claimed: the lease expires, a later run looks


def test_every_audit_row_carries_exactly_the_columns_the_group_insert_binds() -> None:
    """A column added to the table but not to the audit rows fails here, not at run time."""
    written_by_the_database = {"id", "created_at", "reversal_generation"}
    bound = {name for name, _ in AUDIT_COLUMNS}
    assert bound == {c.name for c in reversal_attempts.columns} - written_by_the_database
    with_calls = audit_rows_for(7, "run-x", _reversed("trr_x", "k-x"), written=True)
    validation_only = audit_rows_for(
        7, "run-x", RowChange(status_after="permanently_failed", error_message="bad"), written=True
    )
    for audit_row in [*with_calls, *validation_only]:
        assert set(audit_row) == bound


def test_a_group_keeps_every_field_of_every_call(engine: sa.Engine) -> None:
    """The column-wise INSERT loses nothing: NULLs, integers and text land where they belong."""
    rows = seed_rows(engine, None, 2, stripe_transfer_id=None)
    _hold(engine, "run-c", max_rows=2)
    lookup = StripeCallRecord(
        action="lookup_reversal", outcome="not_found", message="no reversal from an earlier attempt"
    )
    failed = StripeCallRecord(
        action="create_reversal",
        outcome="transient",
        attempt_number=2,
        idempotency_key="reversal_pipeline:seller_transfer:x:attempt:2",
        http_status=500,
        stripe_code="api_error",
        stripe_request_id="req_abc",
        message="StripeTransientError: boom",
    )
    retry = RowChange(
        status_after="reversal_pending",
        error_message="attempt 2 failed",
        retry_count=2,
        retry_delay_seconds=60,
        calls=(lookup, failed),
    )
    done = _reversed("trr_c", "k-c")
    writer = GroupCommitWriter(engine, token="run-c", batch_id=BATCH, run_id="run-c")
    # Queued before the writer starts, so its first take is both rows: one group.
    writer.submit(rows[0].id, retry, lambda _w: None)
    writer.submit(rows[1].id, done, lambda _w: None)
    with writer:
        pass

    assert writer.groups_written == 1
    for row, change in ((rows[0], retry), (rows[1], done)):
        expected = audit_rows_for(row.id, "run-c", change, written=True)
        stored = [{name: a[name] for name, _ in AUDIT_COLUMNS} for a in attempts_of(engine, row.id)]
        assert stored == expected


def test_a_group_stays_open_for_more_rows_and_closing_cuts_the_wait_short(
    engine: sa.Engine,
) -> None:
    rows = seed_rows(engine, None, 3, stripe_transfer_id=None)
    _hold(engine, "run-d", max_rows=3)
    linger = 30.0
    started = time.monotonic()
    with GroupCommitWriter(
        engine, token="run-d", batch_id=BATCH, run_id="run-d", max_wait_seconds=linger
    ) as writer:
        for i, row in enumerate(rows):
            writer.submit(row.id, _reversed(f"trr_d{i}", f"k-d{i}"), lambda _w: None)
    # One transaction for the three rows, written as soon as the writer was closed
    # rather than after the group's wait ran out.
    assert writer.groups_written == 1
    assert time.monotonic() - started < linger
    assert all(row_state(engine, row.id)["status"] == "reversed" for row in rows)


def test_an_open_group_is_written_when_its_wait_runs_out(engine: sa.Engine) -> None:
    """The writer does not hold outcomes until it is closed."""
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=None)
    _hold(engine, "run-e", max_rows=1)
    written = threading.Event()
    with GroupCommitWriter(
        engine, token="run-e", batch_id=BATCH, run_id="run-e", max_wait_seconds=0.05
    ) as w:
        w.submit(row.id, _reversed("trr_e", "k-e"), lambda _w: written.set())
        assert written.wait(timeout=30), "the group was not written while the writer was open"
        assert row_state(engine, row.id)["status"] == "reversed"


def test_a_malformed_row_whose_claim_was_lost_is_left_to_its_new_holder(
    engine: sa.Engine,
) -> None:
    """No Stripe call and no write: nothing happened to the row, so nothing is audited.

    The new holder validates the row again and records the outcome with its own audit
    row; an audit row here would claim a state change that never took place.
    """
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=None)
    _hold(engine, "run-old", max_rows=1)
    with engine.begin() as connection:  # another run takes the row over
        connection.execute(
            sa.text("UPDATE seller_transfers SET claimed_by = 'run-new' WHERE id = :id"),
            {"id": row.id},
        )
    change = RowChange(status_after="permanently_failed", error_message="bad transfer id")
    assert audit_rows_for(row.id, "run-old", change, written=False) == []
    assert audit_rows_for(row.id, "run-old", change, written=True) != []

    written = write_change(
        engine, row_id=row.id, token="run-old", batch_id=BATCH, run_id="run-old", change=change
    )

    assert written is False
    assert attempts_of(engine, row.id) == []
    assert row_state(engine, row.id)["status"] == "reversal_pending"
