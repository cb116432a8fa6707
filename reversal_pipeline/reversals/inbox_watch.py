"""What ``refund_events_sensor`` reads in the inbox: new events, open ones now actionable.

Two cheap, indexed reads, kept in the core so the sensor only decides whether
to request a run, and so they can be tested without Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from reversal_pipeline.db.tables import refund_events, seller_transfers
from reversal_pipeline.reversals.intake import open_event_is_actionable


@dataclass(frozen=True)
class NewEvents:
    """Events intake has not evaluated yet, after a given id."""

    newest_id: int | None  # None: there are none
    waiting: int


def new_refund_events(connection: sa.Connection, after_id: int) -> NewEvents:
    """The highest id and count of events with id > ``after_id`` that intake has not looked at.

    An event intake has looked at has an ``outcome`` (open ones too), so it is
    not new: it comes back through ``actionable_fingerprint`` instead.
    """
    e = refund_events.c
    newest, waiting = connection.execute(
        sa.select(sa.func.max(e.id), sa.func.count()).where(
            e.processed_at.is_(None), e.outcome.is_(None), e.id > after_id
        )
    ).one()
    return NewEvents(newest_id=None if newest is None else int(newest), waiting=int(waiting))


@dataclass(frozen=True)
class Actionable:
    """How many open events would act now, and a key that changes whenever that set changes."""

    count: int
    fingerprint: str  # "" when none is actionable


def actionable_fingerprint(connection: sa.Connection) -> Actionable:
    """The open events intake would act on now (``open_event_is_actionable``), fingerprinted.

    The key is the count plus the latest ``updated_at`` (kept by a trigger,
    set on insert too) of their orders' transfers: a transfer completing or
    appearing moves it, so the same event becoming actionable a second time
    (the next transfer of its order completes) gets a new key.
    """
    latest_change = (
        sa.select(sa.func.max(seller_transfers.c.updated_at))
        .where(seller_transfers.c.order_id == refund_events.c.order_id)
        .scalar_subquery()
    )
    count, changed = connection.execute(
        sa.select(sa.func.count(), sa.func.max(latest_change)).where(open_event_is_actionable())
    ).one()
    if not count:
        return Actionable(0, "")
    return Actionable(int(count), f"{count}-{changed.timestamp():.6f}")
