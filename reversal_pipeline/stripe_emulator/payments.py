"""Charges, refunds and their events: the refund state machine and Stripe's listings.

Pure and thread-safe like ``state.py`` (which owns one of these and shares its
lock, so a snapshot of transfers and refunds is one consistent moment). The
rules (see ``charges.py`` for the amounts):

* a fully refunded charge answers Stripe's ``charge_already_refunded``; asking
  for more than is refundable (pending refunds hold theirs back) answers
  ``amount_too_large``;
* ``refund.created`` is written at creation, with the refund as created;
* a refund that succeeds (at creation or later) adds to the charge's
  ``amount_refunded`` and writes ``charge.refunded``;
* pending -> succeeded | failed | canceled writes ``refund.updated``; a failed or
  canceled refund never counted, and releases what it reserved.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from reversal_pipeline.stripe_emulator.charges import (
    FINAL_STATUSES,
    Charge,
    Refund,
    RefundStatus,
)
from reversal_pipeline.stripe_emulator.clock import EmulatorClock
from reversal_pipeline.stripe_emulator.errors import (
    EmulatorError,
    charge_already_refunded,
    no_such_object,
    refund_amount_too_large,
)
from reversal_pipeline.stripe_emulator.events import (
    EVENT_RETENTION_SECONDS,
    Event,
    EventType,
    type_matcher,
)
from reversal_pipeline.stripe_emulator.keys import new_id, new_ids
from reversal_pipeline.stripe_emulator.objects import (
    MAX_CREATED,
    Page,
    check_amount,
    check_currency,
    check_metadata,
)
from reversal_pipeline.stripe_emulator.sorted_index import SortedIndex, created_range, page_of

CHARGE_FIELDS = (
    "id",
    "amount",
    "currency",
    "created",
    "transfer_group",
    "metadata",
    "description",
    "livemode",
)
REFUND_FIELDS = ("id", "charge", "amount", "created", "status", "metadata")
EVENT_FIELDS = ("id", "type", "created", "object", "state", "previous")


def _created(value: Any, now: int) -> int:
    if value is None:
        return now
    if type(value) is not int or not 0 <= value <= MAX_CREATED:
        raise EmulatorError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param="created"
        )
    return value


class PaymentsStore:
    """Charges, refunds and events in memory, indexed for Stripe's listings."""

    def __init__(self, clock: EmulatorClock, lock: threading.RLock) -> None:
        self.clock = clock
        self._lock = lock
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._charges: dict[str, Charge] = {}
            self._refunds: dict[str, Refund] = {}
            self._events: dict[str, Event] = {}
            self._refund_index = SortedIndex()
            self._event_index = SortedIndex()
            self._seq = itertools.count()

    def counts(self) -> dict[str, int]:
        return {
            "charges": len(self._charges),
            "refunds": len(self._refunds),
            "events": len(self._events),
        }

    def _now(self) -> int:
        return int(self.clock())

    # ----------------------------------------------------------------- charges

    def create_charge(
        self,
        *,
        amount: int,
        currency: str = "usd",
        transfer_group: str | None = None,
        metadata: Mapping[str, str] | None = None,
        description: str | None = None,
        created: int | None = None,
        livemode: bool = False,
    ) -> Charge:
        amount = check_amount(amount)
        currency = check_currency(currency)
        checked = check_metadata(metadata)
        created = _created(created, self._now())
        with self._lock:
            charge = Charge(
                new_id("ch_"),
                amount,
                currency,
                created,
                next(self._seq),
                transfer_group=transfer_group or None,
                metadata=checked,
                description=description,
                livemode=livemode,
            )
            self._charges[charge.id] = charge
            return charge

    def get_charge(
        self, charge_id: str, *, livemode: bool | None = None, param: str = "id"
    ) -> Charge:
        return _found(self._charges, "charge", charge_id, livemode, param)

    def charge_dict(self, charge_id: str, *, livemode: bool | None = None) -> dict[str, Any]:
        with self._lock:
            return self.get_charge(charge_id, livemode=livemode).to_dict()

    # ----------------------------------------------------------------- refunds

    def create_refund(
        self,
        charge_id: str,
        *,
        amount: int | None = None,
        status: str = RefundStatus.SUCCEEDED,
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
        livemode: bool | None = None,
    ) -> Refund:
        """Refund ``amount`` (default: all that is refundable); its events are at ``created``."""
        try:
            status = RefundStatus(status)
        except ValueError:
            raise EmulatorError(400, f"Invalid refund status: {status}", param="status") from None
        checked = check_metadata(metadata)
        with self._lock:
            created = _created(created, self._now())
            charge = self.get_charge(charge_id, livemode=livemode, param="charge")
            if charge.refunded:
                raise charge_already_refunded(charge.id)
            refundable = charge.refundable  # pending refunds hold theirs back
            amount = refundable if amount is None else check_amount(amount)
            if amount <= 0 or amount > refundable:
                raise refund_amount_too_large(amount, refundable)
            refund = Refund(
                new_id("re_"), charge, amount, created, next(self._seq), status, checked
            )
            if charge.refunds is None:
                charge.refunds = []
            charge.refunds.append(refund)
            self._refunds[refund.id] = refund
            self._refund_index.add(refund.sort_key)
            if status is RefundStatus.PENDING:
                charge.reserved += amount
            self._event(EventType.REFUND_CREATED, created, refund, (str(status),))
            if status is RefundStatus.SUCCEEDED:
                charge.amount_refunded += amount
                self._event(EventType.CHARGE_REFUNDED, created, charge, (charge.amount_refunded,))
            return refund

    def set_refund_status(self, refund_id: str, status: str) -> Refund:
        """Move a pending refund to a final status, now on the emulator's clock."""
        try:
            new = RefundStatus(status)
        except ValueError:
            raise EmulatorError(400, f"Invalid refund status: {status}", param="status") from None
        if new not in FINAL_STATUSES:
            raise EmulatorError(400, f"A refund can only move to {sorted(FINAL_STATUSES)}.")
        with self._lock:
            refund = self.get_refund(refund_id)
            if refund.status is not RefundStatus.PENDING:
                raise EmulatorError(
                    400, f"Refund {refund_id} is {refund.status}, not pending.", param="status"
                )
            now = self._now()
            charge = refund.charge
            charge.reserved -= refund.amount
            refund.status = new
            self._event(EventType.REFUND_UPDATED, now, refund, (str(new),), {"status": "pending"})
            if new is RefundStatus.SUCCEEDED:
                charge.amount_refunded += refund.amount
                self._event(EventType.CHARGE_REFUNDED, now, charge, (charge.amount_refunded,))
            return refund

    def get_refund(
        self, refund_id: str, *, livemode: bool | None = None, param: str = "id"
    ) -> Refund:
        return _found(self._refunds, "refund", refund_id, livemode, param)

    def list_refunds(
        self,
        *,
        limit: int = 10,
        charge: str | None = None,
        bounds: dict[str, int] | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        livemode: bool | None = None,
    ) -> Page:
        """Refunds newest first; a ``charge`` filter walks that charge's refunds only."""
        lower, upper = created_range(bounds or {})
        with self._lock:
            after = before = None
            if starting_after is not None:
                after = self.get_refund(starting_after, param="starting_after").sort_key
            if ending_before is not None:
                before = self.get_refund(ending_before, param="ending_before").sort_key
            if charge is not None:
                found = self._charges.get(charge)
                refunds = (found.refunds or []) if found is not None else []
                keys = sorted(r.sort_key for r in refunds)
            else:
                keys = self._refund_index.keys()
            wanted = None
            if livemode is not None:
                wanted = lambda i: self._refunds[i].livemode == livemode  # noqa: E731
            ids, has_more = page_of(
                keys,
                limit=limit,
                lower=lower,
                upper=upper,
                after=after,
                before=before,
                wanted=wanted,
            )
            return Page([self._refunds[i] for i in ids], has_more)

    # ----------------------------------------------------------------- events

    def _event(
        self,
        type: EventType,
        created: int,
        obj: Charge | Refund,
        state: tuple[Any, ...],
        previous: dict[str, Any] | None = None,
    ) -> Event:
        event = Event(new_id("evt_"), type, created, next(self._seq), obj, state, previous)
        self._events[event.id] = event
        self._event_index.add(event.sort_key)
        return event

    def _retained_since(self) -> int:
        return self._now() - EVENT_RETENTION_SECONDS

    def get_event(self, event_id: str, *, livemode: bool | None = None, param: str = "id") -> Event:
        """The event, or Stripe's 404 (400 as a cursor) once it is past its 30 days."""
        event = self._events.get(event_id)
        if (
            event is None
            or event.created < self._retained_since()
            or (livemode is not None and event.livemode != livemode)
        ):
            raise no_such_object("event", event_id, param=param)
        return event

    def list_events(
        self,
        *,
        limit: int = 10,
        type: str | None = None,
        types: list[str] | None = None,
        bounds: dict[str, int] | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        livemode: bool | None = None,
    ) -> Page:
        lower, upper = created_range(bounds or {})
        with self._lock:
            lower = max(lower, self._retained_since())
            after = before = None
            if starting_after is not None:
                after = self.get_event(starting_after, param="starting_after").sort_key
            if ending_before is not None:
                before = self.get_event(ending_before, param="ending_before").sort_key
            matches = type_matcher(type, types)
            events = self._events

            def wanted(event_id: str) -> bool:
                event = events[event_id]
                return (livemode is None or event.livemode == livemode) and (
                    matches is None or matches(event.type)
                )

            ids, has_more = page_of(
                self._event_index.keys(),
                limit=limit,
                lower=lower,
                upper=upper,
                after=after,
                before=before,
                wanted=wanted,
            )
            return Page([events[i] for i in ids], has_more)

    # ----------------------------------------------------------------- bulk

    def create_refunds_bulk(
        self,
        day: date,
        count: int,
        *,
        amount: int = 1000,
        currency: str = "usd",
        transfer_groups: Sequence[str] | None = None,
        order_start: int = 1,
        metadata_key: str | None = None,
        with_events: bool = True,
    ) -> dict[str, Any]:
        """``count`` charges of ``amount``, each fully refunded (succeeded), spread over ``day``.

        Charge ``i`` carries ``transfer_groups[i]``, or ``order_<order_start + i>``;
        with ``metadata_key`` that order also goes in the charge's metadata. The
        refund and its charge share a ``created`` second: ``day`` start plus
        ``i * 86400 // count``. Events are written as the API would (and drop out
        of listings after 30 days like any other). Built for 100,000 in seconds.
        """
        if type(count) is not int or count < 1:
            raise EmulatorError(400, f"count must be a positive integer, got {count!r}")
        amount = check_amount(amount)
        currency = check_currency(currency)
        if transfer_groups is not None and len(transfer_groups) != count:
            raise EmulatorError(400, "transfer_groups must hold exactly `count` names.")
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        charge_ids = new_ids("ch_", count)
        refund_ids = new_ids("re_", count)
        event_ids = new_ids("evt_", 2 * count) if with_events else []
        succeeded = RefundStatus.SUCCEEDED
        refund_state = (str(succeeded),)
        charges: list[Charge] = []
        refunds: list[Refund] = []
        events: list[Event] = []
        collecting = gc.isenabled()
        gc.disable()
        try:
            with self._lock:
                seq = self._seq
                for i in range(count):
                    created = start + i * 86_400 // count
                    group = transfer_groups[i] if transfer_groups is not None else None
                    group = group or f"order_{order_start + i}"
                    charge = Charge(
                        charge_ids[i],
                        amount,
                        currency,
                        created,
                        next(seq),
                        transfer_group=group,
                        metadata={metadata_key: group} if metadata_key else None,
                    )
                    refund = Refund(refund_ids[i], charge, amount, created, next(seq), succeeded)
                    charge.refunds = [refund]
                    charge.amount_refunded = amount
                    charges.append(charge)
                    refunds.append(refund)
                    if with_events:
                        events.append(
                            Event(
                                event_ids[2 * i],
                                EventType.REFUND_CREATED,
                                created,
                                next(seq),
                                refund,
                                refund_state,
                            )
                        )
                        events.append(
                            Event(
                                event_ids[2 * i + 1],
                                EventType.CHARGE_REFUNDED,
                                created,
                                next(seq),
                                charge,
                                (amount,),
                            )
                        )
                self._charges.update((c.id, c) for c in charges)
                self._refunds.update((r.id, r) for r in refunds)
                self._events.update((e.id, e) for e in events)
                self._refund_index.extend([r.sort_key for r in refunds])
                self._event_index.extend([e.sort_key for e in events])
        finally:
            if collecting:
                gc.enable()
        return {
            "count": count,
            "charges": count,
            "refunds": count,
            "events": len(events),
            "amount_total": amount * count,
            "first_created": refunds[0].created,
            "last_created": refunds[-1].created,
            "first_refund": refunds[0].id,
            "last_refund": refunds[-1].id,
        }

    # ----------------------------------------------------------------- snapshots

    def export_rows(self) -> dict[str, Any]:
        """Rows under field headers, each list in creation order (the caller holds the lock)."""
        charges = sorted(self._charges.values(), key=lambda c: c.seq)
        refunds = sorted(self._refunds.values(), key=lambda r: r.seq)
        events = sorted(self._events.values(), key=lambda e: e.seq)
        return {
            "charge_fields": list(CHARGE_FIELDS),
            "charges": [
                [
                    c.id,
                    c.amount,
                    c.currency,
                    c.created,
                    c.transfer_group,
                    c.metadata or None,
                    c.description,
                    c.livemode,
                ]
                for c in charges
            ],
            "refund_fields": list(REFUND_FIELDS),
            "refunds": [
                [r.id, r.charge.id, r.amount, r.created, str(r.status), r.metadata or None]
                for r in refunds
            ],
            "event_fields": list(EVENT_FIELDS),
            "events": [
                [e.id, str(e.type), e.created, e.obj.id, list(e.state), e.previous] for e in events
            ],
        }

    def restore_rows(self, snapshot: Mapping[str, Any]) -> None:
        """Replace everything with ``snapshot``'s rows; absent lists (older snapshots) are empty.

        Raises ``ValueError``/``KeyError``/``TypeError``/``EmulatorError`` on a bad row
        (the caller turns them into a ``SnapshotError``); nothing changes then.
        """
        for name, fields in (
            ("charge", CHARGE_FIELDS),
            ("refund", REFUND_FIELDS),
            ("event", EVENT_FIELDS),
        ):
            if f"{name}s" in snapshot and snapshot.get(f"{name}_fields") != list(fields):
                raise ValueError(f"snapshot {name} fields differ from this emulator's")
        seq = itertools.count()
        charges: dict[str, Charge] = {}
        refunds: dict[str, Refund] = {}
        events: dict[str, Event] = {}
        for row in snapshot.get("charges") or []:
            (charge_id, amount, currency, created, group, metadata, description, livemode) = row
            if type(charge_id) is not str or not charge_id or charge_id in charges:
                raise ValueError(f"missing or duplicate charge id {charge_id!r}")
            charges[charge_id] = Charge(
                charge_id,
                check_amount(amount),
                check_currency(currency),
                _created(created, 0),
                next(seq),
                transfer_group=group,
                metadata=check_metadata(metadata),
                description=description,
                livemode=livemode is True,
            )
        for refund_id, charge_id, amount, created, status, metadata in (
            snapshot.get("refunds") or []
        ):
            if type(refund_id) is not str or not refund_id or refund_id in refunds:
                raise ValueError(f"missing or duplicate refund id {refund_id!r}")
            charge = charges[charge_id]
            refund = Refund(
                refund_id,
                charge,
                check_amount(amount),
                _created(created, 0),
                next(seq),
                RefundStatus(status),
                check_metadata(metadata),
            )
            if charge.refunds is None:
                charge.refunds = []
            charge.refunds.append(refund)
            if refund.status is RefundStatus.SUCCEEDED:
                charge.amount_refunded += refund.amount
            elif refund.status is RefundStatus.PENDING:
                charge.reserved += refund.amount
            if charge.amount_refunded + charge.reserved > charge.amount:
                raise ValueError(f"{charge_id} refunded beyond its amount")
            refunds[refund_id] = refund
        for event_id, event_type, created, object_id, state, previous in (
            snapshot.get("events") or []
        ):
            if type(event_id) is not str or not event_id or event_id in events:
                raise ValueError(f"missing or duplicate event id {event_id!r}")
            kind = EventType(event_type)
            obj: Charge | Refund = (
                charges[object_id] if kind is EventType.CHARGE_REFUNDED else refunds[object_id]
            )
            events[event_id] = Event(
                event_id, kind, _created(created, 0), next(seq), obj, tuple(state), previous
            )
        with self._lock:
            self._charges, self._refunds, self._events = charges, refunds, events
            self._refund_index = SortedIndex()
            self._refund_index.extend([r.sort_key for r in refunds.values()])
            self._event_index = SortedIndex()
            self._event_index.extend([e.sort_key for e in events.values()])
            self._seq = seq


_Stored = TypeVar("_Stored", Charge, Refund)


def _found(
    stored: Mapping[str, _Stored], kind: str, object_id: str, livemode: bool | None, param: str
) -> _Stored:
    """The object, or Stripe's 404 naming it; one of the other mode is unknown, as at Stripe."""
    found = stored.get(object_id)
    if found is None or (livemode is not None and found.livemode != livemode):
        raise no_such_object(kind, object_id, param=param)
    return found
