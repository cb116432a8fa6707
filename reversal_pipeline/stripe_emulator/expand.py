"""``expand[]``: replace an id by the object it names, as Stripe does, or refuse the path.

Only the fields whose objects the emulator can render expand: a transfer's
``destination`` (the connected account, as a minimal ``account``) and
``balance_transaction`` (derived from the transfer), and a reversal's
``balance_transaction`` and ``transfer``; in a list, each behind ``data.``.
Any other path is Stripe's 400 "This property cannot be expanded", raised
before the endpoint runs, so a request that asked for a wrong path changed
nothing and left its idempotency key free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reversal_pipeline.stripe_emulator.errors import ParameterError

TRANSFER_EXPANDABLE = frozenset({"destination", "balance_transaction"})
REVERSAL_EXPANDABLE = frozenset({"balance_transaction", "transfer"})
#: Stripe refuses deeper paths outright; checked first so the message matches.
MAX_EXPAND_DEPTH = 4


def cannot_expand(name: str) -> ParameterError:
    return ParameterError(400, f"This property cannot be expanded ({name}).")


def expand_paths(
    params: dict[str, Any], expandable: frozenset[str], *, in_list: bool
) -> frozenset[str]:
    """The fields to expand on each object, from ``expand[]``; a 400 for any other path."""
    raw = params.get("expand")
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise ParameterError(400, "Invalid array", param="expand")
    fields: set[str] = set()
    for path in raw:
        parts = path.split(".")
        if len(parts) > MAX_EXPAND_DEPTH:
            raise ParameterError(400, "You cannot expand more than 4 levels of a property.")
        if in_list:
            if parts[0] != "data" or len(parts) == 1:
                raise cannot_expand(parts[0])
            parts = parts[1:]
        if parts[0] not in expandable:
            raise cannot_expand(parts[0])
        if len(parts) > 1:  # a field of the expanded object: none of those expand here
            raise cannot_expand(parts[1])
        fields.add(parts[0])
    return frozenset(fields)


def _balance_transaction(
    txn_id: str, amount: int, currency: str, created: int, source: str, kind: str
) -> dict[str, Any]:
    """The platform's balance transaction for a transfer (debit) or its reversal (credit)."""
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "available_on": created,
        "created": created,
        "currency": currency,
        "description": None,
        "exchange_rate": None,
        "fee": 0,
        "fee_details": [],
        "net": amount,
        "reporting_category": kind,
        "source": source,
        "status": "available",
        "type": kind,
    }


def _account(account_id: str) -> dict[str, Any]:
    """A connected account as far as the emulator knows it: its id, and that it works."""
    return {
        "id": account_id,
        "object": "account",
        "charges_enabled": True,
        "payouts_enabled": True,
        "details_submitted": True,
        "type": "custom",
        "metadata": {},
    }


def expand_transfer(transfer: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    if "destination" in fields:
        transfer["destination"] = _account(transfer["destination"])
    if "balance_transaction" in fields:
        transfer["balance_transaction"] = _balance_transaction(
            transfer["balance_transaction"],
            -transfer["amount"],
            transfer["currency"],
            transfer["created"],
            transfer["id"],
            "transfer",
        )
    return transfer


def expand_reversal(
    reversal: dict[str, Any],
    fields: frozenset[str],
    transfer_of: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """``transfer_of(id)`` renders the reversal's transfer (the caller holds the state lock)."""
    if "balance_transaction" in fields:
        reversal["balance_transaction"] = _balance_transaction(
            reversal["balance_transaction"],
            reversal["amount"],
            reversal["currency"],
            reversal["created"],
            reversal["id"],
            "transfer_refund",
        )
    if "transfer" in fields:
        reversal["transfer"] = transfer_of(reversal["transfer"])
    return reversal
