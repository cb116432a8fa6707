"""Issue 12, defects 1 and 5-8: every Stripe call audited once, no loop, no give-up blind.

Real PostgreSQL, the real SDK over HTTP, the emulator's scripted faults. The
resource's 429 patience is 0 s, so a 429 is "beyond patience" at once.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.reverse import row_problem
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import advance_clock, attempts_of, row_state, seed_rows
from tests.reversals.conftest import claimed_batch, run_batch

STRIPE_ACTIONS = {"create_reversal", "lookup_reversal", "confirm_reversed"}


def _stripe_audit(engine: sa.Engine, row_id: int) -> list[dict]:
    return [a for a in attempts_of(engine, row_id) if a["action"] in STRIPE_ACTIONS]


def _requests_for(emulator: EmulatorServer, transfer_id: str) -> int:
    return int(emulator.control().counters()["by_transfer"].get(transfer_id, 0))


def _reversals(emulator: EmulatorServer, transfer_id: str) -> list[dict]:
    return emulator.control().get_transfer(transfer_id)["reversals"]


# -- defect 1: a 429 beyond the client's patience -------------------------------------------


def test_one_429_on_the_create_is_one_audit_row_and_a_counted_retry(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().add_script(
        respond=429, method="POST", transfer_id=row.stripe_transfer_id
    )

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 1)
    assert state["next_retry_at"] is not None
    assert state["claimed_by"] is None
    [call] = _stripe_audit(engine, row.id)
    assert (call["action"], call["outcome"], call["http_status"]) == (
        "create_reversal",
        "rate_limited",
        429,
    )
    assert call["status_after"] == "reversal_pending"
    assert _requests_for(stripe_emulator, row.stripe_transfer_id) == 1
    assert _reversals(stripe_emulator, row.stripe_transfer_id) == []

    advance_clock(engine, 3600)
    run_batch(engine, impatient_stripe, "run-b")

    state = row_state(engine, row.id)
    [reversal] = _reversals(stripe_emulator, row.stripe_transfer_id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", reversal["id"])
    audit = _stripe_audit(engine, row.id)
    assert len(audit) == _requests_for(stripe_emulator, row.stripe_transfer_id)
    creates = [a for a in audit if a["action"] == "create_reversal"]
    assert len({a["idempotency_key"] for a in creates}) == len(creates) == 2
    assert creates[-1]["stripe_reversal_id"] == reversal["id"]


def test_a_persisting_429_backs_off_and_reaches_max_attempts(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().add_script(
        respond=429, method="POST", transfer_id=row.stripe_transfer_id, times=100
    )

    for expected in (1, 2):
        run_batch(engine, impatient_stripe, f"run-{expected}", max_attempts=3)
        state = row_state(engine, row.id)
        assert (state["status"], state["retry_count"]) == ("reversal_pending", expected)
        advance_clock(engine, 3600)
    run_batch(engine, impatient_stripe, "run-3", max_attempts=3)

    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("permanently_failed", 3)
    assert "gave up after 3 attempt(s)" in state["error_message"]
    audit = _stripe_audit(engine, row.id)
    assert len(audit) == _requests_for(stripe_emulator, row.stripe_transfer_id)
    assert [a["action"] for a in audit].count("create_reversal") == 3


def test_a_429_on_the_confirming_get_is_retried_later_with_one_row_per_call(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    dashboard = stripe_emulator.control().reverse_transfer(row.stripe_transfer_id)
    stripe_emulator.control().add_script(
        respond=429, method="GET", path=f"/v1/transfers/{row.stripe_transfer_id}"
    )

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 1)
    audit = _stripe_audit(engine, row.id)
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("create_reversal", "already_reversed"),
        ("confirm_reversed", "error"),
    ]
    assert audit[-1]["http_status"] == 429

    advance_clock(engine, 3600)
    run_batch(engine, impatient_stripe, "run-b")

    state = row_state(engine, row.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", dashboard["id"])
    assert len(_stripe_audit(engine, row.id)) == _requests_for(
        stripe_emulator, row.stripe_transfer_id
    )


def test_a_429_on_the_lookup_is_retried_later(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1, stripe_attempts=1)
    stripe_emulator.control().add_script(
        respond=429, method="GET", path=f"/v1/transfers/{row.stripe_transfer_id}/reversals"
    )

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 1)
    [call] = _stripe_audit(engine, row.id)
    assert (call["action"], call["http_status"]) == ("lookup_reversal", 429)
    assert _requests_for(stripe_emulator, row.stripe_transfer_id) == 1


# -- defect 5: after a 401, nothing more is counted --------------------------------------------


def test_an_answer_arriving_after_a_401_is_audited_but_the_row_is_released_uncounted(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    control = stripe_emulator.control()
    [held] = seed_rows(engine, None, 1, stripe_transfer_id="tr_NotAtStripe000001")
    [refused] = seed_rows(engine, control, 1, order_prefix="refused")
    control.add_script(respond="hold", method="POST", transfer_id=held.stripe_transfer_id)
    control.add_script(respond=401, method="POST", transfer_id=refused.stripe_transfer_id)

    batch = claimed_batch(engine, impatient_stripe, "run-a", concurrency=2, page_size=2)
    worker = threading.Thread(target=batch.run)
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=10)
        assert batch.stopping.wait(10)  # the 401 has stopped the batch
    finally:
        control.release_holds()
        worker.join(30)

    assert batch.report.systemic_error is not None
    for row in (held, refused):
        state = row_state(engine, row.id)
        assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)
        assert state["claimed_by"] is None
    # The 404 that came back after the stop is audited, and changed nothing.
    [late] = _stripe_audit(engine, held.id)
    assert (late["http_status"], late["status_after"]) == (404, None)
    assert batch.report.statuses == {}


# -- defect 6: the look-up before giving up ---------------------------------------------------


def test_a_401_on_the_lookup_before_giving_up_stops_the_run(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    control = stripe_emulator.control()
    control.add_script(respond=500, method="POST", transfer_id=row.stripe_transfer_id)
    control.add_script(respond=401, method="GET", transfer_id=row.stripe_transfer_id)

    report = run_batch(engine, impatient_stripe, "run-a", max_attempts=1)

    assert report.systemic_error is not None
    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)
    assert len(_stripe_audit(engine, row.id)) == 2  # the create and the refused look-up


def test_an_unanswered_lookup_before_giving_up_means_look_again_later(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    control = stripe_emulator.control()
    # The create commits at Stripe and its reply is lost; the look-up then gets 503s.
    control.add_scripts(
        [
            {"respond": "lost", "method": "POST", "transfer_id": row.stripe_transfer_id},
            {
                "respond": "reset",
                "method": "POST",
                "transfer_id": row.stripe_transfer_id,
                "times": 10,
            },
            {"respond": 503, "method": "GET", "transfer_id": row.stripe_transfer_id, "times": 3},
        ]
    )

    run_batch(engine, impatient_stripe, "run-a", max_attempts=1)

    state = row_state(engine, row.id)
    assert state["status"] == "reversal_pending"  # not permanently_failed: money may have moved
    assert state["next_retry_at"] is not None
    assert "look" in state["error_message"]
    control.clear_scripts()
    advance_clock(engine, 7 * 3600)
    run_batch(engine, impatient_stripe, "run-b", max_attempts=1)

    state = row_state(engine, row.id)
    [reversal] = _reversals(stripe_emulator, row.stripe_transfer_id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", reversal["id"])
    creates = [a for a in _stripe_audit(engine, row.id) if a["action"] == "create_reversal"]
    assert len(creates) == 1  # an exhausted row is only looked up, never sent again


def test_an_exhausted_row_with_nothing_at_stripe_gives_up_after_its_lookup(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    control = stripe_emulator.control()
    control.add_script(respond=500, method="POST", transfer_id=row.stripe_transfer_id)
    control.add_script(respond=503, method="GET", transfer_id=row.stripe_transfer_id, times=3)

    run_batch(engine, impatient_stripe, "run-a", max_attempts=1)
    assert row_state(engine, row.id)["status"] == "reversal_pending"
    advance_clock(engine, 7 * 3600)
    run_batch(engine, impatient_stripe, "run-b", max_attempts=1)

    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert "gave up after 1 attempt(s)" in state["error_message"]
    assert [a["action"] for a in _stripe_audit(engine, row.id)].count("create_reversal") == 1
    assert _reversals(stripe_emulator, row.stripe_transfer_id) == []


# -- defect 7: the recovery look-up compares amount and currency ------------------------------


def test_an_earlier_smaller_reversal_of_ours_is_not_taken_as_covering_the_row(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """Issue 17 changed the second half: the job now sends only the difference to the target.

    Still true from issue 12: a smaller reversal never makes the row ``reversed`` as it is.
    """
    [row] = seed_rows(engine, stripe_emulator.control(), 1, stripe_attempts=1)
    earlier = stripe_emulator.control().reverse_transfer(
        row.stripe_transfer_id, amount=300, metadata={"seller_transfer_id": str(row.id)}
    )

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    reversals = _reversals(stripe_emulator, row.stripe_transfer_id)
    assert sorted(r["amount"] for r in reversals) == [300, 700]  # the difference, once
    [added] = [r for r in reversals if r["id"] != earlier["id"]]
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", added["id"])
    assert (state["reversal_target"], state["amount_reversed"]) == (1_000, 1_000)
    [lookup] = [a for a in _stripe_audit(engine, row.id) if a["action"] == "lookup_reversal"]
    assert lookup["outcome"] == "partial"
    assert earlier["id"] in lookup["message"]


def test_an_earlier_reversal_in_another_currency_is_not_taken_as_covering_the_row(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [usd] = stripe_emulator.control().create_transfers(
        [{"amount": 1_000, "currency": "usd", "destination": "acct_x"}], returning="ids"
    )
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=usd, currency="eur", stripe_attempts=1)
    stripe_emulator.control().reverse_transfer(
        usd, amount=1_000, metadata={"seller_transfer_id": str(row.id)}
    )

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert "USD" in state["error_message"]
    assert "EUR" in state["error_message"]


# -- defect 8 ---------------------------------------------------------------------------------


def _row(transfer_id: str) -> ClaimedRow:
    return ClaimedRow(
        id=1,
        order_id="ord_1",
        seller_id="s",
        stripe_transfer_id=transfer_id,
        amount=100,
        currency="usd",
        retry_count=0,
        stripe_attempts=0,
        reversal_requested_at=None,
    )


def test_a_transfer_id_with_a_trailing_newline_is_refused() -> None:
    assert row_problem(_row("tr_abc")) is None
    problem = row_problem(_row("tr_abc\n"))
    assert problem is not None
    assert "not shaped like tr_" in problem


# -- the confirmation of "already reversed" (mutation survivors named in issue 12) ------------

ALREADY = "The transfer {} is already fully reversed."


def _already_reversed_answer(emulator: EmulatorServer, transfer_id: str) -> None:
    emulator.control().add_script(
        respond=400,
        method="POST",
        transfer_id=transfer_id,
        message=ALREADY.format(transfer_id),
        type="invalid_request_error",
    )


def test_already_reversed_for_less_than_the_row_is_not_reversed(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().reverse_transfer(row.stripe_transfer_id, amount=600)
    _already_reversed_answer(stripe_emulator, row.stripe_transfer_id)

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert "less than this row's 1000" in state["error_message"]
    assert state["stripe_reversal_id"] is None


def test_our_own_earlier_reversal_is_recorded_over_a_newer_one(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    control = stripe_emulator.control()
    ours = control.reverse_transfer(
        row.stripe_transfer_id, amount=400, metadata={"seller_transfer_id": str(row.id)}
    )
    control.advance_clock(60)
    newest = control.reverse_transfer(row.stripe_transfer_id, amount=600)
    _already_reversed_answer(stripe_emulator, row.stripe_transfer_id)

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert (state["status"], state["stripe_reversal_id"]) == ("reversed", ours["id"])
    assert newest["id"] != ours["id"]
    assert "by an earlier attempt of ours" in state["error_message"]


def test_an_error_while_confirming_is_routed_not_raised(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    _already_reversed_answer(stripe_emulator, row.stripe_transfer_id)
    stripe_emulator.control().add_script(
        respond=500, method="GET", path=f"/v1/transfers/{row.stripe_transfer_id}", times=3
    )

    report = run_batch(engine, impatient_stripe, "run-a")

    assert report.outcomes["transient"] == 1
    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 1)
    assert "HTTP 500" in state["error_message"]


def test_a_401_while_confirming_stops_the_run(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    _already_reversed_answer(stripe_emulator, row.stripe_transfer_id)
    stripe_emulator.control().add_script(
        respond=401, method="GET", path=f"/v1/transfers/{row.stripe_transfer_id}"
    )

    report = run_batch(engine, impatient_stripe, "run-a")

    assert report.systemic_error is not None
    state = row_state(engine, row.id)
    assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)


def test_a_transfer_gone_while_confirming_fails_for_good_at_once(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """A 404 on the confirming GET is the contract's "not found": one call, no retry."""
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    _already_reversed_answer(stripe_emulator, row.stripe_transfer_id)
    stripe_emulator.control().add_script(
        respond=404,
        method="GET",
        path=f"/v1/transfers/{row.stripe_transfer_id}",
        type="invalid_request_error",
        code="resource_missing",
        message=f"No such transfer: '{row.stripe_transfer_id}'",
    )

    report = run_batch(engine, impatient_stripe, "run-a")

    assert report.outcomes["not_found"] == 1
    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert "data-integrity incident" in state["error_message"]
    assert [(a["action"], a["outcome"]) for a in _stripe_audit(engine, row.id)][-1] == (
        "confirm_reversed",
        "error",
    )


def test_already_reversed_in_another_currency_is_not_reversed(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """Stripe's "already reversed" for a transfer in another currency proves nothing."""
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    stripe_emulator.control().reverse_transfer(row.stripe_transfer_id, amount=1_000)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET currency = 'eur' WHERE id = :id"), {"id": row.id}
        )

    run_batch(engine, impatient_stripe, "run-a")

    state = row_state(engine, row.id)
    assert state["status"] == "permanently_failed"
    assert "not in the row's EUR" in state["error_message"]
    assert state["stripe_reversal_id"] is None
