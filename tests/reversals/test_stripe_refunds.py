"""The Stripe refunds intake: real PostgreSQL, the real SDK over HTTP to the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from reversal_pipeline.errors import StripeSystemicError
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.reversals.stripe_refunds import (
    RefundIntakeOutcome,
    StripeRefundsSettings,
    pull_stripe_refunds,
)
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer
from tests.plugins.marketplace import row_state, seed_rows

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def stripe(stripe_emulator: EmulatorServer, stripe_api_key: str) -> Iterator[StripeResource]:
    resource = StripeResource(
        api_key=stripe_api_key, api_base=stripe_emulator.url, requests_per_second=500
    )
    yield resource
    resource.close()


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> EmulatorClient:
    return stripe_emulator.control()


def pull(engine: sa.Engine, stripe: StripeResource, **kwargs: Any) -> Any:
    kwargs.setdefault("cursor", None)
    if kwargs["cursor"] is None:
        kwargs.setdefault("since", LONG_AGO)
    kwargs.setdefault("settings", StripeRefundsSettings())
    return pull_stripe_refunds(engine, stripe, **kwargs)


def events_of(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(r)
            for r in connection.execute(
                sa.text(
                    "SELECT refund_id, order_id, amount, currency, seller_transfer_id"
                    " FROM refund_events ORDER BY id"
                )
            ).mappings()
        ]


def unplaced_of(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(r)
            for r in connection.execute(
                sa.text(
                    "SELECT u.refund_id, u.reason, u.resolved_at, u.resolution,"
                    " array_agg(h.change ORDER BY h.id) AS changes"
                    " FROM unplaced_stripe_refunds u"
                    " JOIN unplaced_stripe_refund_history h ON h.unplaced_refund_id = u.id"
                    " GROUP BY u.id ORDER BY u.id"
                )
            ).mappings()
        ]


def test_a_succeeded_partial_refund_is_recorded_on_the_charge_transfer_group(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_tg")
    refund = control.create_refund(charge["id"], amount=2_500)

    summary = pull(engine, stripe)

    assert events_of(engine) == [
        {
            "refund_id": refund["id"],
            "order_id": "ord_tg",
            "amount": 2_500,
            "currency": "usd",
            "seller_transfer_id": None,
        }
    ]
    assert summary.recorded == 1
    assert summary.refunds[refund["id"]].outcome is RefundIntakeOutcome.RECORDED
    assert summary.events_read >= 2  # refund.created and charge.refunded
    assert summary.cursor is not None


def test_the_order_metadata_key_wins_over_transfer_group_when_present(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    named = control.create_charge(
        10_000, "usd", transfer_group="grp_1", metadata={"order_ref": "ord_meta"}
    )
    plain = control.create_charge(10_000, "usd", transfer_group="ord_plain")
    control.create_refund(named["id"], amount=100)
    control.create_refund(plain["id"], amount=100)

    pull(engine, stripe, settings=StripeRefundsSettings(order_metadata_key="order_ref"))

    assert sorted(e["order_id"] for e in events_of(engine)) == ["ord_meta", "ord_plain"]


def test_a_whole_charge_refund_is_a_whole_order_refund_not_an_over_refund(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    """The charge (10,000) includes the platform's fee; the seller got 9,000."""
    [row] = seed_rows(engine, control, 1, status="completed", amount=9_000)
    charge = control.create_charge(10_000, "usd", transfer_group=row.order_id)
    control.create_refund(charge["id"])  # the whole charge

    summary = pull(engine, stripe)
    [event] = events_of(engine)
    assert (event["amount"], event["currency"]) == (None, None)
    assert next(iter(summary.refunds.values())).whole_order
    process_refund_events(engine, run_id="t")
    state = row_state(engine, row.id)
    assert (state["status"], state["reversal_target"]) == ("reversal_pending", 9_000)


