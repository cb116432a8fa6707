"""Injected faults reach the SDK as the failures the pipeline must survive.

The table of bad bodies records which SDK exception each one produces and
whether the write committed: that pair decides what the pipeline may assume.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import stripe

from reversal_pipeline.stripe_emulator import EmulatorServer, FaultConfig

# respond -> (SDK exception or None when the SDK returns normally, http_status, committed)
BAD_BODIES: dict[str, tuple[type[stripe.StripeError] | None, int | None, bool]] = {
    "lost": (stripe.APIConnectionError, None, True),
    "reset": (stripe.APIConnectionError, None, False),
    "html_502": (stripe.APIError, 502, False),
    "malformed_json": (stripe.APIError, 200, True),
    "truncated": (stripe.APIError, 200, True),
    "wrong_object": (None, None, True),
}


@pytest.mark.parametrize("respond", sorted(BAD_BODIES))
def test_bad_body_produces_the_recorded_sdk_outcome(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient, respond: str
) -> None:
    expected, status, committed = BAD_BODIES[respond]
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": respond, "method": "POST"})

    if expected is None:
        result = emulator_stripe_client.v1.transfers.reversals.create(transfer.id)
        assert result.object == "charge"  # the SDK trusts "object": callers must check it
        assert not isinstance(result, stripe.TransferReversal)
    else:
        with pytest.raises(expected) as caught:
            emulator_stripe_client.v1.transfers.reversals.create(transfer.id)
        assert type(caught.value) is expected
        assert caught.value.http_status == status
    reversed_amount = stripe_emulator.state.get_transfer(transfer.id).amount_reversed
    assert reversed_amount == (1000 if committed else 0)


def test_html_502_is_served_as_html_with_a_request_id(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    stripe_emulator.faults.add_script({"respond": "html_502"})

    response = requests.get(
        f"{stripe_emulator.url}/v1/transfers",
        headers={"Authorization": f"Bearer {stripe_api_key}"},
        timeout=10,
    )

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["Request-Id"].startswith("req_")
    assert "502 Bad Gateway" in response.text


def test_lost_response_reports_a_non_retryable_connection_error(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    """The SDK cannot tell a cut body from a bad network, and will not retry it itself."""
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": "lost"})

    with pytest.raises(stripe.APIConnectionError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id)

    assert caught.value.should_retry is False
    assert stripe_emulator.state.requests.entries()[-1].outcome == "lost"


def test_script_for_one_transfer_answers_its_next_two_posts_only(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    target = stripe_emulator.state.create_transfer(amount=1000)
    other = stripe_emulator.state.create_transfer(amount=1000)
    path = f"/v1/transfers/{target.id}/reversals"
    stripe_emulator.faults.add_script({"method": "POST", "path": path, "respond": 500, "times": 2})
    reversals = emulator_stripe_client.v1.transfers.reversals

    untouched = reversals.create(other.id, {"amount": 10})
    read = emulator_stripe_client.v1.transfers.retrieve(target.id)
    failures = []
    for _ in range(2):
        with pytest.raises(stripe.APIError) as caught:
            reversals.create(target.id, {"amount": 10})
        failures.append(caught.value.http_status)
    succeeded = reversals.create(target.id, {"amount": 10})

    assert untouched.amount == 10
    assert read.id == target.id
    assert failures == [500, 500]
    assert succeeded.transfer == target.id
    assert stripe_emulator.faults.scripts() == []


def test_scripts_match_on_prefix_and_transfer_id_in_order(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script(
        {"path_prefix": "/v1/transfers/", "transfer_id": transfer.id, "respond": 503},
        {"path_prefix": "/v1/transfers/", "transfer_id": transfer.id, "respond": 429},
    )

    with pytest.raises(stripe.APIError) as first:
        emulator_stripe_client.v1.transfers.retrieve(transfer.id)
    with pytest.raises(stripe.RateLimitError):
        emulator_stripe_client.v1.transfers.reversals.list(transfer.id)
    listed = emulator_stripe_client.v1.transfers.list()  # no transfer id: never matched

    assert first.value.http_status == 503
    assert [t.id for t in listed.data] == [transfer.id]


def test_rate_limit_uses_a_sliding_second_on_the_emulator_clock(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    stripe_emulator.clock.freeze()
    stripe_emulator.faults.update(rate_limit_per_second=3)
    transfers = emulator_stripe_client.v1.transfers

    admitted = [transfers.list() for _ in range(3)]
    with pytest.raises(stripe.RateLimitError) as caught:
        transfers.list()
    stripe_emulator.faults.update(rate_limit_should_retry=True)
    with pytest.raises(stripe.RateLimitError) as advised:
        transfers.list()
    stripe_emulator.clock.advance(1.0)
    after_window = transfers.list()

    assert len(admitted) == 3
    assert after_window.data == []
    assert caught.value.http_status == 429
    assert caught.value.error.code == "rate_limit"
    assert "Stripe-Should-Retry" not in caught.value.headers
    assert advised.value.headers["Stripe-Should-Retry"] == "true"
    counters = stripe_emulator.state.requests.counters()
    assert counters["by_outcome"] == {"ok": 4, "rate_limited": 2}


def test_random_faults_repeat_exactly_with_the_same_seed(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    def outcomes() -> list[str]:
        result = []
        for _ in range(30):
            try:
                emulator_stripe_client.v1.transfers.list()
                result.append("ok")
            except stripe.APIError:
                result.append("500")
            except stripe.APIConnectionError:
                result.append("reset")
        return result

    stripe_emulator.faults.update(error_rate=0.3, reset_rate=0.2, seed=1234)
    first = outcomes()
    stripe_emulator.faults.update(seed=1234)
    second = outcomes()

    assert first == second
    assert {"ok", "500", "reset"} <= set(first)


def test_fault_methods_limit_random_faults_to_posts(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.update(lost_response_rate=1.0, fault_methods=["POST"])

    read = emulator_stripe_client.v1.transfers.retrieve(transfer.id)
    with pytest.raises(stripe.APIConnectionError):
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id, {"amount": 5})

    assert read.amount_reversed == 0
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 5


def test_latency_overlaps_concurrent_requests(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    """With a sleeping latency, 100 concurrent requests must be in flight together."""
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.update(latency_ms=600)
    start = threading.Barrier(100)

    def call(_: int) -> str:
        start.wait(timeout=30)
        return emulator_stripe_client.v1.transfers.retrieve(transfer.id).id

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(call, range(100)))

    counters = stripe_emulator.state.requests.counters()
    assert results == [transfer.id] * 100
    assert counters["max_in_flight"] >= 50  # serialized handling would give 1


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": 1.5},
        {"latency_ms": -1},
        {"latency_min_ms": 10},
        {"latency_min_ms": 20, "latency_max_ms": 10},
        {"rate_limit_per_second": 0},
        {"no_such_fault": 1},
    ],
)
def test_invalid_fault_settings_are_refused(
    stripe_emulator: EmulatorServer, fields: dict[str, Any]
) -> None:
    before = stripe_emulator.faults.config

    with pytest.raises((ValueError, TypeError)):
        stripe_emulator.faults.update(**fields)

    assert stripe_emulator.faults.config == before


def test_random_latency_range_is_drawn_from_the_seeded_rng() -> None:
    from reversal_pipeline.stripe_emulator.faults import Faults

    faults = Faults(FaultConfig(latency_min_ms=10, latency_max_ms=20, seed=5))
    draws = [faults.latency_seconds() for _ in range(50)]
    faults.update(seed=5)

    assert all(0.010 <= d <= 0.020 for d in draws)
    assert len(set(draws)) > 1
    assert [faults.latency_seconds() for _ in range(50)] == draws


@pytest.mark.parametrize(
    "entry",
    [{"respond": 200}, {"respond": "explode"}, {"respond": 500, "times": 0}, {"respond": True}],
)
def test_invalid_script_entries_are_refused(
    stripe_emulator: EmulatorServer, entry: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"respond|status|times"):
        stripe_emulator.faults.add_script(entry)
    assert stripe_emulator.faults.scripts() == []
