"""Reconcile one UTC day from the refund side: Stripe's refunds against what we received.

The plain core of the ``refund_reconciliation`` asset. The transfer side
starts from ``seller_transfers`` and so cannot see a refund that never
reached the inbox (a webhook handler that crashed, a Dashboard refund): the
seller keeps the money and nothing is red. This side starts from Stripe: it
lists the day's refunds (every status, by ``created``; refunds stay listable
forever, unlike events, so a refund older than the Events API's 30 days is
still checked), reads what ``refund_events``, ``refund_allocations`` and
``seller_transfers`` say about the succeeded ones in one query, compares
(``refund_compare``) and stores the findings on the refund side
(``FindingSource.REFUNDS``), so neither side resolves the other's findings.

Stripe calls: one list page per 100 refunds, plus one charge retrieve per
distinct charge of a *whole-order* event (amount NULL): only the charge's
amount can confirm that the refund returned the whole charge (the intake's
whole-charge rule); and, for a charge refunded in parts, one listing of its
refunds to see which one completed it. Events with an amount (what
``stripe_refunds_sensor`` writes for a partial refund, and what the webhook
writes with amounts) cost nothing more.

A listing or retrieve that fails records an incomplete run: nothing is
resolved, and the caller fails the materialization.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.errors import StripeSentinel
from reversal_pipeline.reconciliation.compare import DEFAULT_GRACE_PERIOD
from reversal_pipeline.reconciliation.coverage import covered_until
from reversal_pipeline.reconciliation.refund_compare import (
    MAY_STILL_SUCCEED,
    ChargeFacts,
    ReceivedRefund,
    StripeRefund,
    compare_refunds,
)
from reversal_pipeline.reconciliation.run import day_bounds
from reversal_pipeline.reconciliation.store import (
    FindingSource,
    RunCounts,
    StoredRun,
    record_incomplete_run,
    store_findings,
)
from reversal_pipeline.reversals.whole_charge import SUCCEEDED, completing_refund_id


class RefundLister(Protocol):
    """What the refund side needs from the Stripe resource."""

    def iter_refunds_created(
        self, start: datetime, end: datetime, *, with_charges: bool = False
    ) -> Iterator[Any]: ...

    def get_charge(self, charge_id: str) -> Any: ...

    def refunds_for_charge(self, charge_id: str) -> list[Any]: ...

    @property
    def calls_made(self) -> Mapping[str, int]: ...


@dataclass
class RefundDayReconciliation:
    """The outcome of reconciling one day's refunds."""

    day: date
    complete: bool
    drift_findings: pd.DataFrame
    stripe_refunds: int = 0  # listed, every status
    succeeded_refunds: int = 0
    pending_refunds: int = 0  # may still succeed: the day is looked at again
    received_refunds: int = 0  # succeeded ones refund_events has
    charges_retrieved: int = 0
    stripe_calls: int = 0
    stored: StoredRun | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# One statement for the whole day: the day's succeeded refunds (arrays, unnested)
# against refund_events, their allocations and the allocated rows. It returns
# only the refunds that may be a finding: no event (``missing``), or an event
# that is whole-order (its charge decides), differs in amount or currency, is
# open or unprocessed, or has a share not reversed yet. The rest (all but a
# few on a healthy day) are agreed upon in the database and never cross the
# wire: 100,000 rows of Python objects cost more than the query itself.
_SUSPECT = sa.text(
    """
    SELECT s.refund_id, e.id IS NULL AS missing, e.order_id, e.amount, e.currency,
           e.received_at, e.outcome, e.processed_at IS NOT NULL AS closed,
           greatest(max(a.created_at),
                    max(coalesce(t.reconciliation_changed_at, t.updated_at))) AS last_change_at,
           coalesce(
               json_agg(json_build_object(
                   'seller_transfer_id', t.id,
                   'stripe_transfer_id', t.stripe_transfer_id,
                   'status', t.status,
                   'share', a.amount,
                   'target_after', a.target_after,
                   'amount_reversed', t.amount_reversed) ORDER BY a.id)
               FILTER (WHERE t.amount_reversed < a.target_after),
               '[]') AS short_shares
    FROM unnest(CAST(:refund_ids AS text[]), CAST(:amounts AS bigint[]),
                CAST(:currencies AS text[])) AS s(refund_id, amount, currency)
    LEFT JOIN refund_events e ON e.refund_id = s.refund_id
    LEFT JOIN refund_allocations a ON a.refund_event_id = e.id
    LEFT JOIN seller_transfers t ON t.id = a.seller_transfer_id
    GROUP BY s.refund_id, s.amount, s.currency, e.id
    HAVING e.id IS NULL OR e.amount IS NULL OR e.amount <> s.amount
        OR e.currency IS DISTINCT FROM s.currency
        OR e.outcome IS NULL OR e.processed_at IS NULL
        OR coalesce(bool_or(t.amount_reversed < a.target_after), false)
    """
)


