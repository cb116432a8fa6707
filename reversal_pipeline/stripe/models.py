"""Plain, immutable snapshots of the Stripe objects the pipeline reasons about.

The rest of the package never sees a ``StripeObject``: those hold a requestor
(and so the API key), are mutable, and are not dicts. These dataclasses use
``slots`` because reconciliation builds pandas frames from up to ~1M of them,
and a per-instance ``__dict__`` would roughly double the memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def _plain(obj: Any) -> dict[str, Any]:
    # StripeObject is not a dict (and no longer subclasses one): go through
    # to_dict(); plain mappings (tests, fixtures) are accepted as they are.
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"expected a Stripe object or a mapping, got {type(obj).__name__}")


def _utc(ts: int | float | None) -> datetime:
    if ts is None:
        raise ValueError("Stripe object has no 'created' timestamp")
    return datetime.fromtimestamp(int(ts), tz=UTC)


def _metadata(value: Any) -> dict[str, str]:
    if not value:
        return {}
    return {str(k): "" if v is None else str(v) for k, v in dict(value).items()}


def _expect_object(data: Mapping[str, Any], kind: str) -> None:
    # A 200 carrying some other object (a proxy's page, a misrouted request)
    # must not become a record: a charge read as a reversal would mark a row
    # reversed on the strength of nothing.
    found = data.get("object", kind)
    if found != kind:
        raise ValueError(f"expected a Stripe {kind!r} object, got {found!r}")


def _id_of(value: Any) -> str | None:
    # Expandable fields arrive as an id or, when expanded, as an object.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return value.get("id")
    return getattr(value, "id", None)


@dataclass(frozen=True, slots=True)
class ReversalRecord:
    """One transfer reversal as Stripe reports it."""

    id: str
    transfer_id: str
    amount: int
    currency: str
    created: datetime
    metadata: dict[str, str]

    @classmethod
    def from_stripe(cls, obj: Any, *, transfer_id: str | None = None) -> ReversalRecord:
        data = _plain(obj)
        return cls._from_dict(data, transfer_id=transfer_id)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], *, transfer_id: str | None) -> ReversalRecord:
        _expect_object(data, "transfer_reversal")
        tid = _id_of(data.get("transfer")) or transfer_id
        if transfer_id is not None and tid != transfer_id:
            raise ValueError(f"reversal {data.get('id')!r} is on {tid!r}, not on {transfer_id!r}")
        if not tid:
            raise ValueError(f"reversal {data.get('id')!r} names no transfer")
        return cls(
            id=str(data["id"]),
            transfer_id=tid,
            amount=int(data["amount"]),
            currency=str(data["currency"]),
            created=_utc(data.get("created")),
            metadata=_metadata(data.get("metadata")),
        )


@dataclass(frozen=True, slots=True)
class TransferSnapshot:
    """A transfer with the reversals known when it was read.

    The resource builds it with *all* reversals (it pages when the embedded
    list has ``has_more``); ``from_stripe`` alone sees only the embedded ones
    plus whatever ``extra_reversals`` the caller fetched.
    """

    id: str
    amount: int
    currency: str
    destination: str | None
    created: datetime
    amount_reversed: int
    reversed: bool
    metadata: dict[str, str]
    reversals: tuple[ReversalRecord, ...]
    livemode: bool

    @classmethod
    def from_stripe(
        cls, obj: Any, *, extra_reversals: tuple[ReversalRecord, ...] = ()
    ) -> TransferSnapshot:
        data = _plain(obj)
        return cls.from_dict(data, extra_reversals=extra_reversals)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, extra_reversals: tuple[ReversalRecord, ...] = ()
    ) -> TransferSnapshot:
        _expect_object(data, "transfer")
        tid = str(data["id"])
        embedded = embedded_reversals(data)
        records = tuple(ReversalRecord._from_dict(r, transfer_id=tid) for r in embedded[0])
        seen = {r.id for r in records}
        records += tuple(r for r in extra_reversals if r.id not in seen)
        return cls(
            id=tid,
            amount=int(data["amount"]),
            currency=str(data["currency"]),
            destination=_id_of(data.get("destination")),
            created=_utc(data.get("created")),
            amount_reversed=int(data.get("amount_reversed") or 0),
            reversed=bool(data.get("reversed")),
            metadata=_metadata(data.get("metadata")),
            reversals=records,
            livemode=bool(data.get("livemode")),
        )


def embedded_reversals(data: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    """The transfer's embedded reversals (newest first) and its ``has_more`` flag."""
    block = data.get("reversals") or {}
    return list(block.get("data") or []), bool(block.get("has_more"))


@dataclass(frozen=True, slots=True)
class RefundSnapshot:
    """Stripe's refund as we read it; ``status`` is Stripe's word, kept as a string.

    Statuses: ``pending``, ``succeeded``, ``failed``, ``canceled``,
    ``requires_action``. Only ``succeeded`` means the customer got money back.
    """

    id: str
    charge_id: str | None
    amount: int
    currency: str  # lowercase
    status: str
    created: datetime  # UTC
    metadata: dict[str, str]
    charge: ChargeSnapshot | None = None  # when the listing expanded it (``data.charge``)

    @classmethod
    def from_stripe(cls, obj: Any) -> RefundSnapshot:
        return cls.from_dict(_plain(obj))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RefundSnapshot:
        _expect_object(data, "refund")
        charge = data.get("charge")
        return cls(
            id=str(data["id"]),
            charge_id=_id_of(charge),
            amount=int(data["amount"]),
            currency=str(data["currency"]).lower(),
            status=str(data["status"]),
            created=_utc(data.get("created")),
            metadata=_metadata(data.get("metadata")),
            charge=ChargeSnapshot.from_dict(charge) if isinstance(charge, Mapping) else None,
        )


@dataclass(frozen=True, slots=True)
class ChargeSnapshot:
    """Stripe's charge as we read it: what was paid, what was refunded, whose order it was."""

    id: str
    amount: int
    amount_refunded: int
    currency: str  # lowercase
    refunded: bool
    transfer_group: str | None
    metadata: dict[str, str]
    created: datetime  # UTC

    @classmethod
    def from_stripe(cls, obj: Any) -> ChargeSnapshot:
        return cls.from_dict(_plain(obj))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChargeSnapshot:
        _expect_object(data, "charge")
        return cls(
            id=str(data["id"]),
            amount=int(data["amount"]),
            amount_refunded=int(data.get("amount_refunded") or 0),
            currency=str(data["currency"]).lower(),
            refunded=bool(data.get("refunded")),
            transfer_group=data.get("transfer_group") or None,
            metadata=_metadata(data.get("metadata")),
            created=_utc(data.get("created")),
        )


@dataclass(frozen=True, slots=True)
class StripeEventRecord:
    """One Stripe event and the object it carries, as it was when the event happened.

    ``refund`` is set for ``refund.*`` events, ``charge`` for ``charge.*`` ones;
    an event about some other object carries neither (the caller skips it).
    """

    id: str
    type: str
    created: datetime  # UTC
    refund: RefundSnapshot | None
    charge: ChargeSnapshot | None

    @classmethod
    def from_stripe(cls, obj: Any) -> StripeEventRecord:
        return cls.from_dict(_plain(obj))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StripeEventRecord:
        _expect_object(data, "event")
        inner = (data.get("data") or {}).get("object") or {}
        kind = inner.get("object") if isinstance(inner, Mapping) else None
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            created=_utc(data.get("created")),
            refund=RefundSnapshot.from_dict(inner) if kind == "refund" else None,
            charge=ChargeSnapshot.from_dict(inner) if kind == "charge" else None,
        )
