"""``ReversalBatch`` path by path, each run checked in full (issue 12 mutants).

Few tests, each a whole batch over several rows that take different paths,
against the real PostgreSQL and the emulator: a mutant of ``batch.py`` runs
this file alone (``benchmarks/mutation.py batch``), so each test asserts
everything its run shows: every row's state and audit, what Stripe was sent,
and the report the run's metadata is built from.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals import claim, record
from reversal_pipeline.reversals.backoff import retry_delay
from reversal_pipeline.reversals.batch import FAILURE_LIST_LIMIT, ReversalBatch
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer
from tests.plugins.marketplace import SeededRow, attempts_of, row_state, seed_rows
from tests.reversals.conftest import claimed_batch, run_batch

MISSING = "tr_NotAtStripe000001"


def _posts(control: EmulatorClient, transfer_id: str | None) -> int:
    return sum(
        1
        for entry in control.request_log()
        if entry["method"] == "POST" and entry["transfer_id"] == transfer_id
    )


def _requests(control: EmulatorClient, transfer_id: str | None) -> int:
    return sum(1 for entry in control.request_log() if entry["transfer_id"] == transfer_id)


def _ours(control: EmulatorClient, row: SeededRow, amount: int) -> str:
    """A reversal an earlier attempt of ours made and never recorded (a lost reply)."""
    metadata = {"seller_transfer_id": str(row.id), "order_id": row.order_id, "attempt": "1"}
    return control.reverse_transfer(row.stripe_transfer_id, amount=amount, metadata=metadata)["id"]


def _audit(engine: sa.Engine, row: SeededRow) -> list[tuple[Any, ...]]:
    return [
        (a["action"], a["outcome"], a["status_after"], a["run_id"])
        for a in attempts_of(engine, row.id)
    ]


def _state(engine: sa.Engine, row: SeededRow) -> tuple[Any, ...]:
    state = row_state(engine, row.id)
    return (state["status"], state["retry_count"], state["stripe_attempts"], state["claimed_by"])


def test_a_mixed_batch_writes_every_row_and_reports_each(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    control = stripe_emulator.control()
    [usd, usd2] = seed_rows(engine, control, 2, order_prefix="usd")
    [eur] = seed_rows(engine, control, 1, amount=700, currency="eur", order_prefix="eur")
    [invalid] = seed_rows(engine, None, 1, stripe_transfer_id=None, order_prefix="bad")
    # One attempt before this one, two of three used after it: not the last, so no look-up.
    [flaky] = seed_rows(engine, control, 1, retry_count=1, order_prefix="flaky")
    [missing] = seed_rows(engine, None, 1, stripe_transfer_id=MISSING, order_prefix="gone")
    control.add_script(respond=500, method="POST", transfer_id=flaky.stripe_transfer_id)

    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    report = run_batch(engine, impatient_stripe, "run-m", page_size=2, max_attempts=3)
    took = time.monotonic() - started

    # Every row's fate is in the report and the database: nothing in the run went wrong,
    # so nothing is logged at ERROR (a failing callback in the pool or the writer would be).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert report.outcomes == {"reversed": 3, "invalid": 1, "transient": 1, "not_found": 1}
    assert report.statuses == {"reversed": 3, "permanently_failed": 2, "reversal_pending": 1}
    assert report.rows_finished == 6
    assert report.reversed_amount_by_currency == {"usd": 2_000, "eur": 700}
    assert (report.rows_released, report.outcomes_not_written) == (0, [])
    assert report.systemic_error is None
    assert 0 < report.elapsed_seconds <= took  # the batch's own time, not a clock reading
    failures = sorted(report.failures, key=lambda f: f["seller_transfer_id"])  # type: ignore[arg-type, return-value]
    assert [(f["seller_transfer_id"], f["status"], f["outcome"]) for f in failures] == [
        (invalid.id, "permanently_failed", "invalid"),
        (flaky.id, "reversal_pending", "transient"),
        (missing.id, "permanently_failed", "not_found"),
    ]
    assert failures[0]["stripe_transfer_id"] is None
    assert failures[2]["stripe_transfer_id"] == MISSING
    for failure in failures:
        state = row_state(engine, failure["seller_transfer_id"])  # type: ignore[arg-type]
        assert failure["message"] == state["error_message"]
    assert failures[0]["message"] == (
        f"seller transfer {invalid.id} (order {invalid.order_id}) has no stripe_transfer_id: "
        "nothing to reverse; fix the row and requeue"
    )

    for row in (usd, usd2, eur):
        [reversal] = control.get_transfer(row.stripe_transfer_id)["reversals"]
        state = row_state(engine, row.id)
        assert (state["status"], state["stripe_reversal_id"]) == ("reversed", reversal["id"])
        assert _state(engine, row) == ("reversed", 0, 1, None)
        assert _audit(engine, row) == [("create_reversal", "reversed", "reversed", "run-m")]
    assert _state(engine, invalid) == ("permanently_failed", 0, 0, None)  # never counted
    assert _audit(engine, invalid) == [
        ("validation", "permanently_failed", "permanently_failed", "run-m")
    ]
    assert _state(engine, flaky) == ("reversal_pending", 2, 1, None)
    assert _requests(control, flaky.stripe_transfer_id) == 1
    assert row_state(engine, flaky.id)["next_retry_at"] is not None
    assert _audit(engine, flaky) == [("create_reversal", "transient", "reversal_pending", "run-m")]
    assert _state(engine, missing) == ("permanently_failed", 0, 1, None)
    assert _audit(engine, missing) == [
        ("create_reversal", "not_found", "permanently_failed", "run-m")
    ]


def test_a_row_sent_before_is_looked_up_first(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [found, absent] = seed_rows(engine, control, 2, stripe_attempts=1, retry_count=1)
    mine = _ours(control, found, 1_000)

    report = run_batch(engine, impatient_stripe, "run-l", max_attempts=5)

    assert report.outcomes == {"found_existing": 1, "reversed": 1}
    assert row_state(engine, found.id)["stripe_reversal_id"] == mine
    assert _posts(control, found.stripe_transfer_id) == 0  # found: nothing sent
    assert _audit(engine, found) == [("lookup_reversal", "found_existing", "reversed", "run-l")]
    assert _posts(control, absent.stripe_transfer_id) == 1
    assert _audit(engine, absent) == [
        ("lookup_reversal", "not_found", None, "run-l"),
        ("create_reversal", "reversed", "reversed", "run-l"),
    ]
    assert attempts_of(engine, absent.id)[1]["idempotency_key"] == (
        f"reversal_pipeline:seller_transfer:{absent.id}:target:1000:attempt:2"
    )
    assert _state(engine, absent) == ("reversed", 1, 2, None)


def test_an_exhausted_row_is_only_looked_at(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    exhausted = {"stripe_attempts": 1, "retry_count": 1}  # sent once, out of attempts
    [nothing, mine, unanswered] = seed_rows(engine, control, 3, **exhausted)
    [never_sent] = seed_rows(engine, control, 1, retry_count=1, order_prefix="never")
    [short] = seed_rows(engine, control, 1, order_prefix="short", **exhausted)
    [unit] = seed_rows(engine, control, 1, order_prefix="unit", **exhausted)
    reversal = _ours(control, mine, 1_000)
    part = _ours(control, short, 300)  # ours, short of the target: counted, never topped up
    one = _ours(control, unit, 1)  # the smallest part of ours: still named
    control.add_script(respond=429, method="GET", transfer_id=unanswered.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-x", max_attempts=1)

    assert report.outcomes == {
        "exhausted": 3,
        "found_existing": 1,
        "lookup_failed": 1,
        "reversed": 1,
    }
    assert row_state(engine, unit.id)["error_message"] == (
        "gave up after 1 attempt(s) (max_attempts=1); looked once more: Stripe already shows "
        f"1 USD of ours (newest {one}), short of the target 1000: the rest (999) was not "
        "sent; needs a person (resolve, or requeue to send the rest)"
    )
    for row in (nothing, mine, unanswered, short):
        assert _posts(control, row.stripe_transfer_id) == 0
    assert _state(engine, short) == ("permanently_failed", 1, 1, None)
    assert row_state(engine, short.id)["error_message"] == (
        "gave up after 1 attempt(s) (max_attempts=1); looked once more: Stripe already shows "
        f"300 USD of ours (newest {part}), short of the target 1000: the rest (700) was not "
        "sent; needs a person (resolve, or requeue to send the rest)"
    )
    assert _audit(engine, short) == [("lookup_reversal", "partial", "permanently_failed", "run-x")]
    assert _state(engine, nothing) == ("permanently_failed", 1, 1, None)
    assert (
        "looked once more: no reversal from an earlier attempt at Stripe"
        in (row_state(engine, nothing.id)["error_message"])
    )
    assert _audit(engine, nothing) == [
        ("lookup_reversal", "not_found", "permanently_failed", "run-x")
    ]
    assert row_state(engine, mine.id)["stripe_reversal_id"] == reversal
    assert _state(engine, mine) == ("reversed", 1, 1, None)
    assert _state(engine, unanswered) == ("reversal_pending", 1, 1, None)
    assert _audit(engine, unanswered) == [("lookup_reversal", "error", "reversal_pending", "run-x")]
    # Never sent: with max_attempts lowered below its count, it is sent once more.
    assert _state(engine, never_sent) == ("reversed", 1, 1, None)
    assert _posts(control, never_sent.stripe_transfer_id) == 1


def test_the_last_attempt_looks_before_giving_up(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [nothing, lost_reply, unanswered] = seed_rows(engine, control, 3, amount=600)
    found = _ours(control, lost_reply, 600)  # the transfer is 600: a second one would fail
    for row in (nothing, lost_reply, unanswered):
        control.add_script(respond=500, method="POST", transfer_id=row.stripe_transfer_id)
    control.add_script(respond=429, method="GET", transfer_id=unanswered.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-g", max_attempts=1)

    assert report.outcomes == {"transient": 1, "found_existing": 1, "lookup_failed": 1}
    assert _state(engine, nothing) == ("permanently_failed", 1, 1, None)
    assert row_state(engine, nothing.id)["error_message"].startswith(
        "gave up after 1 attempt(s) (max_attempts=1); last error: TransientStripeError (HTTP 500"
    )
    assert _audit(engine, nothing) == [
        ("create_reversal", "transient", None, "run-g"),
        ("lookup_reversal", "not_found", "permanently_failed", "run-g"),
    ]
    assert _state(engine, lost_reply) == ("reversed", 0, 1, None)
    assert row_state(engine, lost_reply.id)["stripe_reversal_id"] == found
    assert row_state(engine, lost_reply.id)["amount_reversed"] == 600  # as Stripe shows it
    audit = attempts_of(engine, lost_reply.id)
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("create_reversal", "transient"),
        ("lookup_reversal", "found_existing"),
    ]
    assert audit[0]["idempotency_key"] == (
        f"reversal_pipeline:seller_transfer:{lost_reply.id}:target:600:attempt:1"
    )
    assert _state(engine, unanswered) == ("reversal_pending", 1, 1, None)
    message = row_state(engine, unanswered.id)["error_message"]
    assert "had no answer (StripeRateLimited (HTTP 429" in message  # the look-up's error
    assert "the last attempt's error: TransientStripeError (HTTP 500" in message
    assert _audit(engine, unanswered) == [
        ("create_reversal", "transient", None, "run-g"),
        ("lookup_reversal", "error", "reversal_pending", "run-g"),
    ]


def test_the_last_look_never_gives_up_blind_and_names_what_it_found(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    # Sent before, on its last attempt; its first look-up goes unanswered, and so
    # does the one before giving up: unknown, so looked at again later.
    [unanswered] = seed_rows(engine, control, 1, stripe_attempts=1, order_prefix="u")
    control.add_script(
        respond=429, method="GET", transfer_id=unanswered.stripe_transfer_id, times=2
    )
    # Last attempt fails; the look-up finds a smaller reversal of ours: a person decides,
    # told what Stripe already took back (issue 17 counts it; the rest is not sent).
    [smaller] = seed_rows(engine, control, 1, amount=600, order_prefix="s")
    partial = _ours(control, smaller, 200)
    control.add_script(respond=500, method="POST", transfer_id=smaller.stripe_transfer_id)
    # The same with the smallest part of ours there is: one minor unit.
    [unit] = seed_rows(engine, control, 1, amount=600, order_prefix="unit")
    one = _ours(control, unit, 1)
    control.add_script(respond=500, method="POST", transfer_id=unit.stripe_transfer_id)
    # Last attempt fails; the look-up finds no such transfer any more.
    [gone] = seed_rows(engine, control, 1, order_prefix="g")
    control.add_script(respond=500, method="POST", transfer_id=gone.stripe_transfer_id)
    control.add_script(respond=404, method="GET", transfer_id=gone.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-k", max_attempts=1)

    assert report.outcomes == {"lookup_failed": 1, "not_confirmed": 2, "not_found": 1}
    assert row_state(engine, unit.id)["error_message"].startswith(
        "gave up after 1 attempt(s) (max_attempts=1): Stripe already shows 1 USD of ours "
        f"for seller transfer {unit.id} (newest {one}), short of its target 600: the "
        "rest (599) was not sent"
    )
    # Counted before the page was sent (start_attempts), never sent: 2, no POST.
    assert _state(engine, unanswered) == ("reversal_pending", 1, 2, None)
    assert _posts(control, unanswered.stripe_transfer_id) == 0
    assert _audit(engine, unanswered) == [
        ("lookup_reversal", "error", None, "run-k"),
        ("lookup_reversal", "error", "reversal_pending", "run-k"),
    ]
    assert _state(engine, smaller) == ("permanently_failed", 0, 1, None)
    assert _posts(control, smaller.stripe_transfer_id) == 1  # the failed one; the rest not sent
    message = row_state(engine, smaller.id)["error_message"]
    assert message.startswith(
        "gave up after 1 attempt(s) (max_attempts=1): Stripe already shows 200 USD of ours "
        f"for seller transfer {smaller.id} (newest {partial}), short of its target 600: the "
        "rest (400) was not sent; needs a person (resolve, or requeue to send the rest); "
        "last error: TransientStripeError (HTTP 500"
    )
    assert _audit(engine, smaller) == [
        ("create_reversal", "transient", None, "run-k"),
        ("lookup_reversal", "partial", "permanently_failed", "run-k"),
    ]
    lookup = attempts_of(engine, smaller.id)[1]
    assert (lookup["stripe_reversal_id"], lookup["message"]) == (
        partial,
        f"ours at Stripe: {partial} of 200 USD (200 in all), short of the target 600: "
        "not sent, the last attempt is used",
    )
    assert _state(engine, gone) == ("permanently_failed", 0, 1, None)
    assert row_state(engine, gone.id)["error_message"].startswith(
        "data-integrity incident: Stripe has no transfer"
    )
    assert _audit(engine, gone) == [
        ("create_reversal", "transient", None, "run-k"),
        ("lookup_reversal", "error", "permanently_failed", "run-k"),
    ]


def test_a_401_on_the_last_look_stops_the_run_uncounted(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [row] = seed_rows(engine, control, 1)
    control.add_script(respond=500, method="POST", transfer_id=row.stripe_transfer_id)
    control.add_script(respond=401, method="GET", transfer_id=row.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-s", max_attempts=1)

    assert report.systemic_error is not None
    assert report.systemic_error.http_status == 401
    assert report.outcomes == {"systemic": 1}
    assert (report.statuses, report.rows_released) == ({}, 1)
    assert _state(engine, row) == ("reversal_pending", 0, 1, None)
    assert _audit(engine, row) == [
        ("create_reversal", "transient", None, "run-s"),
        ("lookup_reversal", "error", None, "run-s"),
    ]


def test_after_a_401_money_moved_is_written_and_nothing_more_is_sent(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [held, refused, late_error, queued] = seed_rows(engine, control, 4)
    control.add_script(respond="hold", method="POST", transfer_id=held.stripe_transfer_id)
    control.add_script(respond=401, method="POST", transfer_id=refused.stripe_transfer_id)
    # A page of two: late_error and queued are read after the stop, and never sent.
    batch = claimed_batch(engine, impatient_stripe, "run-h", concurrency=2, page_size=2)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        assert batch.stopping.wait(30)  # the 401 has stopped the batch
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()

    report = batch.report
    assert report.systemic_error is not None
    assert report.systemic_error.http_status == 401
    assert report.outcomes == {"systemic": 1, "reversed": 1}
    assert report.statuses == {"reversed": 1}
    assert report.reversed_amount_by_currency == {"usd": 1_000}
    assert report.rows_released == 3
    [reversal] = control.get_transfer(held.stripe_transfer_id)["reversals"]
    assert row_state(engine, held.id)["stripe_reversal_id"] == reversal["id"]
    assert _state(engine, held) == ("reversed", 0, 1, None)
    assert _state(engine, refused) == ("reversal_pending", 0, 1, None)
    assert _audit(engine, refused) == [("create_reversal", "systemic", None, "run-h")]
    for row in (late_error, queued):
        assert _requests(control, row.stripe_transfer_id) == 0
        state = row_state(engine, row.id)
        # Their page may have been counted before the 401 came back (pages are read
        # ahead of the workers); either way nothing was sent, audited or retried.
        assert (state["status"], state["retry_count"], state["claimed_by"]) == (
            "reversal_pending",
            0,
            None,
        )
        assert attempts_of(engine, row.id) == []


def test_a_stop_seen_in_the_page_loop_still_waits_for_the_call_on_the_wire(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """A 401 while the page loop waits for room: it stops queuing, and the batch still
    waits for the call on the wire before it releases anything.

    Pages of one row, two workers, a window of four: the loop queues four rows and
    waits; the 401 stops the batch, the third row sees the stop, and the loop wakes
    to the stop and leaves. Leaving by ``return`` instead of ``break`` (two surviving
    mutants of the whole-module run) skipped the wait: the held row was released
    while its reversal was on the wire, and Stripe's answer had no claim to land on.
    The queuing is now its own method, so no exit from it can skip the wait.
    """
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 6)
    held, refused = rows[0], rows[1]
    control.add_script(respond="hold", method="POST", transfer_id=held.stripe_transfer_id)
    control.add_script(respond=401, method="POST", transfer_id=refused.stripe_transfer_id)
    batch = claimed_batch(engine, impatient_stripe, "run-w", concurrency=2, page_size=1)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        assert batch.stopping.wait(30)
        # Held until released below, so the batch can only be waiting here; a batch
        # that returned would be gone within milliseconds of the stop.
        worker.join(5)
        assert worker.is_alive()
        assert row_state(engine, held.id)["claimed_by"] == "run-w"
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()

    report = batch.report
    assert report.outcomes == {"systemic": 1, "reversed": 1}
    assert report.rows_released == 5
    [reversal] = control.get_transfer(held.stripe_transfer_id)["reversals"]
    state = row_state(engine, held.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", reversal["id"])
    # The held one and the refused one: nothing more was sent.
    assert sum(_posts(control, row.stripe_transfer_id) for row in rows) == 2


def test_an_answer_that_is_not_money_after_the_stop_is_audited_and_released(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [held] = seed_rows(engine, None, 1, stripe_transfer_id=MISSING)
    [refused] = seed_rows(engine, control, 1, order_prefix="refused")
    control.add_script(respond="hold", method="POST", transfer_id=MISSING)
    control.add_script(respond=401, method="POST", transfer_id=refused.stripe_transfer_id)
    batch = claimed_batch(engine, impatient_stripe, "run-n", concurrency=2, page_size=2)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        assert batch.stopping.wait(30)
    finally:
        control.release_holds()
        worker.join(60)

    assert batch.report.outcomes == {"systemic": 1, "stopped": 1}
    assert (batch.report.statuses, batch.report.rows_released) == ({}, 2)
    assert _state(engine, held) == ("reversal_pending", 0, 1, None)
    assert _audit(engine, held) == [("create_reversal", "not_found", None, "run-n")]


def test_an_answer_after_the_claim_was_lost_is_audited_but_not_written(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [row] = seed_rows(engine, control, 1)
    control.add_script(respond="hold", method="POST", transfer_id=row.stripe_transfer_id)
    batch = claimed_batch(engine, impatient_stripe, "run-q")
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        with engine.begin() as connection:  # another run takes the row while the call is out
            connection.execute(
                sa.text(
                    "UPDATE seller_transfers SET claimed_by = 'run-other',"
                    " claimed_by_batch = 'batch-other' WHERE id = :id"
                ),
                {"id": row.id},
            )
    finally:
        control.release_holds()
        worker.join(60)

    assert batch.report.outcomes == {"lease_lost": 1}
    assert (batch.report.statuses, batch.report.outcomes_not_written) == ({}, [])
    state = row_state(engine, row.id)
    assert (state["status"], state["claimed_by"]) == ("reversal_pending", "run-other")
    assert (state["claimed_by_batch"], state["stripe_reversal_id"]) == ("batch-other", None)
    [audit] = attempts_of(engine, row.id)
    assert (audit["outcome"], audit["status_after"]) == ("reversed", None)
    assert "claim lost" in audit["message"]


def test_with_the_lease_at_risk_nothing_is_sent_and_the_look_up_is_audited(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A clock (the one fake here) that jumps past the lease after the claim's renewal."""
    control = stripe_emulator.control()
    [sent_before] = seed_rows(engine, control, 1, stripe_attempts=1, order_prefix="b")
    [fresh] = seed_rows(engine, control, 1, order_prefix="f")
    readings = iter([0.0])
    batch = claimed_batch(engine, impatient_stripe, "run-r")
    batch = ReversalBatch(
        engine,
        impatient_stripe,
        token="run-r",
        run_id="run-r",
        settings=batch.settings,
        clock=lambda: next(readings, 1e9),
    )

    caplog.set_level(logging.WARNING)
    report = batch.run()

    # The operator is told which run stopped sending, once.
    [warning] = [r for r in caplog.records if "leases not renewed" in r.getMessage()]
    assert warning.getMessage().startswith("run run-r: leases not renewed for half a lease")
    assert report.outcomes == {"lease_at_risk": 2}
    assert (report.statuses, report.rows_released) == ({}, 2)
    for row in (sent_before, fresh):
        assert _posts(control, row.stripe_transfer_id) == 0
        state = row_state(engine, row.id)
        assert (state["status"], state["retry_count"], state["claimed_by"]) == (
            "reversal_pending",
            0,
            None,
        )
    assert _audit(engine, sent_before) == [("lookup_reversal", "not_found", None, "run-r")]
    assert attempts_of(engine, fresh.id) == []


