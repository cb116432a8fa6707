"""Answers on their way out: the pipeline's answer type, and dropped connections.

Dropped connections (``lost``, ``reset``) need the socket itself: an outer ASGI
wrapper keeps uvicorn's own ``send`` in the scope, whose bound cycle holds the
transport, so the response can be cut after a partial body or the connection
reset before any byte is sent, without uvicorn logging an application error.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from reversal_pipeline.stripe_emulator.errors import EmulatorError
from reversal_pipeline.stripe_emulator.keys import new_id

RAW_SEND_KEY = "reversal_pipeline.stripe_emulator.raw_send"
JSON = "application/json"
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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
    #: False when parameter validation answered before the endpoint began executing:
    #: Stripe stores nothing for the idempotency key then.
    executed: bool = True


def error_answer(err: EmulatorError, *, outcome: str = "error", fault: str | None = None) -> Answer:
    return Answer(err.status, dumps(err.to_body()), outcome=outcome, fault=fault)


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


class KeepRawSend:
    """Outermost ASGI wrapper: remember the server's own ``send`` (see ``DroppedConnection``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


def charge_object(now: float, livemode: bool) -> dict[str, Any]:
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
