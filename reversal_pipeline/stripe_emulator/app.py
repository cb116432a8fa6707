"""The emulator's Starlette app: Stripe's /v1 transfer endpoints and /_emulator controls.

Every /v1 request runs one pipeline (``EmulatorApp._serve``) so faults,
authentication, rate limiting, idempotency and logging behave the same on every
endpoint; the endpoint handlers only validate parameters and call the state.
The order of the stages is documented in ``faults.py``.

Dropped connections (``lost``, ``reset``) need the socket itself: an outer ASGI
wrapper keeps uvicorn's own ``send`` in the scope, whose bound cycle holds the
transport, so the response can be cut after a partial body or the connection
reset before any byte is sent, without uvicorn logging an application error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reversal_pipeline.stripe_emulator.faults import (
    HOLD,
    FaultConfig,
    Faults,
    ScriptedResponse,
)
from reversal_pipeline.stripe_emulator.state import (
    MISSING_KEY_MESSAGE,
    EmulatorError,
    EmulatorState,
    IdempotencyDecision,
    RequestRecord,
    StoredResponse,
    key_fingerprint,
    mask_key,
    new_id,
    no_such_transfer,
    save_snapshot,
)

logger = logging.getLogger(__name__)

DEFAULT_API_VERSION = "2020-08-27"
RAW_SEND_KEY = "reversal_pipeline.stripe_emulator.raw_send"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
JSON = "application/json"

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
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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


# --------------------------------------------------------------------------- parameters

_PARAM_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SUBSCRIPT = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"-?\d{1,15}")


def _unknown(name: str) -> EmulatorError:
    return EmulatorError(
        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
    )


def decode_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding, one level deep.

    ``a=1`` is a scalar, ``a[k]=v`` a hash, ``a[]=v`` or ``a[0]=v`` a list.
    """
    params: dict[str, Any] = {}
    for raw_name, value in pairs:
        match = _PARAM_NAME.fullmatch(raw_name)
        if match is None:
            raise _unknown(raw_name)
        name, rest = match.groups()
        subscripts = _SUBSCRIPT.findall(rest)
        if not subscripts:
            params[name] = value
        elif len(subscripts) > 1:
            raise _unknown(raw_name)
        elif subscripts[0] == "" or subscripts[0].isdigit():
            existing = params.setdefault(name, [])
            if not isinstance(existing, list):
                raise EmulatorError(400, f"Invalid array: {name}", param=name)
            existing.append(value)
        else:
            existing = params.setdefault(name, {})
            if existing == "":  # "metadata=" then "metadata[k]=v": the hash wins
                existing = params[name] = {}
            if not isinstance(existing, dict):
                raise EmulatorError(400, f"Invalid hash: {name}", param=name)
            existing[subscripts[0]] = value
    return params


def _check_allowed(params: dict[str, Any], allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _unknown(name)


def _int_param(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if not isinstance(value, str):
        raise EmulatorError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        )
    if value == "":
        raise EmulatorError(
            400,
            f"You passed an empty string for '{name}'. We assume empty values are an attempt to"
            f" unset a parameter; however '{name}' cannot be unset. You should remove '{name}'"
            " from your request or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=name,
        )
    if not _INTEGER.fullmatch(value):
        raise EmulatorError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        )
    number = int(value)
    if minimum is not None and number < minimum:
        raise EmulatorError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    if maximum is not None and number > maximum:
        raise EmulatorError(
            400,
            f"This value must be less than or equal to {maximum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    return number


def _str_param(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EmulatorError(
            400, f"Invalid string: {name}", code="parameter_invalid_string", param=name
        )
    return value


def _required(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise EmulatorError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return params[name]


def _metadata_param(params: dict[str, Any]) -> dict[str, str] | None:
    raw = params.get("metadata")
    if raw is None:
        return None
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise EmulatorError(400, "Invalid hash", param="metadata")
    return {key: value for key, value in raw.items() if value != ""}


def _limit_param(params: dict[str, Any]) -> int:
    if "limit" not in params:
        return 10
    return _int_param(params["limit"], "limit", minimum=1, maximum=100)


def _cursor_params(params: dict[str, Any]) -> tuple[str | None, str | None]:
    starting_after = _str_param(params, "starting_after") or None
    ending_before = _str_param(params, "ending_before") or None
    if starting_after and ending_before:
        raise EmulatorError(
            400, "You may only specify one of these parameters: ending_before, starting_after."
        )
    return starting_after, ending_before


_RANGE_KEYS = ("gt", "gte", "lt", "lte")


def _created_params(params: dict[str, Any]) -> dict[str, int]:
    raw = params.get("created")
    if raw is None:
        return {}
    if isinstance(raw, str):
        exact = _int_param(raw, "created")
        return {"created_gte": exact, "created_lte": exact}
    if not isinstance(raw, dict):
        raise EmulatorError(400, "Invalid hash", param="created")
    bounds: dict[str, int] = {}
    for key, value in raw.items():
        if key not in _RANGE_KEYS:
            raise _unknown(f"created[{key}]")
        bounds[f"created_{key}"] = _int_param(value, f"created[{key}]")
    return bounds


# --------------------------------------------------------------------------- pipeline types


@dataclass
class RequestContext:
    """What the pipeline knows about one /v1 request."""

    request_id: str
    method: str
    path: str
    endpoint: str
    transfer_id: str | None
    idempotency_key: str | None
    api_key: str | None
    stripe_version: str
    path_params: dict[str, str]
    livemode: bool = False


@dataclass
class Answer:
    """A response before delivery; ``mangle`` names the damage done on the way out."""

    status: int | None
    body: bytes = b""
    content_type: str = JSON
    outcome: str = "ok"
    fault: str | None = None
    replayed: bool = False
    original_request: str | None = None
    mangle: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _error_answer(
    err: EmulatorError, *, outcome: str = "error", fault: str | None = None
) -> Answer:
    return Answer(err.status, _dumps(err.to_body()), outcome=outcome, fault=fault)


Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]


# --------------------------------------------------------------------------- delivery


def _raw_headers(
    headers: dict[str, str], content_type: str, length: int
) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(length).encode())]
    raw.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
    return raw


