"""Issue 17: partial refunds reverse what was refunded, from the seller it concerns.

Real PostgreSQL, the real SDK over HTTP to the emulator. Intake allocates each
refund to per-transfer reversal targets; the job sends the target minus what
Stripe shows of our reversals for the row.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from reversal_pipeline.errors import ConfigurationError, InvalidRowError
from reversal_pipeline.reversals.refund_policy import (
    POLICY_ENV,
    PartialRefundPolicy,
    partial_refund_policy,
    split_largest_remainder,
)
from reversal_pipeline.runbook.actions import requeue
from reversal_pipeline.runbook.refund_events import close_refund_event
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import SeededRow, attempts_of, row_state
from tests.plugins.refunds import (
    paid_order,
    refund_event,
    refund_taken_in,
    reversals_at_stripe,
    take_in,
    webhook_refund,
)
from tests.reversals.conftest import claimed_batch, run_batch

STRIPE_ACTIONS = {"create_reversal", "lookup_reversal", "confirm_reversed"}


def _snapshot(engine: sa.Engine, rows: list[SeededRow]) -> list[tuple[Any, ...]]:
    """Everything a refused refund must leave alone."""
    with engine.connect() as connection:
        allocations = connection.execute(
            sa.text("SELECT count(*) FROM refund_allocations")
        ).scalar()
    return [
        (
            (s := row_state(engine, r.id))["status"],
            s["reversal_target"],
            s["amount_reversed"],
            s["next_retry_at"],
            len(attempts_of(engine, r.id)),
        )
        for r in rows
    ] + [("allocations", allocations)]


# -- intake and job together -----------------------------------------------------------------


def test_a_scoped_partial_refund_reverses_only_that_sellers_transfer_by_that_amount(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    seller_a, seller_b = paid_order(engine, stripe_emulator.control(), [4_000, 2_500], "ord_two")
    webhook_refund(
        engine, "re_b_item", "ord_two", amount=1_200, currency="usd", seller_transfer_id=seller_b.id
    )

    take_in(engine)
    run_batch(engine, impatient_stripe, "run-1")

    b = row_state(engine, seller_b.id)
    [reversal] = reversals_at_stripe(stripe_emulator.control(), seller_b.stripe_transfer_id)
    assert reversal["amount"] == 1_200
    assert reversal["metadata"]["reversal_target"] == "1200"
    assert reversal["metadata"]["refund_ids"] == "re_b_item"
    assert reversal["metadata"]["seller_transfer_id"] == str(seller_b.id)
    assert (b["status"], b["reversal_target"], b["amount_reversed"]) == ("reversed", 1_200, 1_200)
    assert b["stripe_reversal_id"] == reversal["id"]
    a = row_state(engine, seller_a.id)
    assert (a["status"], a["reversal_target"]) == ("completed", 0)
    assert reversals_at_stripe(stripe_emulator.control(), seller_a.stripe_transfer_id) == []
    assert refund_event(engine, "re_b_item")["outcome"] == "reversal_requested"


def test_a_second_partial_refund_sends_only_the_difference(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [5_000], "ord_twice")
    refund_taken_in(engine, "re_part_1", "ord_twice", amount=1_000, currency="usd")
    run_batch(engine, impatient_stripe, "run-1")
    assert row_state(engine, row.id)["status"] == "reversed"

    refund_taken_in(engine, "re_part_2", "ord_twice", amount=1_500, currency="usd")
    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"]) == ("reversal_pending", 2_500)
    run_batch(engine, impatient_stripe, "run-2")

    state = row_state(engine, row.id)
    reversals = reversals_at_stripe(
        stripe_emulator.control(), row.stripe_transfer_id
    )  # newest first
    assert [r["amount"] for r in reversals] == [1_500, 1_000]
    assert reversals[0]["metadata"]["refund_ids"] == "re_part_1,re_part_2"
    assert (state["status"], state["amount_reversed"]) == ("reversed", 2_500)
    assert state["stripe_reversal_id"] == reversals[0]["id"]
    keys = [a["idempotency_key"] for a in attempts_of(engine, row.id) if a["idempotency_key"]]
    assert [k.split(":target:")[1].split(":")[0] for k in keys] == ["1000", "2500"]


def test_a_whole_order_refund_after_partials_completes_every_transfer_to_its_amount(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    first, second = paid_order(engine, stripe_emulator.control(), [3_000, 2_000], "ord_then_all")
    refund_taken_in(
        engine, "re_p", "ord_then_all", amount=700, currency="usd", seller_transfer_id=first.id
    )
    run_batch(engine, impatient_stripe, "run-1")

    refund_taken_in(engine, "re_all", "ord_then_all")
    run_batch(engine, impatient_stripe, "run-2")

    for row, amounts in ((first, [2_300, 700]), (second, [2_000])):
        state = row_state(engine, row.id)
        assert (state["status"], state["reversal_target"], state["amount_reversed"]) == (
            "reversed",
            row.amount,
            row.amount,
        )
        assert [
            r["amount"]
            for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
        ] == amounts
    assert refund_event(engine, "re_all")["outcome"] == "reversal_requested"


def test_pro_rata_splits_1001_cents_over_three_transfers_exactly(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    rows = paid_order(engine, stripe_emulator.control(), [1_000, 1_000, 1_000], "ord_three")
    webhook_refund(engine, "re_split", "ord_three", amount=1_001, currency="usd")

    take_in(engine, PartialRefundPolicy.PRO_RATA)
    run_batch(engine, impatient_stripe, "run-1")

    targets = [row_state(engine, r.id)["reversal_target"] for r in rows]
    assert targets == [334, 334, 333]  # 333.67 each: the two units left go to the earlier ties
    assert sum(targets) == 1_001
    sent = [
        sum(
            x["amount"]
            for x in reversals_at_stripe(stripe_emulator.control(), r.stripe_transfer_id)
        )
        for r in rows
    ]
    assert sent == targets
    assert {row_state(engine, r.id)["status"] for r in rows} == {"reversed"}


def test_split_largest_remainder_gives_the_units_left_to_the_largest_remainders() -> None:
    assert split_largest_remainder(1_001, [1_000, 1_000, 1_000]) == [334, 334, 333]
    assert split_largest_remainder(100, [1, 2]) == [33, 67]  # 33.3 / 66.7: the 0.7 wins
    assert split_largest_remainder(5, [7, 7, 7, 7, 7, 7]) == [1, 1, 1, 1, 1, 0]
    assert sum(split_largest_remainder(999_999, [3, 5, 11, 13])) == 999_999
    with pytest.raises(ValueError, match="cannot split"):
        split_largest_remainder(10, [0, 5])


def test_refuse_policy_surfaces_needs_scope_and_changes_nothing(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    rows = paid_order(engine, stripe_emulator.control(), [1_000, 2_000], "ord_unscoped")
    before = _snapshot(engine, rows)
    webhook_refund(engine, "re_unscoped", "ord_unscoped", amount=500, currency="usd")

    summary = take_in(engine)
    run_batch(engine, impatient_stripe, "run-1")

    event = refund_event(engine, "re_unscoped")
    assert (event["outcome"], event["processed_at"]) == ("needs_scope", None)
    assert POLICY_ENV in event["outcome_detail"]
    assert [(r, o) for r, o, _ in summary.refused] == [("re_unscoped", "needs_scope")]
    assert _snapshot(engine, rows) == before
    assert all(
        reversals_at_stripe(stripe_emulator.control(), r.stripe_transfer_id) == [] for r in rows
    )
    # Not looked at again on its own: a person must scope it or close it.
    assert take_in(engine).events_processed == 0


@pytest.mark.parametrize(
    ("refund", "outcome"),
    [
        ({"amount": 1_001, "currency": "usd"}, "over_refund"),
        ({"amount": 500, "currency": "eur"}, "currency_mismatch"),
    ],
)
def test_an_over_refund_or_a_currency_mismatch_changes_nothing(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    impatient_stripe: StripeResource,
    refund: dict[str, Any],
    outcome: str,
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [1_000], f"ord_{outcome}")
    before = _snapshot(engine, [row])
    refund_taken_in(engine, f"re_{outcome}", f"ord_{outcome}", seller_transfer_id=row.id, **refund)
    run_batch(engine, impatient_stripe, "run-1")

    event = refund_event(engine, f"re_{outcome}")
    assert (event["outcome"], event["processed_at"]) == (outcome, None)
    assert _snapshot(engine, [row]) == before
    assert reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id) == []


def test_an_over_refund_after_earlier_partials_changes_nothing(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [1_000], "ord_over_later")
    refund_taken_in(engine, "re_600", "ord_over_later", amount=600, currency="usd")
    run_batch(engine, impatient_stripe, "run-1")
    before = _snapshot(engine, [row])

    refund_taken_in(engine, "re_500", "ord_over_later", amount=500, currency="usd")

    assert refund_event(engine, "re_500")["outcome"] == "over_refund"
    assert "600 + 500 > amount 1000" in refund_event(engine, "re_500")["outcome_detail"]
    assert _snapshot(engine, [row]) == before


def test_a_duplicate_refund_id_changes_nothing(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [1_000], "ord_dup")
    refund_taken_in(engine, "re_dup", "ord_dup", amount=400, currency="usd")
    run_batch(engine, impatient_stripe, "run-1")
    before = _snapshot(engine, [row])

    refund_taken_in(engine, "re_dup", "ord_dup", amount=400, currency="usd")  # Stripe redelivers
    run_batch(engine, impatient_stripe, "run-2")

    assert _snapshot(engine, [row]) == before
    assert [
        r["amount"] for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    ] == [400]
    with pytest.raises(InvalidRowError, match="re_dup was already received"):
        webhook_refund(engine, "re_dup", "ord_dup", amount=500, currency="usd")


def test_request_reversal_refuses_malformed_amounts_and_foreign_scopes(
    engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [1_000], "ord_mine")
    with pytest.raises(InvalidRowError, match="3-letter currency"):
        webhook_refund(engine, "re_x1", "ord_mine", amount=100)
    with pytest.raises(InvalidRowError, match="positive whole number"):
        webhook_refund(engine, "re_x2", "ord_mine", amount=0, currency="usd")
    with pytest.raises(InvalidRowError, match="belongs to order ord_mine"):
        webhook_refund(
            engine, "re_x3", "ord_other", amount=1, currency="usd", seller_transfer_id=row.id
        )


def test_the_policy_setting_refuses_unknown_values() -> None:
    assert partial_refund_policy({}) is PartialRefundPolicy.REFUSE
    assert partial_refund_policy({POLICY_ENV: "pro_rata"}) is PartialRefundPolicy.PRO_RATA
    with pytest.raises(ConfigurationError, match=POLICY_ENV):
        partial_refund_policy({POLICY_ENV: "largest_first"})


def test_an_early_partial_refund_waits_for_its_payout_then_reverses_its_amount(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [2_000], "ord_early")
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET status = 'pending' WHERE id = :i"), {"i": row.id}
        )
    refund_taken_in(engine, "re_early", "ord_early", amount=300, currency="usd")
    assert refund_event(engine, "re_early")["outcome"] == "waiting_for_payout"
    assert row_state(engine, row.id)["reversal_target"] == 0

    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET status = 'completed' WHERE id = :i"), {"i": row.id}
        )
    take_in(engine)
    run_batch(engine, impatient_stripe, "run-1")

    assert [
        r["amount"] for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    ] == [300]
    assert row_state(engine, row.id)["status"] == "reversed"


# -- money safety with partial targets --------------------------------------------------------


def test_a_lost_response_on_a_second_partial_reversal_is_found_and_never_sent_twice(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [5_000], "ord_lost")
    refund_taken_in(engine, "re_l1", "ord_lost", amount=1_000, currency="usd")
    run_batch(engine, impatient_stripe, "run-1")
    refund_taken_in(engine, "re_l2", "ord_lost", amount=2_000, currency="usd")
    control = stripe_emulator.control()
    # The second create commits at Stripe and every reply to it is lost.
    control.add_scripts(
        [
            {"respond": "lost", "method": "POST", "transfer_id": row.stripe_transfer_id},
            {
                "respond": "reset",
                "method": "POST",
                "transfer_id": row.stripe_transfer_id,
                "times": 10,
            },
        ]
    )

    run_batch(engine, impatient_stripe, "run-2")
    assert row_state(engine, row.id)["status"] == "reversal_pending"
    control.clear_scripts()
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET next_retry_at = now() WHERE id = :i"),
            {"i": row.id},
        )
    run_batch(engine, impatient_stripe, "run-3")

    state = row_state(engine, row.id)
    reversals = reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    assert [r["amount"] for r in reversals] == [2_000, 1_000]  # the lost one, not sent again
    assert (state["status"], state["amount_reversed"]) == ("reversed", 3_000)
    assert state["stripe_reversal_id"] == reversals[0]["id"]
    audit = [a for a in attempts_of(engine, row.id) if a["action"] in STRIPE_ACTIONS]
    assert audit[-1]["action"] == "lookup_reversal"
    assert audit[-1]["outcome"] == "found_existing"
    requests = int(control.counters()["by_transfer"].get(row.stripe_transfer_id, 0))
    assert len(audit) <= requests  # every call audited once (SDK retries on reset are one call)


def test_a_target_raised_while_the_call_is_in_flight_is_not_marked_reversed(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """The reversed write is guarded by the target: a raise mid-call sends the rest next run."""
    [row] = paid_order(engine, stripe_emulator.control(), [5_000], "ord_race")
    refund_taken_in(engine, "re_r1", "ord_race", amount=1_000, currency="usd")
    # The second refund lands while the first create is held in flight at the emulator.
    control = stripe_emulator.control()
    control.add_script(respond="hold", method="POST", transfer_id=row.stripe_transfer_id)
    batch = claimed_batch(engine, impatient_stripe, "run-1")
    worker = threading.Thread(target=batch.run, name="held-run")
    worker.start()
    try:
        assert control.wait_for_held(1, timeout=30), "the held create never came"
        refund_taken_in(engine, "re_r2", "ord_race", amount=500, currency="usd")
    finally:
        control.release_holds()
        worker.join(timeout=60)
    assert not worker.is_alive()

    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"]) == ("reversal_pending", 1_500)
    run_batch(engine, impatient_stripe, "run-2")

    state = row_state(engine, row.id)
    amounts = [
        r["amount"] for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    ]
    assert (state["status"], state["amount_reversed"], sorted(amounts)) == (
        "reversed",
        1_500,
        [500, 1_000],
    )


def test_a_refused_partial_refund_can_be_closed_while_its_sibling_transfers_stay_completed(
    engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    """The runbook's way out of needs_scope: place it by hand, then close the event."""
    rows = paid_order(engine, stripe_emulator.control(), [1_000, 2_000], "ord_close")
    refund_taken_in(engine, "re_close", "ord_close", amount=100, currency="usd")
    assert refund_event(engine, "re_close")["outcome"] == "needs_scope"

    close_refund_event(engine, refund_id="re_close", reason="placed on seller 0 by hand")

    event = refund_event(engine, "re_close")
    assert (event["outcome"], event["processed_at"] is not None) == ("closed_by_operator", True)
    assert {row_state(engine, r.id)["status"] for r in rows} == {"completed"}


