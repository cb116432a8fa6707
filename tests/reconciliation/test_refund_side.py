"""The refund side (``reconcile_refund_day``) on real PostgreSQL and the emulator over HTTP.

Refunds are made at the emulator (control client, backdated with ``created``)
and reach the database only when a test says so (``request_reversal``, as
the webhook or ``stripe_refunds_sensor`` would), so each test chooses what
was dropped. The clock is the one fake: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from reversal_pipeline.reconciliation.refund_side import reconcile_refund_day
from reversal_pipeline.reconciliation.refund_stale_days import refund_stale_days
from reversal_pipeline.reconciliation.run import ReconciliationWindows, reconcile_day
from reversal_pipeline.reconciliation.stale_days import stale_days
from reversal_pipeline.reconciliation.store import FindingSource, open_findings
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.stripe.resource import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer
from tests.plugins.marketplace import SeededRow, row_state, seed_rows
from tests.reversals.conftest import run_batch

DAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
SINCE = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def stripe(stripe_emulator: EmulatorServer, stripe_api_key: str) -> Iterator[StripeResource]:
    resource = StripeResource(
        api_key=stripe_api_key,
        api_base=stripe_emulator.url,
        requests_per_second=500,
        rate_limit_max_wait_seconds=0,
    )
    yield resource
    resource.close()


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> EmulatorClient:
    return stripe_emulator.control()


def _sale(
    engine: sa.Engine,
    control: EmulatorClient,
    order_id: str,
    *,
    transfer: int = 9_000,
    charge: int = 10_000,
) -> tuple[SeededRow, str]:
    """A paid-out order: the customer's charge (transfer_group = order) and the seller's row."""
    [row] = seed_rows(engine, control, 1, status="completed", amount=transfer, order_id=order_id)
    made = control.create_charge(
        charge, "usd", transfer_group=order_id, created=int((NOON - timedelta(hours=2)).timestamp())
    )
    return row, made["id"]


def _refund(
    control: EmulatorClient,
    charge_id: str,
    amount: int | None = None,
    *,
    status: str = "succeeded",
    at: datetime = NOON,
) -> dict[str, Any]:
    return control.create_refund(charge_id, amount, status=status, created=int(at.timestamp()))


def _receive(engine: sa.Engine, refund_id: str, order_id: str, **kwargs: Any) -> None:
    """What the webhook (or the Stripe events intake) does with a succeeded refund."""
    with engine.begin() as connection:
        request_reversal(connection, refund_id=refund_id, order_id=order_id, **kwargs)


def _reverse(engine: sa.Engine, stripe: StripeResource, token: str) -> None:
    """Intake, then the reversal job: what reversal_job does with the inbox."""
    process_refund_events(engine, run_id=token)
    run_batch(engine, stripe, token)


def _open(engine: sa.Engine, day: date, source: FindingSource | None = None) -> dict[str, Any]:
    """Open findings of ``day`` as ``{(category, finding_key): finding}``."""
    with engine.connect() as connection:
        findings = open_findings(connection, day, source)
    return {(f["category"], f["finding_key"]): f for f in findings.to_dict("records")}


def _refund_stale(engine: sa.Engine, now: datetime) -> dict[date, str]:
    with engine.connect() as connection:
        until = datetime.now(UTC) + timedelta(days=1)  # every day up to today, at any ``now``
        found = refund_stale_days(connection, since=SINCE, until=until, now=now)
    return {s.day: s.reason for s in found}


def test_full_and_partial_refunds_received_and_reversed_give_no_finding(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    whole_row, whole_charge = _sale(engine, control, "ord_whole")
    part_row, part_charge = _sale(engine, control, "ord_part")
    pending_row, pending_charge = _sale(engine, control, "ord_pending")
    failed_row, failed_charge = _sale(engine, control, "ord_failed")
    whole = _refund(control, whole_charge)  # the whole charge: a whole-order event
    part = _refund(control, part_charge, 2_500)
    _refund(control, pending_charge, status="pending")
    _refund(control, failed_charge, status="failed")
    _receive(engine, whole["id"], "ord_whole")
    _receive(engine, part["id"], "ord_part", amount=2_500, currency="usd")
    _reverse(engine, stripe, "run-1")
    assert row_state(engine, whole_row.id)["amount_reversed"] == 9_000
    assert row_state(engine, part_row.id)["amount_reversed"] == 2_500

    outcome = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")

    assert outcome.complete
    assert outcome.drift_findings.empty
    assert (outcome.stripe_refunds, outcome.succeeded_refunds) == (4, 2)
    assert (outcome.pending_refunds, outcome.received_refunds) == (1, 2)
    # One page of refunds, each with its charge (expanded): no retrieve for the whole order.
    assert (outcome.charges_retrieved, outcome.stripe_calls) == (0, 1)
    assert outcome.stored is not None
    assert outcome.stored.open_findings == 0
    assert row_state(engine, pending_row.id)["status"] == "completed"
    assert row_state(engine, failed_row.id)["status"] == "completed"


def test_a_refund_made_while_the_intake_was_off_is_not_received_until_it_is_reversed(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    row, charge = _sale(engine, control, "ord_dropped")
    refund = _refund(control, charge, 4_000)

    first = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")

    [finding] = first.drift_findings.to_dict("records")
    assert (finding["category"], finding["severity"]) == ("refund_not_received", "critical")
    assert finding["finding_key"] == refund["id"]
    assert (finding["amount"], finding["currency"], finding["in_grace"]) == (4_000, "usd", False)
    assert (("refund_not_received", refund["id"])) in _open(engine, DAY)

    _receive(engine, refund["id"], "ord_dropped", amount=4_000, currency="usd")
    assert DAY in _refund_stale(engine, datetime.now(UTC))  # its event arrived
    _reverse(engine, stripe, "run-1")
    assert row_state(engine, row.id)["amount_reversed"] == 4_000
    # Read an hour later: the default grace after the event arrived has passed.
    later = reconcile_refund_day(
        engine, stripe, DAY, run_id="recon-2", now=lambda: datetime.now(UTC) + timedelta(hours=2)
    )

    assert later.drift_findings.empty
    assert later.stored is not None
    assert later.stored.resolved == 1
    assert _open(engine, DAY) == {}


def test_a_refund_just_made_is_in_grace_and_its_day_stale_when_the_grace_ends(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    _, charge = _sale(engine, control, "ord_fresh")
    refund = _refund(control, charge, 1_000)
    made = NOON

    outcome = reconcile_refund_day(
        engine, stripe, DAY, run_id="recon-1", now=lambda: made + timedelta(minutes=10)
    )

    [finding] = outcome.drift_findings.to_dict("records")
    assert (finding["category"], finding["in_grace"]) == ("refund_not_received", True)
    assert finding["grace_ends_at"] == made + timedelta(hours=1)
    assert outcome.stored is not None
    assert outcome.stored.open_findings == 0  # not drift yet
    assert DAY not in _refund_stale(engine, made + timedelta(minutes=30))
    assert "grace reached their end" in _refund_stale(engine, made + timedelta(minutes=61))[DAY]
    assert refund["id"] == finding["finding_key"]


def test_received_but_not_reversed_after_the_grace(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    """Received and allocated, but the job never ran: the seller still has the money."""
    row, charge = _sale(engine, control, "ord_stuck")
    refund = _refund(control, charge, 3_000)
    _receive(engine, refund["id"], "ord_stuck", amount=3_000, currency="usd")
    process_refund_events(engine, run_id="intake")
    assert row_state(engine, row.id)["status"] == "reversal_pending"

    in_grace = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")
    [finding] = in_grace.drift_findings.to_dict("records")
    assert (finding["category"], finding["in_grace"]) == ("refund_not_reversed", True)

    later = reconcile_refund_day(
        engine, stripe, DAY, run_id="recon-2", now=lambda: datetime.now(UTC) + timedelta(hours=2)
    )

    [finding] = later.drift_findings.to_dict("records")
    assert (finding["category"], finding["severity"]) == ("refund_not_reversed", "high")
    assert (finding["in_grace"], finding["seller_transfer_id"]) == (False, row.id)
    [share] = finding["details"]["short_shares"]
    assert (share["status"], share["target_after"], share["amount_reversed"]) == (
        "reversal_pending",
        3_000,
        0,
    )


def test_a_failed_or_short_reversal_is_not_reversed(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    failed_row, failed_charge = _sale(engine, control, "ord_failed_reversal")
    short_row, short_charge = _sale(engine, control, "ord_short")
    failed = _refund(control, failed_charge, 2_000)
    short = _refund(control, short_charge, 5_000)
    _receive(engine, failed["id"], "ord_failed_reversal", amount=2_000, currency="usd")
    _receive(engine, short["id"], "ord_short", amount=5_000, currency="usd")
    process_refund_events(engine, run_id="intake")
    with engine.begin() as connection:  # what the job leaves after giving up / a smaller reversal
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'permanently_failed', next_retry_at = NULL"
                " WHERE id = :id"
            ),
            {"id": failed_row.id},
        )
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET status = 'reversed', amount_reversed = 4000,"
                " next_retry_at = NULL, stripe_reversal_id = 'trr_short', reversed_at = now()"
                " WHERE id = :id"
            ),
            {"id": short_row.id},
        )

    outcome = reconcile_refund_day(
        engine, stripe, DAY, run_id="recon-1", now=lambda: datetime.now(UTC) + timedelta(hours=2)
    )

    found = {f["finding_key"]: f for f in outcome.drift_findings.to_dict("records")}
    assert {f["category"] for f in found.values()} == {"refund_not_reversed"}
    assert found[failed["id"]]["details"]["short_shares"][0]["status"] == "permanently_failed"
    assert found[short["id"]]["details"]["short_shares"][0]["amount_reversed"] == 4_000
    assert found[short["id"]]["seller_transfer_id"] == short_row.id


def test_an_event_that_is_open_unplaced_is_not_reversed(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    """The event names an order with no seller transfer: intake waits, nothing reversed."""
    _, charge = _sale(engine, control, "ord_known")
    refund = _refund(control, charge, 1_000)
    _receive(engine, refund["id"], "ord_typo", amount=1_000, currency="usd")
    process_refund_events(engine, run_id="intake")

    outcome = reconcile_refund_day(
        engine, stripe, DAY, run_id="recon-1", now=lambda: datetime.now(UTC) + timedelta(hours=2)
    )

    [finding] = outcome.drift_findings.to_dict("records")
    assert finding["category"] == "refund_not_reversed"
    assert finding["details"]["event_outcome"] == "waiting_for_transfer"


def test_an_event_with_another_amount_is_a_mismatch(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    _, charge_a = _sale(engine, control, "ord_amount")
    _, charge_b = _sale(engine, control, "ord_called_whole")
    _, charge_c = _sale(engine, control, "ord_currency")
    smaller = _refund(control, charge_a, 700)
    partial = _refund(control, charge_b, 3_000)  # recorded as if the whole order
    other_currency = _refund(control, charge_c, 800)
    _receive(engine, smaller["id"], "ord_amount", amount=500, currency="usd")
    _receive(engine, partial["id"], "ord_called_whole")
    _receive(engine, other_currency["id"], "ord_currency", amount=800, currency="eur")

    outcome = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")

    mismatches = outcome.drift_findings[
        outcome.drift_findings["category"] == "refund_amount_mismatch"
    ]
    by_refund = dict(zip(mismatches["finding_key"], mismatches["details"], strict=True))
    assert set(by_refund) == {smaller["id"], partial["id"], other_currency["id"]}
    assert "500 USD" in by_refund[smaller["id"]]["why"]
    assert "refunded 3000 of the charge's 10000" in by_refund[partial["id"]]["why"]
    assert set(mismatches["severity"]) == {"high"}


def test_a_refund_whose_event_expired_is_still_found(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    """40 days ago: Stripe's Events API no longer has it, its refund list still does."""
    old_day = (datetime.now(UTC) - timedelta(days=40)).date()
    old_noon = datetime(old_day.year, old_day.month, old_day.day, 12, tzinfo=UTC)
    made = control.create_charge(
        5_000, "usd", transfer_group="ord_old", created=int(old_noon.timestamp())
    )
    refund = _refund(control, made["id"], at=old_noon + timedelta(hours=1))
    events = stripe.iter_events_oldest_first(
        ["refund.created", "refund.updated", "charge.refunded"],
        after_event_id=None,
        created_since=old_noon - timedelta(days=1),
    )
    assert refund["id"] not in {e.refund.id for e in events if e.refund is not None}

    outcome = reconcile_refund_day(engine, stripe, old_day, run_id="recon-1")

    [finding] = outcome.drift_findings.to_dict("records")
    assert (finding["category"], finding["finding_key"]) == ("refund_not_received", refund["id"])


