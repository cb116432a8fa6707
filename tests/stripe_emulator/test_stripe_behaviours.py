"""Where the emulator once differed from Stripe in ways that could hide a pipeline bug.

Each test pins one of Stripe's documented behaviours (docs.stripe.com/idempotency,
error handling, expanding responses): an emulator that drifts back fails here.
Raw requests are used where the SDK would hide what is on the wire.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
import stripe

from reversal_pipeline.stripe_emulator import EmulatorServer


def _post(
    server: EmulatorServer, api_key: str, path: str, data: Any, **headers: str
) -> requests.Response:
    return requests.post(
        server.url + path,
        data=data,
        headers={"Authorization": f"Bearer {api_key}", **headers},
        timeout=10,
    )


def _get(server: EmulatorServer, api_key: str, path: str, params: Any) -> requests.Response:
    return requests.get(
        server.url + path,
        params=params,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )


# -- idempotency: only requests that began executing are stored --------------------------


def test_a_key_rejected_by_parameter_validation_stays_free_for_a_valid_request(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    options = {"idempotency_key": "fix-the-typo"}

    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(
            transfer.id,
            {"amount": "abc"},  # type: ignore[typeddict-item]
            options,
        )
    fixed = emulator_stripe_client.v1.transfers.reversals.create(
        transfer.id, {"amount": 100}, options
    )
    replayed = emulator_stripe_client.v1.transfers.reversals.create(
        transfer.id, {"amount": 100}, options
    )

    assert caught.value.http_status == 400
    assert caught.value.code == "parameter_invalid_integer"
    assert fixed.amount == 100
    assert replayed.id == fixed.id  # the valid request, and only it, was stored
    assert [r.id for r in stripe_emulator.state.reversals_of(transfer.id)] == [fixed.id]


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": "100", "surprise": "1"},  # unknown parameter
        {"amount": "100", "expand[]": "nope"},  # unknown expand path
        {"amount": "100", "metadata[" + "k" * 41 + "]": "v"},  # metadata key too long
    ],
)
def test_every_parameter_rejection_leaves_the_key_unstored(
    stripe_emulator: EmulatorServer, stripe_api_key: str, bad: dict[str, str]
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    path = f"/v1/transfers/{transfer.id}/reversals"

    rejected = _post(stripe_emulator, stripe_api_key, path, bad, **{"Idempotency-Key": "k1"})
    accepted = _post(
        stripe_emulator, stripe_api_key, path, {"amount": "100"}, **{"Idempotency-Key": "k1"}
    )

    assert rejected.status_code == 400
    assert rejected.json()["error"]["type"] == "invalid_request_error"
    assert accepted.status_code == 200, accepted.text
    assert "Idempotent-Replayed" not in accepted.headers


def test_an_executed_failure_is_still_stored_and_replayed(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    """Not everything escapes storage: an error the endpoint itself gave is kept."""
    transfer = stripe_emulator.state.create_transfer(amount=100)
    path = f"/v1/transfers/{transfer.id}/reversals"
    key = {"Idempotency-Key": "too-much"}

    first = _post(stripe_emulator, stripe_api_key, path, {"amount": "500"}, **key)
    stripe_emulator.state.reverse_transfer(transfer.id, amount=50)  # now 50 could be reversed
    second = _post(stripe_emulator, stripe_api_key, path, {"amount": "500"}, **key)

    assert first.status_code == second.status_code == 400
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.content == first.content


def test_a_key_in_use_is_409_even_with_other_parameters_and_runs_nothing(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    path = f"/v1/transfers/{transfer.id}/reversals"
    stripe_emulator.faults.add_script({"respond": "hold", "method": "POST"})
    first: list[requests.Response] = []
    worker = threading.Thread(
        target=lambda: first.append(
            _post(
                stripe_emulator,
                stripe_api_key,
                path,
                {"amount": "100"},
                **{"Idempotency-Key": "busy"},
            )
        )
    )
    worker.start()
    try:
        assert stripe_emulator.faults.wait_for_held(1, timeout=10)
        same = _post(
            stripe_emulator, stripe_api_key, path, {"amount": "100"}, **{"Idempotency-Key": "busy"}
        )
        other = _post(
            stripe_emulator, stripe_api_key, path, {"amount": "7"}, **{"Idempotency-Key": "busy"}
        )
    finally:
        stripe_emulator.faults.release_holds()
        worker.join(10)

    for answer in (same, other):
        assert answer.status_code == 409
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("idempotency_error", "idempotency_key_in_use")
        assert error["message"].startswith("There is currently another in-progress request")
    assert first[0].status_code == 200
    assert [r.amount for r in stripe_emulator.state.reversals_of(transfer.id)] == [100]


# -- 500s and Stripe-Should-Retry ----------------------------------------------------------


def test_a_500_on_a_post_says_do_not_retry_and_the_stock_sdk_obeys(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": 500, "method": "POST", "times": 5})
    client = stripe_emulator.stripe_client(stripe_api_key, max_network_retries=3)

    with pytest.raises(stripe.APIError) as caught:
        client.v1.transfers.reversals.create(transfer.id, {"amount": 100})

    assert caught.value.http_status == 500
    assert caught.value.headers is not None
    assert caught.value.headers["Stripe-Should-Retry"] == "false"
    assert stripe_emulator.state.requests.counters()["calls_total"] == 1  # no SDK retry


def test_a_random_500_says_do_not_retry_unless_the_fault_says_otherwise(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    path = f"/v1/transfers/{transfer.id}/reversals"
    stripe_emulator.faults.update(error_rate=1.0)

    default = _post(stripe_emulator, stripe_api_key, path, {"amount": "1"})
    stripe_emulator.faults.update(error_should_retry=True)
    retryable = _post(stripe_emulator, stripe_api_key, path, {"amount": "1"})

    assert default.status_code == retryable.status_code == 500
    assert default.headers["Stripe-Should-Retry"] == "false"
    assert retryable.headers["Stripe-Should-Retry"] == "true"


def test_a_scripted_500_can_ask_for_a_retry_and_the_sdk_then_retries(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.faults.add_script({"respond": 500, "method": "POST", "should_retry": True})
    client = stripe_emulator.stripe_client(stripe_api_key, max_network_retries=1)

    with pytest.raises(stripe.APIError):
        client.v1.transfers.reversals.create(transfer.id, {"amount": 100})

    # Retried with the same key, so the stored 500 was replayed, not re-run.
    assert [e.replayed for e in stripe_emulator.state.requests.entries()] == [False, True]


def test_a_500_on_a_get_carries_no_retry_advice(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    """Nothing is stored for a GET, so a retry may succeed: the SDK decides by status."""
    stripe_emulator.faults.add_script({"respond": 500, "method": "GET"})

    answer = _get(stripe_emulator, stripe_api_key, "/v1/transfers", {})

    assert answer.status_code == 500
    assert "Stripe-Should-Retry" not in answer.headers


# -- expand[] ------------------------------------------------------------------------------


def test_expand_replaces_ids_with_the_objects_the_emulator_holds(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=800, destination="acct_1Seller")
    plain = emulator_stripe_client.v1.transfers.retrieve(transfer.id)

    expanded = emulator_stripe_client.v1.transfers.retrieve(
        transfer.id, {"expand": ["destination", "balance_transaction"]}
    )
    reversal = emulator_stripe_client.v1.transfers.reversals.create(
        transfer.id, {"amount": 300, "expand": ["transfer", "balance_transaction"]}
    )
    listed = emulator_stripe_client.v1.transfers.list({"expand": ["data.destination"]})

    assert plain.destination == "acct_1Seller"
    assert (expanded.destination.object, expanded.destination.id) == ("account", "acct_1Seller")
    txn = expanded.balance_transaction
    assert (txn.object, txn.id, txn.amount) == (
        "balance_transaction",
        plain.balance_transaction,
        -800,
    )
    assert (reversal.transfer.object, reversal.transfer.id) == ("transfer", transfer.id)
    assert reversal.transfer.amount_reversed == 300
    assert (reversal.balance_transaction.amount, reversal.balance_transaction.type) == (
        300,
        "transfer_refund",
    )
    assert listed.data[0].destination.id == "acct_1Seller"


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/v1/transfers/{id}", {"expand[]": "metadata"}, "metadata"),
        ("/v1/transfers/{id}", {"expand[]": "data.destination"}, "data"),
        ("/v1/transfers", {"expand[]": "destination"}, "destination"),
        ("/v1/transfers/{id}/reversals", {"expand[]": "data.source_refund"}, "source_refund"),
        ("/v1/transfers/{id}", {"expand[]": "destination.owner"}, "owner"),
    ],
)
def test_an_unknown_expand_path_is_stripes_400(
    stripe_emulator: EmulatorServer,
    stripe_api_key: str,
    path: str,
    params: dict[str, str],
    named: str,
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=800)

    answer = _get(stripe_emulator, stripe_api_key, path.format(id=transfer.id), params)

    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": f"This property cannot be expanded ({named}).",
    }


def test_a_reversal_with_a_bad_expand_reverses_nothing(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=800)

    answer = _post(
        stripe_emulator,
        stripe_api_key,
        f"/v1/transfers/{transfer.id}/reversals",
        {"amount": "100", "expand[]": "destination"},
    )

    assert answer.status_code == 400
    assert stripe_emulator.state.reversals_of(transfer.id) == []


# -- currency and content type -------------------------------------------------------------


def test_an_unsupported_currency_is_stripes_400(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.create(
            {"amount": 100, "currency": "xyz", "destination": "acct_1"}
        )
    accepted = emulator_stripe_client.v1.transfers.create(
        {"amount": 100, "currency": "EUR", "destination": "acct_1"}
    )

    assert caught.value.http_status == 400
    assert caught.value.param == "currency"
    assert (caught.value.user_message or "").startswith(
        "Invalid currency: xyz. Stripe currently supports these currencies: "
    )
    assert accepted.currency == "eur"
    assert stripe_emulator.state.transfer_count() == 1


def test_a_json_body_is_stripes_content_type_error_and_changes_nothing(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=800)
    path = f"/v1/transfers/{transfer.id}/reversals"

    answer = requests.post(
        stripe_emulator.url + path,
        json={"amount": 100},
        headers={"Authorization": f"Bearer {stripe_api_key}", "Idempotency-Key": "json"},
        timeout=10,
    )
    form = _post(
        stripe_emulator, stripe_api_key, path, {"amount": "100"}, **{"Idempotency-Key": "json"}
    )

    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Invalid request (check that your POST content type is"
        " application/x-www-form-urlencoded). If you have any questions, we can help at"
        " https://support.stripe.com/.",
    }
    assert form.status_code == 200  # the key was not stored by the rejected request
    assert [r.amount for r in stripe_emulator.state.reversals_of(transfer.id)] == [100]
