"""Canned error answers: what a scripted status or an emulated 500 looks like from Stripe.

A scripted status gets the body Stripe sends for it (the script may override
any field), and a 500 gets the ``Stripe-Should-Retry`` header Stripe sends.
"""

from __future__ import annotations

from reversal_pipeline.stripe_emulator.delivery import Answer, RequestContext
from reversal_pipeline.stripe_emulator.errors import (
    GATEWAY_MESSAGES,
    INTERNAL_ERROR_MESSAGE,
    RATE_LIMIT_MESSAGE,
    EmulatorError,
    in_flight_message,
    no_such_transfer,
)
from reversal_pipeline.stripe_emulator.keys import MISSING_KEY_MESSAGE, mask_key


def stripe_should_retry_500(method: str) -> bool | None:
    """What Stripe's ``Stripe-Should-Retry`` says on a 500 by default (None: no header).

    A POST that reached the endpoint has its 500 stored under its idempotency
    key, so a same-key retry would only replay it: Stripe sends ``false``, and
    the stock stripe-python SDK then does not retry. A GET stores nothing and a
    retry may succeed, so it gets no header and the SDK decides by status.
    """
    return False if method == "POST" else None


def set_should_retry(answer: Answer, ctx: RequestContext, should_retry: bool | None) -> None:
    """The header for an emulated 500: the fault's choice, else Stripe's default."""
    if should_retry is None:
        should_retry = stripe_should_retry_500(ctx.method)
    if should_retry is not None:
        answer.headers["Stripe-Should-Retry"] = "true" if should_retry else "false"


def default_error(status: int, ctx: RequestContext) -> EmulatorError:
    """A Stripe-looking error for a scripted status; the script may override any field."""
    masked = mask_key(ctx.api_key) if ctx.api_key else None
    if status == 401:
        message = f"Invalid API Key provided: {masked}" if masked else MISSING_KEY_MESSAGE
        return EmulatorError(401, message)
    if status == 403:
        return EmulatorError(
            403,
            f"The provided key '{masked or ''}' does not have the required permissions for this"
            " endpoint on account 'acct_1EmulatorPlatform00'. Having the 'rak_transfer_write'"
            " permission would allow this request to continue.",
        )
    if status == 404:
        return no_such_transfer(ctx.transfer_id or "tr_unknown")
    if status == 409:
        return EmulatorError(
            409,
            in_flight_message(ctx.idempotency_key or ""),
            type="idempotency_error",
            code="idempotency_key_in_use",
        )
    if status == 429:
        return EmulatorError(429, RATE_LIMIT_MESSAGE, code="rate_limit")
    if status in GATEWAY_MESSAGES:
        return EmulatorError(status, GATEWAY_MESSAGES[status], type="api_error")
    if status >= 500:
        return EmulatorError(status, INTERNAL_ERROR_MESSAGE, type="api_error")
    return EmulatorError(status, "Invalid request.")
