"""What goes wrong on purpose, so the operator sees each case in the UI and the summary.

``plant_operator_cases`` runs before the job: the cases the reversal job
itself must handle, which reach their states through the job's own code
(a scripted answer at the emulator, then a real run). ``plant_drift`` runs
after it, before reconciliation: one disagreement between the database and
Stripe per drift category. A drift is by nature a change the job did not
make, so each planted change writes its own audit row (actor ``demo``, at
the time the story says it happened, saying what was planted), and every
time it plants lies between the transfer and now: ``show`` then tells a
consistent story (no change before the row existed, no "gave up after 8
attempts" on a row with no attempts).
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from reversal_pipeline.db.statuses import AttemptAction, TransferStatus
from reversal_pipeline.db.tables import reversal_attempts
from reversal_pipeline.db.tables import seller_transfers as st
from reversal_pipeline.demo.marketplace import DemoTransfer, Marketplace, refund_orders
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorClient
from reversal_pipeline.stripe_emulator.state import new_id

FLAKY_500S = 12
#: The audit trail's ``actor`` for what the demo changed by hand.
DEMO_ACTOR = "demo"


@dataclass
class PlantedCases:
    """Row ids per planted case, for the summary and the tests."""

    cases: dict[str, list[int]] = field(default_factory=dict)

    def add(self, case: str, row_id: int) -> None:
        self.cases.setdefault(case, []).append(row_id)


def _insert_row(connection: sa.Connection, day: date, **values: object) -> int:
    transferred_at = datetime(day.year, day.month, day.day, 15, tzinfo=UTC)
    base: dict[str, object] = {
        "seller_id": "seller_900",
        "stripe_account_id": "acct_demo900",
        "amount": 4_200,
        "currency": "usd",
        "status": "completed",
        "transferred_at": transferred_at,
        "created_at": transferred_at,
    }
    return connection.execute(
        sa.insert(st).values(**{**base, **values}).returning(st.c.id)
    ).scalar_one()


def plant_operator_cases(
    engine: sa.Engine,
    control: EmulatorClient,
    market: Marketplace,
    rng: random.Random,
    *,
    later_refunds: Collection[str] = (),
) -> PlantedCases:
    """Out-of-band reversal, unknown transfer id, malformed row, lost response, flaky 500s.

    Also the first half of ``stripe_reversed_db_failed``: a refund whose
    reversal Stripe answers with a 404, so the job really gives up on it
    (``plant_drift`` later reverses it "from the Dashboard"). Orders in
    ``later_refunds`` are refunded later by the caller and are not picked.
    """
    planted = PlantedCases()
    refunded = [t for t in market.transfers if t.order_id in set(market.refunded_orders)]
    out_of_band, lost = rng.sample(refunded, 2)
    gave_up = rng.choice(_untouched_single_transfers(market, later_refunds))
    # Stripe answers this reversal 404 (the job marks the row permanently_failed after
    # one call); scripted before the 500s so it is the first match for its transfer.
    control.add_script(
        respond=404,
        method="POST",
        transfer_id=gave_up.stripe_transfer_id,
        code="resource_missing",
        message=f"No such transfer: '{gave_up.stripe_transfer_id}'",
    )
    refund_orders(engine, market, [gave_up.order_id], prefix="case_gave_up")
    planted.add("stripe_reversed_db_failed", gave_up.id)
    # Support reversed this one from the Dashboard before the job got to it.
    control.reverse_transfer(
        out_of_band.stripe_transfer_id, metadata={"reason": "support ticket 4711"}
    )
    planted.add("out_of_band_reversal", out_of_band.id)
    # The reply to this reversal is lost after Stripe commits it.
    control.add_script(respond="lost", method="POST", transfer_id=lost.stripe_transfer_id)
    planted.add("lost_response", lost.id)
    # Then a stretch of 500s: the next reversals fail and are retried after backoff.
    control.add_script(respond=500, method="POST", path_prefix="/v1/transfers/", times=FLAKY_500S)
    with engine.begin() as connection:
        unknown = _insert_row(
            connection,
            market.days[0],
            order_id="ord_case_unknown_transfer",
            stripe_transfer_id=new_id("tr_"),  # never created at Stripe: wrong account?
        )
        malformed = _insert_row(
            connection,
            market.days[1 % len(market.days)],
            order_id="ord_case_malformed_row",
            stripe_transfer_id=" TR-0042 (pasted from a spreadsheet)",
        )
        for order_id in ("ord_case_unknown_transfer", "ord_case_malformed_row"):
            request_reversal(connection, refund_id=f"re_{order_id}", order_id=order_id)
    planted.add("unknown_transfer_id", unknown)
    planted.add("malformed_row", malformed)
    return planted


@dataclass(frozen=True)
class PartialRefundCases:
    """The partial-refund stories (issue 17): their rows, and the second part still to come."""

    one_item: DemoTransfer | None
    sibling: DemoTransfer | None
    twice: DemoTransfer | None

    def second_part_amount(self) -> int:
        assert self.twice is not None
        return self.twice.amount // 4


def plant_partial_refunds(
    engine: sa.Engine,
    market: Marketplace,
    planted: PlantedCases,
    rng: random.Random,
    *,
    later_refunds: Collection[str] = (),
) -> PartialRefundCases:
    """A two-seller order with one item refunded, and the first of two parts of a refund.

    Both go through ``request_reversal`` and the job like any refund: the item
    refund is scoped to one seller's transfer (the other stays ``completed``);
    the twice-refunded transfer gets its second part from ``refund_second_part``
    once Stripe confirmed the first, so Stripe shows two reversals. Their orders
    join ``refunded_orders`` so no later case picks them. Run after
    ``plant_operator_cases`` (its picks stay what they were).
    """
    excluded = set(market.refunded_orders) | set(later_refunds)
    orders = market.by_order()
    pairs = sorted(o for o, ts in orders.items() if len(ts) == 2 and o not in excluded)
    singles = [t for t in _untouched_single_transfers(market, later_refunds) if t.amount >= 4]
    one_item = sibling = twice = None
    with engine.begin() as connection:
        if pairs:
            sibling, one_item = orders[rng.choice(pairs)]
            request_reversal(
                connection,
                refund_id=f"re_item_{one_item.order_id}",
                order_id=one_item.order_id,
                amount=one_item.amount // 2,
                currency=one_item.currency,
                seller_transfer_id=one_item.id,
            )
            planted.add("partial_refund_one_item", one_item.id)
            planted.add("partial_refund_sibling", sibling.id)
            market.refunded_orders.append(one_item.order_id)
        if singles:
            twice = rng.choice(singles)
            request_reversal(
                connection,
                refund_id=f"re_part1_{twice.order_id}",
                order_id=twice.order_id,
                amount=twice.amount // 4,
                currency=twice.currency,
            )
            planted.add("partial_refund_twice", twice.id)
            market.refunded_orders.append(twice.order_id)
    return PartialRefundCases(one_item, sibling, twice)


def refund_second_part(engine: sa.Engine, cases: PartialRefundCases) -> bool:
    """The customer's second partial refund, once the first part is reversed (True if sent).

    Waiting for ``reversed`` makes Stripe show two reversals; a second part
    arriving earlier would only raise the target before the first was sent.
    """
    if cases.twice is None:
        return False
    with engine.begin() as connection:
        status = connection.execute(
            sa.select(st.c.status).where(st.c.id == cases.twice.id)
        ).scalar_one()
        if status != TransferStatus.REVERSED.value:
            return False
        request_reversal(
            connection,
            refund_id=f"re_part2_{cases.twice.order_id}",
            order_id=cases.twice.order_id,
            amount=cases.second_part_amount(),
            currency=cases.twice.currency,
        )
    return True


def _untouched_single_transfers(
    market: Marketplace, also_excluded: Collection[str] = ()
) -> list[DemoTransfer]:
    """Transfers of single-seller orders no refund touches (now or later)."""
    excluded = set(market.refunded_orders) | set(also_excluded)
    orders = market.by_order()
    return [
        t for t in market.transfers if t.order_id not in excluded and len(orders[t.order_id]) == 1
    ]


@dataclass(frozen=True)
class PlantedChange:
    """One hand-made change of a row, and the audit row that records it."""

    case: str
    row_id: int
    values: dict[str, object]
    action: AttemptAction
    status_before: str
    status_after: str
    at: datetime
    what: str
    stripe_reversal_id: str | None = None


def write_planted_change(connection: sa.Connection, change: PlantedChange) -> None:
    """The row change and its audit row, in the caller's transaction (they commit together)."""
    connection.execute(sa.update(st).where(st.c.id == change.row_id).values(**change.values))
    connection.execute(
        sa.insert(reversal_attempts).values(
            seller_transfer_id=change.row_id,
            action=change.action.value,
            outcome="planted",
            status_before=change.status_before,
            status_after=change.status_after,
            stripe_reversal_id=change.stripe_reversal_id,
            message=f"planted by the demo ({change.case}): {change.what}; no Stripe call",
            actor=DEMO_ACTOR,
            created_at=change.at,
        )
    )