class DroppedConnection(Response):
    """Ends the exchange abnormally on the real socket.

    ``reset``: RST before a single byte (SO_LINGER 0, then abort): the client
    cannot know whether anything happened. ``lost``: status, headers with the
    full Content-Length, half the body, then close: the client sees a response
    cut short. Both leave uvicorn with a cycle it knows is disconnected, so it
    neither answers 500 nor logs an application error.
    """

    def __init__(
        self,
        mode: Literal["reset", "lost"],
        *,
        status: int = 200,
        body: bytes = b"",
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status)
        self.mode = mode
        self.full_body = body
        self.content_type = content_type
        self.extra_headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_send: Send = scope.get(RAW_SEND_KEY, send)
        cycle = getattr(raw_send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if self.mode == "reset":
            if transport is None:
                raise RuntimeError("cannot reset the connection: the server exposes no transport")
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            headers = _raw_headers(self.extra_headers, self.content_type, len(self.full_body))
            await raw_send(
                {"type": "http.response.start", "status": self.status_code, "headers": headers}
            )
            partial = self.full_body[: max(1, len(self.full_body) // 2)]
            await raw_send({"type": "http.response.body", "body": partial, "more_body": True})
            if transport is not None:
                transport.close()
        for _ in range(200):  # let connection_lost run and mark the cycle disconnected
            if cycle is None or getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)


class _KeepRawSend:
    """Outermost ASGI wrapper: remember the server's own ``send`` (see ``DroppedConnection``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- the app


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
        self.asgi: ASGIApp = _KeepRawSend(self._build())

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
            return _error_answer(err)
        if not faults.admit(self.state.clock()):
            return self._rate_limited(faults.config.rate_limit_should_retry)

        raw = (await request.body()).decode("utf-8", "replace") if ctx.method == "POST" else ""
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        pairs += parse_qsl(raw, keep_blank_values=True)

        key = ctx.idempotency_key if ctx.method == "POST" else None
        if key is None:
            return await self._execute(ctx, pairs, handler)
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return _error_answer(
                EmulatorError(
                    400,
                    "Idempotency keys must be at most"
                    f" {MAX_IDEMPOTENCY_KEY_LENGTH} characters long.",
                )
            )
        scope = key_fingerprint(ctx.api_key or "")
        fingerprint = _dumps(sorted(pairs)).decode()
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
        if answer.status is None:  # nothing was processed: leave no trace
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
            return _error_answer(err, fault="random:error")

        try:
            result = handler(ctx, decode_params(pairs))
            answer = Answer(200, _dumps(result), fault=fault)
        except EmulatorError as err:
            answer = _error_answer(err, fault=fault)
        except Exception:
            logger.exception("stripe emulator: handler failed for %s %s", ctx.method, ctx.path)
            answer = _error_answer(EmulatorError(500, INTERNAL_ERROR_MESSAGE, type="api_error"))

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
        answer = _error_answer(err, outcome="rate_limited", fault=fault)
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
            err = EmulatorError(409, in_flight_message(key), code="idempotency_key_in_use")
            return _error_answer(err)
        if decision.kind == "mismatch_endpoint":
            original = f"{decision.original_method} {decision.original_path}"
            message = mismatch_endpoint_message(key, original, f"{ctx.method} {ctx.path}")
        else:
            message = mismatch_params_message(key)
        return _error_answer(EmulatorError(400, message, type="idempotency_error"))

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
        err = _default_error(status, ctx)
        err.message = script.message or err.message
        err.type = script.type or err.type
        err.code = script.code if script.code is not None else err.code
        err.param = script.param if script.param is not None else err.param
        answer = _error_answer(err, outcome="scripted", fault=f"script:{status}")
        should_retry = script.should_retry
        if should_retry is None and status == 429:
            should_retry = self.faults.config.rate_limit_should_retry or None
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
            status, body = 200, _dumps(_charge_object(self.state.clock(), ctx.livemode))
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
        _check_allowed(params, self._CREATE_TRANSFER_PARAMS)
        amount = _int_param(_required(params, "amount"), "amount", minimum=1)
        currency = _str_param(params, "currency") or _required(params, "currency")
        if not (len(currency) == 3 and currency.isalpha()):
            raise EmulatorError(400, f"Invalid currency: {currency.lower()}.", param="currency")
        destination = _str_param(params, "destination") or _required(params, "destination")
        if not destination.startswith("acct_"):
            raise EmulatorError(
                400,
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        transfer = self.state.create_transfer(
            amount=amount,
            currency=currency.lower(),
            destination=destination,
            metadata=_metadata_param(params),
            transfer_group=_str_param(params, "transfer_group") or None,
            description=_str_param(params, "description") or None,
            source_transaction=_str_param(params, "source_transaction") or None,
            livemode=ctx.livemode,
        )
        return self.state.transfer_dict(transfer.id)

    def _list_transfers(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        _check_allowed(params, self._LIST_TRANSFER_PARAMS)
        limit = _limit_param(params)
        starting_after, ending_before = _cursor_params(params)
        bounds = _created_params(params)
        with self.state.lock:
            page = self.state.list_transfers(
                limit=limit,
                destination=_str_param(params, "destination"),
                transfer_group=_str_param(params, "transfer_group"),
                starting_after=starting_after,
                ending_before=ending_before,
                livemode=ctx.livemode,
                **bounds,
            )
            data = [t.to_dict() for t in page.data]
        return {"object": "list", "data": data, "has_more": page.has_more, "url": "/v1/transfers"}

    def _retrieve_transfer(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        _check_allowed(params, self._RETRIEVE_PARAMS)
        return self.state.transfer_dict(ctx.path_params["transfer_id"], livemode=ctx.livemode)

    def _create_reversal(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        _check_allowed(params, self._CREATE_REVERSAL_PARAMS)
        amount = None
        if "amount" in params:
            amount = _int_param(params["amount"], "amount", minimum=1)
        metadata = _metadata_param(params)
        reversal = self.state.reverse_transfer(
            ctx.path_params["transfer_id"],
            amount=amount,
            metadata=metadata,
            description=_str_param(params, "description") or None,
            livemode=ctx.livemode,
        )
        return reversal.to_dict()

    def _list_reversals(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        _check_allowed(params, self._LIST_REVERSAL_PARAMS)
        limit = _limit_param(params)
        starting_after, ending_before = _cursor_params(params)
        transfer_id = ctx.path_params["transfer_id"]
        with self.state.lock:
            page = self.state.list_reversals(
                transfer_id,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                livemode=ctx.livemode,
            )
            data = [r.to_dict() for r in page.data]
        url = f"/v1/transfers/{transfer_id}/reversals"
        return {"object": "list", "data": data, "has_more": page.has_more, "url": url}

    def _retrieve_reversal(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        _check_allowed(params, self._RETRIEVE_PARAMS)
        reversal = self.state.get_reversal(
            ctx.path_params["transfer_id"], ctx.path_params["reversal_id"], livemode=ctx.livemode
        )
        return reversal.to_dict()

    def _unrecognized(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        raise EmulatorError(
            404,
            f"Unrecognized request URL ({ctx.method}: {ctx.path}). Please see"
            " https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )


def _default_error(status: int, ctx: RequestContext) -> EmulatorError:
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
            409, in_flight_message(ctx.idempotency_key or ""), code="idempotency_key_in_use"
        )
    if status == 429:
        return EmulatorError(429, RATE_LIMIT_MESSAGE, code="rate_limit")
    if status in GATEWAY_MESSAGES:
        return EmulatorError(status, GATEWAY_MESSAGES[status], type="api_error")
    if status >= 500:
        return EmulatorError(status, INTERNAL_ERROR_MESSAGE, type="api_error")
    return EmulatorError(status, "Invalid request.")


def _charge_object(now: float, livemode: bool) -> dict[str, Any]:
    """A valid object of the wrong type, for the ``wrong_object`` bad body."""
    return {
        "id": new_id("ch_"),
        "object": "charge",
        "amount": 1000,
        "currency": "usd",
        "created": int(now),
        "livemode": livemode,
        "paid": True,
        "status": "succeeded",
        "metadata": {},
    }


# --------------------------------------------------------------------------- control endpoints


class ControlEndpoints:
    """``/_emulator/...``: JSON endpoints for tests, demos and benchmarks in other processes.

    Not part of Stripe's API, so no API key is needed; the server listens on
    loopback only. Bodies and answers are JSON; errors are Stripe-shaped.
    """

    def __init__(self, app: EmulatorApp) -> None:
        self.app = app
        self.state = app.state
        self.faults = app.faults

    def routes(self) -> list[Route]:
        r = "/_emulator"
        return [
            Route(f"{r}/health", self.health, methods=["GET"]),
            Route(f"{r}/reset", self.reset, methods=["POST"]),
            Route(f"{r}/transfers", self.create_transfers, methods=["POST"]),
            Route(f"{r}/transfers/{{transfer_id}}", self.get_transfer, methods=["GET"]),
            Route(f"{r}/transfers/{{transfer_id}}/reversals", self.reverse, methods=["POST"]),
            Route(f"{r}/faults", self.faults_endpoint, methods=["GET", "POST"]),
            Route(f"{r}/faults/reset", self.faults_reset, methods=["POST"]),
            Route(f"{r}/scripts", self.scripts, methods=["GET", "POST", "DELETE"]),
            Route(f"{r}/holds", self.holds, methods=["GET"]),
            Route(f"{r}/holds/release", self.release_holds, methods=["POST"]),
            Route(f"{r}/requests", self.requests, methods=["GET"]),
            Route(f"{r}/counters", self.counters, methods=["GET"]),
            Route(f"{r}/keys/{{action}}", self.keys, methods=["POST"]),
            Route(f"{r}/clock", self.clock, methods=["GET", "POST"]),
            Route(f"{r}/idempotency", self.idempotency, methods=["GET", "POST"]),
            Route(f"{r}/state/save", self.save_state, methods=["POST"]),
        ]

    @staticmethod
    async def _json(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise EmulatorError(400, f"Invalid JSON body: {exc}") from exc

    @staticmethod
    def _ok(data: Any, status: int = 200) -> Response:
        return Response(_dumps(data), status_code=status, media_type=JSON)

    async def _guard(self, request: Request, action: Callable[[Any], Any]) -> Response:
        """Run ``action(body)``; map bad input to a 400 with Stripe's error shape."""
        try:
            body = await self._json(request) if request.method in ("POST", "DELETE") else {}
            result = action(body)
            if asyncio.iscoroutine(result):
                result = await result
            return self._ok(result)
        except EmulatorError as err:
            return self._ok(err.to_body(), err.status)
        except (ValueError, TypeError, KeyError) as exc:
            return self._ok(EmulatorError(400, f"{type(exc).__name__}: {exc}").to_body(), 400)

    async def health(self, request: Request) -> Response:
        return self._ok({"ok": True, "transfers": self.state.transfer_count()})

    async def reset(self, request: Request) -> Response:
        self.app.reset()
        return self._ok({"ok": True})

    async def create_transfers(self, request: Request) -> Response:
        def action(body: dict[str, Any]) -> dict[str, Any]:
            specs = body.get("transfers")
            if not isinstance(specs, list):
                raise EmulatorError(400, "Body must hold a list 'transfers'.", param="transfers")
            created = self.state.create_transfers_bulk(
                specs, livemode=bool(body.get("livemode", False))
            )
            returning = body.get("return", "objects")
            if returning == "ids":
                return {"count": len(created), "ids": [t.id for t in created]}
            if returning == "none":
                return {"count": len(created)}
            with self.state.lock:
                return {
                    "object": "list",
                    "count": len(created),
                    "data": [t.to_dict() for t in created],
                }

        return await self._guard(request, action)

    async def get_transfer(self, request: Request) -> Response:
        transfer_id = request.path_params["transfer_id"]

        def action(_: Any) -> dict[str, Any]:
            with self.state.lock:
                transfer = self.state.transfer_dict(transfer_id)
                reversals = [r.to_dict() for r in reversed(self.state.reversals_of(transfer_id))]
            return {"transfer": transfer, "reversals": reversals}

        return await self._guard(request, action)

    async def reverse(self, request: Request) -> Response:
        """Out-of-band reversal, as from the Dashboard: no key, no idempotency, no faults."""
        transfer_id = request.path_params["transfer_id"]

        def action(body: dict[str, Any]) -> dict[str, Any]:
            amount = body.get("amount")
            reversal = self.state.reverse_transfer(
                transfer_id,
                amount=amount,
                metadata=body.get("metadata"),
                description=body.get("description"),
            )
            return reversal.to_dict()

        return await self._guard(request, action)

    async def faults_endpoint(self, request: Request) -> Response:
        def action(body: dict[str, Any]) -> dict[str, Any]:
            if request.method == "POST":
                self.faults.update(**body)
            return self.faults.config.to_dict()

        return await self._guard(request, action)

    async def faults_reset(self, request: Request) -> Response:
        def action(_: Any) -> dict[str, Any]:
            self.faults.configure(FaultConfig())
            return self.faults.config.to_dict()

        return await self._guard(request, action)

    async def scripts(self, request: Request) -> Response:
        def action(body: Any) -> dict[str, Any]:
            if request.method == "POST":
                entries = body.get("scripts", [body]) if isinstance(body, dict) else body
                added = self.faults.add_scripts(entries)
                return {"added": len(added), "scripts": self.faults.scripts()}
            if request.method == "DELETE":
                self.faults.clear_scripts()
            return {"scripts": self.faults.scripts()}

        return await self._guard(request, action)

    async def holds(self, request: Request) -> Response:
        async def action(_: Any) -> dict[str, Any]:
            wait_for = int(request.query_params.get("wait_for", "0"))
            timeout = float(request.query_params.get("timeout", "10"))
            satisfied = True
            if wait_for > 0:
                satisfied = await self.faults.holds.async_wait_for(wait_for, timeout)
            return {"held": self.faults.held(), "satisfied": satisfied}

        return await self._guard(request, action)

    async def release_holds(self, request: Request) -> Response:
        return await self._guard(request, lambda _: {"released": self.faults.release_holds()})

    async def requests(self, request: Request) -> Response:
        def action(_: Any) -> dict[str, Any]:
            since = int(request.query_params.get("since", "0"))
            limit = request.query_params.get("limit")
            entries = self.state.requests.entries(since, int(limit) if limit else None)
            return {"data": [e.to_dict() for e in entries]}

        return await self._guard(request, action)

    async def counters(self, request: Request) -> Response:
        return await self._guard(request, lambda _: self.state.requests.counters())

    async def keys(self, request: Request) -> Response:
        action_name = request.path_params["action"]

        def action(body: dict[str, Any]) -> dict[str, Any]:
            keys = self.state.keys
            if action_name == "revoke":
                keys.revoke(body["api_key"])
            elif action_name == "unrevoke":
                keys.unrevoke(body["api_key"])
            elif action_name == "require":
                keys.require(body.get("api_keys"))
            else:
                raise EmulatorError(404, f"Unknown key action: {action_name}")
            return {"ok": True}

        return await self._guard(request, action)

    async def clock(self, request: Request) -> Response:
        def action(body: dict[str, Any]) -> dict[str, Any]:
            clock = self.state.clock
            if "set" in body:
                clock.set(float(body["set"]))
            if body.get("freeze"):
                clock.freeze(body.get("at"))
            if body.get("unfreeze"):
                clock.unfreeze()
            if "advance" in body:
                clock.advance(float(body["advance"]))
            return clock.snapshot()

        return await self._guard(request, action)

    async def idempotency(self, request: Request) -> Response:
        def action(body: dict[str, Any]) -> dict[str, Any]:
            store = self.state.idempotency
            if "ttl_seconds" in body:
                ttl = float(body["ttl_seconds"])
                if ttl <= 0:
                    raise ValueError("ttl_seconds must be > 0")
                store.ttl_seconds = ttl
            return {"ttl_seconds": store.ttl_seconds, "keys": len(store)}

        return await self._guard(request, action)

    async def save_state(self, request: Request) -> Response:
        """Snapshot transfers and reversals to the server's ``state_file`` (no other path).

        The path is fixed when the server starts, never taken from the request:
        the control API needs no key, so it must not write where a caller says.
        """

        def action(_: Any) -> dict[str, Any]:
            if self.app.state_file is None:
                raise EmulatorError(
                    400, "The emulator was started without a state file (--state-file)."
                )
            path = save_snapshot(self.state, self.app.state_file)
            return {"ok": True, "path": str(path), "transfers": self.state.transfer_count()}

        return await self._guard(request, action)
