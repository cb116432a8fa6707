"""The objects Stripe holds for the emulator: transfers, their reversals, list pages.

Also the checks every way of creating one applies (the API, bulk creation and
snapshots), so an object in the emulator is always one Stripe could hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reversal_pipeline.stripe_emulator.errors import ParameterError

#: Keys of the sorted transfer index: ``created`` zero-padded to this width, then the id.
CREATED_WIDTH = 12
MAX_CREATED = 10**CREATED_WIDTH - 1
EMBEDDED_REVERSALS = 10
DEFAULT_DESTINATION = "acct_1EmulatorDestination0"


class Reversal:
    """One transfer reversal; ``index`` is its position on the transfer (0 = oldest)."""

    __slots__ = (
        "amount",
        "created",
        "currency",
        "description",
        "id",
        "index",
        "metadata",
        "transfer_id",
    )

    def __init__(
        self,
        id: str,
        transfer_id: str,
        amount: int,
        currency: str,
        created: int,
        metadata: dict[str, str],
        description: str | None,
        index: int,
    ) -> None:
        self.id = id
        self.transfer_id = transfer_id
        self.amount = amount
        self.currency = currency
        self.created = created
        self.metadata = metadata
        self.description = description
        self.index = index

    def to_dict(self) -> dict[str, Any]:
        """The ``transfer_reversal`` object, with the fields of Stripe's own example."""
        suffix = self.id[4:]
        return {
            "id": self.id,
            "object": "transfer_reversal",
            "amount": self.amount,
            "balance_transaction": "txn_" + suffix,
            "created": self.created,
            "currency": self.currency,
            "destination_payment_refund": "pyr_" + suffix[-14:],
            "metadata": dict(self.metadata),
            "source_refund": None,
            "transfer": self.transfer_id,
        }


class Transfer:
    """One Connect transfer. Slotted and lazily filled: a million must fit and build fast."""

    __slots__ = (
        "amount",
        "amount_reversed",
        "created",
        "currency",
        "description",
        "destination",
        "id",
        "livemode",
        "metadata",
        "reversals",
        "source_transaction",
        "transfer_group",
    )

    def __init__(
        self,
        id: str,
        amount: int,
        currency: str,
        created: int,
        destination: str,
        metadata: dict[str, str] | None,
        transfer_group: str | None,
        description: str | None,
        source_transaction: str | None,
        livemode: bool,
    ) -> None:
        self.id = id
        self.amount = amount
        self.amount_reversed = 0
        self.currency = currency
        self.created = created
        self.destination = destination
        self.metadata = metadata
        self.transfer_group = transfer_group
        self.description = description
        self.source_transaction = source_transaction
        self.livemode = livemode
        self.reversals: list[Reversal] | None = None

    @property
    def remaining(self) -> int:
        return self.amount - self.amount_reversed

    @property
    def sort_key(self) -> str:
        return index_key(self.created, self.id)

    def to_dict(self) -> dict[str, Any]:
        """The ``transfer`` object, embedding its 10 newest reversals as Stripe does."""
        reversals = self.reversals or []
        newest = [r.to_dict() for r in reversed(reversals[-EMBEDDED_REVERSALS:])]
        suffix = self.id[3:]
        return {
            "id": self.id,
            "object": "transfer",
            "amount": self.amount,
            "amount_reversed": self.amount_reversed,
            "balance_transaction": "txn_" + suffix,
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "destination": self.destination,
            "destination_payment": "py_" + suffix[-14:],
            "livemode": self.livemode,
            "metadata": dict(self.metadata or {}),
            "reversals": {
                "object": "list",
                "data": newest,
                "has_more": len(reversals) > EMBEDDED_REVERSALS,
                "url": f"/v1/transfers/{self.id}/reversals",
            },
            "reversed": self.amount_reversed >= self.amount,
            "source_transaction": self.source_transaction,
            "source_type": "card",
            "transfer_group": self.transfer_group,
        }


def index_key(created: int, transfer_id: str) -> str:
    """Sort key: fixed-width ``created`` then id, so string order is (created, id) order."""
    return "%012d%s" % (created, transfer_id)  # noqa: UP031 - fastest for a million keys


def created_bound(created: int) -> str:
    return f"{min(max(created, 0), MAX_CREATED):0{CREATED_WIDTH}d}"


@dataclass(frozen=True)
class Page:
    """One page of a list, newest first, and whether more lie beyond it."""

    data: list[Any]
    has_more: bool


def check_amount(amount: Any, *, param: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ParameterError(
            400, f"Invalid integer: {amount}", code="parameter_invalid_integer", param=param
        )
    if amount < 1:
        raise ParameterError(
            400,
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=param,
        )
    return amount


def check_currency(currency: Any) -> str:
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise ParameterError(400, f"Invalid currency: {currency}", param="currency")
    return currency.lower()


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None or metadata == {}:
        return None
    if not isinstance(metadata, Mapping):
        raise ParameterError(400, "Invalid hash", code="parameter_invalid_string", param="metadata")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > 40:
            raise ParameterError(
                400, "Metadata keys must be strings of at most 40 characters.", param="metadata"
            )
        if not isinstance(value, str) or len(value) > 500:
            raise ParameterError(
                400,
                "Metadata values must be strings of at most 500 characters.",
                param=f"metadata[{key}]",
            )
        checked[key] = value
    if len(checked) > 50:
        raise ParameterError(400, "You can have at most 50 metadata keys.", param="metadata")
    return checked