@dataclass(frozen=True)
class DayEvents:
    """What the database says about a day's succeeded refunds (``read_day_events``)."""

    missing: frozenset[str]  # no refund_events row
    suspect: Mapping[str, ReceivedRefund]  # received, and may be a finding
    received: int  # every received one, suspect or not


def reconcile_refund_day(
    engine: sa.Engine,
    stripe: RefundLister,
    day: date,
    *,
    run_id: str | None,
    grace_period: timedelta = DEFAULT_GRACE_PERIOD,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RefundDayReconciliation:
    started_at = now()
    day_start, day_end = day_bounds(day)
    calls_before = _calls(stripe.calls_made)
    seconds: dict[str, float] = {}
    refunds: list[StripeRefund] = []
    # Each refund's charge comes with the listing (expanded): a whole-order event's check
    # needs its charge, which would otherwise cost one retrieve per charge.
    listed_charges: dict[str, _ChargeTotals] = {}
    outcome = RefundDayReconciliation(day, False, pd.DataFrame(), seconds=seconds)
    try:
        with _timed(seconds, "stripe_listing"):
            for snapshot in stripe.iter_refunds_created(day_start, day_end, with_charges=True):
                refunds.append(_plain(snapshot))
                if snapshot.charge is not None and snapshot.status == SUCCEEDED:
                    _keep_charge(listed_charges, snapshot.charge)
    except StripeSentinel as error:
        message = (
            f"Stripe's refund list for {day} stopped after {len(refunds)} refund(s): "
            f"{type(error).__name__}: {error.message}"
        )
        return _incomplete(
            engine, outcome, started_at, now(), run_id, message, stripe, calls_before
        )
    outcome.stripe_refunds = len(refunds)
    succeeded = [r for r in refunds if r.status == SUCCEEDED]
    outcome.succeeded_refunds = len(succeeded)
    outcome.pending_refunds = sum(r.status in MAY_STILL_SUCCEED for r in refunds)

    with _timed(seconds, "database_read"), engine.connect() as connection:
        covered = covered_until(connection, started_at)
        events = read_day_events(connection, succeeded)
    outcome.received_refunds = events.received

    # Per charge of a whole-order event: the smallest such refund (does it need the listing?).
    whole_order: dict[str, int] = {}
    for r in succeeded:
        event = events.suspect.get(r.id)
        if r.charge_id and event is not None and event.amount is None:
            whole_order[r.charge_id] = min(r.amount, whole_order.get(r.charge_id, r.amount))
    charges: dict[str, ChargeFacts] = {}
    try:
        with _timed(seconds, "stripe_charges"):
            for charge_id in sorted(whole_order):
                listed = listed_charges.get(charge_id)
                charge: Any = listed if listed is not None else stripe.get_charge(charge_id)
                outcome.charges_retrieved += listed is None
                charges[charge_id] = _charge_facts(stripe, charge, whole_order[charge_id])
    except StripeSentinel as error:
        message = (
            f"retrieving the charges of {day}'s whole-order refund events stopped after "
            f"{len(charges)} of {len(whole_order)}: {type(error).__name__}: {error.message}"
        )
        return _incomplete(
            engine, outcome, started_at, now(), run_id, message, stripe, calls_before
        )
    outcome.stripe_calls = _calls(stripe.calls_made) - calls_before

    with _timed(seconds, "comparison"):
        drift_findings = compare_refunds(
            succeeded,
            events.missing,
            events.suspect,
            charges,
            now=now(),
            grace_period=grace_period,
        )
    with _timed(seconds, "writing_findings"):
        stored = store_findings(
            engine,
            day,
            drift_findings,
            now=now(),
            started_at=started_at,
            run_id=run_id,
            counts=_counts(outcome),
            covered_until=covered,
            source=FindingSource.REFUNDS,
        )
    outcome.complete, outcome.drift_findings, outcome.stored = True, drift_findings, stored
    return outcome


def read_day_events(connection: sa.Connection, refunds: Sequence[StripeRefund]) -> DayEvents:
    """The database's side of ``refunds`` (succeeded ones), in one query (``_SUSPECT``)."""
    if not refunds:
        return DayEvents(frozenset(), {}, 0)
    rows = connection.execute(
        _SUSPECT,
        {
            "refund_ids": [r.id for r in refunds],
            "amounts": [r.amount for r in refunds],
            "currencies": [r.currency for r in refunds],
        },
    ).all()
    missing = frozenset(row.refund_id for row in rows if row.missing)
    suspect = {
        row.refund_id: ReceivedRefund(
            refund_id=row.refund_id,
            order_id=row.order_id,
            amount=None if row.amount is None else int(row.amount),
            currency=row.currency,
            received_at=row.received_at,
            outcome=row.outcome,
            closed=bool(row.closed),
            last_change_at=row.last_change_at,
            short_shares=tuple(row.short_shares),
        )
        for row in rows
        if not row.missing
    }
    return DayEvents(missing, suspect, len(refunds) - len(missing))


@dataclass(frozen=True, slots=True)
class _ChargeTotals:
    """What the check reads of a charge: kept instead of the whole snapshot (a day is large)."""

    id: str
    amount: int
    amount_refunded: int


def _keep_charge(listed: dict[str, _ChargeTotals], charge: Any) -> None:
    """Keep the most refunded copy: a page read earlier may predate a later refund."""
    seen = listed.get(charge.id)
    if seen is None or seen.amount_refunded < int(charge.amount_refunded):
        listed[charge.id] = _ChargeTotals(
            str(charge.id), int(charge.amount), int(charge.amount_refunded)
        )


def _charge_facts(stripe: RefundLister, charge: Any, smallest_refund: int) -> ChargeFacts:
    """The charge's amount; for one refunded in parts, also which refund completed it.

    Only a whole-order event whose refund is smaller than its charge needs the
    charge's refunds (one more call), and only once the charge is fully refunded.
    """
    amount = int(charge.amount)
    if smallest_refund >= amount or int(charge.amount_refunded) < amount:
        return ChargeFacts(amount)
    refunds = [_plain(r) for r in stripe.refunds_for_charge(str(charge.id))]
    return ChargeFacts(amount, completing_refund_id(amount, refunds))


def _plain(snapshot: Any) -> StripeRefund:
    """Keep only what the comparison reads: a day of 100,000 refunds stays small."""
    return StripeRefund(
        id=snapshot.id,
        charge_id=snapshot.charge_id,
        amount=int(snapshot.amount),
        currency=str(snapshot.currency).lower(),
        status=str(snapshot.status),
        created=snapshot.created,
    )


def _counts(outcome: RefundDayReconciliation) -> RunCounts:
    return RunCounts(
        db_rows=outcome.received_refunds,
        stripe_calls=outcome.stripe_calls,
        stripe_refunds=outcome.stripe_refunds,
        pending_refunds=outcome.pending_refunds,
    )


def _incomplete(
    engine: sa.Engine,
    outcome: RefundDayReconciliation,
    started_at: datetime,
    finished_at: datetime,
    run_id: str | None,
    message: str,
    stripe: RefundLister,
    calls_before: int,
) -> RefundDayReconciliation:
    """Record a run that proves nothing about the day (it resolves no finding)."""
    outcome.stripe_calls = _calls(stripe.calls_made) - calls_before
    outcome.error = message
    record_incomplete_run(
        engine,
        outcome.day,
        started_at=started_at,
        finished_at=finished_at,
        run_id=run_id,
        error_message=message,
        counts=_counts(outcome),
        source=FindingSource.REFUNDS,
    )
    return outcome


def _calls(calls_made: Mapping[str, int]) -> int:
    """Every Stripe HTTP attempt of the resource (the refund side makes only its own GETs).

    ``rate_limited_retries`` is not an attempt of its own: each re-send is
    already counted under its kind.
    """
    return sum(n for kind, n in calls_made.items() if kind != "rate_limited_retries")


class _timed:
    def __init__(self, into: dict[str, float], name: str) -> None:
        self.into, self.name = into, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.into[self.name] = round(time.perf_counter() - self.started, 4)
