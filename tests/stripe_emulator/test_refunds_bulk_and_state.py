"""Refunds in bulk (the 100,000-refund day) and refunds through a saved state file.

The refund reconciliation benchmark needs a day of 100,000 refunds in seconds;
``reversal-pipeline dev`` restarts its emulator from a snapshot, which must
bring back charges, refunds and events exactly as they were served.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import stripe

from reversal_pipeline.stripe_emulator import (
    EmulatorServer,
    EmulatorState,
    SnapshotError,
    load_snapshot,
    save_snapshot,
)


def _midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def test_a_day_of_100000_refunds_is_created_in_one_call(stripe_emulator: EmulatorServer) -> None:
    control = stripe_emulator.control()
    day = date(2026, 3, 9)

    summary = control.create_refunds_bulk(day, 100_000, amount=700)

    assert summary["count"] == 100_000
    assert summary["events"] == 200_000
    assert summary["amount_total"] == 70_000_000
    assert _midnight(day) <= summary["first_created"] <= summary["last_created"]
    assert summary["last_created"] < _midnight(day) + 86_400
    health = control.health()
    assert (health["charges"], health["refunds"], health["events"]) == (100_000,) * 2 + (200_000,)


def test_a_bulk_day_lists_exactly_its_refunds_with_their_orders(
    stripe_emulator: EmulatorServer, emulator_stripe_client: stripe.StripeClient
) -> None:
    control = stripe_emulator.control()
    day = date(2026, 3, 9)
    control.create_refunds_bulk(day - timedelta(days=1), 50, order_start=1)
    summary = control.create_refunds_bulk(day, 1_234, amount=250, order_start=100)
    control.create_refunds_bulk(day + timedelta(days=1), 50, order_start=5_000)
    client = emulator_stripe_client
    bounds = {"gte": _midnight(day), "lt": _midnight(day) + 86_400}

    listed = list(client.v1.refunds.list({"created": bounds, "limit": 100}).auto_paging_iter())
    charge = client.v1.charges.retrieve(listed[0].charge)

    assert len(listed) == len({r.id for r in listed}) == 1_234
    assert {r.status for r in listed} == {"succeeded"}
    assert sum(r.amount for r in listed) == summary["amount_total"] == 1_234 * 250
    assert (listed[-1].id, listed[0].id) == (summary["first_refund"], summary["last_refund"])
    assert charge.transfer_group == "order_1333"  # the last of order_100 .. order_1333
    assert (charge.amount_refunded, charge.refunded) == (250, True)


def test_bulk_takes_given_transfer_groups_and_a_metadata_key(
    stripe_emulator: EmulatorServer,
) -> None:
    control = stripe_emulator.control()

    summary = control.create_refunds_bulk(
        date(2026, 3, 9), 2, transfer_groups=["g-a", "g-b"], metadata_key="order_id", events=False
    )
    refund = stripe_emulator.state.payments.get_refund(summary["last_refund"])

    assert summary["events"] == 0
    assert refund.charge.transfer_group == "g-b"
    assert refund.charge.metadata == {"order_id": "g-b"}


def _everything(state: EmulatorState) -> dict[str, list[dict[str, object]]]:
    payments = state.payments
    refunds = payments.list_refunds(limit=100)
    events = payments.list_events(limit=100)
    charge_ids = sorted({r.charge.id for r in refunds.data})
    return {
        "charges": [payments.charge_dict(c) for c in charge_ids],
        "refunds": [r.to_dict() for r in refunds.data],
        "events": [e.to_dict() for e in events.data],
    }


def _history(state: EmulatorState) -> None:
    payments = state.payments
    now = int(state.clock())
    charge = payments.create_charge(
        amount=1_000, currency="eur", transfer_group="order_1", metadata={"k": "v"}, created=now
    )
    payments.create_refund(charge.id, amount=100, metadata={"seller_transfer_id": "4"})
    pending = payments.create_refund(charge.id, amount=200, status="pending")
    failing = payments.create_refund(charge.id, amount=300, status="pending")
    payments.set_refund_status(pending.id, "succeeded")
    payments.set_refund_status(failing.id, "failed")
    payments.create_refund(charge.id, amount=50, status="pending")  # still pending when saved
    other = payments.create_charge(amount=70, created=now - 10)
    payments.create_refund(other.id, created=now - 10)


def test_save_and_load_bring_back_charges_refunds_and_events(tmp_path: Path) -> None:
    original = EmulatorState()
    _history(original)
    path = save_snapshot(original, tmp_path / "state.json")

    restored = EmulatorState()
    load_snapshot(restored, path)
    after = _everything(restored)
    # The restored pending refund still holds its amount back, and can still settle.
    last_pending = next(r for r in after["refunds"] if r["status"] == "pending")
    restored.payments.set_refund_status(str(last_pending["id"]), "succeeded")

    assert after == _everything(original)
    assert len(after["events"]) == 10
    assert restored.payments.charge_dict(str(last_pending["charge"]))["amount_refunded"] == 350


def test_a_snapshot_from_before_refunds_still_loads(tmp_path: Path) -> None:
    original = EmulatorState()
    original.create_transfer(amount=100)
    snapshot = original.export_snapshot()
    for key in ("charge_fields", "charges", "refund_fields", "refunds", "event_fields", "events"):
        del snapshot[key]

    restored = EmulatorState()
    _history(restored)  # replaced by the snapshot's (no) refunds

    assert restored.restore_snapshot(snapshot) == 1
    assert restored.payments.counts() == {"charges": 0, "refunds": 0, "events": 0}


def test_a_bad_refund_row_changes_nothing(tmp_path: Path) -> None:
    original = EmulatorState()
    _history(original)
    snapshot = original.export_snapshot()
    snapshot["refunds"][0][2] = 5_000  # more than its charge

    target = EmulatorState()
    target.create_transfer(amount=100)
    _history(target)
    before = _everything(target)

    with pytest.raises(SnapshotError, match="refunded beyond its amount"):
        target.restore_snapshot(snapshot)
    assert _everything(target) == before
    assert target.transfer_count() == 1
