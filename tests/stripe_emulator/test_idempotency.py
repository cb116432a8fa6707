"""Idempotency as Stripe documents it: first answer stored and replayed, per API key.

These are the guarantees the pipeline's money-safety rules lean on: a retry
with the same key after a lost answer must return the same reversal and never
create a second one.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import stripe

from reversal_pipeline.stripe_emulator import EmulatorServer

TTL = 24 * 3600.0


def _reverse(
    client: stripe.StripeClient, transfer_id: str, key: str, params: dict[str, Any] | None = None
) -> stripe.TransferReversal:
    return client.v1.transfers.reversals.create(
        transfer_id, params or {"amount": 100}, {"idempotency_key": key}
    )


def test_same_key_and_params_replay_the_same_reversal_once(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)

    first = _reverse(emulator_stripe_client, transfer.id, "row-1-attempt-1")
    second = _reverse(emulator_stripe_client, transfer.id, "row-1-attempt-1")

    first_headers = first.last_response.headers
    second_headers = second.last_response.headers
    assert second.id == first.id
    assert "Idempotent-Replayed" not in first_headers
    assert second_headers["Idempotent-Replayed"] == "true"
    assert second_headers["Idempotency-Key"] == "row-1-attempt-1"
    assert second_headers["Original-Request"] == first_headers["Request-Id"]
    assert second_headers["Request-Id"] != first_headers["Request-Id"]
    assert len(stripe_emulator.state.reversals_of(transfer.id)) == 1


def test_same_key_with_other_params_is_an_idempotency_error(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    _reverse(emulator_stripe_client, transfer.id, "key-a", {"amount": 100})

    with pytest.raises(stripe.IdempotencyError) as caught:
        _reverse(emulator_stripe_client, transfer.id, "key-a", {"amount": 200})

    assert caught.value.http_status == 400
    assert caught.value.error.type == "idempotency_error"
    assert caught.value.user_message == (
        "Keys for idempotent requests can only be used with the same parameters they were first"
        " used with. Try using a key other than 'key-a' if you meant to execute a different"
        " request."
    )
    assert len(stripe_emulator.state.reversals_of(transfer.id)) == 1


def test_same_key_on_another_endpoint_is_an_idempotency_error(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    one = stripe_emulator.state.create_transfer(amount=1000)
    other = stripe_emulator.state.create_transfer(amount=1000)
    _reverse(emulator_stripe_client, one.id, "key-b")

    with pytest.raises(stripe.IdempotencyError) as caught:
        _reverse(emulator_stripe_client, other.id, "key-b")

    assert "same endpoint" in (caught.value.user_message or "")
    assert stripe_emulator.state.get_transfer(other.id).amount_reversed == 0


def test_keys_are_scoped_per_api_key(stripe_emulator: EmulatorServer) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    keys = ("sk_test_platform_a_000000000000", "sk_test_platform_b_000000000000")
    for key in keys:
        stripe_emulator.control().accept_key(key)
    first, second = (stripe_emulator.stripe_client(key) for key in keys)

    a = _reverse(first, transfer.id, "shared-key")
    b = _reverse(second, transfer.id, "shared-key")

    assert a.id != b.id
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 200


def test_key_expires_after_the_ttl_on_the_emulator_clock(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    original = _reverse(emulator_stripe_client, transfer.id, "old-key")

    stripe_emulator.clock.advance(TTL - 60)
    still_stored = _reverse(emulator_stripe_client, transfer.id, "old-key")
    stripe_emulator.clock.advance(61)
    after_expiry = _reverse(emulator_stripe_client, transfer.id, "old-key")

    assert still_stored.id == original.id
    assert after_expiry.id != original.id
    assert "Idempotent-Replayed" not in after_expiry.last_response.headers
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 200


def test_ttl_is_configurable_over_http(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.control().set_idempotency_ttl(60)
    original = _reverse(emulator_stripe_client, transfer.id, "short-lived")

    stripe_emulator.control().advance_clock(60)
    again = _reverse(emulator_stripe_client, transfer.id, "short-lived")

    assert again.id != original.id


def test_same_key_while_first_is_in_flight_is_409_then_first_completes(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": "hold", "method": "POST"})
    results: dict[str, Any] = {}

    def first_request() -> None:
        try:
            results["first"] = _reverse(emulator_stripe_client, transfer.id, "busy-key")
        except stripe.StripeError as exc:  # pragma: no cover - reported by the assertion
            results["first"] = exc

    worker = threading.Thread(target=first_request)
    worker.start()
    try:
        assert stripe_emulator.faults.wait_for_held(1, timeout=10)
        with pytest.raises(stripe.APIError) as caught:
            _reverse(emulator_stripe_client, transfer.id, "busy-key")
    finally:
        stripe_emulator.faults.release_holds()
        worker.join(10)

    assert caught.value.http_status == 409
    assert caught.value.error.code == "idempotency_key_in_use"
    assert "busy-key" in (caught.value.user_message or "")
    assert isinstance(results["first"], stripe.TransferReversal)
    replay = _reverse(emulator_stripe_client, transfer.id, "busy-key")
    assert replay.id == results["first"].id
    assert len(stripe_emulator.state.reversals_of(transfer.id)) == 1


def test_lost_response_then_retry_with_same_key_returns_the_committed_reversal(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": "lost", "transfer_id": transfer.id})

    with pytest.raises(stripe.APIConnectionError):
        _reverse(emulator_stripe_client, transfer.id, "lost-key", {"amount": 1000})
    committed = stripe_emulator.state.reversals_of(transfer.id)
    retry = _reverse(emulator_stripe_client, transfer.id, "lost-key", {"amount": 1000})

    assert len(committed) == 1  # the write happened although the client saw an error
    assert retry.id == committed[0].id
    assert retry.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_emulator.state.reversals_of(transfer.id)) == 1
    outcomes = [e.outcome for e in stripe_emulator.state.requests.entries()]
    assert outcomes == ["lost", "replayed"]


def test_rate_limited_request_is_not_stored(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.clock.freeze()
    stripe_emulator.faults.update(rate_limit_per_second=1)
    emulator_stripe_client.v1.transfers.retrieve(transfer.id)  # uses the only slot

    with pytest.raises(stripe.RateLimitError):
        _reverse(emulator_stripe_client, transfer.id, "limited-key", {"amount": 100})
    stripe_emulator.clock.advance(1.0)
    other_params = _reverse(emulator_stripe_client, transfer.id, "limited-key", {"amount": 300})

    # Had the 429 been stored, this would be a replayed 429 or an idempotency error.
    assert other_params.amount == 300
    assert "Idempotent-Replayed" not in other_params.last_response.headers


def test_injected_500_is_stored_and_replayed_for_the_same_key(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": 500, "method": "POST"})

    with pytest.raises(stripe.APIError) as first:
        _reverse(emulator_stripe_client, transfer.id, "k500")
    with pytest.raises(stripe.APIError) as replay:
        _reverse(emulator_stripe_client, transfer.id, "k500")
    fresh_key = _reverse(emulator_stripe_client, transfer.id, "k500-retry")

    assert first.value.http_status == replay.value.http_status == 500
    assert replay.value.headers["Idempotent-Replayed"] == "true"
    assert replay.value.json_body == first.value.json_body
    assert fresh_key.amount == 100
    assert len(stripe_emulator.state.reversals_of(transfer.id)) == 1


def test_random_500_is_stored_too(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.update(error_rate=1.0, fault_methods=["POST"])

    with pytest.raises(stripe.APIError):
        _reverse(emulator_stripe_client, transfer.id, "random-500")
    stripe_emulator.faults.update(error_rate=0.0)
    with pytest.raises(stripe.APIError) as replay:
        _reverse(emulator_stripe_client, transfer.id, "random-500")

    assert replay.value.headers["Idempotent-Replayed"] == "true"
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 0


def test_stored_400_is_replayed_even_after_the_cause_is_gone(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=100)

    with pytest.raises(stripe.InvalidRequestError):
        _reverse(emulator_stripe_client, transfer.id, "too-much", {"amount": 500})
    with pytest.raises(stripe.InvalidRequestError) as replay:
        _reverse(emulator_stripe_client, transfer.id, "too-much", {"amount": 500})

    assert replay.value.headers["Idempotent-Replayed"] == "true"


def test_connection_reset_commits_and_stores_nothing(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": "reset"})

    with pytest.raises(stripe.APIConnectionError) as caught:
        _reverse(emulator_stripe_client, transfer.id, "reset-key", {"amount": 100})
    other_params = _reverse(emulator_stripe_client, transfer.id, "reset-key", {"amount": 250})

    assert caught.value.should_retry is True
    assert other_params.amount == 250
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 250


def test_replays_do_not_consume_scripts_meant_for_executions(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    original = _reverse(emulator_stripe_client, transfer.id, "stable")
    stripe_emulator.faults.add_script({"respond": 500, "method": "POST"})

    replay = _reverse(emulator_stripe_client, transfer.id, "stable")
    with pytest.raises(stripe.APIError):
        _reverse(emulator_stripe_client, transfer.id, "new-execution")

    assert replay.id == original.id
    assert stripe_emulator.faults.scripts() == []
