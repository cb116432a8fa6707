"""Classification details that only a mutation run showed untested (issue 12).

Each test pins one decision of ``stripe/classify.py`` that the contract tests
reached without checking: the 429 status on its own (not only the SDK's
exception class), the fallbacks of ``_error_code`` and ``_message``, and the
type checks of the small converters. Errors are real SDK exceptions, built by
hand where a test needs a shape the requestor never builds (a status with the
"wrong" class), because that is what a proxy or an SDK change would give us.
"""

from __future__ import annotations

import pytest
import stripe

from reversal_pipeline.errors import (
    StripeRateLimited,
    StripeSystemicError,
    TransferAlreadyReversed,
    TransferNotFound,
    TransientStripeError,
)
from reversal_pipeline.stripe import classify_stripe_error


def _plain_error(
    status: int | None, *, code: str | None = None, message: str = "boom"
) -> Exception:
    """A generic ``StripeError`` (not a subclass) carrying only a status and maybe a code."""
    return stripe.StripeError(message, http_status=status, code=code)


def test_a_429_is_rate_limited_whatever_class_carries_it() -> None:
    # A proxy's 429 surfaces as a plain APIError: the status alone must decide.
    sentinel = classify_stripe_error(stripe.APIError("slow down", http_status=429))
    assert type(sentinel) is StripeRateLimited
    assert sentinel.http_status == 429


def test_a_rate_limit_error_without_a_status_is_still_rate_limited() -> None:
    assert type(classify_stripe_error(stripe.RateLimitError("slow down"))) is StripeRateLimited


def test_401_and_403_by_status_alone_are_systemic_and_a_400_is_not() -> None:
    for status in (401, 403):
        assert type(classify_stripe_error(_plain_error(status))) is StripeSystemicError
    assert type(classify_stripe_error(_plain_error(400))) is TransientStripeError


def test_an_authentication_error_with_another_status_is_not_systemic() -> None:
    # The class counts only when there is no status at all (the SDK's missing-key error).
    err = stripe.AuthenticationError("odd", http_status=500)
    assert type(classify_stripe_error(err)) is TransientStripeError


def test_the_code_falls_back_to_the_exception_then_to_the_json_body() -> None:
    err = _plain_error(404, code="resource_missing")
    assert err.error is None  # no parsed error object: the exception's own code is used
    sentinel = classify_stripe_error(err)
    assert type(sentinel) is TransferNotFound
    assert sentinel.stripe_code == "resource_missing"

    from_body = stripe.StripeError(
        "no such transfer",
        http_status=404,
        json_body={"error": {"code": "resource_missing", "message": "no such transfer"}},
    )
    from_body.error = None
    from_body.code = None
    sentinel = classify_stripe_error(from_body)
    assert type(sentinel) is TransferNotFound
    assert sentinel.stripe_code == "resource_missing"


@pytest.mark.parametrize(
    "json_body",
    [None, {"error": "resource_missing"}, {"error": {"code": 404}}, {"error": {}}, "text"],
    ids=["none", "error-not-a-dict", "code-not-a-string", "no-code", "body-not-a-dict"],
)
def test_an_unusable_body_gives_no_code(json_body: object) -> None:
    err = stripe.StripeError("gone", http_status=404, json_body=json_body)  # type: ignore[arg-type]
    err.error = None
    err.code = None
    sentinel = classify_stripe_error(err)
    assert sentinel.stripe_code is None
    assert type(sentinel) is TransientStripeError  # a 404 without resource_missing


def test_an_empty_code_on_the_error_object_falls_back_to_the_exception() -> None:
    err = stripe.StripeError("gone", http_status=404, code="resource_missing")
    err.error = stripe.ErrorObject.construct_from({"code": "", "message": "gone"}, "sk_test")
    assert classify_stripe_error(err).stripe_code == "resource_missing"