def test_partial_refunds_that_complete_the_charge_end_whole_order(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    """5,000 + 5,000 of a 10,000 charge: the seller (9,000) owes 9,000, not 10,000 refused."""
    [row] = seed_rows(engine, control, 1, status="completed", amount=9_000)
    charge = control.create_charge(10_000, "usd", transfer_group=row.order_id)
    first = control.create_refund(charge["id"], amount=5_000)
    pull(engine, stripe)  # the first alone: a partial refund
    process_refund_events(engine, run_id="t1")
    assert row_state(engine, row.id)["reversal_target"] == 5_000

    second = control.create_refund(charge["id"], amount=5_000)
    summary = pull(engine, stripe)  # both again: the first is known, the second completes it

    amounts = {e["refund_id"]: e["amount"] for e in events_of(engine)}
    assert amounts == {first["id"]: 5_000, second["id"]: None}
    assert summary.refunds[first["id"]].outcome is RefundIntakeOutcome.ALREADY_KNOWN
    process_refund_events(engine, run_id="t2")
    assert row_state(engine, row.id)["reversal_target"] == 9_000


def test_a_pending_refund_that_fails_records_nothing(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_pf")
    refund = control.create_refund(charge["id"], amount=1_000, status="pending")
    first = pull(engine, stripe)
    control.set_refund_status(refund["id"], "failed")
    second = pull(engine, stripe, cursor=first.cursor, since=None)

    assert events_of(engine) == []
    assert first.refunds[refund["id"]].outcome is RefundIntakeOutcome.NOT_SUCCEEDED
    assert second.refunds[refund["id"]].outcome is RefundIntakeOutcome.NOT_SUCCEEDED
    assert second.recorded == 0


def test_a_pending_refund_that_succeeds_is_recorded_once(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_ps")
    refund = control.create_refund(charge["id"], amount=1_000, status="pending")
    first = pull(engine, stripe)
    assert events_of(engine) == []
    control.set_refund_status(refund["id"], "succeeded")

    second = pull(engine, stripe, cursor=first.cursor, since=None)
    third = pull(engine, stripe)  # everything again, from the start

    assert [e["refund_id"] for e in events_of(engine)] == [refund["id"]]
    assert second.recorded == 1
    assert third.recorded == 0
    assert third.already_known == 1


def test_a_refund_the_webhook_recorded_first_is_already_known(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_wh")
    same = control.create_refund(charge["id"], amount=1_000)
    other = control.create_refund(charge["id"], amount=2_000)
    with engine.begin() as connection:
        request_reversal(
            connection, refund_id=same["id"], order_id="ord_wh", amount=1_000, currency="usd"
        )
        # The application converted the amount: the webhook's row stands.
        request_reversal(
            connection, refund_id=other["id"], order_id="ord_wh", amount=1_800, currency="usd"
        )

    summary = pull(engine, stripe)  # no error

    assert summary.refunds[same["id"]].outcome is RefundIntakeOutcome.ALREADY_KNOWN
    differs = summary.refunds[other["id"]]
    assert differs.outcome is RefundIntakeOutcome.DIFFERS_FROM_RECORDED
    assert "1800" in differs.detail
    assert "2000" in differs.detail
    assert {e["refund_id"]: e["amount"] for e in events_of(engine)} == {
        same["id"]: 1_000,
        other["id"]: 1_800,
    }
    assert summary.recorded == 0


def test_the_webhook_after_the_stripe_feed_is_a_duplicate(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_late_wh")
    refund = control.create_refund(charge["id"], amount=1_000)
    pull(engine, stripe)
    with engine.begin() as connection:
        receipt = request_reversal(
            connection, refund_id=refund["id"], order_id="ord_late_wh", amount=1_000, currency="usd"
        )
    assert receipt.duplicate
    assert len(events_of(engine)) == 1


def test_a_refund_naming_no_order_is_kept_unplaced_and_resolved_when_received(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd")  # no transfer_group, no metadata
    refund = control.create_refund(charge["id"], amount=700)

    first = pull(engine, stripe)
    second = pull(engine, stripe)

    assert events_of(engine) == []
    [row] = unplaced_of(engine)
    assert (row["refund_id"], row["reason"], row["resolved_at"]) == (refund["id"], "no_order", None)
    assert row["changes"] == ["first_seen"]  # seen twice, kept once
    assert first.refunds[refund["id"]].outcome is RefundIntakeOutcome.UNPLACED
    assert (first.unplaced_new, second.unplaced_new, second.unplaced) == (1, 0, 1)

    with engine.begin() as connection:  # the application records it by hand
        request_reversal(connection, refund_id=refund["id"], order_id="ord_found")
    third = pull(engine, stripe, cursor=second.cursor, since=None)
    [row] = unplaced_of(engine)
    assert row["resolved_at"] is not None
    assert "ord_found" in row["resolution"]
    assert row["changes"] == ["first_seen", "resolved"]
    assert third.unplaced_resolved == 1


def test_a_retry_places_an_unplaced_refund_once_its_order_can_be_read(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    """The charges carry the order in metadata, but the key was not configured yet."""
    charge = control.create_charge(10_000, "usd", metadata={"order_ref": "ord_late_key"})
    refund = control.create_refund(charge["id"], amount=700)
    pull(engine, stripe)
    assert unplaced_of(engine)[0]["resolved_at"] is None

    summary = pull(
        engine,
        stripe,
        since=datetime.now(UTC) + timedelta(days=400),  # no events: only the retry
        retry_unplaced=True,
        settings=StripeRefundsSettings(order_metadata_key="order_ref"),
    )

    assert summary.events_read == 0
    assert summary.refunds[refund["id"]].outcome is RefundIntakeOutcome.RECORDED
    assert [e["order_id"] for e in events_of(engine)] == ["ord_late_key"]
    [row] = unplaced_of(engine)
    assert row["changes"] == ["first_seen", "resolved"]
    assert "ord_late_key" in row["resolution"]


def test_a_bad_seller_transfer_metadata_is_unplaced_not_guessed(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    [mine] = seed_rows(engine, control, 1, status="completed", order_prefix="mine")
    [theirs] = seed_rows(engine, control, 1, status="completed", order_prefix="theirs")
    charge = control.create_charge(10_000, "usd", transfer_group=mine.order_id)
    wrong = control.create_refund(
        charge["id"], amount=100, metadata={"seller_transfer_id": str(theirs.id)}
    )
    junk = control.create_refund(charge["id"], amount=100, metadata={"seller_transfer_id": "x"})
    right = control.create_refund(
        charge["id"], amount=100, metadata={"seller_transfer_id": str(mine.id)}
    )

    pull(engine, stripe)

    assert {r["refund_id"]: r["reason"] for r in unplaced_of(engine)} == {
        wrong["id"]: "bad_seller_transfer",
        junk["id"]: "bad_seller_transfer",
    }
    [event] = events_of(engine)
    assert (event["refund_id"], event["seller_transfer_id"]) == (right["id"], mine.id)


def test_an_expired_cursor_falls_back_to_its_time(
    engine: sa.Engine,
    stripe: StripeResource,
    control: EmulatorClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_exp")
    control.create_refund(charge["id"], amount=100)
    first = pull(engine, stripe)
    control.advance_clock(31 * 86_400)  # Stripe has forgotten the cursor's event
    later = control.create_refund(charge["id"], amount=200)

    second = pull(engine, stripe, cursor=first.cursor, since=None)

    assert second.cursor_expired
    assert second.refunds[later["id"]].outcome is RefundIntakeOutcome.RECORDED
    assert len(events_of(engine)) == 2
    assert any(
        "expired" in r.getMessage() or "no longer has" in r.getMessage() for r in caplog.records
    )


def test_a_revoked_key_stops_the_pass_and_writes_nothing(
    engine: sa.Engine,
    stripe: StripeResource,
    control: EmulatorClient,
    stripe_api_key: str,
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_401")
    control.create_refund(charge["id"], amount=100)
    control.revoke_key(stripe_api_key)

    with pytest.raises(StripeSystemicError) as raised:
        pull(engine, stripe)

    assert stripe_api_key not in str(raised.value)
    assert events_of(engine) == []
    assert unplaced_of(engine) == []


def test_a_second_pass_over_the_same_events_records_nothing_new(
    engine: sa.Engine, stripe: StripeResource, control: EmulatorClient
) -> None:
    charge = control.create_charge(10_000, "usd", transfer_group="ord_twice")
    refunds = [control.create_refund(charge["id"], amount=100 * n) for n in (1, 2, 3)]

    first = pull(engine, stripe)
    second = pull(engine, stripe)

    assert (first.recorded, second.recorded, second.already_known) == (3, 0, 3)
    assert [e["refund_id"] for e in events_of(engine)] == [r["id"] for r in refunds]
