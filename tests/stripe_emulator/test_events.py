"""Events in the emulator: Stripe's list semantics and its 30-day retention.

The refund intake reads events oldest first with ``ending_before``; a page
that skipped or repeated an event there would miss a refund or count it twice.
"""

from __future__ import annotations

import pytest
import requests
import stripe

from reversal_pipeline.stripe_emulator import EmulatorServer

DAY = 86_400


def _refunded_charges(server: EmulatorServer, count: int, created: int) -> list[str]:
    """``count`` charges each refunded in full at ``created``: two events each, one second."""
    payments = server.state.payments
    for _ in range(count):
        charge = payments.create_charge(amount=100, created=created)
        payments.create_refund(charge.id, created=created)
    page = payments.list_events(limit=100)
    return [e.id for e in page.data]  # newest first


def test_pages_toward_older_and_toward_newer_list_each_event_once(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    now = int(stripe_emulator.clock())
    newest_first = _refunded_charges(stripe_emulator, 9, now - 60)
    client = emulator_stripe_client

    older = [e.id for e in client.v1.events.list({"limit": 4}).auto_paging_iter()]
    newer: list[str] = []
    cursor = newest_first[-1]
    while True:
        page = client.v1.events.list({"limit": 4, "ending_before": cursor})
        assert [e.id for e in page.data] == sorted(
            (e.id for e in page.data), key=newest_first.index
        )  # each page newest first
        newer = [e.id for e in page.data] + newer
        if not page.has_more:
            break
        cursor = page.data[0].id

    assert len(newest_first) == 18
    assert older == newest_first
    assert newer == newest_first[:-1]


def test_within_one_second_events_keep_the_order_they_happened_in(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    now = int(stripe_emulator.clock())
    _refunded_charges(stripe_emulator, 5, now)

    types = [e.type for e in emulator_stripe_client.v1.events.list({"limit": 100}).data]

    assert types == ["charge.refunded", "refund.created"] * 5


def test_type_types_and_created_filters(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    now = int(stripe_emulator.clock())
    _refunded_charges(stripe_emulator, 2, now - 100)
    _refunded_charges(stripe_emulator, 3, now - 50)
    client = emulator_stripe_client

    by_types = client.v1.events.list({"types": ["refund.created"], "limit": 100}).data
    by_wildcard = client.v1.events.list({"type": "refund.*", "limit": 100}).data
    by_type = client.v1.events.list({"type": "charge.refunded", "limit": 100}).data
    window = client.v1.events.list({"created": {"gt": now - 100, "lte": now - 50}}).data
    nothing = client.v1.events.list({"types": ["payout.paid"]}).data
    with pytest.raises(stripe.InvalidRequestError) as both:
        client.v1.events.list({"type": "refund.created", "types": ["refund.updated"]})

    assert [e.type for e in by_types] == ["refund.created"] * 5
    assert [e.id for e in by_wildcard] == [e.id for e in by_types]
    assert [e.type for e in by_type] == ["charge.refunded"] * 5
    assert len(window) == 6
    assert {e.created for e in window} == {now - 50}
    assert nothing == []
    assert both.value.http_status == 400


def test_an_event_past_30_days_is_gone_but_its_refund_is_still_listed(
    stripe_emulator: EmulatorServer,
    emulator_stripe_client: stripe.StripeClient,
    stripe_api_key: str,
) -> None:
    clock = stripe_emulator.clock
    clock.freeze()
    old = _refunded_charges(stripe_emulator, 1, int(clock()))
    clock.advance(2 * DAY)
    kept = _refunded_charges(stripe_emulator, 1, int(clock()))[:2]
    clock.advance(29 * DAY)  # the first two events are 31 days old, the others 29
    client = emulator_stripe_client
    headers = {"Authorization": f"Bearer {stripe_api_key}"}

    listed = [e.id for e in client.v1.events.list({"limit": 100}).data]
    retrieve_old = requests.get(
        f"{stripe_emulator.url}/v1/events/{old[-1]}", headers=headers, timeout=10
    )
    cursor_old = requests.get(
        f"{stripe_emulator.url}/v1/events",
        params={"ending_before": old[-1]},
        headers=headers,
        timeout=10,
    )
    refunds = client.v1.refunds.list({"limit": 100}).data

    assert listed == kept
    assert client.v1.events.retrieve(kept[0]).id == kept[0]
    assert retrieve_old.status_code == 404
    assert retrieve_old.json()["error"]["code"] == "resource_missing"
    assert cursor_old.status_code == 400
    assert cursor_old.json()["error"]["param"] == "ending_before"
    assert len(refunds) == 2  # refunds are kept forever


def test_retention_follows_the_emulator_clock(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    now = int(stripe_emulator.clock())
    events = _refunded_charges(stripe_emulator, 1, now)

    stripe_emulator.clock.advance(30 * DAY - 5)
    still = emulator_stripe_client.v1.events.list().data
    stripe_emulator.clock.advance(10)
    gone = emulator_stripe_client.v1.events.list().data

    assert [e.id for e in still] == events
    assert gone == []
