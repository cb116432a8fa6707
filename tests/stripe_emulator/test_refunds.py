"""Charges and refunds in the emulator: Stripe's refund rules, state machine and listing.

Driven over HTTP: the public API with the real SDK, the out-of-band changes
(a pending refund that settles, a backdated refund) with the control client,
as the pipeline's own tests will.
"""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorControlError, EmulatorServer

DAY = 86_400
START = 1_700_000_000 - 1_700_000_000 % DAY  # a UTC midnight


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> EmulatorClient:
    return stripe_emulator.control()


def _event_types(client: stripe.StripeClient) -> list[tuple[str, Any]]:
    """(type, the status or amount_refunded it carried), oldest first."""
    events = client.v1.events.list({"limit": 100}).data
    return [
        (
            e.type,
            e.data.object.status
            if e.data.object.object == "refund"
            else e.data.object.amount_refunded,
        )
        for e in reversed(events)
    ]


def test_a_partial_then_the_rest_refunds_the_charge_fully(
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    client = emulator_stripe_client
    charge = client.v1.charges.create(
        {"amount": 1000, "currency": "usd", "transfer_group": "order_7"}
    )

    partial = client.v1.refunds.create({"charge": charge.id, "amount": 300})
    after_partial = client.v1.charges.retrieve(charge.id)
    rest = client.v1.refunds.create({"charge": charge.id})  # no amount: what is left
    after_rest = client.v1.charges.retrieve(charge.id)

    assert (partial.status, partial.amount, partial.charge) == ("succeeded", 300, charge.id)
    assert (after_partial.amount_refunded, after_partial.refunded) == (300, False)
    assert rest.amount == 700
    assert (after_rest.amount_refunded, after_rest.refunded) == (1000, True)
    assert after_rest.transfer_group == "order_7"
    assert _event_types(client) == [
        ("refund.created", "succeeded"),
        ("charge.refunded", 300),
        ("refund.created", "succeeded"),
        ("charge.refunded", 1000),
    ]


def test_over_refunds_are_refused_with_stripes_codes(
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    client = emulator_stripe_client
    charge = client.v1.charges.create({"amount": 500, "currency": "usd"})
    client.v1.refunds.create({"charge": charge.id, "amount": 200})

    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create({"charge": charge.id, "amount": 301})
    client.v1.refunds.create({"charge": charge.id, "amount": 300})
    with pytest.raises(stripe.InvalidRequestError) as already:
        client.v1.refunds.create({"charge": charge.id, "amount": 1})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.refunds.create({"charge": "ch_missing", "amount": 1})

    assert (too_large.value.http_status, too_large.value.code) == (400, "amount_too_large")
    assert already.value.code == "charge_already_refunded"
    assert (missing.value.code, missing.value.param) == ("resource_missing", "charge")
    assert client.v1.charges.retrieve(charge.id).amount_refunded == 500


def test_pending_then_succeeded_writes_refund_updated_and_charge_refunded(
    emulator_stripe_client: stripe.StripeClient, control: EmulatorClient
) -> None:
    client = emulator_stripe_client
    charge = control.create_charge(800, transfer_group="order_1")

    pending = control.create_refund(charge["id"], status="pending")
    while_pending = client.v1.charges.retrieve(charge["id"])
    with pytest.raises(stripe.InvalidRequestError) as held_back:
        client.v1.refunds.create({"charge": charge["id"], "amount": 1})
    settled = control.set_refund_status(pending["id"], "succeeded")

    assert (pending["status"], pending["amount"]) == ("pending", 800)
    # Pending money is not refunded yet, but it cannot be refunded twice either.
    assert (while_pending.amount_refunded, while_pending.refunded) == (0, False)
    assert held_back.value.code == "amount_too_large"
    assert settled["status"] == "succeeded"
    assert client.v1.refunds.retrieve(pending["id"]).status == "succeeded"
    assert client.v1.charges.retrieve(charge["id"]).refunded is True
    assert _event_types(client) == [
        ("refund.created", "pending"),
        ("refund.updated", "succeeded"),
        ("charge.refunded", 800),
    ]
    updated = client.v1.events.list({"type": "refund.updated"}).data[0]
    assert updated.data.previous_attributes.to_dict() == {"status": "pending"}


def test_a_pending_refund_that_fails_never_counts_and_frees_its_amount(
    emulator_stripe_client: stripe.StripeClient, control: EmulatorClient
) -> None:
    client = emulator_stripe_client
    charge = control.create_charge(800)
    pending = control.create_refund(charge["id"], amount=500, status="pending")

    failed = control.set_refund_status(pending["id"], "failed")
    charge_after = client.v1.charges.retrieve(charge["id"])
    again = client.v1.refunds.create({"charge": charge["id"], "amount": 800})
    with pytest.raises(EmulatorControlError) as final:  # a final status never moves again
        control.set_refund_status(pending["id"], "succeeded")

    assert final.value.status == 400
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "unknown"
    assert (charge_after.amount_refunded, charge_after.refunded) == (0, False)
    assert again.amount == 800
    types = _event_types(client)
    assert types[:2] == [("refund.created", "pending"), ("refund.updated", "failed")]
    # Only the later refund ever produced a charge.refunded.
    assert [t for t in types if t[0] == "charge.refunded"] == [("charge.refunded", 800)]


def test_control_refunds_are_backdated_with_their_events(control: EmulatorClient) -> None:
    charge = control.create_charge(900, created=START)
    refund = control.create_refund(charge["id"], amount=100, created=START + 60)

    assert refund["created"] == START + 60
    state = control.get_charge(charge["id"])
    assert (state["created"], state["amount_refunded"]) == (START, 100)


def test_refund_listing_pages_both_ways_and_filters(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    payments = stripe_emulator.state.payments
    charges = [payments.create_charge(amount=100, created=START) for _ in range(3)]
    made = []
    for n in range(12):  # three refunds share each second: creation order breaks ties
        charge = charges[n % 3]
        made.append(payments.create_refund(charge.id, amount=5, created=START + n // 3))
    newest_first = [r.id for r in reversed(made)]
    client = emulator_stripe_client

    listed = [r.id for r in client.v1.refunds.list({"limit": 5}).auto_paging_iter()]
    # ending_before from the oldest, page by page toward the newest.
    toward_newer: list[str] = []
    cursor = made[0].id
    while True:
        page = client.v1.refunds.list({"limit": 5, "ending_before": cursor})
        toward_newer = [r.id for r in page.data] + toward_newer
        if not page.has_more:
            break
        cursor = page.data[0].id
    window = client.v1.refunds.list({"created": {"gte": START + 1, "lt": START + 3}, "limit": 100})
    of_charge = client.v1.refunds.list({"charge": charges[1].id, "limit": 100})

    assert listed == newest_first
    assert toward_newer == newest_first[:-1]
    assert [r.id for r in window.data] == newest_first[3:9]
    assert [r.id for r in of_charge.data] == [r.id for r in reversed(made[1::3])]


def test_an_unknown_cursor_is_a_400_naming_the_parameter(
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        emulator_stripe_client.v1.refunds.list({"starting_after": "re_missing"})

    assert (err.value.http_status, err.value.code, err.value.param) == (
        400,
        "resource_missing",
        "starting_after",
    )


def test_a_refund_post_replays_under_its_idempotency_key(
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    client = emulator_stripe_client
    charge = client.v1.charges.create({"amount": 1000, "currency": "usd"})
    options: Any = {"idempotency_key": "refund-once"}

    first = client.v1.refunds.create({"charge": charge.id, "amount": 400}, options)
    second = client.v1.refunds.create({"charge": charge.id, "amount": 400}, options)

    assert first.id == second.id
    assert client.v1.charges.retrieve(charge.id).amount_refunded == 400


def test_scripts_and_the_request_log_cover_the_new_endpoints(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    stripe_emulator.faults.add_script({"respond": 503, "path": "/v1/events", "times": 1})

    with pytest.raises(stripe.APIError) as err:
        emulator_stripe_client.v1.events.list()
    emulator_stripe_client.v1.events.list()

    assert err.value.http_status == 503
    endpoints = [r.endpoint for r in stripe_emulator.state.requests.entries(0, None)]
    assert endpoints[-2:] == ["GET /v1/events", "GET /v1/events"]


def test_livemode_objects_are_hidden_from_test_keys(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    charge = stripe_emulator.state.payments.create_charge(amount=100, livemode=True)

    with pytest.raises(stripe.InvalidRequestError) as err:
        emulator_stripe_client.v1.charges.retrieve(charge.id)

    assert err.value.http_status == 404
