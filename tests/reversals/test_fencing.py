"""Issue 12, defect 4: a claim is fenced to the process holding it; termination stops sends.

Real PostgreSQL, the real SDK and the emulator. Two stand-ins, each because
nothing real can show the point in a test: the Dagster step context is reduced
to the real ``DagsterRun`` the token is taken from, and termination is a real
signal whose handler raises, as Dagster's does, in the thread running the batch.
"""

from __future__ import annotations

import os
import signal
import threading
import types
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.defs.reversals.assets import claim_token
from reversal_pipeline.reversals import record
from reversal_pipeline.reversals.batch import ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows, count_held, take_for_batch
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import advance_clock, attempts_of, row_state, seed_rows

SETTINGS = ReversalSettings(concurrency=1, backoff_jitter=0.0)


def _context(run_id: str, root: str | None = None) -> object:
    run = dg.DagsterRun(
        job_name="reversal_job", run_id=run_id, root_run_id=root, parent_run_id=root
    )
    return types.SimpleNamespace(run=run)


def _batch(
    engine: sa.Engine, stripe: StripeResource, token: str, settings: ReversalSettings = SETTINGS
) -> ReversalBatch:
    return ReversalBatch(engine, stripe, token=token, run_id=token, settings=settings)


PAGES_OF_TWO = ReversalSettings(concurrency=1, page_size=2, backoff_jitter=0.0)


def _creates(server: EmulatorServer) -> int:
    by_endpoint = server.state.requests.counters()["by_endpoint"]
    return int(by_endpoint.get("POST /v1/transfers/{id}/reversals", 0))


def test_a_reexecution_never_takes_rows_its_still_sending_original_holds(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = stripe_emulator.control()
    [transfer_id] = control.create_transfers(
        [{"amount": 1_000, "currency": "usd", "destination": "acct_s"}], returning="ids"
    )
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=transfer_id, amount=500)
    control.add_script(respond="hold", method="POST", transfer_id=transfer_id)
    original_token = claim_token(_context("run-original"))  # type: ignore[arg-type]
    claim_due_rows(engine, token=original_token, max_rows=10, lease_seconds=600)
    original = _batch(engine, stripe_resource, original_token)
    sending = threading.Thread(target=original.run)
    sending.start()
    try:
        assert control.wait_for_held(1, timeout=10)  # the original's create is on the wire
        retry_token = claim_token(_context("run-retry", root="run-original"))  # type: ignore[arg-type]
        claimed = claim_due_rows(engine, token=retry_token, max_rows=10, lease_seconds=600)
        _batch(engine, stripe_resource, retry_token).run()
    finally:
        control.release_holds()
        sending.join(30)

    assert claimed.rows_claimed == 0
    reversals = control.get_transfer(transfer_id)["reversals"]
    assert sum(r["amount"] for r in reversals) == 500
    assert row_state(engine, row.id)["status"] == "reversed"


def test_two_batches_of_one_run_send_a_row_once(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    """A step retried inside one run while the first attempt's threads still send.

    Both batches carry the run's id; only the one that took the row may send,
    write or release it. Before the claim was fenced per batch the second one
    sent the row too and 1,000 was taken back for a 500 row.
    """
    control = stripe_emulator.control()
    [transfer_id] = control.create_transfers(
        [{"amount": 1_000, "currency": "usd", "destination": "acct_s"}], returning="ids"
    )
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=transfer_id, amount=500)
    control.add_script(respond="hold", method="POST", transfer_id=transfer_id)
    claim_due_rows(engine, token="run-one", max_rows=10, lease_seconds=600)
    first = _batch(engine, stripe_resource, "run-one")
    sending = threading.Thread(target=first.run)
    sending.start()
    try:
        assert control.wait_for_held(1, timeout=10)  # the first batch's create is on the wire
        second = _batch(engine, stripe_resource, "run-one")
        second_report = second.run()
        # Still the first batch's, and still the run's: the second released nothing.
        held = row_state(engine, row.id)
        assert (held["claimed_by"], held["claimed_by_batch"]) == ("run-one", first.batch_id)
        assert count_held(engine, token="run-one") == 1
    finally:
        control.release_holds()
        sending.join(30)

    assert not sending.is_alive()
    assert second.batch_id != first.batch_id
    assert second_report.rows_finished == 0
    assert second_report.rows_released == 0
    assert sum(second_report.outcomes.values()) == 0
    assert _creates(stripe_emulator) == 1
    [reversal] = control.get_transfer(transfer_id)["reversals"]
    assert reversal["amount"] == 500
    state = row_state(engine, row.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", reversal["id"])
    assert state["stripe_attempts"] == 1  # the second batch counted no attempt
    creates = [a for a in attempts_of(engine, row.id) if a["action"] == "create_reversal"]
    [sent] = [
        r for r in stripe_emulator.state.requests.entries() if r.method == "POST"
    ]  # one call at Stripe, one audit row for it, carrying its key
    assert [a["idempotency_key"] for a in creates] == [sent.idempotency_key]
    assert creates[0]["stripe_reversal_id"] == reversal["id"]
    assert creates[0]["status_after"] == "reversed"


def test_a_batch_takes_over_its_runs_row_once_the_holding_batch_lease_ran_out(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    """Lease expiry works inside a run as between runs: a dead batch's rows are not stuck.

    The dead batch had counted an attempt, so the new one looks on Stripe first.
    """
    control = stripe_emulator.control()
    [row] = seed_rows(engine, control, 1)
    claim_due_rows(engine, token="run-two", max_rows=10, lease_seconds=600)
    assert take_for_batch(engine, token="run-two", batch_id="dead", lease_seconds=600) == 1
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET stripe_attempts = 1 WHERE id = :id"),
            {"id": row.id},
        )
    live = _batch(engine, stripe_resource, "run-two")
    assert live.run().rows_finished == 0  # the dead batch's lease is still live
    assert row_state(engine, row.id)["claimed_by_batch"] == "dead"

    advance_clock(engine, 601)
    report = _batch(engine, stripe_resource, "run-two").run()

    assert report.statuses["reversed"] == 1
    assert [a["action"] for a in attempts_of(engine, row.id)] == [
        "lookup_reversal",
        "create_reversal",
    ]
    assert _creates(stripe_emulator) == 1
    state = row_state(engine, row.id)
    assert (state["status"], state["claimed_by"], state["claimed_by_batch"]) == (
        "reversed",
        None,
        None,
    )


class Terminated(BaseException):
    """What the signal handler raises, like Dagster's DagsterExecutionInterruptedError."""


def test_termination_stops_sending_at_once_and_releases_the_rest(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 5)
    control.add_script(respond="hold", method="POST", transfer_id=rows[0].stripe_transfer_id)
    claim_due_rows(engine, token="run-t", max_rows=10, lease_seconds=600)
    batch = _batch(engine, stripe_resource, "run-t")

    def terminate() -> None:
        if control.wait_for_held(1, timeout=10):
            os.kill(os.getpid(), signal.SIGUSR1)
            batch.stopping.wait(10)
        control.release_holds()

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGUSR1, interrupt)
    operator = threading.Thread(target=terminate)
    try:
        operator.start()
        with pytest.raises(Terminated):
            batch.run()
    finally:
        operator.join(30)
        signal.signal(signal.SIGUSR1, previous)

    assert _creates(stripe_emulator) == 1  # the queued rows were never sent
    assert row_state(engine, rows[0].id)["status"] == "reversed"  # the call in flight is kept
    for row in rows[1:]:
        state = row_state(engine, row.id)
        assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)
        assert state["claimed_by"] is None


