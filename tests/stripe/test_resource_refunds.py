"""StripeResource's refund and event readers, end to end against the emulator.

Real SDK, real HTTP. Call counts are checked against the emulator's own
request log (what reached the wire), as in ``test_resource_emulator.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from reversal_pipeline.errors import (
    ChargeNotFound,
    RefundNotFound,
    StripeCursorExpired,
    StripeObjectNotFound,
    StripeSystemicError,
    TransferNotFound,
)
from reversal_pipeline.stripe import (
    ChargeSnapshot,
    RefundSnapshot,
    StripeEventRecord,
    StripeResource,
)
from reversal_pipeline.stripe.shared_budget import SharedBudget
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer

DAY = 86_400
REFUND_TYPES = ("refund.created", "refund.updated", "charge.refunded")


def make_resource(server: EmulatorServer, api_key: str, **overrides: Any) -> StripeResource:
    settings: dict[str, Any] = {
        "api_key": api_key,
        "api_base": server.url,
        "requests_per_second": 500,
        "max_network_retries": 0,
        "rate_limit_max_wait_seconds": 10,
    }
    settings.update(overrides)
    return StripeResource(**settings)


@pytest.fixture
def resource(stripe_emulator: EmulatorServer, stripe_api_key: str) -> Iterator[StripeResource]:
    res = make_resource(stripe_emulator, stripe_api_key)
    yield res
    res.close()


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> EmulatorClient:
    return stripe_emulator.control()


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _wire(server: EmulatorServer) -> Counter[str]:
    return Counter(r.endpoint for r in server.state.requests.entries(0, None))


def _all_events_oldest_first(server: EmulatorServer) -> list[str]:
    page = server.state.payments.list_events(limit=100)
    ids = [e.id for e in page.data]
    while page.has_more:
        page = server.state.payments.list_events(limit=100, starting_after=ids[-1])
        ids.extend(e.id for e in page.data)
    return ids[::-1]


def test_events_come_oldest_first_across_many_pages(
    stripe_emulator: EmulatorServer, resource: StripeResource, control: EmulatorClient
) -> None:
    yesterday = (_utc(int(stripe_emulator.clock())) - timedelta(days=1)).date()
    control.create_refunds_bulk(yesterday, 260)  # 520 events: six pages of 100
    expected = _all_events_oldest_first(stripe_emulator)

    from_scratch = list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=None))
    after_cursor = list(resource.iter_events_oldest_first([], after_event_id=expected[10]))

    assert len(expected) == 520
    assert [e.id for e in from_scratch] == expected
    assert [e.id for e in after_cursor] == expected[11:]
    assert _wire(stripe_emulator)["GET /v1/events"] == resource.calls_made["list_events"]
    first, second = from_scratch[0], from_scratch[1]
    assert isinstance(first, StripeEventRecord)
    assert (first.type, second.type) == ("refund.created", "charge.refunded")
    assert first.refund is not None
    assert first.charge is None
    assert second.charge is not None
    assert second.charge.refunded is True
    assert first.refund.charge_id == second.charge.id
    assert second.charge.transfer_group == "order_1"


def test_more_than_a_page_in_one_second_still_comes_oldest_first(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    payments = stripe_emulator.state.payments
    second = int(stripe_emulator.clock()) - 3_600
    for _ in range(70):  # 140 events sharing one second: a window that cannot be split
        charge = payments.create_charge(amount=100, created=second)
        payments.create_refund(charge.id, created=second)
    expected = _all_events_oldest_first(stripe_emulator)

    walked = list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=None))

    assert len(expected) == 140
    assert [e.id for e in walked] == expected


def test_a_cursor_sees_only_what_came_after_it_and_types_filter(
    stripe_emulator: EmulatorServer, resource: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(900, transfer_group="order_5")
    pending = control.create_refund(charge["id"], amount=400, status="pending")
    [created] = list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=None))

    control.set_refund_status(pending["id"], "succeeded")
    later = list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=created.id))
    only_updates = list(
        resource.iter_events_oldest_first(["refund.updated"], after_event_id=created.id)
    )
    nothing_new = list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=later[-1].id))

    assert created.refund is not None
    assert created.refund.status == "pending"
    assert [(e.type, e.refund.status if e.refund else None) for e in later] == [
        ("refund.updated", "succeeded"),
        ("charge.refunded", None),
    ]
    assert later[1].charge is not None
    assert later[1].charge.amount_refunded == 400
    assert [e.id for e in only_updates] == [later[0].id]
    assert nothing_new == []


def test_created_since_starts_the_walk_at_that_second(
    stripe_emulator: EmulatorServer, resource: StripeResource, control: EmulatorClient
) -> None:
    now = int(stripe_emulator.clock())
    for offset in (3 * DAY, 2 * DAY, DAY):
        charge = control.create_charge(100, created=now - offset)
        control.create_refund(charge["id"], created=now - offset)

    since = list(
        resource.iter_events_oldest_first(
            ["refund.created"], after_event_id=None, created_since=_utc(now - 2 * DAY)
        )
    )

    assert [e.created for e in since] == [_utc(now - 2 * DAY), _utc(now - DAY)]


def test_an_expired_cursor_raises_stripe_cursor_expired(
    stripe_emulator: EmulatorServer, resource: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(100)
    control.create_refund(charge["id"])
    [event] = list(resource.iter_events_oldest_first(["refund.created"], after_event_id=None))
    stripe_emulator.clock.advance(31 * DAY)

    with pytest.raises(StripeCursorExpired) as expired:
        list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=event.id))
    with pytest.raises(StripeCursorExpired):
        list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id="evt_never"))

    assert expired.value.http_status == 400
    assert event.id in expired.value.message


def test_refunds_created_in_a_half_open_window(
    stripe_emulator: EmulatorServer, resource: StripeResource, control: EmulatorClient
) -> None:
    start = int(stripe_emulator.clock()) - 40 * DAY  # past event retention: refunds stay
    made = {}
    for offset in (-1, 0, 1, DAY - 1, DAY):
        charge = control.create_charge(100 + offset % 7, created=start + offset)
        made[offset] = control.create_refund(charge["id"], created=start + offset)["id"]
    failed_charge = control.create_charge(50, created=start + 5)
    failed = control.create_refund(failed_charge["id"], status="pending", created=start + 5)
    control.set_refund_status(failed["id"], "failed")

    window = list(resource.iter_refunds_created(_utc(start), _utc(start + DAY)))

    assert all(isinstance(r, RefundSnapshot) for r in window)
    assert {r.id for r in window} == {made[0], made[1], made[DAY - 1], failed["id"]}
    assert {r.status for r in window} == {"succeeded", "failed"}
    assert _wire(stripe_emulator)["GET /v1/refunds"] == resource.calls_made["list_refunds"] == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        resource.iter_refunds_created(datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_a_days_refunds_page_through(
    stripe_emulator: EmulatorServer, resource: StripeResource, control: EmulatorClient
) -> None:
    day = date(2025, 6, 1)
    control.create_refunds_bulk(day, 250)
    start = datetime(2025, 6, 1, tzinfo=UTC)

    listed = list(resource.iter_refunds_created(start, start + timedelta(days=1)))

    assert len({r.id for r in listed}) == 250
    assert resource.calls_made["list_refunds"] == 3


@pytest.mark.parametrize(
    ("lookup", "object_id", "error"),
    [("get_charge", "ch_missing", ChargeNotFound), ("get_refund", "re_missing", RefundNotFound)],
)
def test_a_missing_charge_or_refund_is_named_as_such_not_as_a_transfer(
    resource: StripeResource, lookup: str, object_id: str, error: type[StripeObjectNotFound]
) -> None:
    with pytest.raises(StripeObjectNotFound) as raised:
        getattr(resource, lookup)(object_id)

    assert type(raised.value) is error
    assert not isinstance(raised.value, TransferNotFound)  # the transfer path's own verdict
    assert (raised.value.http_status, raised.value.stripe_code) == (404, "resource_missing")
    assert object_id in raised.value.message  # Stripe's "No such ...: 'ch_missing'"
    assert resource.calls_made["retrieve_" + lookup.removeprefix("get_")] == 1  # not retried


def test_a_missing_transfer_is_still_transfer_not_found(resource: StripeResource) -> None:
    with pytest.raises(TransferNotFound):
        resource.get_transfer("tr_missing")


def test_charge_and_refund_lookups(resource: StripeResource, control: EmulatorClient) -> None:
    charge = control.create_charge(
        1_000, currency="EUR", transfer_group="order_3", metadata={"order_id": "3"}
    )
    first = control.create_refund(charge["id"], amount=300, metadata={"seller_transfer_id": "8"})
    second = control.create_refund(charge["id"], amount=200, status="pending")

    snapshot = resource.get_charge(charge["id"])
    refund = resource.get_refund(first["id"])
    of_charge = resource.refunds_for_charge(charge["id"])

    assert snapshot == ChargeSnapshot(
        id=charge["id"],
        amount=1_000,
        amount_refunded=300,
        currency="eur",
        refunded=False,
        transfer_group="order_3",
        metadata={"order_id": "3"},
        created=_utc(charge["created"]),
    )
    assert refund == RefundSnapshot(
        id=first["id"],
        charge_id=charge["id"],
        amount=300,
        currency="eur",
        status="succeeded",
        created=_utc(first["created"]),
        metadata={"seller_transfer_id": "8"},
    )
    assert [(r.id, r.status) for r in of_charge] == [
        (second["id"], "pending"),
        (first["id"], "succeeded"),
    ]
    calls = resource.calls_made
    assert (calls["retrieve_charge"], calls["retrieve_refund"], calls["list_refunds"]) == (1, 1, 1)


def test_a_revoked_key_is_systemic_on_every_reader(
    stripe_emulator: EmulatorServer,
    resource: StripeResource,
    control: EmulatorClient,
    stripe_api_key: str,
) -> None:
    charge = control.create_charge(100)
    refund = control.create_refund(charge["id"])
    control.revoke_key(stripe_api_key)
    now = _utc(int(stripe_emulator.clock()))

    readers = [
        lambda: list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id=None)),
        lambda: list(resource.iter_events_oldest_first(REFUND_TYPES, after_event_id="evt_1")),
        lambda: list(resource.iter_refunds_created(now - timedelta(days=1), now)),
        lambda: resource.refunds_for_charge(charge["id"]),
        lambda: resource.get_charge(charge["id"]),
        lambda: resource.get_refund(refund["id"]),
    ]
    for read in readers:
        with pytest.raises(StripeSystemicError) as err:
            read()
        assert err.value.http_status == 401
        assert stripe_api_key not in str(err.value)


def test_readers_draw_on_the_shared_budget_at_listing_priority(
    stripe_emulator: EmulatorServer,
    stripe_api_key: str,
    control: EmulatorClient,
    database_url: str,
) -> None:
    charge = control.create_charge(100)
    refund = control.create_refund(charge["id"])
    res = make_resource(stripe_emulator, stripe_api_key, shared_budget_database_url=database_url)
    now = _utc(int(stripe_emulator.clock()))
    try:
        list(res.iter_events_oldest_first(REFUND_TYPES, after_event_id=None))
        list(res.iter_refunds_created(now - timedelta(days=1), now + timedelta(seconds=1)))
        res.refunds_for_charge(charge["id"])
        res.get_charge(charge["id"])
        res.get_refund(refund["id"])
        usage = res.budget_usage()
        calls = sum(v for k, v in res.calls_made.items() if k != "rate_limited_retries")
    finally:
        res.close()

    assert calls >= 6
    assert usage["stripe_budget_granted"] == usage["stripe_budget_granted_listing"] == calls


def test_the_shared_budget_books_below_the_limit_and_never_sends_above_it(
    stripe_emulator: EmulatorServer, stripe_api_key: str, database_url: str
) -> None:
    """Slots are booked at 98 % of the budget; catching up on late ones may reach 99 %
    of it, never more (stripe/shared_budget.py, the spacer)."""
    res = make_resource(
        stripe_emulator,
        stripe_api_key,
        shared_budget_database_url=database_url,
        requests_per_second=40.0,
    )
    try:
        budget = res.rate_limiter
        assert isinstance(budget, SharedBudget)
        assert budget.rate == pytest.approx(40.0 * 0.98)
        assert budget.max_send_rate == pytest.approx(40.0 * 0.99)
    finally:
        res.close()
