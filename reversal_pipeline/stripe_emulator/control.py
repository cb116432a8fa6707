"""The ``/_emulator`` control endpoints (the HTTP client for them is ``control_client.py``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reversal_pipeline.stripe_emulator.delivery import JSON, dumps
from reversal_pipeline.stripe_emulator.errors import EmulatorError
from reversal_pipeline.stripe_emulator.faults import FaultConfig
from reversal_pipeline.stripe_emulator.snapshot import save_snapshot

if TYPE_CHECKING:
    from reversal_pipeline.stripe_emulator.app import EmulatorApp


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
            Route(f"{r}/charges", self.create_charge, methods=["POST"]),
            Route(f"{r}/charges/{{charge_id}}", self.get_charge, methods=["GET"]),
            Route(f"{r}/refunds", self.create_refund, methods=["POST"]),
            Route(f"{r}/refunds/bulk", self.create_refunds_bulk, methods=["POST"]),
            Route(f"{r}/refunds/{{refund_id}}/status", self.set_refund_status, methods=["POST"]),
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
        return Response(dumps(data), status_code=status, media_type=JSON)

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
        counts = self.state.payments.counts()
        return self._ok({"ok": True, "transfers": self.state.transfer_count(), **counts})

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

    # ----------------------------------------------------------------- charges, refunds

    async def create_charge(self, request: Request) -> Response:
        """A succeeded charge, as if a customer paid; ``created`` (unix seconds) backdates it."""

        def action(body: dict[str, Any]) -> dict[str, Any]:
            charge = self.state.payments.create_charge(
                amount=body.get("amount"),  # type: ignore[arg-type]  # checked in the store
                currency=body.get("currency") or "usd",
                transfer_group=body.get("transfer_group"),
                metadata=body.get("metadata"),
                description=body.get("description"),
                created=body.get("created"),
            )
            return self.state.payments.charge_dict(charge.id)

        return await self._guard(request, action)

    async def get_charge(self, request: Request) -> Response:
        charge_id = request.path_params["charge_id"]
        return await self._guard(request, lambda _: self.state.payments.charge_dict(charge_id))

    async def create_refund(self, request: Request) -> Response:
        """A refund in any status, its events written at ``created`` as the API would."""

        def action(body: dict[str, Any]) -> dict[str, Any]:
            with self.state.lock:
                refund = self.state.payments.create_refund(
                    body["charge"],
                    amount=body.get("amount"),
                    status=body.get("status") or "succeeded",
                    metadata=body.get("metadata"),
                    created=body.get("created"),
                )
                return refund.to_dict()

        return await self._guard(request, action)

    async def set_refund_status(self, request: Request) -> Response:
        """pending -> succeeded | failed | canceled, now on the emulator's clock."""
        refund_id = request.path_params["refund_id"]

        def action(body: dict[str, Any]) -> dict[str, Any]:
            with self.state.lock:
                return self.state.payments.set_refund_status(refund_id, body["status"]).to_dict()

        return await self._guard(request, action)

    async def create_refunds_bulk(self, request: Request) -> Response:
        def action(body: dict[str, Any]) -> dict[str, Any]:
            return self.state.payments.create_refunds_bulk(
                date.fromisoformat(body["day"]),
                body["count"],
                amount=body.get("amount", 1000),
                currency=body.get("currency") or "usd",
                transfer_groups=body.get("transfer_groups"),
                order_start=int(body.get("order_start", 1)),
                metadata_key=body.get("metadata_key"),
                with_events=bool(body.get("events", True)),
            )

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
            elif action_name == "accept":
                keys.accept(body["api_key"])
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
