"""HTTP client for the emulator's ``/_emulator`` control endpoints.

For demos, benchmarks and tests that drive an emulator running in another
process (``reversal-pipeline stripe-emulator``). Uses ``requests``, a runtime
dependency already (through Dagster and the stripe SDK), not ``httpx``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from types import TracebackType
from typing import Any, Literal, Self, overload

import requests


class EmulatorControlError(RuntimeError):
    """A control call failed; ``status`` and ``body`` are the emulator's answer."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        super().__init__(f"emulator answered {status}: {message or body}")
        self.status = status
        self.body = body


class EmulatorClient:
    """Thin wrapper: one method per control endpoint, JSON in and out."""

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, session: requests.Session | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        response = self._session.request(
            method,
            f"{self.base_url}/_emulator{path}",
            json=body,
            params=params,
            timeout=timeout or self.timeout,
        )
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if response.status_code >= 400:
            raise EmulatorControlError(response.status_code, data)
        return data

    # ----------------------------------------------------------------- lifecycle

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Poll ``/health`` until the emulator answers (for a freshly spawned process)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def reset(self) -> None:
        self._call("POST", "/reset")

    # ----------------------------------------------------------------- transfers

    @overload
    def create_transfers(
        self,
        transfers: Sequence[Mapping[str, Any]],
        *,
        livemode: bool = False,
        returning: Literal["objects"] = "objects",
    ) -> list[dict[str, Any]]: ...
    @overload
    def create_transfers(
        self,
        transfers: Sequence[Mapping[str, Any]],
        *,
        livemode: bool = False,
        returning: Literal["ids"],
    ) -> list[str]: ...
    @overload
    def create_transfers(
        self,
        transfers: Sequence[Mapping[str, Any]],
        *,
        livemode: bool = False,
        returning: Literal["none"],
    ) -> int: ...
    def create_transfers(
        self,
        transfers: Sequence[Mapping[str, Any]],
        *,
        livemode: bool = False,
        returning: Literal["objects", "ids", "none"] = "objects",
    ) -> list[dict[str, Any]] | list[str] | int:
        """Bulk-create; ``returning``: ``objects`` (list of dicts), ``ids`` or ``none`` (count)."""
        body = {"transfers": list(transfers), "livemode": livemode, "return": returning}
        data = self._call("POST", "/transfers", body)
        if returning == "ids":
            return data["ids"]
        if returning == "none":
            return data["count"]
        return data["data"]

    def create_transfer(self, **fields: Any) -> dict[str, Any]:
        livemode = bool(fields.pop("livemode", False))
        created = self.create_transfers([fields], livemode=livemode)
        return created[0]

    def get_transfer(self, transfer_id: str) -> dict[str, Any]:
        """``{"transfer": {...}, "reversals": [all, newest first]}``."""
        return self._call("GET", f"/transfers/{transfer_id}")

    def reverse_transfer(
        self,
        transfer_id: str,
        amount: int | None = None,
        metadata: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Reverse out of band (as from the Dashboard); returns the reversal object."""
        body: dict[str, Any] = {}
        if amount is not None:
            body["amount"] = amount
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if description is not None:
            body["description"] = description
        return self._call("POST", f"/transfers/{transfer_id}/reversals", body)

    # ----------------------------------------------------------------- charges and refunds

    def create_charge(
        self,
        amount: int,
        currency: str = "usd",
        transfer_group: str | None = None,
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """A succeeded charge (as if a customer paid); ``created`` in unix seconds."""
        body = _given(
            amount=amount,
            currency=currency,
            transfer_group=transfer_group,
            metadata=metadata,
            created=None if created is None else int(created),
        )
        return self._call("POST", "/charges", body)

    def get_charge(self, charge_id: str) -> dict[str, Any]:
        return self._call("GET", f"/charges/{charge_id}")

    def create_refund(
        self,
        charge: str,
        amount: int | None = None,
        status: str = "succeeded",
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """A refund in ``status`` (succeeded, pending, failed, canceled), events at ``created``.

        The same checks and events as ``POST /v1/refunds``; ``amount`` defaults to
        what is left to refund on the charge.
        """
        body = _given(
            charge=charge,
            status=status,
            amount=amount,
            metadata=metadata,
            created=None if created is None else int(created),
        )
        return self._call("POST", "/refunds", body)

    def set_refund_status(self, refund_id: str, status: str) -> dict[str, Any]:
        """Move a pending refund to succeeded/failed/canceled (writes ``refund.updated``,
        and ``charge.refunded`` when it succeeds), at the emulator's now."""
        return self._call("POST", f"/refunds/{refund_id}/status", {"status": status})

    def create_refunds_bulk(
        self,
        day: date,
        count: int,
        amount: int = 1000,
        currency: str = "usd",
        *,
        transfer_groups: Sequence[str] | None = None,
        order_start: int = 1,
        metadata_key: str | None = None,
        events: bool = True,
    ) -> dict[str, Any]:
        """``count`` charges, each fully refunded, spread over the UTC ``day`` (fast path).

        Charge ``i`` has transfer group ``transfer_groups[i]`` or ``order_<order_start+i>``
        (also under ``metadata_key`` in its metadata, if given). Returns a summary:
        ``count``, ``events``, ``amount_total``, ``first_created``, ``last_created``,
        ``first_refund``, ``last_refund``.
        """
        body = _given(
            day=day.isoformat(),
            count=count,
            amount=amount,
            currency=currency,
            order_start=order_start,
            events=events,
            transfer_groups=transfer_groups,
            metadata_key=metadata_key,
        )
        return self._call("POST", "/refunds/bulk", body, timeout=max(self.timeout, 120.0))

    # ----------------------------------------------------------------- faults and scripts

    def get_faults(self) -> dict[str, Any]:
        return self._call("GET", "/faults")

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Change some FaultConfig fields; the others keep their value."""
        return self._call("POST", "/faults", fields)

    def reset_faults(self) -> dict[str, Any]:
        return self._call("POST", "/faults/reset")

    def add_scripts(self, entries: Iterable[Mapping[str, Any]]) -> int:
        return self._call("POST", "/scripts", {"scripts": [dict(e) for e in entries]})["added"]

    def add_script(self, **entry: Any) -> int:
        return self.add_scripts([entry])

    def scripts(self) -> list[dict[str, Any]]:
        return self._call("GET", "/scripts")["scripts"]

    def clear_scripts(self) -> None:
        self._call("DELETE", "/scripts")

    def held(self) -> int:
        return self._call("GET", "/holds")["held"]

    def wait_for_held(self, count: int = 1, timeout: float = 10.0) -> bool:
        params = {"wait_for": count, "timeout": timeout}
        return self._call("GET", "/holds", params=params, timeout=timeout + 5)["satisfied"]

    def release_holds(self) -> int:
        return self._call("POST", "/holds/release")["released"]

    # ----------------------------------------------------------------- observation

    def request_log(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", "/requests", params=params)["data"]

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "/counters")

    # ----------------------------------------------------------------- keys, clock, TTL

    def revoke_key(self, api_key: str) -> None:
        self._call("POST", "/keys/revoke", {"api_key": api_key})

    def unrevoke_key(self, api_key: str) -> None:
        self._call("POST", "/keys/unrevoke", {"api_key": api_key})

    def accept_key(self, api_key: str) -> None:
        """Accept one more API key, until the next reset."""
        self._call("POST", "/keys/accept", {"api_key": api_key})

    def require_keys(self, api_keys: Iterable[str] | None) -> None:
        """Accept only these keys (``None``: any well-formed, unrevoked key)."""
        keys = None if api_keys is None else list(api_keys)
        self._call("POST", "/keys/require", {"api_keys": keys})

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/clock")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock", {"advance": seconds})

    def freeze_clock(self, at: float | None = None) -> dict[str, Any]:
        return self._call("POST", "/clock", {"freeze": True, "at": at})

    def unfreeze_clock(self) -> dict[str, Any]:
        return self._call("POST", "/clock", {"unfreeze": True})

    def set_idempotency_ttl(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/idempotency", {"ttl_seconds": seconds})

    # ----------------------------------------------------------------- persistence

    def save_state(self) -> dict[str, Any]:
        """Snapshot transfers and reversals to the emulator's ``--state-file`` now.

        Returns ``{"ok", "path", "transfers"}``; a 400 when it has no state file.
        """
        return self._call("POST", "/state/save")


def _given(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields given (``None``: left to the emulator's default)."""
    body: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            value = list(value)
        body[name] = value
    return body