# -- never more than the transfer has left ---------------------------------------------------


def test_a_raised_target_beyond_what_the_transfer_has_left_is_not_sent(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """Ours 1000 and 3500 out-of-band leave 500 of 5000: a target of 2500 lacks 1500."""
    [row] = paid_order(engine, stripe_emulator.control(), [5_000], "ord_oob")
    refund_taken_in(engine, "re_o1", "ord_oob", amount=1_000, currency="usd")
    run_batch(engine, impatient_stripe, "run-1")
    control = stripe_emulator.control()
    control.reverse_transfer(row.stripe_transfer_id, 3_500, metadata={"by": "dashboard"})
    refund_taken_in(engine, "re_o2", "ord_oob", amount=1_500, currency="usd")

    run_batch(engine, impatient_stripe, "run-2")

    state = row_state(engine, row.id)
    assert [
        r["amount"] for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    ] == [
        3_500,
        1_000,
    ]
    assert (state["status"], state["reversal_target"], state["amount_reversed"]) == (
        "permanently_failed",
        2_500,
        1_000,
    )
    assert "500 left, the target 2500 still lacks 1500" in state["error_message"]
    stripe_calls = [a for a in attempts_of(engine, row.id) if a["action"] in STRIPE_ACTIONS]
    assert [(a["action"], a["outcome"]) for a in stripe_calls][-1] == (
        "lookup_reversal",
        "beyond_remaining",
    )
    assert [a["action"] for a in stripe_calls].count("create_reversal") == 1  # run-1 only


def test_a_first_send_refused_on_its_amount_is_looked_up_once_and_not_retried(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """A row never sent skips the look-up; Stripe's 400 on the amount makes it look once."""
    [row] = paid_order(engine, stripe_emulator.control(), [5_000], "ord_oob_first")
    stripe_emulator.control().reverse_transfer(row.stripe_transfer_id, 4_500)
    refund_taken_in(engine, "re_f1", "ord_oob_first", amount=1_000, currency="usd")

    run_batch(engine, impatient_stripe, "run-1")

    state = row_state(engine, row.id)
    assert (state["status"], state["amount_reversed"]) == ("permanently_failed", 0)
    assert "500 left, the target 1000 still lacks 1000" in state["error_message"]
    stripe_calls = [
        (a["action"], a["outcome"])
        for a in attempts_of(engine, row.id)
        if a["action"] in STRIPE_ACTIONS
    ]
    assert stripe_calls == [
        ("create_reversal", "transient"),
        ("lookup_reversal", "beyond_remaining"),
    ]
    assert len(reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)) == 1


# -- operators ----------------------------------------------------------------------------------


def test_requeue_keeps_the_target_and_sends_only_what_it_still_lacks(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [5_000], "ord_requeue")
    refund_taken_in(engine, "re_q1", "ord_requeue", amount=1_000, currency="usd")
    run_batch(engine, impatient_stripe, "run-1")
    refund_taken_in(engine, "re_q2", "ord_requeue", amount=1_500, currency="usd")
    control = stripe_emulator.control()
    control.add_scripts(
        [{"respond": 500, "method": "POST", "transfer_id": row.stripe_transfer_id, "times": 5}]
    )
    run_batch(engine, impatient_stripe, "run-2", max_attempts=1)
    assert row_state(engine, row.id)["status"] == "permanently_failed"
    control.clear_scripts()

    requeue(engine, [row.id], reason="Stripe outage over")
    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"], state["amount_reversed"]) == (
        "reversal_pending",
        2_500,
        1_000,
    )
    run_batch(engine, impatient_stripe, "run-3")

    state = row_state(engine, row.id)
    amounts = [
        r["amount"] for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    ]
    assert amounts == [1_500, 1_000]
    assert (state["status"], state["amount_reversed"]) == ("reversed", 2_500)