def test_a_batch_takes_its_first_page_then_the_rest_lowest_ids_first(
    engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    """``take_for_batch`` with a limit takes the lowest ids; without one, every other row.

    The batch sends its first page while it takes the rest, and reads the rest by id
    after that page: the first take must be the lowest ids, or a row would be skipped.
    """
    rows = seed_rows(engine, stripe_emulator.control(), 5)
    claim_due_rows(engine, token="run-split", max_rows=10, lease_seconds=600)
    ids = sorted(row.id for row in rows)

    assert take_for_batch(engine, token="run-split", batch_id="b", lease_seconds=600, limit=2) == 2
    assert [row_state(engine, i)["claimed_by_batch"] for i in ids] == ["b", "b", None, None, None]
    assert take_for_batch(engine, token="run-split", batch_id="b", lease_seconds=600) == 3
    assert {row_state(engine, i)["claimed_by_batch"] for i in ids} == {"b"}


def test_the_rest_is_taken_while_the_first_pages_call_is_on_the_wire(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 5)
    first = min(rows, key=lambda row: row.id)
    control.add_script(respond="hold", method="POST", transfer_id=first.stripe_transfer_id)
    claim_due_rows(engine, token="run-rest", max_rows=10, lease_seconds=600)
    batch = _batch(engine, stripe_resource, "run-rest", PAGES_OF_TWO)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        # One worker, held on the first row: only the page loop can have taken the rest.
        assert count_held(engine, token="run-rest") == 5
        assert {row_state(engine, row.id)["claimed_by_batch"] for row in rows} == {batch.batch_id}
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()
    assert batch.report.statuses == {"reversed": 5}
    assert batch.report.rows_released == 0


def test_the_batch_holds_only_its_first_page_until_that_page_is_counted(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest is taken after the first page is on its way, not before.

    Taking every row at the start cost figure 1 0.6 s at 10,000 rows with nothing
    sent (benchmarks/RESULTS.md); a batch that took them all first would still
    reverse every row, so only this moment shows the difference.
    """
    rows = sorted(seed_rows(engine, stripe_emulator.control(), 5), key=lambda row: row.id)
    claim_due_rows(engine, token="run-first", max_rows=10, lease_seconds=600)
    held_at_first_count: list[list[bool]] = []
    start_attempts = record.start_attempts

    def counted(db: sa.Engine, **kwargs: Any) -> dict[int, int]:
        if not held_at_first_count:
            held_at_first_count.append(
                [row_state(engine, row.id)["claimed_by_batch"] is not None for row in rows]
            )
        return start_attempts(db, **kwargs)

    monkeypatch.setattr(record, "start_attempts", counted)
    report = _batch(engine, stripe_resource, "run-first", PAGES_OF_TWO).run()

    assert held_at_first_count == [[True, True, False, False, False]]
    assert report.statuses == {"reversed": 5}


def test_a_batch_stopped_before_it_took_the_rest_releases_the_runs_untaken_rows(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    """As it would have, had it taken them all at the start: a later run takes them at
    once, not after the claim's lease. Rows another batch of the run holds stay held."""
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 6)
    claim_due_rows(engine, token="run-stop", max_rows=10, lease_seconds=600)
    other = max(rows, key=lambda row: row.id)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET claimed_by_batch = 'other' WHERE id = :id"),
            {"id": other.id},
        )
    batch = _batch(engine, stripe_resource, "run-stop", PAGES_OF_TWO)
    batch.stop()

    report = batch.run()

    assert report.rows_released == 5  # its first page of two, and the three untaken
    assert [row_state(engine, row.id)["claimed_by"] for row in rows if row != other] == [None] * 5
    assert row_state(engine, other.id)["claimed_by_batch"] == "other"
    assert sum(1 for entry in stripe_emulator.state.requests.entries()) == 0
