"""The error classification contract of DESIGN.md, one test per table row, no HTTP.

Errors are built by the SDK's own requestor code path
(``_APIRequestor.specific_v1_api_error``) from a Stripe error envelope, so
each test gets the exception class, ``http_status``, ``json_body``, headers
and ``error`` object exactly as a real response would produce them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from stripe._api_requestor import _APIRequestor

from reversal_pipeline.errors import (
    StripeRateLimited,
    StripeSentinel,
    StripeSystemicError,
    TransferAlreadyReversed,
    TransferNotFound,
    TransientStripeError,
)
from reversal_pipeline.stripe import classify_stripe_error, is_already_reversed_message

LEAF_SENTINELS = {
    TransferNotFound,
    TransferAlreadyReversed,
    TransientStripeError,
    StripeRateLimited,
    StripeSystemicError,
}


def stripe_error(
    status: int,
    *,
    message: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
    param: str | None = None,
    request_id: str | None = "req_test123",
) -> stripe.StripeError:
    """The exception the SDK raises for this response, built the way the requestor builds it."""
    error: dict[str, Any] = {"type": type_}
    if code is not None:
        error["code"] = code
    if message is not None:
        error["message"] = message
    if param is not None:
        error["param"] = param
    body = {"error": error}
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    if request_id is not None:
        headers["Request-Id"] = request_id
    return _APIRequestor().specific_v1_api_error(json.dumps(body), status, body, headers, error)


# -- one test per row of the table ------------------------------------------------


def test_404_resource_missing_is_transfer_not_found() -> None:
    err = stripe_error(404, code="resource_missing", param="id", message="No such transfer: 'tr_1'")
    assert isinstance(err, stripe.InvalidRequestError)

    sentinel = classify_stripe_error(err)

    assert type(sentinel) is TransferNotFound
    assert sentinel.http_status == 404
    assert sentinel.stripe_code == "resource_missing"
    assert sentinel.request_id == "req_test123"
    assert sentinel.message == "No such transfer: 'tr_1'"


def test_400_already_reversed_is_transfer_already_reversed() -> None:
    err = stripe_error(400, message="The transfer tr_123 is already fully reversed.")

    sentinel = classify_stripe_error(err)

    assert type(sentinel) is TransferAlreadyReversed
    assert (sentinel.http_status, sentinel.stripe_code) == (400, None)
    assert sentinel.request_id == "req_test123"


@pytest.mark.parametrize(
    ("status", "sdk_class"),
    [(401, stripe.AuthenticationError), (403, stripe.PermissionError)],
)
def test_401_and_403_are_systemic(status: int, sdk_class: type[stripe.StripeError]) -> None:
    err = stripe_error(status, message="Invalid API Key provided: sk_test_****3456")
    assert isinstance(err, sdk_class)

    sentinel = classify_stripe_error(err)

    assert type(sentinel) is StripeSystemicError
    assert sentinel.http_status == status


def test_missing_key_raised_by_the_sdk_itself_is_systemic() -> None:
    # The SDK raises this before any HTTP when the key is None: no status at all.
    sentinel = classify_stripe_error(stripe.AuthenticationError("No API key provided."))
    assert type(sentinel) is StripeSystemicError
    assert sentinel.http_status is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient_and_keeps_the_original(status: int) -> None:
    err = stripe_error(status, type_="api_error", message="An unknown error occurred")
    assert isinstance(err, stripe.APIError)

    sentinel = classify_stripe_error(err)

    assert type(sentinel) is TransientStripeError
    assert isinstance(sentinel, TransientStripeError)
    assert sentinel.original is err
    assert (sentinel.http_status, sentinel.request_id) == (status, "req_test123")


def test_409_key_in_use_is_transient_and_code_comes_from_error_object() -> None:
    err = stripe_error(
        409,
        type_="idempotency_error",
        code="idempotency_key_in_use",
        message="There is currently another in-progress request using this Idempotent Key",
    )
    # stripe 16: APIError does not copy the code onto the exception...
    assert err.code is None
    assert err.error is not None
    assert err.error.code == "idempotency_key_in_use"

    sentinel = classify_stripe_error(err)

    # ...so the classifier must read it from err.error.
    assert type(sentinel) is TransientStripeError
    assert sentinel.stripe_code == "idempotency_key_in_use"
    assert sentinel.http_status == 409


def test_429_is_rate_limited_which_is_transient() -> None:
    err = stripe_error(429, code="rate_limit", message="Too many requests")
    assert isinstance(err, stripe.RateLimitError)
    assert err.code is None  # again only on err.error

    sentinel = classify_stripe_error(err)

    assert type(sentinel) is StripeRateLimited
    assert isinstance(sentinel, TransientStripeError)
    assert sentinel.stripe_code == "rate_limit"
    assert sentinel.original is err


def test_legacy_400_rate_limit_code_is_rate_limited() -> None:
    # The SDK still maps Stripe's old "400 + code rate_limit" to RateLimitError.
    err = stripe_error(400, code="rate_limit", message="Too many requests")
    assert isinstance(err, stripe.RateLimitError)
    assert type(classify_stripe_error(err)) is StripeRateLimited


def test_network_error_is_transient_without_status() -> None:
    err = stripe.APIConnectionError(
        "Unexpected error communicating with Stripe.\n\n(Network error: ConnectionError: refused)",
        should_retry=True,
    )

    sentinel = classify_stripe_error(err)

    assert type(sentinel) is TransientStripeError
    assert (sentinel.http_status, sentinel.stripe_code, sentinel.request_id) == (None, None, None)
    assert sentinel.original is err
    assert "Network error" in sentinel.message


def test_idempotency_error_400_is_transient() -> None:
    err = stripe_error(
        400,
        type_="idempotency_error",
        message=(
            "Keys for idempotent requests can only be used with the same parameters "
            "they were first used with."
        ),
    )
    assert isinstance(err, stripe.IdempotencyError)
    assert type(classify_stripe_error(err)) is TransientStripeError


def test_idempotency_error_is_transient_even_if_wording_looks_like_already_reversed() -> None:
    # The type decides before the message: a reused key says nothing about the transfer.
    err = stripe_error(
        400, type_="idempotency_error", message="Key already used for a reversal request"
    )
    assert type(classify_stripe_error(err)) is TransientStripeError


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "parameter_invalid_integer", "Invalid positive integer"),
        (400, None, "Cannot refund because it has been fully reversed."),
        (402, "insufficient_funds", "Insufficient funds in Stripe account."),
        (404, None, "Unrecognized request URL (GET: /v1/transferz/tr_1)."),
        (404, "resource_missing_somewhere_else", "No such destination: 'acct_1'"),
        (400, "resource_missing", "No such transfer: 'tr_1'"),  # not a 404: not the row
    ],
)
def test_other_4xx_are_transient(status: int, code: str | None, message: str) -> None:
    sentinel = classify_stripe_error(stripe_error(status, code=code, message=message))
    assert type(sentinel) is TransientStripeError
    assert (sentinel.http_status, sentinel.stripe_code) == (status, code)


def test_404_with_another_code_is_transient() -> None:
    err = stripe_error(404, code="account_invalid", message="The account is invalid")
    assert type(classify_stripe_error(err)) is TransientStripeError


# -- the fragile wording, pinned ------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # The wording Stripe sends today for transfers.
        ("The transfer tr_123 is already fully reversed.", True),
        # Any case.
        ("THE TRANSFER TR_123 IS ALREADY FULLY REVERSED.", True),
        ("The Transfer tr_123 Is Already Fully Reversed.", True),
        # Plausible rewordings that keep both stems still match.
        ("Transfer tr_123 has already been reversed.", True),
        ("This transfer already has a full reversal.", True),
        # The variant seen for other objects has no "already": NOT matched on
        # purpose. The contract asks for both words; without "already" the 400
        # falls through to transient, the row is retried and ends
        # permanently_failed for a person: noisier, never money lost.
        ("Cannot refund because it has been fully reversed.", False),
        # "already" without "revers".
        ("The transfer tr_123 has already been paid out.", False),
        # Over-the-remaining-amount style: "reversal" but no "already" -> transient.
        (
            "Transfer reversal amount (2000) is greater than the amount remaining "
            "on the transfer (1000).",
            False,
        ),
        # Unrelated 400s.
        ("Invalid positive integer", False),
        ("", False),
    ],
)
def test_already_reversed_wording(message: str, expected: bool) -> None:
    assert is_already_reversed_message(message) is expected
    sentinel = classify_stripe_error(stripe_error(400, message=message))
    assert type(sentinel) is (TransferAlreadyReversed if expected else TransientStripeError)


def test_already_reversed_wording_on_a_404_is_not_already_reversed() -> None:
    err = stripe_error(404, message="The transfer tr_123 is already fully reversed.")
    assert type(classify_stripe_error(err)) is TransientStripeError


def test_matcher_tolerates_non_strings() -> None:
    assert is_already_reversed_message(None) is False


# -- never raises ---------------------------------------------------------------------


class _Hostile(Exception):
    @property
    def http_status(self) -> int:
        raise RuntimeError("boom")

    def __str__(self) -> str:
        raise RuntimeError("no str either")


@pytest.mark.parametrize(
    "err",
    [
        requests.ConnectionError("connection refused"),
        requests.Timeout("read timed out"),
        json.JSONDecodeError("Expecting value", "<html>", 0),
        ValueError("weird"),
        stripe.StripeError(),  # nothing at all
        stripe.StripeError("m", http_status="500", json_body="not a dict"),  # type: ignore[arg-type]
        stripe.StripeError("m", http_status=404, json_body={"error": {"code": 7}}),
        _Hostile(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_non_stripe_or_malformed_errors_are_transient(err: BaseException) -> None:
    sentinel = classify_stripe_error(err)
    assert type(sentinel) is TransientStripeError
    assert isinstance(sentinel.message, str)
    assert sentinel.message


_status = st.none() | st.integers(min_value=100, max_value=599)
_code = st.none() | st.text(max_size=30) | st.sampled_from(["resource_missing", "rate_limit"])
_message = st.none() | st.text(max_size=80) | st.just("The transfer tr_1 is already reversed")
_type = st.sampled_from(["invalid_request_error", "api_error", "idempotency_error", "card_error"])


@settings(max_examples=300, deadline=None)
@given(status=_status, code=_code, message=_message, type_=_type, via_requestor=st.booleans())
def test_property_exactly_one_sentinel_never_raises(
    status: int | None,
    code: str | None,
    message: str | None,
    type_: str,
    via_requestor: bool,
) -> None:
    err: BaseException
    if status is not None and via_requestor:
        err = stripe_error(status, code=code, message=message, type_=type_)
    elif status is None and via_requestor:
        err = stripe.APIConnectionError(message, should_retry=True)
    else:
        body = {"error": {"type": type_, "code": code, "message": message}}
        err = stripe.StripeError(message, http_status=status, json_body=body, code=code)

    sentinel = classify_stripe_error(err)

    assert isinstance(sentinel, StripeSentinel)
    assert type(sentinel) in LEAF_SENTINELS
    if status in (401, 403):
        assert type(sentinel) is StripeSystemicError
    elif status == 429:
        assert type(sentinel) is StripeRateLimited
    if type(sentinel) is TransferNotFound:
        assert (status, code) == (404, "resource_missing")
    if type(sentinel) is TransferAlreadyReversed:
        assert status == 400