def test_the_message_prefers_user_message_then_the_error_object_then_str() -> None:
    wording = "The transfer tr_1 is already fully reversed."
    body = {"error": {"message": wording, "type": "invalid_request_error"}}
    from_object = stripe.InvalidRequestError("", param=None, http_status=400, json_body=body)
    assert not from_object.user_message
    assert from_object.error is not None
    sentinel = classify_stripe_error(from_object)
    assert type(sentinel) is TransferAlreadyReversed
    assert sentinel.message == wording

    other = {"error": {"message": "ignored", "type": "invalid_request_error"}}
    from_user_message = stripe.InvalidRequestError(
        wording, param=None, http_status=400, json_body=other
    )
    assert classify_stripe_error(from_user_message).message == wording

    bare = stripe.InvalidRequestError("", param=None, http_status=400)
    assert bare.error is None
    assert classify_stripe_error(bare).message == str(bare)

    assert classify_stripe_error(ValueError("")).message == "ValueError"
    assert classify_stripe_error(ValueError("why")).message == "why"


def test_a_status_that_is_not_an_int_is_no_status() -> None:
    for status in ("429", True, 429.0):
        err = stripe.StripeError("odd", http_status=status)  # type: ignore[arg-type]
        sentinel = classify_stripe_error(err)
        assert sentinel.http_status is None
        assert type(sentinel) is TransientStripeError


def test_a_request_id_that_is_not_a_string_is_dropped() -> None:
    err = stripe.APIError("odd", http_status=500)
    err.request_id = 12345  # type: ignore[assignment]
    assert classify_stripe_error(err).request_id is None
    err.request_id = "req_ok"
    assert classify_stripe_error(err).request_id == "req_ok"


def test_an_error_whose_str_raises_is_named_by_its_class() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    sentinel = classify_stripe_error(Unprintable())
    assert type(sentinel) is TransientStripeError
    assert sentinel.message == "Unprintable"


def test_an_idempotency_error_type_on_a_plain_error_is_transient_not_not_found() -> None:
    err = stripe.StripeError("key reused", http_status=404, code="resource_missing")
    err.error = stripe.ErrorObject.construct_from(
        {"type": "idempotency_error", "code": "resource_missing"}, "sk_test"
    )
    assert type(classify_stripe_error(err)) is TransientStripeError


def test_the_code_on_the_error_object_alone_is_found() -> None:
    # stripe 16 leaves err.code None on several classes; the parsed error object has it.
    err = stripe.APIError(
        "gone",
        http_status=404,
        json_body={"error": {"code": "resource_missing", "message": "gone"}},
    )
    assert err.error is not None
    err.code = None
    err.json_body = None  # only the error object still carries the code
    sentinel = classify_stripe_error(err)
    assert type(sentinel) is TransferNotFound
    assert sentinel.stripe_code == "resource_missing"


def test_systemic_and_rate_limited_sentinels_carry_stripe_wording() -> None:
    revoked = stripe.AuthenticationError("Invalid API Key provided: sk_test_***", http_status=401)
    assert classify_stripe_error(revoked).message == "Invalid API Key provided: sk_test_***"
    limited = stripe.RateLimitError("Too many requests, slow down", http_status=429)
    assert classify_stripe_error(limited).message == "Too many requests, slow down"


class _Unreadable(Exception):
    """An exception whose attributes raise when read: the classifier itself fails on it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def http_status(self) -> int:
        raise RuntimeError("broken attribute")

    def __str__(self) -> str:
        return self.text


def test_a_classifier_failure_is_transient_and_keeps_the_original() -> None:
    err = _Unreadable("the SDK broke")
    sentinel = classify_stripe_error(err)
    assert type(sentinel) is TransientStripeError
    assert sentinel.original is err
    assert sentinel.message == "the SDK broke"


def test_a_classifier_failure_with_no_text_says_so() -> None:
    sentinel = classify_stripe_error(_Unreadable(""))
    assert type(sentinel) is TransientStripeError
    assert sentinel.message == "unclassifiable error from Stripe call"


def test_an_idempotency_error_keeps_stripe_wording_and_the_original() -> None:
    err = stripe.IdempotencyError(
        "Keys for idempotent requests can only be used once", http_status=400
    )
    sentinel = classify_stripe_error(err)
    assert type(sentinel) is TransientStripeError
    assert sentinel.message == "Keys for idempotent requests can only be used once"
    assert sentinel.original is err


def test_an_error_object_without_a_code_falls_back_to_the_exception_code() -> None:
    err = stripe.APIError(
        "gone", http_status=404, json_body={"error": {"message": "gone", "type": "api_error"}}
    )
    assert err.error is not None
    err.code = "resource_missing"
    assert type(classify_stripe_error(err)) is TransferNotFound