def test_the_transfer_side_and_the_refund_side_never_resolve_each_others_findings(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    # Transfer side: a row the database calls reversed that Stripe never reversed, on DAY.
    [row] = seed_rows(
        engine, control, 1, status="reversed", stripe_reversal_id="trr_never", reversed_at=NOON
    )
    # Refund side: a refund of DAY nobody received.
    _, charge = _sale(engine, control, "ord_iso")
    refund = _refund(control, charge, 1_000)
    zero_grace = ReconciliationWindows(grace_period=timedelta(0))
    transfer_key = ("db_reversed_stripe_not", str(row.id))
    refund_key = ("refund_not_received", refund["id"])

    reconcile_day(engine, stripe, DAY, run_id="transfers-1", windows=zero_grace)
    reconcile_refund_day(engine, stripe, DAY, run_id="refunds-1")
    assert {transfer_key, refund_key} <= set(_open(engine, DAY))
    assert set(_open(engine, DAY, FindingSource.REFUNDS)) == {refund_key}

    # Each side's re-run sees only its own findings and leaves the other side's open.
    again = reconcile_day(engine, stripe, DAY, run_id="transfers-2", windows=zero_grace)
    assert again.stored is not None
    assert again.stored.superseded_by is None
    assert refund_key in _open(engine, DAY)
    refunds_again = reconcile_refund_day(engine, stripe, DAY, run_id="refunds-2")
    assert refunds_again.stored is not None
    assert refunds_again.stored.superseded_by is None
    assert refunds_again.stored.resolved == 0
    assert transfer_key in _open(engine, DAY)
    assert refunds_again.stored.open_findings == 1  # its own side's count


def test_a_refund_run_does_not_count_as_the_transfer_sides_reconciliation(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    seed_rows(engine, control, 1, status="completed")
    reconcile_refund_day(engine, stripe, DAY, run_id="refunds-1")

    now = datetime.now(UTC)
    with engine.connect() as connection:
        transfer_days = {s.day for s in stale_days(connection, since=SINCE, until=now, now=now)}
    assert DAY in transfer_days  # the transfers of DAY were never reconciled


def test_a_day_with_pending_refunds_is_listed_again_later(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    _, charge = _sale(engine, control, "ord_slow")
    pending = _refund(control, charge, 2_000, status="pending")
    outcome = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")
    assert (outcome.pending_refunds, len(outcome.drift_findings)) == (1, 0)
    now = datetime.now(UTC)
    assert DAY not in _refund_stale(engine, now + timedelta(hours=1))
    assert "pending" in _refund_stale(engine, now + timedelta(hours=7))[DAY]

    control.set_refund_status(pending["id"], "succeeded")  # nobody received it
    later = reconcile_refund_day(engine, stripe, DAY, run_id="recon-2")

    [finding] = later.drift_findings.to_dict("records")
    assert (finding["category"], finding["finding_key"]) == ("refund_not_received", pending["id"])


def test_a_failed_listing_is_an_incomplete_run_that_resolves_nothing(
    engine: sa.Engine,
    control: EmulatorClient,
    stripe: StripeResource,
    stripe_api_key: str,
) -> None:
    _, charge = _sale(engine, control, "ord_revoked")
    _refund(control, charge, 1_000)
    reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")
    control.revoke_key(stripe_api_key)
    try:
        outcome = reconcile_refund_day(engine, stripe, DAY, run_id="recon-2")
    finally:
        control.unrevoke_key(stripe_api_key)

    assert not outcome.complete
    assert outcome.error is not None
    assert "StripeSystemicError" in outcome.error
    assert len(_open(engine, DAY)) == 1
    assert "did not complete" in _refund_stale(engine, datetime.now(UTC))[DAY]


def test_the_refund_that_completes_a_charge_matches_a_whole_order_event(
    engine: sa.Engine, control: EmulatorClient, stripe: StripeResource
) -> None:
    """The intake's whole-charge rule: the refund completing a charge refunded in parts is
    recorded as the whole order; an earlier part recorded so is a mismatch."""
    _, charge = _sale(engine, control, "ord_in_parts")
    first = _refund(control, charge, 4_000, at=NOON)
    last = _refund(control, charge, 6_000, at=NOON + timedelta(minutes=5))
    _receive(engine, first["id"], "ord_in_parts")  # wrongly recorded as the whole order
    _receive(engine, last["id"], "ord_in_parts")  # the completing one: whole order

    outcome = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")

    mismatches = outcome.drift_findings[
        outcome.drift_findings["category"] == "refund_amount_mismatch"
    ]
    assert list(mismatches["finding_key"]) == [first["id"]]
    assert "did not complete the charge" in mismatches["details"].iloc[0]["why"]
    # One page of refunds (with their charge), and the charge's refunds (refunded in parts).
    assert (outcome.charges_retrieved, outcome.stripe_calls) == (0, 2)


def test_whole_order_events_read_their_charges_from_the_one_refund_listing(
    engine: sa.Engine,
    control: EmulatorClient,
    stripe: StripeResource,
    stripe_emulator: EmulatorServer,
) -> None:
    """Five whole-order events on five charges: one listing page, not five charge retrieves."""
    for i in range(5):
        _, charge = _sale(engine, control, f"ord_whole_{i}")
        refund = _refund(control, charge)
        _receive(engine, refund["id"], f"ord_whole_{i}")  # no amount: the whole order
    _reverse(engine, stripe, "run-1")
    logged = max((r["seq"] for r in control.request_log()), default=0)

    outcome = reconcile_refund_day(engine, stripe, DAY, run_id="recon-1")

    assert outcome.complete
    assert outcome.drift_findings.empty
    assert (outcome.charges_retrieved, outcome.stripe_calls) == (0, 1)
    [listing] = control.request_log(since=logged)
    assert listing["method"] == "GET"
    assert listing["path"] == "/v1/refunds"
