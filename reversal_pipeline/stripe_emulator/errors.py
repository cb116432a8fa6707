"""Stripe's API errors as the emulator raises them, and the messages Stripe words them with.

:class:`EmulatorError` carries what Stripe's ``{"error": {...}}`` envelope and
status need, so the app only renders it. Messages follow Stripe's public
wording where it is known, because callers (the pipeline among them) match on it.
"""

from __future__ import annotations

from typing import Any


class EmulatorError(Exception):
    """A Stripe API error: what the ``{"error": {...}}`` envelope and status carry."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param:
            error["param"] = self.param
        return {"error": error}


class ParameterError(EmulatorError):
    """The request's parameters failed validation, so the endpoint never began executing.

    Stripe saves an idempotent result only once an endpoint starts executing:
    a request rejected here leaves its idempotency key free, and the same key
    with corrected parameters then runs as a new request.
    """


def no_such_transfer(
    transfer_id: str, *, param: str = "id", other_mode: str | None = None
) -> EmulatorError:
    message = f"No such transfer: '{transfer_id}'"
    if other_mode is not None:
        used = "test" if other_mode == "live" else "live"
        message += (
            f"; a similar object exists in {other_mode} mode, but a {used} mode key was"
            " used to make this request."
        )
    status = 404 if param == "id" else 400
    return EmulatorError(status, message, code="resource_missing", param=param)


def no_such_reversal(reversal_id: str, *, param: str = "id") -> EmulatorError:
    status = 404 if param == "id" else 400
    return EmulatorError(
        status,
        f"No such transfer reversal: '{reversal_id}'",
        code="resource_missing",
        param=param,
    )


def already_reversed(transfer_id: str) -> EmulatorError:
    """Stripe's wording, with no code: callers can only match the message."""
    return EmulatorError(400, f"The transfer {transfer_id} is already fully reversed.")


def amount_too_large(amount: int, remaining: int) -> EmulatorError:
    """Deliberately free of the word "already": it is not the benign already-reversed case."""
    return EmulatorError(
        400,
        f"Amount ({amount}) is greater than the amount that can be reversed on this transfer"
        f" ({remaining}).",
        param="amount",
    )


#: Stripe's answer to a POST whose body is not form-encoded (a JSON body, say).
FORM_ENCODING_MESSAGE = (
    "Invalid request (check that your POST content type is"
    " application/x-www-form-urlencoded). If you have any questions, we can help at"
    " https://support.stripe.com/."
)
RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. Learn more about rate limits here"
    " https://stripe.com/docs/rate-limits."
)
INTERNAL_ERROR_MESSAGE = (
    "Sorry, something went wrong on our end. If this keeps happening, contact us through"
    " https://support.stripe.com/contact."
)
GATEWAY_MESSAGES = {
    502: "Bad gateway: the API did not answer. Please retry your request.",
    503: "The API is temporarily unavailable. Please retry your request.",
    504: "The API did not answer in time. Please retry your request.",
}


def in_flight_message(key: str) -> str:
    return (
        "There is currently another in-progress request using this Idempotent Key (that"
        " probably means you submitted twice, and the other request is still going through):"
        f" {key}. Please try again later."
    )


def mismatch_params_message(key: str) -> str:
    return (
        "Keys for idempotent requests can only be used with the same parameters they were"
        f" first used with. Try using a key other than '{key}' if you meant to execute a"
        " different request."
    )


def mismatch_endpoint_message(key: str, original: str, current: str) -> str:
    return (
        "Keys for idempotent requests can only be used for the same endpoint they were first"
        f" used for ('{original}' vs '{current}'). Try using a key other than '{key}' if you"
        " meant to execute a different request."
    )


def no_such_object(kind: str, object_id: str, *, param: str = "id") -> EmulatorError:
    """Stripe's "No such charge/refund/event"; 404 for the path's id, 400 for a parameter.

    A list cursor (``starting_after``/``ending_before``) naming an object Stripe
    does not have, or no longer has (an event past its 30 days), is the 400 form.
    """
    status = 404 if param == "id" else 400
    return EmulatorError(
        status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


def charge_already_refunded(charge_id: str) -> EmulatorError:
    return EmulatorError(
        400, f"Charge {charge_id} has already been refunded.", code="charge_already_refunded"
    )


def refund_amount_too_large(amount: int, refundable: int) -> EmulatorError:
    """Minor units: the emulator does not format currencies as Stripe's message does."""
    return EmulatorError(
        400,
        f"Refund amount ({amount}) is greater than unrefunded amount on charge ({refundable})",
        code="amount_too_large",
        param="amount",
    )
