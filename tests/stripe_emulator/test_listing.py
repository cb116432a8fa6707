"""Listing transfers: newest first, a total order, pages that never skip or repeat.

The reconciliation pages one UTC day of transfers at a time; a skipped or
duplicated transfer there would be a false drift finding or a missed one.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from reversal_pipeline.stripe_emulator import EmulatorError, EmulatorServer, EmulatorState
from reversal_pipeline.stripe_emulator.state import Transfer

DAY = 86_400
START = 1_700_000_000 - 1_700_000_000 % DAY  # a UTC midnight


def _seed_days(server: EmulatorServer, days: int = 5, per_day: int = 50) -> list[Transfer]:
    """``days * per_day`` transfers, several sharing a second so ids must break ties."""
    specs: list[dict[str, Any]] = []
    for day in range(days):
        for n in range(per_day):
            specs.append(
                {
                    "amount": 100 + n,
                    "created": START + day * DAY + (n // 3) * 600,
                    "destination": "acct_even" if n % 2 == 0 else "acct_odd",
                    "transfer_group": f"day-{day}",
                }
            )
    return server.state.create_transfers_bulk(specs)


def _newest_first(transfers: list[Transfer]) -> list[str]:
    return [t.id for t in sorted(transfers, key=lambda t: (t.created, t.id), reverse=True)]


def test_auto_paging_returns_each_transfer_once_newest_first(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfers = _seed_days(stripe_emulator)

    listed = [
        t.id for t in emulator_stripe_client.v1.transfers.list({"limit": 7}).auto_paging_iter()
    ]

    assert len(transfers) == 250
    assert listed == _newest_first(transfers)


@pytest.mark.parametrize(
    ("created", "days"),
    [
        ({"gte": START + DAY, "lt": START + 3 * DAY}, {1, 2}),
        ({"gt": START + DAY - 1, "lte": START + 3 * DAY - 1}, {1, 2}),
        ({"gte": START + 4 * DAY}, {4}),
        ({"lt": START + DAY}, {0}),
    ],
)
def test_created_filters_select_whole_days_exactly(
    stripe_emulator: EmulatorServer,
    emulator_stripe_client: stripe.StripeClient,
    created: dict[str, int],
    days: set[int],
) -> None:
    transfers = _seed_days(stripe_emulator)
    expected = [t for t in transfers if (t.created - START) // DAY in days]

    listed = [
        t.id
        for t in emulator_stripe_client.v1.transfers.list(
            {"created": created, "limit": 100}
        ).auto_paging_iter()
    ]

    assert listed == _newest_first(expected)


def test_destination_and_transfer_group_filters_combine(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfers = _seed_days(stripe_emulator)
    expected = [t for t in transfers if t.destination == "acct_odd" and t.transfer_group == "day-3"]

    page = emulator_stripe_client.v1.transfers.list(
        {"destination": "acct_odd", "transfer_group": "day-3", "limit": 100}
    )

    assert [t.id for t in page.data] == _newest_first(expected)
    assert page.has_more is False
    assert page.url == "/v1/transfers"


def test_first_page_has_more_and_the_last_does_not(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfers = _seed_days(stripe_emulator, days=1, per_day=15)
    order = _newest_first(transfers)

    first = emulator_stripe_client.v1.transfers.list()
    last = emulator_stripe_client.v1.transfers.list({"starting_after": order[9]})
    backwards = emulator_stripe_client.v1.transfers.list({"ending_before": order[10], "limit": 3})

    assert [t.id for t in first.data] == order[:10]
    assert first.has_more is True
    assert [t.id for t in last.data] == order[10:]
    assert last.has_more is False
    assert [t.id for t in backwards.data] == order[7:10]
    assert backwards.has_more is True


def test_transfer_ids_look_like_stripes(stripe_emulator: EmulatorServer) -> None:
    transfers = _seed_days(stripe_emulator, days=1, per_day=20)

    assert all(re.fullmatch(r"tr_[A-Za-z0-9]{24}", t.id) for t in transfers)
    assert len({t.id for t in transfers}) == 20


def test_bulk_creation_is_all_or_nothing(stripe_emulator: EmulatorServer) -> None:
    stripe_emulator.state.create_transfer(amount=100, id="tr_taken")

    with pytest.raises(EmulatorError):
        stripe_emulator.state.create_transfers_bulk(
            [{"amount": 1, "id": "tr_new"}, {"amount": 1, "id": "tr_taken"}]
        )
    with pytest.raises(EmulatorError):
        stripe_emulator.state.create_transfers_bulk([{"amount": 1}, {"amount": 0}])

    assert stripe_emulator.state.transfer_count() == 1


def test_bulk_load_of_many_transfers_lists_one_day_exactly() -> None:
    state = EmulatorState()
    per_day = 20_000
    specs = [
        {"amount": 1, "created": START + (i % 10) * DAY + i % 997} for i in range(10 * per_day)
    ]
    state.create_transfers_bulk(specs)

    seen: list[Transfer] = []
    cursor: str | None = None
    while True:
        page = state.list_transfers(
            created_gte=START + 7 * DAY,
            created_lt=START + 8 * DAY,
            limit=100,
            starting_after=cursor,
        )
        seen.extend(page.data)
        if not page.has_more:
            break
        cursor = page.data[-1].id

    keys = [(t.created, t.id) for t in seen]
    assert len(seen) == per_day == len(set(keys))
    assert keys == sorted(keys, reverse=True)
    assert all(START + 7 * DAY <= t.created < START + 8 * DAY for t in seen)


@settings(max_examples=60, deadline=None)
@given(
    createds=st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=60),
    limit=st.integers(min_value=1, max_value=7),
    gte=st.none() | st.integers(min_value=0, max_value=40),
    lt=st.none() | st.integers(min_value=0, max_value=41),
    backwards=st.booleans(),
)
def test_paging_in_either_direction_yields_the_filtered_order_exactly(
    createds: list[int], limit: int, gte: int | None, lt: int | None, backwards: bool
) -> None:
    state = EmulatorState()
    transfers = state.create_transfers_bulk([{"amount": 1, "created": c} for c in createds])
    expected = _newest_first(
        [
            t
            for t in transfers
            if (gte is None or t.created >= gte) and (lt is None or t.created < lt)
        ]
    )

    # Backwards: start at the oldest match and page towards the newest with ending_before.
    cursor: str | None = expected[-1] if backwards and expected else None
    collected: list[str] = [cursor] if cursor else []
    for _ in range(len(createds) + 2):
        if backwards and cursor is None:
            break
        page = state.list_transfers(
            limit=limit,
            created_gte=gte,
            created_lt=lt,
            starting_after=None if backwards else cursor,
            ending_before=cursor if backwards else None,
        )
        ids = [t.id for t in page.data]
        collected = ids + collected if backwards else collected + ids
        if not page.has_more or not ids:
            break
        cursor = ids[0] if backwards else ids[-1]

    assert collected == expected
