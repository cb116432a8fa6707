"""The group-commit writer's less travelled paths, against the real PostgreSQL (issue 12 mutants).

``test_writer.py`` covers a group written whole. These cover what mutation
testing found unchecked: a group cut at ``max_rows``, the one-by-one path
after a failed group (each row's own claim, run id and audit), a state change
the database refuses (its Stripe calls audited alone, the row reported
``FAILED``), and a callback that raises.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.claim import claim_due_rows, take_for_batch
from reversal_pipeline.reversals.record import RowChange, StripeCallRecord
from reversal_pipeline.reversals.writer import GroupCommitWriter, WriteResult
from tests.plugins.marketplace import attempts_of, row_state, seed_rows


def _call(key: str, outcome: str = "reversed", reversal_id: str | None = None) -> StripeCallRecord:
    return StripeCallRecord(
        action="create_reversal",
        outcome=outcome,
        attempt_number=1,
        idempotency_key=key,
        stripe_reversal_id=reversal_id,
        http_status=None if outcome == "reversed" else 500,
    )


def _reversed(reversal_id: str, key: str) -> RowChange:
    return RowChange(
        status_after="reversed",
        error_message=None,
        stripe_reversal_id=reversal_id,
        calls=(_call(key, reversal_id=reversal_id),),
    )


def _unwritable(key: str) -> RowChange:
    """A state change the database refuses (``chk_seller_transfers_retry_count``)."""
    return RowChange(
        status_after="reversal_pending",
        error_message="attempt failed",
        retry_count=-1,
        retry_delay_seconds=60,
        calls=(_call(key, outcome="transient"),),
    )


def _claim(engine: sa.Engine, token: str, max_rows: int) -> str:
    """Claim for run ``token`` and hold the rows for its batch (claims are fenced per batch)."""
    claim_due_rows(engine, token=token, max_rows=max_rows, lease_seconds=60)
    batch_id = f"{token}-batch"
    take_for_batch(engine, token=token, batch_id=batch_id, lease_seconds=60)
    return batch_id


def test_a_group_is_cut_at_max_rows(engine: sa.Engine) -> None:
    rows = seed_rows(engine, None, 3, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-m", 3)
    results: dict[int, WriteResult] = {}
    writer = GroupCommitWriter(engine, token="run-m", batch_id=batch_id, run_id="run-m", max_rows=2)
    # Queued before the writer starts: its first take could hold all three.
    for i, row in enumerate(rows):
        writer.submit(
            row.id, _reversed(f"trr_m{i}", f"k-m{i}"), lambda w, i=i: results.update({i: w})
        )
    with writer:
        pass

    assert writer.groups_written == 2  # two rows, then one
    assert results == {i: WriteResult.WRITTEN for i in range(3)}
    for i, row in enumerate(rows):
        state = row_state(engine, row.id)
        assert (state["status"], state["stripe_reversal_id"]) == ("reversed", f"trr_m{i}")


def test_after_a_failed_group_each_row_is_written_alone_with_its_audit(engine: sa.Engine) -> None:
    good, bad, other = seed_rows(engine, None, 3, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-o", 2)  # `other` stays free
    results: dict[str, WriteResult] = {}
    writer = GroupCommitWriter(engine, token="run-o", batch_id=batch_id, run_id="run-o")
    writer.submit(bad.id, _unwritable("k-bad"), lambda w: results.update(bad=w))
    writer.submit(good.id, _reversed("trr_good", "k-good"), lambda w: results.update(good=w))
    writer.submit(other.id, _reversed("trr_other", "k-other"), lambda w: results.update(other=w))
    with writer:
        pass

    # The group failed as a whole, so no group counts as written; each row went alone.
    assert writer.groups_written == 0
    assert results == {
        "bad": WriteResult.FAILED,
        "good": WriteResult.WRITTEN,
        "other": WriteResult.CLAIM_LOST,
    }
    state = row_state(engine, good.id)
    assert (state["status"], state["stripe_reversal_id"], state["claimed_by"]) == (
        "reversed",
        "trr_good",
        None,
    )
    assert state["claimed_by_batch"] is None
    [audit] = attempts_of(engine, good.id)
    assert (audit["run_id"], audit["idempotency_key"], audit["status_after"]) == (
        "run-o",
        "k-good",
        "reversed",
    )
    assert row_state(engine, other.id)["status"] == "reversal_pending"
    [lost] = attempts_of(engine, other.id)
    assert (lost["run_id"], lost["status_after"]) == ("run-o", None)


def test_a_refused_state_change_keeps_its_stripe_calls_audited(engine: sa.Engine) -> None:
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-f", 1)
    results: list[WriteResult] = []
    with GroupCommitWriter(engine, token="run-f", batch_id=batch_id, run_id="run-f") as writer:
        writer.submit(row.id, _unwritable("k-f"), results.append)

    assert results == [WriteResult.FAILED]
    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"], state["claimed_by"]) == (
        "reversal_pending",
        0,
        "run-f",  # left claimed: the next run looks on Stripe before sending again
    )
    assert state["claimed_by_batch"] == batch_id
    [audit] = attempts_of(engine, row.id)  # the call that was made, recorded on its own
    assert (audit["action"], audit["outcome"], audit["idempotency_key"]) == (
        "create_reversal",
        "transient",
        "k-f",
    )
    assert (audit["run_id"], audit["http_status"], audit["status_after"]) == ("run-f", 500, None)


def test_a_callback_that_raises_does_not_stop_the_other_rows(engine: sa.Engine) -> None:
    rows = seed_rows(engine, None, 4, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-c", 4)
    results: dict[int, WriteResult] = {}

    def broken(_result: WriteResult) -> None:
        raise RuntimeError("a reporting bug")

    writer = GroupCommitWriter(engine, token="run-c", batch_id=batch_id, run_id="run-c")
    # A group written whole (rows 0, 1), then one written row by row (rows 2, 3).
    writer.submit(rows[0].id, _reversed("trr_c0", "k-c0"), broken)
    writer.submit(rows[1].id, _reversed("trr_c1", "k-c1"), lambda w: results.update({1: w}))
    with writer:
        pass
    writer = GroupCommitWriter(engine, token="run-c", batch_id=batch_id, run_id="run-c")
    writer.submit(rows[2].id, _unwritable("k-c2"), broken)
    writer.submit(rows[3].id, _reversed("trr_c3", "k-c3"), lambda w: results.update({3: w}))
    with writer:
        pass

    assert results == {1: WriteResult.WRITTEN, 3: WriteResult.WRITTEN}
    for i in (0, 1, 3):
        assert row_state(engine, rows[i].id)["stripe_reversal_id"] == f"trr_c{i}"


def test_closing_twice_is_harmless_and_an_unstarted_writer_closes(engine: sa.Engine) -> None:
    writer = GroupCommitWriter(engine, token="run-z", batch_id="run-z-batch", run_id="run-z")
    writer.close()  # never started: nothing to join
    with writer:
        pass
    writer.close()
    assert writer.groups_written == 0


def test_every_failure_is_logged_at_error_naming_the_row(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator reading the log sees which row lost what, with the traceback."""
    bad, good = seed_rows(engine, None, 2, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-l", 2)
    with engine.begin() as connection:  # its call's key already used: nothing of it commits
        connection.execute(
            sa.text(
                "INSERT INTO reversal_attempts"
                " (seller_transfer_id, action, idempotency_key, outcome, actor)"
                " VALUES (:id, 'create_reversal', 'k-used', 'transient', 'test')"
            ),
            {"id": bad.id},
        )

    def broken(_result: WriteResult) -> None:
        raise RuntimeError("a reporting bug")

    writer = GroupCommitWriter(engine, token="run-l", batch_id=batch_id, run_id="run-l")
    writer.submit(bad.id, _unwritable("k-used"), lambda _w: None)
    writer.submit(good.id, _reversed("trr_l", "k-l"), broken)
    with caplog.at_level(logging.ERROR, logger="reversal_pipeline.reversals.writer"), writer:
        pass

    logged = [
        (r.levelname, r.getMessage(), r.exc_info is not None, r.threadName)
        for r in caplog.records
        if r.name == "reversal_pipeline.reversals.writer"
    ]
    thread = "reversal-writer"  # named, so its lines can be told from the workers'
    assert logged == [
        ("ERROR", "group write of 2 row(s) failed; writing them one by one", True, thread),
        ("ERROR", f"seller transfer {bad.id}: outcome not written", True, thread),
        ("ERROR", f"seller transfer {bad.id}: its Stripe calls not audited", True, thread),
        ("ERROR", f"seller transfer {good.id}: outcome callback failed", True, thread),
    ]
    assert row_state(engine, good.id)["status"] == "reversed"


def _hand_to_another_batch(engine: sa.Engine, row_id: int, batch_id: str) -> None:
    """What a re-execution's batch does to a row whose lease ran out (``take_for_batch``)."""
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET claimed_by_batch = :batch WHERE id = :id"),
            {"batch": batch_id, "id": row_id},
        )


