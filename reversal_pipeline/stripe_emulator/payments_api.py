"""Stripe's /v1 endpoints for charges, refunds and events (parameters in, objects out).

The handlers run inside ``EmulatorApp``'s one request pipeline, so keys, faults,
scripts, rate limits, idempotency (for the POSTs) and the request log apply to
them exactly as to the transfer endpoints. Only what the pipeline reads is
served: creating a charge is the emulator's shortcut for "a customer paid"
(no payment method needed), and ``expand[]`` takes only a refund's ``charge``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reversal_pipeline.stripe_emulator.delivery import RequestContext
from reversal_pipeline.stripe_emulator.errors import ParameterError
from reversal_pipeline.stripe_emulator.expand import expand_paths
from reversal_pipeline.stripe_emulator.params import (
    check_allowed,
    created_params,
    currency_param,
    cursor_params,
    int_param,
    limit_param,
    metadata_param,
    required_param,
    str_param,
)
from reversal_pipeline.stripe_emulator.state import EmulatorState

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]

REFUND_EXPANDABLE = frozenset({"charge"})
NO_EXPANDABLE: frozenset[str] = frozenset()
#: Stripe's own limit on ``types[]``.
MAX_EVENT_TYPES = 20


class PaymentsApi:
    """The handlers; :meth:`routes` lists them for the app's router."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.payments = state.payments

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        return [
            ("/v1/charges", "POST", "POST /v1/charges", self.create_charge),
            ("/v1/charges/{charge_id}", "GET", "GET /v1/charges/{id}", self.retrieve_charge),
            ("/v1/refunds", "POST", "POST /v1/refunds", self.create_refund),
            ("/v1/refunds", "GET", "GET /v1/refunds", self.list_refunds),
            ("/v1/refunds/{refund_id}", "GET", "GET /v1/refunds/{id}", self.retrieve_refund),
            ("/v1/events", "GET", "GET /v1/events", self.list_events),
            ("/v1/events/{event_id}", "GET", "GET /v1/events/{id}", self.retrieve_event),
        ]

    _CREATE_CHARGE = frozenset(
        {
            "amount",
            "currency",
            "customer",
            "description",
            "expand",
            "metadata",
            "source",
            "transfer_group",
        }
    )
    _CREATE_REFUND = frozenset({"amount", "charge", "expand", "metadata", "reason"})
    _LIST_REFUNDS = frozenset(
        {
            "charge",
            "created",
            "ending_before",
            "expand",
            "limit",
            "payment_intent",
            "starting_after",
        }
    )
    _LIST_EVENTS = frozenset(
        {
            "created",
            "delivery_success",
            "ending_before",
            "expand",
            "limit",
            "starting_after",
            "type",
            "types",
        }
    )
    _RETRIEVE = frozenset({"expand"})
    _REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

    # ----------------------------------------------------------------- charges

    def create_charge(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._CREATE_CHARGE)
        amount = int_param(required_param(params, "amount"), "amount", minimum=1)
        currency = currency_param(params)
        expand_paths(params, NO_EXPANDABLE, in_list=False)
        charge = self.payments.create_charge(
            amount=amount,
            currency=currency,
            transfer_group=str_param(params, "transfer_group") or None,
            metadata=metadata_param(params),
            description=str_param(params, "description") or None,
            livemode=ctx.livemode,
        )
        return self.payments.charge_dict(charge.id)

    def retrieve_charge(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._RETRIEVE)
        expand_paths(params, NO_EXPANDABLE, in_list=False)
        return self.payments.charge_dict(ctx.path_params["charge_id"], livemode=ctx.livemode)

    # ----------------------------------------------------------------- refunds

    def _refund_dict(self, refund: Any, expand: frozenset[str]) -> dict[str, Any]:
        body = refund.to_dict()
        if "charge" in expand:
            body["charge"] = refund.charge.to_dict()
        return body

    def create_refund(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._CREATE_REFUND)
        charge_id = str_param(params, "charge")
        if not charge_id:
            # Stripe also takes payment_intent; the emulator's charges have none.
            raise ParameterError(
                400, "One of `charge` or `payment_intent` is required.", code="parameter_missing"
            )
        amount = None
        if "amount" in params:
            amount = int_param(params["amount"], "amount", minimum=1)
        reason = str_param(params, "reason")
        if reason is not None and reason not in self._REASONS:
            raise ParameterError(
                400,
                f"Invalid reason: must be one of {', '.join(sorted(self._REASONS))}",
                param="reason",
            )
        metadata = metadata_param(params)
        expand = expand_paths(params, REFUND_EXPANDABLE, in_list=False)
        with self.state.lock:
            refund = self.payments.create_refund(
                charge_id, amount=amount, metadata=metadata, livemode=ctx.livemode
            )
            return self._refund_dict(refund, expand)

    def list_refunds(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._LIST_REFUNDS)
        limit = limit_param(params)
        starting_after, ending_before = cursor_params(params)
        bounds = created_params(params)
        expand = expand_paths(params, REFUND_EXPANDABLE, in_list=True)
        if str_param(params, "payment_intent"):
            data: list[dict[str, Any]] = []  # no charge here has a payment intent
            return {"object": "list", "data": data, "has_more": False, "url": "/v1/refunds"}
        with self.state.lock:
            page = self.payments.list_refunds(
                limit=limit,
                charge=str_param(params, "charge") or None,
                bounds=bounds,
                starting_after=starting_after,
                ending_before=ending_before,
                livemode=ctx.livemode,
            )
            data = [self._refund_dict(r, expand) for r in page.data]
        return {"object": "list", "data": data, "has_more": page.has_more, "url": "/v1/refunds"}

    def retrieve_refund(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._RETRIEVE)
        expand = expand_paths(params, REFUND_EXPANDABLE, in_list=False)
        with self.state.lock:
            refund = self.payments.get_refund(ctx.path_params["refund_id"], livemode=ctx.livemode)
            return self._refund_dict(refund, expand)

    # ----------------------------------------------------------------- events

    def list_events(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._LIST_EVENTS)
        limit = limit_param(params)
        starting_after, ending_before = cursor_params(params)
        bounds = created_params(params)
        expand_paths(params, NO_EXPANDABLE, in_list=True)
        event_type = str_param(params, "type")
        types = params.get("types")
        if types is not None:
            if not isinstance(types, list):
                raise ParameterError(400, "Invalid array", param="types")
            if event_type is not None:
                raise ParameterError(
                    400, "You may only specify one of these parameters: type, types."
                )
            if len(types) > MAX_EVENT_TYPES:
                raise ParameterError(
                    400, f"You may pass at most {MAX_EVENT_TYPES} types.", param="types"
                )
        with self.state.lock:
            page = self.payments.list_events(
                limit=limit,
                type=event_type,
                types=types,
                bounds=bounds,
                starting_after=starting_after,
                ending_before=ending_before,
                livemode=ctx.livemode,
            )
            data = [e.to_dict() for e in page.data]
        return {"object": "list", "data": data, "has_more": page.has_more, "url": "/v1/events"}

    def retrieve_event(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._RETRIEVE)
        expand_paths(params, NO_EXPANDABLE, in_list=False)
        with self.state.lock:
            event = self.payments.get_event(ctx.path_params["event_id"], livemode=ctx.livemode)
            return event.to_dict()