def test_request_reversal_refuses_a_currency_alone_and_a_transfer_that_does_not_exist(
    engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    """Refused at the door, by name, with nothing recorded (intake.py 153 and 175)."""
    [row] = paid_order(engine, stripe_emulator.control(), [1_000], "ord_door")
    with pytest.raises(InvalidRowError) as alone:
        webhook_refund(engine, "re_y1", "ord_door", currency="usd")
    assert str(alone.value) == "refund re_y1: a currency without an amount"
    missing = row.id + 1_000
    with pytest.raises(InvalidRowError) as unknown:
        webhook_refund(
            engine, "re_y2", "ord_door", amount=1, currency="usd", seller_transfer_id=missing
        )
    assert str(unknown.value) == f"refund re_y2: seller transfer {missing} does not exist"
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM refund_events")).scalar() == 0
    assert row_state(engine, row.id)["status"] == "completed"


def test_a_partial_refund_before_its_order_has_a_transfer_waits_then_reverses_its_amount(
    engine: sa.Engine, stripe_emulator: EmulatorServer, impatient_stripe: StripeResource
) -> None:
    """The webhook can beat the marketplace's own write of the transfer row (issue 12, 9)."""
    refund_taken_in(engine, "re_first", "ord_late", amount=300, currency="usd")
    event = refund_event(engine, "re_first")
    assert event["outcome"] == "waiting_for_transfer"
    assert (
        event["outcome_detail"] == "no seller transfer has order_id 'ord_late' yet; waiting for it"
    )

    [row] = paid_order(engine, stripe_emulator.control(), [1_000], "ord_late")
    take_in(engine)
    run_batch(engine, impatient_stripe, "run-late")

    assert [
        r["amount"] for r in reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id)
    ] == [300]
    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"], state["amount_reversed"]) == (
        "reversed",
        300,
        300,
    )


def test_a_partial_refund_of_a_failed_payout_reverses_nothing_and_says_so(
    engine: sa.Engine, stripe_emulator: EmulatorServer
) -> None:
    [row] = paid_order(engine, stripe_emulator.control(), [1_000], "ord_failed")
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET status = 'failed' WHERE id = :i"), {"i": row.id}
        )
    before = _snapshot(engine, [row])
    refund_taken_in(engine, "re_failed", "ord_failed", amount=300, currency="usd")

    event = refund_event(engine, "re_failed")
    assert event["outcome"] == "payout_failed"
    assert event["outcome_detail"] == (
        f"refund of 300 USD: seller transfer(s) {row.id} failed; "
        "nothing was paid out, nothing to reverse"
    )
    assert _snapshot(engine, [row]) == before
    assert reversals_at_stripe(stripe_emulator.control(), row.stripe_transfer_id) == []