def plant_drift(
    engine: sa.Engine,
    control: EmulatorClient,
    market: Marketplace,
    planted: PlantedCases,
    rng: random.Random,
) -> None:
    """At least one finding of each reconciliation category."""
    candidates = _untouched_single_transfers(market)
    picks = iter(rng.sample(candidates, 6))
    now = datetime.now(UTC)

    def pick(case: str) -> DemoTransfer:
        transfer = next(picks)
        planted.add(case, transfer.id)
        return transfer

    def after(t: DemoTransfer, hours: float) -> datetime:
        """``hours`` after the transfer, but never in the future (nor before the transfer)."""
        wanted = t.transferred_at + timedelta(hours=hours)
        return max(t.transferred_at, min(wanted, now - timedelta(minutes=1)))

    def marked_reversed(t: DemoTransfer, case: str, reversal_id: str, why: str) -> PlantedChange:
        requested, reversed_at = after(t, 2), after(t, 3)
        return PlantedChange(
            case,
            t.id,
            {
                "status": TransferStatus.REVERSED.value,
                "stripe_reversal_id": reversal_id,
                "reversal_requested_at": requested,
                "reversed_at": reversed_at,
            },
            AttemptAction.RESOLVE,
            TransferStatus.COMPLETED.value,
            TransferStatus.REVERSED.value,
            reversed_at,
            f"marked reversed with {reversal_id} by hand; {why}",
            stripe_reversal_id=reversal_id,
        )

    changes: list[PlantedChange] = []
    # The database says reversed; Stripe has no reversal at all.
    t = pick("db_reversed_stripe_not")
    changes.append(
        marked_reversed(t, "db_reversed_stripe_not", new_id("trr_"), "Stripe has no reversal")
    )
    # Two reversals carry the same seller transfer id (a double reversal).
    t = pick("over_reversed")
    first = control.reverse_transfer(
        t.stripe_transfer_id, amount=t.amount // 2, metadata={"seller_transfer_id": str(t.id)}
    )
    control.reverse_transfer(
        t.stripe_transfer_id,
        amount=t.amount - t.amount // 2,
        metadata={"seller_transfer_id": str(t.id)},
    )
    changes.append(
        marked_reversed(t, "over_reversed", first["id"], "Stripe has a second reversal too")
    )
    # Reversed at Stripe, but the database recorded another reversal id.
    t = pick("reversal_id_mismatch")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"seller_transfer_id": str(t.id)})
    changes.append(
        marked_reversed(
            t, "reversal_id_mismatch", new_id("trr_"), "Stripe's reversal has another id"
        )
    )
    # The job gave up on this one (a 404, see plant_operator_cases); support then
    # reversed it from the Dashboard.
    [gave_up_id] = planted.cases["stripe_reversed_db_failed"]
    gave_up = next(t for t in market.transfers if t.id == gave_up_id)
    control.reverse_transfer(gave_up.stripe_transfer_id, metadata={"reason": "manual, Dashboard"})
    # Pending in the database (next try tomorrow), already reversed at Stripe.
    t = pick("stripe_reversed_db_pending")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"reason": "manual, Dashboard"})
    requested = after(t, 2)
    changes.append(
        PlantedChange(
            "stripe_reversed_db_pending",
            t.id,
            {
                "status": TransferStatus.REVERSAL_PENDING.value,
                "reversal_requested_at": requested,
                "next_retry_at": now + timedelta(hours=20),
            },
            AttemptAction.INTAKE,
            TransferStatus.COMPLETED.value,
            TransferStatus.REVERSAL_PENDING.value,
            requested,
            "reversal requested, first try tomorrow",
        )
    )
    # Reversed at Stripe although no refund ever asked for it.
    t = pick("reversed_without_request")
    control.reverse_transfer(t.stripe_transfer_id, metadata={"reason": "fat finger"})
    # The row's amount differs from the transfer's.
    t = pick("amount_or_currency_mismatch")
    changes.append(
        PlantedChange(
            "amount_or_currency_mismatch",
            t.id,
            {"amount": t.amount + 100},
            AttemptAction.REPAIR,
            TransferStatus.COMPLETED.value,
            TransferStatus.COMPLETED.value,
            now,
            f"amount {t.amount} -> {t.amount + 100} by hand (Stripe's transfer is {t.amount})",
        )
    )
    # Pending, its retry long overdue: the earliest transfer left, so it is days overdue.
    picked = {i for ids in planted.cases.values() for i in ids}
    t = min((c for c in candidates if c.id not in picked), key=lambda c: c.transferred_at)
    planted.add("stuck_pending", t.id)
    requested = t.transferred_at + timedelta(hours=1)
    changes.append(
        PlantedChange(
            "stuck_pending",
            t.id,
            {
                "status": TransferStatus.REVERSAL_PENDING.value,
                "reversal_requested_at": requested,
                "next_retry_at": requested + timedelta(hours=1),
            },
            AttemptAction.INTAKE,
            TransferStatus.COMPLETED.value,
            TransferStatus.REVERSAL_PENDING.value,
            requested,
            "reversal requested, due an hour later, then never sent",
        )
    )
    # A transfer at Stripe that the database never recorded.
    day = market.days[-1]
    control.create_transfer(
        amount=12_345,
        currency="usd",
        destination="acct_demo999",
        created=int(datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp()),
        metadata={"order_id": "ord_never_saved"},
    )
    with engine.begin() as connection:
        for change in changes:
            write_planted_change(connection, change)
        # A row pointing at a transfer Stripe does not have (missing_at_stripe).
        planted.add(
            "missing_at_stripe",
            _insert_row(
                connection,
                market.days[-1],
                order_id="ord_case_missing_at_stripe",
                stripe_transfer_id=new_id("tr_"),
            ),
        )
    planted.cases["unknown_to_db"] = []
