"""The emulator's Starlette app: Stripe's /v1 endpoints, wired to state and faults.

Transfer handlers are here; charges, refunds and events are in ``payments_api.py``.

Every /v1 request runs one pipeline (``EmulatorApp._serve``) so faults,
authentication, rate limiting, idempotency and logging behave the same on every
endpoint; the endpoint handlers only validate parameters and call the state.
The order of the stages is documented in ``faults.py``. Parameters are decoded
in ``params.py``, answers leave through ``delivery.py``, and the ``/_emulator``
control endpoints live in ``control.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from reversal_pipeline.stripe_emulator.canned import (
    default_error,
    set_should_retry,
    stripe_should_retry_500,
)
from reversal_pipeline.stripe_emulator.control import ControlEndpoints
from reversal_pipeline.stripe_emulator.delivery import (
    HTML_502,
    Answer,
    DroppedConnection,
    KeepRawSend,
    RequestContext,
    charge_object,
    dumps,
    error_answer,
)
from reversal_pipeline.stripe_emulator.errors import (
    FORM_ENCODING_MESSAGE,
    INTERNAL_ERROR_MESSAGE,
    RATE_LIMIT_MESSAGE,
    EmulatorError,
    ParameterError,
    in_flight_message,
    mismatch_endpoint_message,
    mismatch_params_message,
)
from reversal_pipeline.stripe_emulator.expand import (
    REVERSAL_EXPANDABLE,
    TRANSFER_EXPANDABLE,
    expand_paths,
    expand_reversal,
    expand_transfer,
)
from reversal_pipeline.stripe_emulator.faults import HOLD, Faults, ScriptedResponse
from reversal_pipeline.stripe_emulator.idempotency import IdempotencyDecision, StoredResponse
from reversal_pipeline.stripe_emulator.keys import (
    key_fingerprint,
    new_id,
)
from reversal_pipeline.stripe_emulator.params import (
    check_allowed,
    created_params,
    currency_param,
    cursor_params,
    decode_params,
    int_param,
    limit_param,
    metadata_param,
    required_param,
    str_param,
)
from reversal_pipeline.stripe_emulator.payments_api import PaymentsApi
from reversal_pipeline.stripe_emulator.request_log import RequestRecord
from reversal_pipeline.stripe_emulator.state import EmulatorState

logger = logging.getLogger(__name__)

DEFAULT_API_VERSION = "2020-08-27"
MAX_IDEMPOTENCY_KEY_LENGTH = 255

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]


def _bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        import base64
        import binascii

        try:
            decoded = base64.b64decode(credentials.strip()).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return credentials
        return decoded.partition(":")[0] or None
    return header


class EmulatorApp:
    """Owns the ASGI app and the wiring between state, faults and HTTP."""

    def __init__(
        self, state: EmulatorState, faults: Faults, *, state_file: Path | None = None
    ) -> None:
        self.state = state
        self.faults = faults
        self.state_file = state_file  # where POST /_emulator/state/save writes
        self.asgi: ASGIApp = KeepRawSend(self._build())

    def reset(self) -> None:
        """Fresh emulator: no transfers, keys, scripts, holds or log; initial faults; real time."""
        self.faults.reset()
        self.state.reset()
        self.state.clock.reset()

    # ----------------------------------------------------------------- routing

    def _build(self) -> Starlette:
        v1: list[tuple[str, str, str, Handler]] = [
            ("/v1/transfers", "POST", "POST /v1/transfers", self._create_transfer),
            ("/v1/transfers", "GET", "GET /v1/transfers", self._list_transfers),
            (
                "/v1/transfers/{transfer_id}",
                "GET",
                "GET /v1/transfers/{id}",
                self._retrieve_transfer,
            ),
            (
                "/v1/transfers/{transfer_id}/reversals",
                "POST",
                "POST /v1/transfers/{id}/reversals",
                self._create_reversal,
            ),
            (
                "/v1/transfers/{transfer_id}/reversals",
                "GET",
                "GET /v1/transfers/{id}/reversals",
                self._list_reversals,
            ),
            (
                "/v1/transfers/{transfer_id}/reversals/{reversal_id}",
                "GET",
                "GET /v1/transfers/{id}/reversals/{rid}",
                self._retrieve_reversal,
            ),
        ]
        v1.extend(PaymentsApi(self.state).routes())  # charges, refunds, events
        routes = [
            Route(path, self._v1_endpoint(endpoint, handler), methods=[method])
            for path, method, endpoint, handler in v1
        ]
        routes.append(
            Route(
                "/v1/{rest:path}",
                self._v1_endpoint("UNRECOGNIZED", self._unrecognized),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        )
        control = ControlEndpoints(self)
        routes.extend(control.routes())
        return Starlette(routes=routes)

    def _v1_endpoint(self, endpoint: str, handler: Handler) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            return await self._serve(request, endpoint, handler)

        return serve

    # ----------------------------------------------------------------- pipeline

    async def _serve(self, request: Request, endpoint: str, handler: Handler) -> Response:
        started = time.perf_counter()
        log = self.state.requests
        ctx = RequestContext(
            request_id=new_id("req_", 14),
            method=request.method,
            path=request.url.path,
            endpoint=endpoint,
            transfer_id=request.path_params.get("transfer_id"),
            idempotency_key=request.headers.get("idempotency-key"),
            api_key=_bearer_key(request),
            stripe_version=request.headers.get("stripe-version") or DEFAULT_API_VERSION,
            path_params=dict(request.path_params),
        )
        log.enter()
        try:
            answer = await self._answer(request, ctx, handler)
        finally:
            log.leave()
        log.record(
            RequestRecord(
                time=self.state.clock(),
                method=ctx.method,
                path=ctx.path,
                endpoint=endpoint,
                transfer_id=ctx.transfer_id,
                status=answer.status,
                outcome=answer.outcome,
                request_id=ctx.request_id,
                idempotency_key=ctx.idempotency_key,
                fault=answer.fault,
                replayed=answer.replayed,
                duration_ms=(time.perf_counter() - started) * 1000.0,
            )
        )
        return self._deliver(ctx, answer)

    async def _answer(self, request: Request, ctx: RequestContext, handler: Handler) -> Answer:
        faults = self.faults
        delay = faults.latency_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

        script = faults.take_script("edge", ctx.method, ctx.path, ctx.transfer_id)
        if script is not None:
            return self._edge_script(ctx, script)
        if faults.roll("reset_rate", ctx.method):
            return Answer(None, outcome="reset", fault="random:reset", mangle="reset")
        try:
            ctx.livemode = self.state.keys.authenticate(ctx.api_key)
        except EmulatorError as err:
            return error_answer(err)
        if not faults.admit(self.state.clock()):
            return self._rate_limited(faults.config.rate_limit_should_retry)

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctx.method == "POST" and content_type == "application/json":
            # Rejected before the endpoint and the idempotency layer: nothing stored.
            return error_answer(ParameterError(400, FORM_ENCODING_MESSAGE))
        raw = (await request.body()).decode("utf-8", "replace") if ctx.method == "POST" else ""
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        pairs += parse_qsl(raw, keep_blank_values=True)

        key = ctx.idempotency_key if ctx.method == "POST" else None
        if key is None:
            return await self._execute(ctx, pairs, handler)
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return error_answer(
                EmulatorError(
                    400,
                    "Idempotency keys must be at most"
                    f" {MAX_IDEMPOTENCY_KEY_LENGTH} characters long.",
                )
            )
        scope = key_fingerprint(ctx.api_key or "")
        fingerprint = dumps(sorted(pairs)).decode()
        decision = self.state.idempotency.begin(
            scope, key, method=ctx.method, path=ctx.path, fingerprint=fingerprint
        )
        if decision.kind != "new":
            return self._idempotency_answer(ctx, key, decision)
        try:
            answer = await self._execute(ctx, pairs, handler)
        except BaseException:
            self.state.idempotency.abandon(scope, key)
            raise
        if answer.status is None or not answer.executed:  # nothing ran: leave no trace
            self.state.idempotency.abandon(scope, key)
        else:
            self.state.idempotency.complete(
                scope,
                key,
                StoredResponse(answer.status, answer.body, answer.content_type, ctx.request_id),
            )
        return answer

    async def _execute(
        self, ctx: RequestContext, pairs: list[tuple[str, str]], handler: Handler
    ) -> Answer:
        """Run a request that really executes: app-stage faults, then the handler."""
        faults = self.faults
        script = faults.take_script("app", ctx.method, ctx.path, ctx.transfer_id)
        fault: str | None = None
        if script is not None and script.respond == HOLD:
            fault = "script:hold"
            await faults.holds.hold()
            script = None
        if script is not None and isinstance(script.respond, int):
            return self._scripted_status(ctx, script)
        if faults.roll("error_rate", ctx.method):
            err = EmulatorError(500, INTERNAL_ERROR_MESSAGE, type="api_error")
            answer = error_answer(err, fault="random:error")
            set_should_retry(answer, ctx, faults.config.error_should_retry)
            return answer

        try:
            result = handler(ctx, decode_params(pairs))
            answer = Answer(200, dumps(result), fault=fault)
        except ParameterError as err:
            answer = error_answer(err, fault=fault)
            answer.executed = False
        except EmulatorError as err:
            answer = error_answer(err, fault=fault)
        except Exception:
            logger.exception("stripe emulator: handler failed for %s %s", ctx.method, ctx.path)
            answer = error_answer(EmulatorError(500, INTERNAL_ERROR_MESSAGE, type="api_error"))
            set_should_retry(answer, ctx, None)

        if script is not None:
            answer.mangle = str(script.respond)
            answer.outcome = "lost" if script.respond == "lost" else "scripted"
            answer.fault = f"script:{script.respond}"
            answer.headers.update(script.headers)
        elif faults.roll("lost_response_rate", ctx.method):
            answer.mangle = "lost"
            answer.outcome = "lost"
            answer.fault = "random:lost"
        return answer

    # ----------------------------------------------------------------- canned answers

    def _rate_limited(self, should_retry: bool, *, fault: str = "rate_limit") -> Answer:
        err = EmulatorError(429, RATE_LIMIT_MESSAGE, code="rate_limit")
        answer = error_answer(err, outcome="rate_limited", fault=fault)
        if should_retry:
            answer.headers["Stripe-Should-Retry"] = "true"
        return answer

    def _idempotency_answer(
        self, ctx: RequestContext, key: str, decision: IdempotencyDecision
    ) -> Answer:
        if decision.kind == "replay" and decision.stored is not None:
            stored = decision.stored
            return Answer(
                stored.status,
                stored.body,
                stored.content_type,
                outcome="replayed",
                replayed=True,
                original_request=stored.request_id,
            )
        if decision.kind == "in_flight":
            err = EmulatorError(
                409, in_flight_message(key), type="idempotency_error", code="idempotency_key_in_use"
            )
            return error_answer(err)
        if decision.kind == "mismatch_endpoint":
            original = f"{decision.original_method} {decision.original_path}"
            message = mismatch_endpoint_message(key, original, f"{ctx.method} {ctx.path}")
        else:
            message = mismatch_params_message(key)
        return error_answer(EmulatorError(400, message, type="idempotency_error"))

    def _edge_script(self, ctx: RequestContext, script: ScriptedResponse) -> Answer:
        if script.respond == "reset":
            return Answer(None, outcome="reset", fault="script:reset", mangle="reset")
        if script.respond == "html_502":
            return Answer(
                502,
                HTML_502,
                "text/html",
                outcome="scripted",
                fault="script:html_502",
                headers=dict(script.headers),
            )
        return self._scripted_status(ctx, script)

    def _scripted_status(self, ctx: RequestContext, script: ScriptedResponse) -> Answer:
        status = int(script.respond)
        err = default_error(status, ctx)
        err.message = script.message or err.message
        err.type = script.type or err.type
        err.code = script.code if script.code is not None else err.code
        err.param = script.param if script.param is not None else err.param
        answer = error_answer(err, outcome="scripted", fault=f"script:{status}")
        should_retry = script.should_retry
        if should_retry is None and status == 429:
            should_retry = self.faults.config.rate_limit_should_retry or None
        if should_retry is None and status == 500:
            should_retry = stripe_should_retry_500(ctx.method)
        if should_retry is not None:
            answer.headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        answer.headers.update(script.headers)
        return answer

    # ----------------------------------------------------------------- delivery

    def _deliver(self, ctx: RequestContext, answer: Answer) -> Response:
        headers = {"Request-Id": ctx.request_id, "Stripe-Version": ctx.stripe_version}
        if ctx.idempotency_key is not None:
            headers["Idempotency-Key"] = ctx.idempotency_key
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
        if answer.original_request:
            headers["Original-Request"] = answer.original_request
        headers.update(answer.headers)
        if answer.mangle == "reset" or answer.status is None:
            return DroppedConnection("reset")
        if answer.mangle == "lost":
            return DroppedConnection(
                "lost",
                status=answer.status,
                body=answer.body,
                content_type=answer.content_type,
                headers=headers,
            )
        status, body, content_type = answer.status, answer.body, answer.content_type
        if answer.mangle == "truncated":
            body = body[: max(1, len(body) // 2)]
        elif answer.mangle == "malformed_json":
            status, body = 200, b'{"object": "transfer_reversal", "id": trr_, "amount": }'
        elif answer.mangle == "wrong_object":
            status, body = 200, dumps(charge_object(self.state.clock(), ctx.livemode))
        return Response(body, status_code=status, headers=headers, media_type=content_type)

    # ----------------------------------------------------------------- /v1 handlers

    _CREATE_TRANSFER_PARAMS = frozenset(
        {
            "amount",
            "currency",
            "description",
            "destination",
            "expand",
            "metadata",
            "source_transaction",
            "source_type",
            "transfer_group",
        }
    )
    _LIST_TRANSFER_PARAMS = frozenset(
        {
            "created",
            "destination",
            "ending_before",
            "expand",
            "limit",
            "starting_after",
            "transfer_group",
        }
    )
    _CREATE_REVERSAL_PARAMS = frozenset(
        {"amount", "description", "expand", "metadata", "refund_application_fee"}
    )
    _LIST_REVERSAL_PARAMS = frozenset({"ending_before", "expand", "limit", "starting_after"})
    _RETRIEVE_PARAMS = frozenset({"expand"})

    def _create_transfer(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._CREATE_TRANSFER_PARAMS)
        amount = int_param(required_param(params, "amount"), "amount", minimum=1)
        currency = currency_param(params)
        expand = expand_paths(params, TRANSFER_EXPANDABLE, in_list=False)
        destination = str_param(params, "destination") or required_param(params, "destination")
        if not destination.startswith("acct_"):
            raise EmulatorError(
                400,
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        transfer = self.state.create_transfer(
            amount=amount,
            currency=currency,
            destination=destination,
            metadata=metadata_param(params),
            transfer_group=str_param(params, "transfer_group") or None,
            description=str_param(params, "description") or None,
            source_transaction=str_param(params, "source_transaction") or None,
            livemode=ctx.livemode,
        )
        return expand_transfer(self.state.transfer_dict(transfer.id), expand)

    def _list_transfers(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._LIST_TRANSFER_PARAMS)
        limit = limit_param(params)
        starting_after, ending_before = cursor_params(params)
        bounds = created_params(params)
        expand = expand_paths(params, TRANSFER_EXPANDABLE, in_list=True)
        with self.state.lock:
            page = self.state.list_transfers(
                limit=limit,
                destination=str_param(params, "destination"),
                transfer_group=str_param(params, "transfer_group"),
                starting_after=starting_after,
                ending_before=ending_before,
                livemode=ctx.livemode,
                **bounds,
            )
            data = [expand_transfer(t.to_dict(), expand) for t in page.data]
        return {"object": "list", "data": data, "has_more": page.has_more, "url": "/v1/transfers"}

    def _retrieve_transfer(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._RETRIEVE_PARAMS)
        expand = expand_paths(params, TRANSFER_EXPANDABLE, in_list=False)
        transfer = self.state.transfer_dict(ctx.path_params["transfer_id"], livemode=ctx.livemode)
        return expand_transfer(transfer, expand)

    def _create_reversal(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._CREATE_REVERSAL_PARAMS)
        amount = None
        if "amount" in params:
            amount = int_param(params["amount"], "amount", minimum=1)
        metadata = metadata_param(params)
        expand = expand_paths(params, REVERSAL_EXPANDABLE, in_list=False)
        reversal = self.state.reverse_transfer(
            ctx.path_params["transfer_id"],
            amount=amount,
            metadata=metadata,
            description=str_param(params, "description") or None,
            livemode=ctx.livemode,
        )
        return self._expanded_reversal(reversal.to_dict(), expand)

    def _expanded_reversal(
        self, reversal: dict[str, Any], expand: frozenset[str]
    ) -> dict[str, Any]:
        with self.state.lock:  # the reversal's transfer, rendered consistently with it
            return expand_reversal(reversal, expand, self.state.transfer_dict)

    def _list_reversals(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._LIST_REVERSAL_PARAMS)
        limit = limit_param(params)
        starting_after, ending_before = cursor_params(params)
        transfer_id = ctx.path_params["transfer_id"]
        expand = expand_paths(params, REVERSAL_EXPANDABLE, in_list=True)
        with self.state.lock:
            page = self.state.list_reversals(
                transfer_id,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                livemode=ctx.livemode,
            )
            data = [self._expanded_reversal(r.to_dict(), expand) for r in page.data]
        url = f"/v1/transfers/{transfer_id}/reversals"
        return {"object": "list", "data": data, "has_more": page.has_more, "url": url}

    def _retrieve_reversal(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        check_allowed(params, self._RETRIEVE_PARAMS)
        expand = expand_paths(params, REVERSAL_EXPANDABLE, in_list=False)
        reversal = self.state.get_reversal(
            ctx.path_params["transfer_id"], ctx.path_params["reversal_id"], livemode=ctx.livemode
        )
        return self._expanded_reversal(reversal.to_dict(), expand)

    def _unrecognized(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        raise EmulatorError(
            404,
            f"Unrecognized request URL ({ctx.method}: {ctx.path}). Please see"
            " https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )
