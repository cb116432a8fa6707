"""Each error comes back with Stripe's status, type, code, param and wording.

The classes are the SDK's own mapping (``stripe._api_requestor.specific_v1_api_error``):
the pipeline classifies on them, so the emulator must trigger exactly these.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import stripe

from reversal_pipeline.stripe_emulator import EmulatorServer, mask_key


def test_unknown_transfer_is_404_resource_missing_on_param_id(
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create("tr_123")

    error = caught.value
    assert error.http_status == 404
    assert (error.error.type, error.error.code, error.error.param) == (
        "invalid_request_error",
        "resource_missing",
        "id",
    )
    assert error.user_message == "No such transfer: 'tr_123'"
    assert error.request_id is not None
    assert error.request_id.startswith("req_")


def test_fully_reversed_transfer_is_400_without_code_and_stripes_wording(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=500)
    stripe_emulator.state.reverse_transfer(transfer.id)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id, {"amount": 100})

    error = caught.value
    assert error.http_status == 400
    assert error.error.code is None
    assert error.user_message == f"The transfer {transfer.id} is already fully reversed."


def test_amount_over_what_remains_is_400_and_never_says_already(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)
    stripe_emulator.state.reverse_transfer(transfer.id, amount=500)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id, {"amount": 1000})

    message = caught.value.user_message or ""
    assert caught.value.http_status == 400
    assert caught.value.error.param == "amount"
    assert "already" not in message.lower()  # must not look like the benign case
    assert "(1000)" in message
    assert "(500)" in message
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 500


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"amount": "abc"}, "amount", "parameter_invalid_integer"),
        ({"amount": "12.5"}, "amount", "parameter_invalid_integer"),
        ({"amount": 0}, "amount", "parameter_invalid_integer"),
        ({"amount": -5}, "amount", "parameter_invalid_integer"),
        ({"amount": ""}, "amount", "parameter_invalid_empty"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
    ],
)
def test_malformed_reversal_parameters_are_400_with_param_and_code(
    stripe_emulator: EmulatorServer,
    emulator_stripe_client: stripe.StripeClient,
    params: dict[str, Any],
    param: str,
    code: str,
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=1000)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id, params)

    assert caught.value.http_status == 400
    assert (caught.value.error.param, caught.value.error.code) == (param, code)
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 0


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": 0}, "limit", "parameter_invalid_integer"),
        ({"limit": 101}, "limit", "parameter_invalid_integer"),
        ({"limit": "many"}, "limit", "parameter_invalid_integer"),
        ({"created": {"gte": "yesterday"}}, "created[gte]", "parameter_invalid_integer"),
        ({"created": {"after": 1}}, "created[after]", "parameter_unknown"),
        ({"starting_after": "tr_missing"}, "starting_after", "resource_missing"),
    ],
)
def test_malformed_list_parameters_are_400_with_param_and_code(
    emulator_stripe_client: stripe.StripeClient,
    params: dict[str, Any],
    param: str,
    code: str,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.list(params)

    assert caught.value.http_status == 400
    assert (caught.value.error.param, caught.value.error.code) == (param, code)


def test_missing_api_key_is_401_asking_for_one(stripe_emulator: EmulatorServer) -> None:
    response = requests.get(f"{stripe_emulator.url}/v1/transfers", timeout=10)

    assert response.status_code == 401
    assert response.headers["Request-Id"].startswith("req_")
    assert response.json()["error"]["message"].startswith("You did not provide an API key.")


@pytest.mark.parametrize(
    "key",
    [
        "pk_test_publishable00001234abcd",
        "sk_nope_000000000000abcd",
        "sk_test_wellformed_but_unknown_abcd",  # Stripe does not know it: 401 as well
    ],
)
def test_malformed_key_is_authentication_error_with_the_key_masked(
    stripe_emulator: EmulatorServer, key: str
) -> None:
    with pytest.raises(stripe.AuthenticationError) as caught:
        stripe_emulator.stripe_client(key).v1.transfers.list()

    message = caught.value.user_message or ""
    assert caught.value.http_status == 401
    assert key not in message
    assert mask_key(key) in message
    assert message.endswith("abcd")


def test_revoked_key_fails_until_unrevoked(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    client = stripe_emulator.stripe_client(stripe_api_key)
    stripe_emulator.control().revoke_key(stripe_api_key)

    with pytest.raises(stripe.AuthenticationError) as caught:
        client.v1.transfers.list()
    stripe_emulator.control().unrevoke_key(stripe_api_key)

    assert caught.value.http_status == 401
    assert stripe_api_key not in str(caught.value)
    assert mask_key(stripe_api_key) in (caught.value.user_message or "")
    assert client.v1.transfers.list().data == []


def test_only_the_keys_the_emulator_was_started_with_authenticate(stripe_api_key: str) -> None:
    other = "sk_test_someone_else_0000000000wxyz"
    with EmulatorServer(api_keys=[stripe_api_key]) as server:
        with pytest.raises(stripe.AuthenticationError) as caught:
            server.stripe_client(other).v1.transfers.list()
        accepted = server.stripe_client(stripe_api_key).v1.transfers.list()
        server.state.keys.accept(other)  # for this test only: a reset forgets it
        later = server.stripe_client(other).v1.transfers.list()
        server.reset()
        with pytest.raises(stripe.AuthenticationError):
            server.stripe_client(other).v1.transfers.list()

    assert caught.value.http_status == 401
    assert caught.value.user_message == f"Invalid API Key provided: {mask_key(other)}"
    assert mask_key(other) == "sk_test_" + "*" * 23 + "wxyz"
    assert (accepted.data, later.data) == ([], [])


def test_an_emulator_started_without_keys_rejects_every_key(stripe_api_key: str) -> None:
    with EmulatorServer() as server, pytest.raises(stripe.AuthenticationError):
        server.stripe_client(stripe_api_key).v1.transfers.list()


def test_accept_any_key_admits_any_well_formed_key_but_no_malformed_one() -> None:
    with EmulatorServer(accept_any_key=True) as server:
        listed = server.stripe_client("sk_test_adhoc_000000000000").v1.transfers.list()
        server.reset()  # the start rule survives a reset
        again = server.stripe_client("rk_test_adhoc_000000000000").v1.transfers.list()
        with pytest.raises(stripe.AuthenticationError):
            server.stripe_client("pk_test_adhoc_000000000000").v1.transfers.list()

    assert (listed.data, again.data) == ([], [])


def test_required_key_set_rejects_other_valid_looking_keys(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    stripe_emulator.state.keys.require([stripe_api_key])

    with pytest.raises(stripe.AuthenticationError):
        stripe_emulator.stripe_client("sk_test_someone_else_0000000000").v1.transfers.list()
    assert stripe_emulator.stripe_client(stripe_api_key).v1.transfers.list().data == []


@pytest.mark.parametrize(
    ("status", "exception", "code"),
    [
        (401, stripe.AuthenticationError, None),
        (403, stripe.PermissionError, None),
        (404, stripe.InvalidRequestError, "resource_missing"),
        (409, stripe.APIError, "idempotency_key_in_use"),
        (429, stripe.RateLimitError, "rate_limit"),
        (500, stripe.APIError, None),
        (502, stripe.APIError, None),
        (503, stripe.APIError, None),
    ],
)
def test_scripted_status_maps_to_the_sdk_exception(
    stripe_emulator: EmulatorServer,
    emulator_stripe_client: stripe.StripeClient,
    status: int,
    exception: type[stripe.StripeError],
    code: str | None,
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=100)
    stripe_emulator.faults.add_script({"respond": status})

    with pytest.raises(exception) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id)

    assert caught.value.http_status == status
    assert caught.value.error.code == code
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")
    assert stripe_emulator.state.get_transfer(transfer.id).amount_reversed == 0


def test_scripted_403_masks_the_key_in_its_message(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    stripe_emulator.faults.add_script({"respond": 403})

    with pytest.raises(stripe.PermissionError) as caught:
        stripe_emulator.stripe_client(stripe_api_key).v1.transfers.list()

    assert stripe_api_key not in (caught.value.user_message or "")
    assert mask_key(stripe_api_key) in (caught.value.user_message or "")


def test_scripted_400_carries_the_given_message_code_and_param(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    transfer = stripe_emulator.state.create_transfer(amount=100)
    stripe_emulator.faults.add_script(
        {
            "respond": 400,
            "message": f"The transfer {transfer.id} is already fully reversed.",
            "code": "custom_code",
            "param": "amount",
        }
    )

    with pytest.raises(stripe.InvalidRequestError) as caught:
        emulator_stripe_client.v1.transfers.reversals.create(transfer.id)

    assert caught.value.user_message == f"The transfer {transfer.id} is already fully reversed."
    assert (caught.value.error.code, caught.value.error.param) == ("custom_code", "amount")


def test_unknown_url_is_a_stripe_style_404(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    response = requests.delete(
        f"{stripe_emulator.url}/v1/transfers",
        headers={"Authorization": f"Bearer {stripe_api_key}"},
        timeout=10,
    )

    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith(
        "Unrecognized request URL (DELETE: /v1/transfers)"
    )


def test_mask_key_shows_prefix_and_last_four_only() -> None:
    assert mask_key("sk_test_abcdefghijklmnop1234") == "sk_test_" + "*" * 16 + "1234"
    assert mask_key("rk_live_short") == "rk_live_*****"  # too short to show any of it
    assert mask_key("whatever-key-9876") == "*" * 13 + "9876"