def test_a_row_another_batch_of_the_same_run_holds_is_never_written(engine: sa.Engine) -> None:
    """Claims are fenced per batch: the run's token alone does not let a write land."""
    mine, theirs = seed_rows(engine, None, 2, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-b", 2)
    _hand_to_another_batch(engine, theirs.id, "run-b-other")
    results: dict[str, WriteResult] = {}
    with GroupCommitWriter(engine, token="run-b", batch_id=batch_id, run_id="run-b") as writer:
        writer.submit(mine.id, _reversed("trr_b0", "k-b0"), lambda w: results.update(mine=w))
        writer.submit(theirs.id, _reversed("trr_b1", "k-b1"), lambda w: results.update(theirs=w))

    assert results == {"mine": WriteResult.WRITTEN, "theirs": WriteResult.CLAIM_LOST}
    state = row_state(engine, theirs.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversal_pending", None)
    assert (state["claimed_by"], state["claimed_by_batch"]) == ("run-b", "run-b-other")
    [lost] = attempts_of(engine, theirs.id)  # its call is audited, its state change is not
    assert (lost["idempotency_key"], lost["status_after"]) == ("k-b1", None)


def test_one_by_one_a_row_another_batch_holds_is_never_written(engine: sa.Engine) -> None:
    bad, theirs = seed_rows(engine, None, 2, stripe_transfer_id=None)
    batch_id = _claim(engine, "run-y", 2)
    _hand_to_another_batch(engine, theirs.id, "run-y-other")
    results: dict[str, WriteResult] = {}
    with GroupCommitWriter(engine, token="run-y", batch_id=batch_id, run_id="run-y") as writer:
        writer.submit(bad.id, _unwritable("k-y0"), lambda w: results.update(bad=w))
        writer.submit(theirs.id, _reversed("trr_y1", "k-y1"), lambda w: results.update(theirs=w))

    assert writer.groups_written == 0  # the group failed: each row went alone
    assert results == {"bad": WriteResult.FAILED, "theirs": WriteResult.CLAIM_LOST}
    state = row_state(engine, theirs.id)
    assert (state["status"], state["claimed_by_batch"]) == ("reversal_pending", "run-y-other")