def test_a_stopped_batch_sends_nothing_and_releases_every_row(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 3)
    batch = claimed_batch(engine, impatient_stripe, "run-t")
    batch.stop()
    assert batch.stopping.is_set()

    report = batch.run()

    assert (report.outcomes, report.statuses, report.rows_released) == ({}, {}, 3)
    assert control.request_log() == []
    for row in rows:
        assert _state(engine, row) == ("reversal_pending", 0, 0, None)


def test_an_outcome_that_cannot_be_written_is_listed_and_the_row_released(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [blocked, fine] = seed_rows(engine, control, 2)
    with engine.begin() as connection:  # its create's key already used: the audit insert fails
        connection.execute(
            sa.text(
                "INSERT INTO reversal_attempts"
                " (seller_transfer_id, action, idempotency_key, outcome, actor)"
                " VALUES (:id, 'create_reversal', :key, 'transient', 'test')"
            ),
            {
                "id": blocked.id,
                "key": f"reversal_pipeline:seller_transfer:{blocked.id}:target:1000:attempt:1",
            },
        )

    report = run_batch(engine, impatient_stripe, "run-w")

    assert report.outcomes_not_written == [blocked.id]
    assert report.outcomes == {"outcome_not_written": 1, "reversed": 1}
    assert (report.statuses, report.rows_released) == ({"reversed": 1}, 1)
    assert _state(engine, blocked) == ("reversal_pending", 0, 1, None)
    assert _state(engine, fine) == ("reversed", 0, 1, None)


def test_the_failure_list_is_capped(engine: sa.Engine, impatient_stripe: StripeResource) -> None:
    count = FAILURE_LIST_LIMIT + 1
    seed_rows(engine, None, count, stripe_transfer_id=None)

    report = run_batch(engine, impatient_stripe, "run-c")

    assert report.statuses == {"permanently_failed": count}
    assert len(report.failures) == FAILURE_LIST_LIMIT == 50


def test_a_claim_lost_between_reading_a_page_and_counting_it_is_lease_lost(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another run takes a row after its page was read, before its attempt is counted.

    The race is a window of one statement; to hit it every time, the real page
    reader is wrapped so the (real) competing UPDATE runs at exactly that point.
    The row must not be sent, written or released, and must be counted
    ``lease_lost`` (it used to be counted nowhere by any test, issue 12).
    """
    control = stripe_emulator.control()
    [taken, kept] = seed_rows(engine, control, 2)
    read_pages = claim.iter_claimed_pages

    def pages_then_taken(db: sa.Engine, **kwargs: Any) -> Iterator[list[ClaimedRow]]:
        for page in read_pages(db, **kwargs):
            with engine.begin() as connection:
                connection.execute(
                    sa.text(
                        "UPDATE seller_transfers SET claimed_by = 'run-other',"
                        " claimed_by_batch = 'batch-other' WHERE id = :id"
                    ),
                    {"id": taken.id},
                )
            yield page

    monkeypatch.setattr(claim, "iter_claimed_pages", pages_then_taken)

    report = run_batch(engine, impatient_stripe, "run-g")

    assert report.outcomes == {"lease_lost": 1, "reversed": 1}
    assert (report.statuses, report.rows_released) == ({"reversed": 1}, 0)
    assert (report.outcomes_not_written, report.failures) == ([], [])
    assert _requests(control, taken.stripe_transfer_id) == 0
    assert _state(engine, taken) == ("reversal_pending", 0, 0, "run-other")
    assert row_state(engine, taken.id)["claimed_by_batch"] == "batch-other"
    assert attempts_of(engine, taken.id) == []
    assert _state(engine, kept) == ("reversed", 0, 1, None)


def test_the_batch_jitters_backoff_with_its_own_seeded_generator(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """A transient row's delay is drawn from the generator the batch was given.

    Every other batch test runs with ``backoff_jitter=0``, where any generator
    gives the same delay; a seeded run must be reproducible (the simulation
    relies on it).
    """
    control = stripe_emulator.control()
    [row] = seed_rows(engine, control, 1)
    control.add_script(respond=500, method="POST", transfer_id=row.stripe_transfer_id)
    settings = claimed_batch(
        engine,
        impatient_stripe,
        "run-j",
        backoff_jitter=0.9,
        backoff_base_seconds=100_000.0,
        backoff_cap_seconds=100_000.0,
        max_attempts=3,
    ).settings
    expected = retry_delay(1, 100_000.0, 100_000.0, 0.9, random.Random(1234))
    assert int(expected.total_seconds()) != 100_000  # the draw takes something off

    report = ReversalBatch(
        engine,
        impatient_stripe,
        token="run-j",
        run_id="run-j",
        settings=settings,
        rng=random.Random(1234),
    ).run()

    assert report.outcomes == {"transient": 1}
    assert _state(engine, row) == ("reversal_pending", 1, 1, None)
    state = row_state(engine, row.id)
    assert state["error_message"].startswith(
        f"attempt 1 failed, retrying in {int(expected.total_seconds())}s: "
    )
    with engine.connect() as connection:
        delay = connection.execute(
            sa.text("SELECT next_retry_at - now() FROM seller_transfers WHERE id = :id"),
            {"id": row.id},
        ).scalar_one()
    assert abs(delay - expected).total_seconds() < 60


def test_a_stop_between_the_look_up_and_the_send_sends_nothing(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """A 401 elsewhere lands while a row's look-up is on the wire: the look-up is audited,
    the row is not sent, not counted ``lease_at_risk`` (its lease is fine) and released."""
    control = stripe_emulator.control()
    [looking] = seed_rows(engine, control, 1, stripe_attempts=1, retry_count=1, order_prefix="l")
    [refused] = seed_rows(engine, control, 1, order_prefix="r")
    control.add_script(respond="hold", method="GET", transfer_id=looking.stripe_transfer_id)
    control.add_script(respond=401, method="POST", transfer_id=refused.stripe_transfer_id)
    batch = claimed_batch(engine, impatient_stripe, "run-b", concurrency=2, max_attempts=5)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)  # the look-up is out
        assert batch.stopping.wait(30)  # and the 401 has stopped the batch
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()

    report = batch.report
    assert report.systemic_error is not None
    assert report.systemic_error.http_status == 401
    assert (report.outcomes, report.statuses, report.rows_released) == ({"systemic": 1}, {}, 2)
    assert _posts(control, looking.stripe_transfer_id) == 0
    assert _audit(engine, looking) == [("lookup_reversal", "not_found", None, "run-b")]
    # Its attempt was counted with its page, before the 401: the next run looks first.
    assert _state(engine, looking) == ("reversal_pending", 1, 2, None)
    assert _state(engine, refused) == ("reversal_pending", 0, 1, None)
    assert _audit(engine, refused) == [("create_reversal", "systemic", None, "run-b")]


def test_each_row_is_sent_exactly_what_its_target_still_lacks(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """Never sent: the whole target. Part of it ours at Stripe: only the difference,
    down to a row whose confirmed part is one minor unit (it must be looked up first)."""
    control = stripe_emulator.control()
    [fresh] = seed_rows(engine, control, 1, order_prefix="fresh")
    [raised] = seed_rows(
        engine,
        control,
        1,
        order_prefix="raised",
        stripe_attempts=1,
        reversal_target=1_000,
        amount_reversed=300,
    )
    [one_unit] = seed_rows(
        engine, control, 1, order_prefix="unit", reversal_target=1_000, amount_reversed=1
    )
    first_part = _ours(control, raised, 300)
    unit_part = _ours(control, one_unit, 1)

    report = run_batch(engine, impatient_stripe, "run-d")

    assert report.outcomes == {"reversed": 3}
    assert report.reversed_amount_by_currency == {"usd": 1_000 + 700 + 999}
    for row, earlier, sent in (
        (fresh, [], 1_000),
        (raised, [first_part], 700),
        (one_unit, [unit_part], 999),
    ):
        reversals = control.get_transfer(row.stripe_transfer_id)["reversals"]
        [created] = [r for r in reversals if r["id"] not in earlier]
        assert created["amount"] == sent
        assert sum(r["amount"] for r in reversals) == 1_000
        state = row_state(engine, row.id)
        assert (state["status"], state["amount_reversed"]) == ("reversed", 1_000)
        assert state["stripe_reversal_id"] == created["id"]
        assert _posts(control, row.stripe_transfer_id) == 1
    assert [a["action"] for a in attempts_of(engine, one_unit.id)] == [
        "lookup_reversal",
        "create_reversal",
    ]
    assert attempts_of(engine, fresh.id)[0]["action"] == "create_reversal"


def test_the_last_look_finding_ours_in_another_currency_names_it_and_sends_nothing_more(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """A reversal of ours in another unit is never counted: the row goes to a person with
    the currency named, not the last attempt's error (the amount was taken in the wrong unit)."""
    control = stripe_emulator.control()
    [row] = seed_rows(engine, control, 1, amount=600, order_prefix="unit-mismatch")
    found = _ours(control, row, 600)  # made in the transfer's USD
    with engine.begin() as connection:  # the row says EUR: the unit is now wrong
        connection.execute(
            sa.text("UPDATE seller_transfers SET currency = 'eur' WHERE id = :id"), {"id": row.id}
        )
    control.add_script(respond=500, method="POST", transfer_id=row.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-cur", max_attempts=1)

    assert report.outcomes == {"not_confirmed": 1}
    assert _state(engine, row) == ("permanently_failed", 0, 1, None)
    assert _posts(control, row.stripe_transfer_id) == 1  # the failed create; nothing more
    message = row_state(engine, row.id)["error_message"]
    assert f"an earlier attempt made reversal(s) {found} of 600 USD" in message
    assert "it is in USD, not the row's EUR" in message
    assert "TransientStripeError" not in message
    assert _audit(engine, row) == [
        ("create_reversal", "transient", None, "run-cur"),
        ("lookup_reversal", "not_confirmed", "permanently_failed", "run-cur"),
    ]


def test_the_reported_amount_is_what_stripe_newly_confirmed_for_each_row(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """``amount_reversed_<currency>`` in the run's metadata: per row, what Stripe confirms
    now less what the row already had, never below zero and never the target in place of
    Stripe's figure (both were surviving mutants: the figure went unchecked)."""
    control = stripe_emulator.control()
    [fresh] = seed_rows(engine, control, 1, order_prefix="fresh")
    # Ours at Stripe is 1,200 against a target of 1,000 (over-reversed): 1,200 is reported.
    [over] = seed_rows(
        engine, control, 1, amount=1_500, reversal_target=1_000, stripe_attempts=1, order_prefix="o"
    )
    over_parts = [_ours(control, over, 700), _ours(control, over, 500)]
    # Set back to reversal_pending by hand with its 1,000 already recorded (the runbook's
    # old advice, issue 12): found again, written again, and nothing new is reported.
    [again] = seed_rows(
        engine,
        control,
        1,
        currency="eur",
        stripe_attempts=1,
        amount_reversed=1_000,
        order_prefix="again",
    )
    again_id = _ours(control, again, 1_000)

    report = run_batch(engine, impatient_stripe, "run-a")

    assert report.outcomes == {"reversed": 1, "found_existing": 2}
    assert report.statuses == {"reversed": 3}
    assert dict(report.reversed_amount_by_currency) == {"usd": 1_000 + 1_200, "eur": 0}
    over_state = row_state(engine, over.id)
    assert (over_state["status"], over_state["amount_reversed"]) == ("reversed", 1_200)
    assert over_state["stripe_reversal_id"] == over_parts[-1]
    assert "1200 is more than the target 1000: over-reversed" in over_state["error_message"]
    again_state = row_state(engine, again.id)
    assert (again_state["status"], again_state["amount_reversed"]) == ("reversed", 1_000)
    assert again_state["stripe_reversal_id"] == again_id
    for row in (over, again):
        assert _posts(control, row.stripe_transfer_id) == 0
        assert [a["action"] for a in attempts_of(engine, row.id)] == ["lookup_reversal"]
    assert _posts(control, fresh.stripe_transfer_id) == 1


class Terminated(BaseException):
    """What Dagster's interrupt is to the step: not an ``Exception``."""


def test_termination_drops_the_queued_rows_and_waits_only_for_the_calls_on_the_wire(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Termination arrives in the page loop with two calls out and two rows queued.

    The queued rows are never sent, looked up or audited (dropped, not drained);
    the run ends only after both calls on the wire have answered: the one that
    moved money is written, the other is audited and released uncounted; then
    the interrupt goes on up. The termination is raised by the page reader
    (wrapped, like a signal handler would raise in that thread) once both calls
    are held at the emulator, so the two queued rows are certainly waiting.
    """
    control = stripe_emulator.control()
    [on_wire] = seed_rows(engine, control, 1, order_prefix="wire")
    [no_money] = seed_rows(engine, None, 1, stripe_transfer_id=MISSING, order_prefix="gone")
    queued = seed_rows(engine, control, 2, order_prefix="queued")
    for transfer_id in (on_wire.stripe_transfer_id, MISSING):
        control.add_script(respond="hold", method="POST", transfer_id=transfer_id)
    read_pages = claim.iter_claimed_pages

    def terminated_after_the_first_page(db: sa.Engine, **kwargs: Any) -> Iterator[list[ClaimedRow]]:
        yield next(read_pages(db, **kwargs))
        assert control.wait_for_held(2, timeout=30)  # the first two are on the wire
        raise Terminated

    monkeypatch.setattr(claim, "iter_claimed_pages", terminated_after_the_first_page)
    batch = claimed_batch(engine, impatient_stripe, "run-z", concurrency=2, page_size=4)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            batch.run()
        except BaseException as error:  # the interrupt itself is checked below
            raised.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert control.wait_for_held(2, timeout=30)
        assert batch.stopping.wait(30)
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()

    assert [type(error) for error in raised] == [Terminated]
    report = batch.report
    assert report.outcomes == {"reversed": 1, "stopped": 1}
    assert (report.statuses, report.rows_released) == ({"reversed": 1}, 3)
    assert report.reversed_amount_by_currency == {"usd": 1_000}
    [reversal] = control.get_transfer(on_wire.stripe_transfer_id)["reversals"]
    assert row_state(engine, on_wire.id)["stripe_reversal_id"] == reversal["id"]
    assert _state(engine, on_wire) == ("reversed", 0, 1, None)
    assert _state(engine, no_money) == ("reversal_pending", 0, 1, None)
    assert _audit(engine, no_money) == [("create_reversal", "not_found", None, "run-z")]
    for row in queued:
        assert _requests(control, row.stripe_transfer_id) == 0
        assert attempts_of(engine, row.id) == []
        # Counted with their page before anything was sent: the next run looks first.
        assert _state(engine, row) == ("reversal_pending", 0, 1, None)


def test_the_batch_renews_the_leases_of_the_rows_it_holds(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lease keeper renews this batch's rows, under its run and batch, while it sends.

    The claim sets the leases, so the first renewal is the timer's, a quarter of a
    lease in (10 s, the shortest lease: 2.5 s). One call is held at the emulator
    until that renewal has come back. The real renewal runs; it is wrapped only to
    see how many rows it pushed: a keeper renewing under the wrong run or batch
    pushes none, and the leases then run out under a long run while its rows are
    still being sent.
    """
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 3)
    control.add_script(respond="hold", method="POST", transfer_id=rows[0].stripe_transfer_id)
    renew = claim.renew_leases
    renewed: list[tuple[str, str, int]] = []
    came_back = threading.Event()

    def counted(db: sa.Engine, *, token: str, batch_id: str, lease_seconds: int) -> int:
        touched = renew(db, token=token, batch_id=batch_id, lease_seconds=lease_seconds)
        renewed.append((token, batch_id, touched))
        came_back.set()
        return touched

    monkeypatch.setattr(claim, "renew_leases", counted)
    batch = claimed_batch(engine, impatient_stripe, "run-e", lease_seconds=10)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        assert renewed == []  # the claim set the leases: no second write of every row
        assert came_back.wait(30)
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()

    # At least the held row is still pending under the batch when the timer renews.
    assert renewed[0][:2] == ("run-e", batch.batch_id)
    assert renewed[0][2] >= 1
    assert batch.report.outcomes == {"reversed": 3}
    for row in rows:
        assert _state(engine, row) == ("reversed", 0, 1, None)


def test_the_look_before_giving_up_records_what_stripe_shows_not_the_target(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """Found at the last look, over the target: the row records Stripe's figure and says so.

    Sent before (a lost reply); its first look-up goes unanswered on its last
    attempt, so it is looked at once more before giving up, and Stripe shows 1,200
    of ours against a target of 1,000 (reversed twice by earlier attempts). The row
    is ``reversed`` with 1,200 (reconciliation compares it with Stripe) and the
    over-reversal named for a person; writing the target instead would hide it.
    """
    control = stripe_emulator.control()
    [row] = seed_rows(engine, control, 1, amount=1_500, reversal_target=1_000, stripe_attempts=1)
    [_, newest] = [_ours(control, row, 700), _ours(control, row, 500)]
    control.add_script(respond=429, method="GET", transfer_id=row.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-v", max_attempts=1)

    assert report.outcomes == {"found_existing": 1}
    assert report.reversed_amount_by_currency == {"usd": 1_200}
    state = row_state(engine, row.id)
    assert (state["status"], state["amount_reversed"]) == ("reversed", 1_200)
    assert state["stripe_reversal_id"] == newest
    assert state["error_message"].startswith("over-reversed: ours at Stripe ")
    assert state["error_message"].endswith(
        "; 1200 is more than the target 1000: over-reversed, needs a person"
    )
    assert _posts(control, row.stripe_transfer_id) == 0
    assert _audit(engine, row) == [
        ("lookup_reversal", "error", None, "run-v"),
        ("lookup_reversal", "found_existing", "reversed", "run-v"),
    ]


def test_pages_are_read_only_as_far_as_the_window_allows(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker, pages of three: at most three rows are handed out and not finished.

    The first row's call is held, so the other two of its page wait behind it and
    the window is full when the second page has been counted: the page loop must
    wait there (not read and count the third page) until half the window is done.
    The batch is stopped while it waits; once the held call answers, the loop wakes
    (the window's low mark), sees the stop and leaves: the second page was counted
    but never handed out, the third never read into an attempt. Every row but the
    first is released uncounted, nothing else is sent.
    """
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 7)
    control.add_script(respond="hold", method="POST", transfer_id=rows[0].stripe_transfer_id)
    start_attempts = record.start_attempts
    second_page_counted = threading.Event()

    def counted(db: sa.Engine, **kwargs: Any) -> dict[int, int]:
        attempts = start_attempts(db, **kwargs)
        if rows[3].id in attempts:
            second_page_counted.set()
        return attempts

    monkeypatch.setattr(record, "start_attempts", counted)
    batch = claimed_batch(engine, impatient_stripe, "run-p", concurrency=1, page_size=3)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            batch.run()
        except BaseException as error:  # the run must end normally: checked below
            raised.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30)
        assert second_page_counted.wait(30)
        batch.stop()
    finally:
        control.release_holds()
        worker.join(60)
    assert not worker.is_alive()

    assert raised == []  # the full window was waited on, not a crash that stopped the run
    report = batch.report
    assert report.outcomes == {"reversed": 1}
    assert (report.statuses, report.rows_released) == ({"reversed": 1}, 6)
    assert _state(engine, rows[0]) == ("reversed", 0, 1, None)
    for row in rows[1:]:
        assert _requests(control, row.stripe_transfer_id) == 0
        assert attempts_of(engine, row.id) == []
    # Counted with their pages (the first two); the third page was never counted.
    assert [_state(engine, row) for row in rows[1:]] == [
        *[("reversal_pending", 0, 1, None)] * 5,
        ("reversal_pending", 0, 0, None),
    ]


def test_an_unexpected_error_in_one_row_is_logged_counted_and_leaves_the_rest(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A database fault inside one row's own path (a trigger refusing its audit insert,
    where the lease-at-risk path audits its look-up directly) must not take the batch
    down: it is logged at ERROR naming the row, counted ``error``, and the others go on."""
    control = stripe_emulator.control()
    [faulty] = seed_rows(engine, control, 1, stripe_attempts=1, order_prefix="fault")
    [looked] = seed_rows(engine, control, 1, stripe_attempts=1, order_prefix="ok")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RAISE EXCEPTION 'audit refused for the test'; END$$"
            )
        )
        connection.execute(
            sa.text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON reversal_attempts FOR EACH ROW"
                f" WHEN (NEW.seller_transfer_id = {faulty.id}) EXECUTE FUNCTION refuse_audit()"
            )
        )
    readings = iter([0.0])
    settings = claimed_batch(engine, impatient_stripe, "run-u").settings
    batch = ReversalBatch(
        engine,
        impatient_stripe,
        token="run-u",
        run_id="run-u",
        settings=settings,
        clock=lambda: next(readings, 1e9),  # the lease at risk: look-ups audited, nothing sent
    )
    caplog.set_level(logging.ERROR)

    report = batch.run()

    assert report.outcomes == {"error": 1, "lease_at_risk": 1}
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage() == (
        f"seller transfer {faulty.id}: unexpected error, left for a later run"
    )
    assert error.exc_info is not None
    assert attempts_of(engine, faulty.id) == []
    assert _audit(engine, looked) == [("lookup_reversal", "not_found", None, "run-u")]
    for row in (faulty, looked):
        assert _posts(control, row.stripe_transfer_id) == 0
        # Its attempt counted with its page, released: the next run looks before sending.
        assert _state(engine, row) == ("reversal_pending", 0, 2, None)
