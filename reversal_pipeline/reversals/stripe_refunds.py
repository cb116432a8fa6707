"""Refunds read from Stripe itself: the second feed into ``refund_events``.

The application's webhook handler calls ``request_reversal`` when a refund
succeeds. A handler that crashed, a deploy that dropped webhooks or a refund
made by hand in the Dashboard leaves the seller with money the customer got
back. This module reads Stripe's Events API (``refund.created``,
``refund.updated``, ``charge.refunded``; oldest first after a cursor) and
records each *succeeded* refund through the same ``request_reversal``, which
is idempotent on ``refund_id``: the two feeds can run at once and a refund is
acted on once. ``stripe_refunds_sensor`` runs one pass per tick;
``reversal-pipeline pull-refunds`` runs one from the command line.

What a refund becomes:

* pending / failed / canceled: nothing (not a refund yet). A pending refund
  that later succeeds is recorded when its ``refund.updated`` (or the
  ``charge.refunded``) event says so.
* the order: the charge's metadata value under ``REVERSAL_ORDER_METADATA_KEY``
  when that is set and present, else the charge's ``transfer_group``. A
  charge naming neither cannot be placed: the refund goes to
  ``unplaced_stripe_refunds`` (audited, ERROR check, alert), never dropped.
* the seller transfer scope: the refund's metadata value under
  ``REVERSAL_SELLER_TRANSFER_METADATA_KEY`` (default ``seller_transfer_id``)
  when the platform sets one; it must name an existing ``seller_transfers``
  row of that order, or the refund is unplaced (``bad_seller_transfer``):
  reversing an unnamed seller on a guess is worse than asking.
* the amount: the refund's own amount and currency (intake then applies the
  partial-refunds currency rule: it must be the seller transfer's currency).
  Except the *whole-charge* rule: a charge's amount includes the platform's
  fee, so a refund of all of it recorded as an amount would exceed the
  seller's smaller transfer (``over_refund``). A refund that returns the
  whole charge is recorded as a whole-order refund (amount NULL). So is the
  refund that *completes* a charge refunded in parts: its succeeded refunds
  in the order Stripe made them, the one whose running total reaches the
  charge's amount is whole-order; the earlier ones keep their amounts (targets only
  rise, and whole-order raises every paid transfer to its full amount, which
  is what the seller owes once the customer has everything back). The rule
  depends only on the charge's refunds, not on when a pass reads them.
* already in ``refund_events`` (the webhook was first): nothing happens. If
  the webhook recorded other values (order, amount, scope), the webhook's
  row stands; the pass counts and logs it (``differs_from_recorded``) and
  ``refund_reconciliation``'s ``refund_amount_mismatch`` reports it.

Each refund is written in its own transaction (its event, or its unplaced row
and that row's history). A Stripe error (401, network) stops the pass and is
raised: what was written stays written, the cursor is not moved past
unprocessed events, and the next pass reads them again (idempotent).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from reversal_pipeline.db.tables import refund_events, seller_transfers, unplaced_stripe_refunds
from reversal_pipeline.environment import (
    ORDER_METADATA_KEY_ENV,
    SELLER_TRANSFER_METADATA_KEY_ENV,
    STRIPE_REFUNDS_SINCE_ENV,
    VARIABLES,
    setting,
)
from reversal_pipeline.errors import ConfigurationError, InvalidRowError, StripeCursorExpired
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.reversals.unplaced_refunds import (
    UnplacedReason,
    record_unplaced,
    resolve_received,
    resolve_unplaced,
)
from reversal_pipeline.reversals.whole_charge import SUCCEEDED, completing_refund_id

if TYPE_CHECKING:
    from reversal_pipeline.stripe.models import ChargeSnapshot, RefundSnapshot, StripeEventRecord

log = logging.getLogger(__name__)

EVENT_TYPES = ("refund.created", "refund.updated", "charge.refunded")
DEFAULT_SELLER_TRANSFER_METADATA_KEY = str(VARIABLES[SELLER_TRANSFER_METADATA_KEY_ENV].default)
#: With no cursor and no REVERSAL_STRIPE_REFUNDS_SINCE, the first pass looks back this far.
#: Older refunds are refund_reconciliation's (it lists refunds, which Stripe keeps forever)
#: or an operator's ``pull-refunds --since``.
FIRST_PASS_LOOK_BACK = timedelta(days=3)
#: An expired cursor (older than Stripe's 30 days of events) restarts this long before it:
#: events created in the cursor's own second, and clock skew, are read again (idempotent).
EXPIRED_CURSOR_MARGIN = timedelta(hours=1)
#: Stripe keeps events this long; older ones are neither listed nor retrievable.
EVENT_RETENTION = timedelta(days=30)


class RefundIntakeOutcome(StrEnum):
    """What a pass did with one refund."""

    RECORDED = "recorded"  # new in refund_events
    ALREADY_KNOWN = "already_known"  # in refund_events already, the same values
    DIFFERS_FROM_RECORDED = "differs_from_recorded"  # in refund_events with other values
    NOT_SUCCEEDED = "not_succeeded"  # pending, failed, canceled: nothing recorded
    UNPLACED = "unplaced"  # names no order / refused: in unplaced_stripe_refunds


class StripeRefundReader(Protocol):
    """The reading half of ``StripeResource`` this module needs (all GETs, LISTING priority)."""

    def iter_events_oldest_first(
        self,
        types: Sequence[str],
        *,
        after_event_id: str | None,
        created_since: datetime | None = None,
    ) -> Iterator[StripeEventRecord]: ...

    def refunds_for_charge(self, charge_id: str) -> list[RefundSnapshot]: ...

    def get_charge(self, charge_id: str) -> ChargeSnapshot: ...

    def get_refund(self, refund_id: str) -> RefundSnapshot: ...


@dataclass(frozen=True)
class StripeRefundsCursor:
    """The newest event a pass processed: where the next pass starts."""

    event_id: str
    created: datetime

    def to_json(self) -> str:
        return json.dumps({"event_id": self.event_id, "created": self.created.isoformat()})

    @classmethod
    def from_json(cls, raw: str | None) -> StripeRefundsCursor | None:
        if not raw:
            return None
        data = json.loads(raw)
        return cls(str(data["event_id"]), datetime.fromisoformat(data["created"]))


@dataclass(frozen=True)
class StripeRefundsSettings:
    """Which metadata keys name the order and the seller transfer."""

    order_metadata_key: str | None = None
    seller_transfer_metadata_key: str = DEFAULT_SELLER_TRANSFER_METADATA_KEY

    @classmethod
    def from_env(cls) -> StripeRefundsSettings:
        order_key = setting(ORDER_METADATA_KEY_ENV) or None
        return cls(order_key, setting(SELLER_TRANSFER_METADATA_KEY_ENV))


def first_pass_since(now: datetime) -> datetime:
    """Where a pass with no cursor starts: ``REVERSAL_STRIPE_REFUNDS_SINCE``, else 3 days back."""
    raw = setting(STRIPE_REFUNDS_SINCE_ENV)
    if not raw:
        return now - FIRST_PASS_LOOK_BACK
    return start_of_day(parse_since(raw, STRIPE_REFUNDS_SINCE_ENV))


def parse_since(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} wants a date as YYYY-MM-DD, got {raw!r}") from None


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class RefundSeen:
    """One refund a pass looked at, and what became of it (a row of ``pull-refunds``' table)."""

    refund_id: str
    order_id: str | None
    amount: int  # Stripe's refund amount, minor units
    currency: str
    whole_order: bool  # recorded with amount NULL (the whole-charge rule)
    outcome: RefundIntakeOutcome
    detail: str


@dataclass
class StripeRefundsSummary:
    """What one pass read and did; ``cursor`` is where the next pass starts."""

    cursor: StripeRefundsCursor | None
    started_from: str
    events_read: int = 0
    cursor_expired: bool = False
    refunds: dict[str, RefundSeen] = field(default_factory=dict)
    unplaced_new: int = 0  # first seen in this pass
    unplaced_resolved: int = 0

    def count(self, outcome: RefundIntakeOutcome) -> int:
        return sum(1 for seen in self.refunds.values() if seen.outcome == outcome)

    @property
    def recorded(self) -> int:
        return self.count(RefundIntakeOutcome.RECORDED)

    @property
    def already_known(self) -> int:
        return self.count(RefundIntakeOutcome.ALREADY_KNOWN)

    @property
    def differs_from_recorded(self) -> int:
        return self.count(RefundIntakeOutcome.DIFFERS_FROM_RECORDED)

    @property
    def not_succeeded(self) -> int:
        return self.count(RefundIntakeOutcome.NOT_SUCCEEDED)

    @property
    def unplaced(self) -> int:
        return self.count(RefundIntakeOutcome.UNPLACED)

    def counts(self) -> dict[str, int]:
        return {
            "events_read": self.events_read,
            **{outcome.value: self.count(outcome) for outcome in RefundIntakeOutcome},
            "unplaced_new": self.unplaced_new,
            "unplaced_resolved": self.unplaced_resolved,
        }


def pull_stripe_refunds(
    engine: sa.Engine,
    stripe: StripeRefundReader,
    *,
    cursor: StripeRefundsCursor | None,
    since: datetime | None = None,
    retry_unplaced: bool = False,
    run_id: str | None = None,
    settings: StripeRefundsSettings | None = None,
    now: datetime | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> StripeRefundsSummary:
    """One pass: every refund event after ``cursor`` (or created at/after ``since``).

    ``since`` overrides the cursor (``pull-refunds --since``); with neither,
    the pass starts at ``first_pass_since``. ``retry_unplaced`` looks again
    at every open unplaced refund first (``pull-refunds``: after the charge
    was fixed at Stripe); the sensor does not, so a platform whose charges
    name no order does not cost two requests per such refund every tick.
    """
    pass_ = _Pass(
        engine,
        stripe,
        settings or StripeRefundsSettings.from_env(),
        run_id,
        logger or log,
    )
    now = now or datetime.now(UTC)
    if since is not None:
        started_from = f"events created since {since.isoformat()}"
        after, created_since = None, since
    elif cursor is not None:
        started_from = f"after event {cursor.event_id} ({cursor.created.isoformat()})"
        after, created_since = cursor, None
    else:
        created_since = first_pass_since(now)
        started_from = f"no cursor: events created since {created_since.isoformat()}"
        after = None
    summary = pass_.summary = StripeRefundsSummary(cursor=cursor, started_from=started_from)
    with engine.begin() as connection:
        summary.unplaced_resolved += resolve_received(connection, run_id)
    if retry_unplaced:
        pass_.retry_unplaced()
    for event in _events(stripe, after, created_since, summary, pass_.log):
        pass_.handle_event(event)
        summary.events_read += 1
        summary.cursor = StripeRefundsCursor(event.id, event.created)
    return summary


def _events(
    stripe: StripeRefundReader,
    cursor: StripeRefundsCursor | None,
    created_since: datetime | None,
    summary: StripeRefundsSummary,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> Iterator[StripeEventRecord]:
    """Events oldest first; an expired cursor falls back to its time minus a margin.

    Stripe answers an ``ending_before`` it no longer keeps with an error on
    the first page, before any event, so the fallback loses nothing that the
    Events API still holds. What it cannot give back (events older than 30
    days) is said loudly: only ``refund_reconciliation`` finds those refunds.
    """
    if cursor is None:
        yield from stripe.iter_events_oldest_first(
            EVENT_TYPES, after_event_id=None, created_since=created_since
        )
        return
    events = stripe.iter_events_oldest_first(EVENT_TYPES, after_event_id=cursor.event_id)
    try:
        first = next(events, None)
    except StripeCursorExpired as expired:
        fallback = cursor.created - EXPIRED_CURSOR_MARGIN
        summary.cursor_expired = True
        summary.started_from = (
            f"cursor event {cursor.event_id} expired at Stripe: events created since "
            f"{fallback.isoformat()}"
        )
        logger.error(
            f"Stripe no longer has cursor event {cursor.event_id} of {cursor.created.isoformat()}"
            f" ({expired}); reading events created since {fallback.isoformat()} instead. Stripe "
            f"keeps events {EVENT_RETENTION.days} days: refunds older than that are not in "
            "this feed; run refund_reconciliation for the days since the cursor"
        )
        yield from stripe.iter_events_oldest_first(
            EVENT_TYPES, after_event_id=None, created_since=fallback
        )
        return
    if first is None:
        return
    yield first
    yield from events


@dataclass
class _Pass:
    engine: sa.Engine
    stripe: StripeRefundReader
    settings: StripeRefundsSettings
    run_id: str | None
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    summary: StripeRefundsSummary = field(init=False)
    _charges: dict[str, ChargeSnapshot] = field(default_factory=dict)
    _charge_refunds: dict[str, list[RefundSnapshot]] = field(default_factory=dict)
    _done: set[str] = field(default_factory=set)

    def handle_event(self, event: StripeEventRecord) -> None:
        if event.type == "charge.refunded" and event.charge is not None:
            # Listed newest first; recorded in the order they were made.
            for refund in reversed(self._refunds_of(event.charge.id)):
                self.handle_refund(refund)
        elif event.refund is not None:
            self.handle_refund(event.refund)

    def retry_unplaced(self) -> None:
        with self.engine.connect() as connection:
            open_ids = connection.scalars(
                sa.select(unplaced_stripe_refunds.c.refund_id)
                .where(unplaced_stripe_refunds.c.resolved_at.is_(None))
                .order_by(unplaced_stripe_refunds.c.id)
            ).all()
        for refund_id in open_ids:
            self.handle_refund(self.stripe.get_refund(refund_id))

    def handle_refund(self, refund: RefundSnapshot) -> None:
        if refund.id in self._done:
            return
        currency = refund.currency.lower()
        if refund.status != SUCCEEDED:
            self._seen(refund, None, False, RefundIntakeOutcome.NOT_SUCCEEDED, refund.status)
            return  # a later event may say it succeeded: not marked done
        self._done.add(refund.id)
        if refund.charge_id is None:
            self._unplace(refund, None, UnplacedReason.NO_CHARGE, "the refund names no charge")
            return
        charge = self._charge(refund.charge_id)
        order_id = self._order_of(charge)
        if order_id is None:
            key = self.settings.order_metadata_key
            named = f"no metadata[{key!r}] and " if key else ""
            self._unplace(
                refund,
                None,
                UnplacedReason.NO_ORDER,
                f"charge {charge.id} has {named}no transfer_group: no order to reverse",
            )
            return
        whole = self._whole_order(refund, charge)
        amount, amount_currency = (None, None) if whole else (refund.amount, currency)
        with self.engine.begin() as connection:
            scope, scope_problem = self._scope(connection, refund, order_id)
            if scope_problem is not None:
                self._unplace(
                    refund, order_id, UnplacedReason.BAD_SELLER_TRANSFER, scope_problem, connection
                )
                return
            try:
                with connection.begin_nested():
                    receipt = request_reversal(
                        connection,
                        refund_id=refund.id,
                        order_id=order_id,
                        amount=amount,
                        currency=amount_currency,
                        seller_transfer_id=scope,
                    )
            except InvalidRowError as refused:
                known = connection.execute(
                    sa.select(refund_events.c.id).where(refund_events.c.refund_id == refund.id)
                ).scalar()
                if known is None:
                    self._unplace(
                        refund, order_id, UnplacedReason.REFUSED, str(refused), connection
                    )
                    return
                self.log.warning(
                    f"refund {refund.id}: Stripe's values differ from the event already "
                    f"received, which stands: {refused}"
                )
                outcome, detail = RefundIntakeOutcome.DIFFERS_FROM_RECORDED, str(refused)
            else:
                outcome = (
                    RefundIntakeOutcome.ALREADY_KNOWN
                    if receipt.duplicate
                    else RefundIntakeOutcome.RECORDED
                )
                detail = "whole order (refunds the whole charge)" if whole else ""
            self.summary.unplaced_resolved += resolve_unplaced(
                connection, refund.id, f"placed on order {order_id} ({outcome})", self.run_id
            )
        self._seen(refund, order_id, whole, outcome, detail)

    # -- reading Stripe, once per pass ----------------------------------------

    def _charge(self, charge_id: str) -> ChargeSnapshot:
        if charge_id not in self._charges:
            self._charges[charge_id] = self.stripe.get_charge(charge_id)
        return self._charges[charge_id]

    def _refunds_of(self, charge_id: str) -> list[RefundSnapshot]:
        if charge_id not in self._charge_refunds:
            self._charge_refunds[charge_id] = self.stripe.refunds_for_charge(charge_id)
        return self._charge_refunds[charge_id]

    # -- deciding -------------------------------------------------------------

    def _order_of(self, charge: ChargeSnapshot) -> str | None:
        key = self.settings.order_metadata_key
        if key:
            value = (charge.metadata.get(key) or "").strip()
            if value:
                return value
        return (charge.transfer_group or "").strip() or None

    def _whole_order(self, refund: RefundSnapshot, charge: ChargeSnapshot) -> bool:
        """The whole-charge rule (module docstring): this refund returns, or completes, it all."""
        if refund.amount >= charge.amount:
            return True
        if charge.id not in self._charge_refunds and charge.amount_refunded < charge.amount:
            return False  # not fully refunded: no refund of it completes it (saves a listing)
        return completing_refund_id(charge.amount, self._refunds_of(charge.id)) == refund.id

    def _scope(
        self, connection: sa.Connection, refund: RefundSnapshot, order_id: str
    ) -> tuple[int | None, str | None]:
        """(seller transfer id from the refund's metadata, or why it cannot be used)."""
        key = self.settings.seller_transfer_metadata_key
        raw = refund.metadata.get(key)
        if raw is None or not raw.strip():
            return None, None
        value = raw.strip()
        if not value.isdigit() or int(value) <= 0:
            return None, f"refund metadata[{key!r}] = {raw!r} is not a seller transfer id"
        row_order = connection.execute(
            sa.select(seller_transfers.c.order_id).where(seller_transfers.c.id == int(value))
        ).scalar()
        if row_order is None:
            return (
                None,
                f"refund metadata[{key!r}] names seller transfer {value}, which does not exist",
            )
        if row_order != order_id:
            return None, (
                f"refund metadata[{key!r}] names seller transfer {value} of order {row_order}, "
                f"but the charge's order is {order_id}: refusing to guess which seller to reverse"
            )
        return int(value), None

    # -- writing ---------------------------------------------------------------

    def _seen(
        self,
        refund: RefundSnapshot,
        order_id: str | None,
        whole: bool,
        outcome: RefundIntakeOutcome,
        detail: str,
    ) -> None:
        self.summary.refunds[refund.id] = RefundSeen(
            refund.id, order_id, refund.amount, refund.currency.lower(), whole, outcome, detail
        )

    def _unplace(
        self,
        refund: RefundSnapshot,
        order_id: str | None,
        reason: UnplacedReason,
        detail: str,
        connection: sa.Connection | None = None,
    ) -> None:
        if connection is None:
            with self.engine.begin() as own:
                new = record_unplaced(own, refund, reason, detail, self.run_id)
        else:
            new = record_unplaced(connection, refund, reason, detail, self.run_id)
        if new:
            self.summary.unplaced_new += 1
            self.log.error(
                f"refund {refund.id} ({refund.amount} {refund.currency.upper()}, charge "
                f"{refund.charge_id}) succeeded at Stripe but cannot be placed ({reason}): "
                f"{detail}; kept in unplaced_stripe_refunds, nothing reversed"
            )
        self._seen(refund, order_id, False, RefundIntakeOutcome.UNPLACED, f"{reason}: {detail}")
