"""Turn whatever a Stripe call raised into exactly one sentinel (DESIGN.md contract).

The job decides a row's fate from the sentinel alone, so this module is where
money safety is decided: when in doubt the answer is ``TransientStripeError``
(retry, then ``permanently_failed`` for a person), never a verdict that could
mark a row ``reversed`` or stop looking at it without evidence.
"""

from __future__ import annotations

from typing import Any

import stripe

from reversal_pipeline.errors import (
    StripeObjectNotFound,
    StripeRateLimited,
    StripeSentinel,
    StripeSystemicError,
    TransferAlreadyReversed,
    TransferNotFound,
    TransientStripeError,
)

#: The sentinel a 404 ``resource_missing`` becomes: the kind of object that was asked for.
NotFound = type[StripeObjectNotFound]


def is_already_reversed_message(message: object) -> bool:
    """Whether a 400's message means "this transfer is already (fully) reversed".

    FRAGILE BY NATURE, and the only place that knows it: Stripe sends this
    error with no ``code`` (open request: stripe/stripe-ruby issue 1058), so
    the English wording is all there is. Today it reads "The transfer tr_123
    is already fully reversed."; we match "already" AND "revers" in any case,
    so "reversed"/"reversal" and "fully"/"partially" variants still match.

    If Stripe rewords it (drops "already", translates it, adds a code instead)
    the 400 falls through to ``TransientStripeError``: the row is retried with
    backoff and ends ``permanently_failed`` for a person to look at. Noisier,
    never money lost. The opposite mistake is also contained: a matched
    message only makes the job *confirm on the transfer* that at least the
    row's amount is reversed before it marks the row ``reversed``.

    The wording is pinned in ``tests/stripe/test_classify.py``; change both
    together.
    """
    if not isinstance(message, str):
        return False
    folded = message.casefold()
    return "already" in folded and "revers" in folded


def classify_stripe_error(
    err: BaseException, not_found: NotFound = TransferNotFound
) -> StripeSentinel:
    """Map one exception to one sentinel; never raises, whatever it is given.

    Accepts any exception, not only ``stripe.StripeError``: a transport bug or
    a JSON decode error that escapes the SDK is still "may work later". A 404
    ``resource_missing`` becomes ``not_found``: the kind of object the caller
    asked for (a transfer unless it says otherwise).
    """
    try:
        return _classify(err, not_found)
    except Exception:  # the classifier must never be the thing that crashes a run
        return TransientStripeError(
            _safe_text(err) or "unclassifiable error from Stripe call", original=err
        )


def _classify(err: BaseException, not_found: NotFound) -> StripeSentinel:
    status = _as_int(getattr(err, "http_status", None))
    code = _error_code(err)
    request_id = _as_str(getattr(err, "request_id", None))
    message = _message(err)
    fields: dict[str, Any] = {
        "http_status": status,
        "stripe_code": code,
        "request_id": request_id,
    }

    if status in (401, 403) or (
        status is None and isinstance(err, stripe.AuthenticationError | stripe.PermissionError)
    ):
        # Also the SDK's client-side "No API key provided" (no status at all).
        return StripeSystemicError(message, **fields)
    if status == 429 or isinstance(err, stripe.RateLimitError):
        return StripeRateLimited(message, original=err, **fields)
    if isinstance(err, stripe.IdempotencyError) or _error_type(err) == "idempotency_error":
        # Key reused with other parameters: our bug or a pruned key, not the row's fate.
        return TransientStripeError(message, original=err, **fields)
    if status == 404 and code == "resource_missing":
        return not_found(message, **fields)
    if status == 400 and is_already_reversed_message(message):
        return TransferAlreadyReversed(message, **fields)
    return TransientStripeError(message, original=err, **fields)


def _error_code(err: BaseException) -> str | None:
    # stripe 16 leaves ``err.code`` None on several classes (APIError,
    # RateLimitError, AuthenticationError...) even when the body has one;
    # the parsed ``err.error`` always carries it.
    error_obj = getattr(err, "error", None)
    if error_obj is not None:
        code = _as_str(getattr(error_obj, "code", None))
        if code:
            return code
    code = _as_str(getattr(err, "code", None))
    if code:
        return code
    body = getattr(err, "json_body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return _as_str(body["error"].get("code")) or None
    return None


def _error_type(err: BaseException) -> str | None:
    error_obj = getattr(err, "error", None)
    return _as_str(getattr(error_obj, "type", None)) if error_obj is not None else None


def _message(err: BaseException) -> str:
    # Stripe's own wording, without the "Request req_...: " prefix of str(err)
    # (the request id travels in its own field).
    if isinstance(err, stripe.StripeError):
        text = _as_str(err.user_message)
        if text:
            return text
        error_obj = err.error
        if error_obj is not None:
            text = _as_str(getattr(error_obj, "message", None))
            if text:
                return text
    return _safe_text(err) or type(err).__name__


def _safe_text(err: object) -> str:
    try:
        return str(err)
    except Exception:
        return type(err).__name__


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
