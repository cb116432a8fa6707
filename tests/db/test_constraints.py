"""The schema refuses bad rows, naming the constraint it enforces."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from reversal_pipeline.db.tables import refund_events, reversal_attempts, seller_transfers


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "order_id": "ord_1",
        "seller_id": "seller_1",
        "stripe_transfer_id": "tr_1",
        "amount": 1000,
        "currency": "usd",
        "status": "completed",
        "transferred_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    row.update(overrides)
    return row


def _insert(engine: sa.Engine, **overrides: object) -> int:
    with engine.begin() as connection:
        return connection.execute(
            sa.insert(seller_transfers).values(**_row(**overrides)).returning(seller_transfers.c.id)
        ).scalar_one()


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"amount": 0}, "chk_seller_transfers_amount_positive"),
        ({"amount": -500}, "chk_seller_transfers_amount_positive"),
        ({"status": "refunded"}, "chk_seller_transfers_status"),
        ({"currency": "USD"}, "chk_seller_transfers_currency_format"),
        ({"currency": "usdx"}, "chk_seller_transfers_currency_format"),
        ({"currency": "u1d"}, "chk_seller_transfers_currency_format"),
        ({"status": "reversed"}, "chk_seller_transfers_reversed_has_reversal_id"),
    ],
)
def test_bad_rows_are_rejected_naming_the_constraint(
    engine: sa.Engine, overrides: dict[str, object], constraint: str
) -> None:
    with pytest.raises(sa.exc.IntegrityError, match=constraint):
        _insert(engine, **overrides)


def test_pending_reversal_without_next_retry_at_is_rejected_on_insert(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="chk_reversal_pending_has_next_retry_at"):
        _insert(engine, status="reversal_pending", next_retry_at=None)


def test_pending_reversal_without_next_retry_at_is_rejected_on_update(engine: sa.Engine) -> None:
    row_id = _insert(engine)
    with pytest.raises(sa.exc.IntegrityError, match="chk_reversal_pending_has_next_retry_at"):
        with engine.begin() as connection:
            connection.execute(
                sa.update(seller_transfers)
                .where(seller_transfers.c.id == row_id)
                .values(status="reversal_pending")
            )


def test_two_rows_for_one_stripe_transfer_are_rejected(engine: sa.Engine) -> None:
    _insert(engine, stripe_transfer_id="tr_same")
    with pytest.raises(sa.exc.IntegrityError, match="uq_seller_transfers_stripe_transfer_id"):
        _insert(engine, stripe_transfer_id="tr_same", order_id="ord_2")


def test_one_refund_event_per_refund_id(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.insert(refund_events).values(refund_id="re_1", order_id="ord_1"))
    with pytest.raises(sa.exc.IntegrityError, match="uq_refund_events_refund_id"):
        with engine.begin() as connection:
            connection.execute(sa.insert(refund_events).values(refund_id="re_1", order_id="o2"))


def _audit(row_id: int, **values: object) -> dict[str, object]:
    return {
        "seller_transfer_id": row_id,
        "action": "create_reversal",
        "outcome": "reversed",
        "actor": "test",
        **values,
    }


def test_at_most_one_reversed_outcome_per_seller_transfer(engine: sa.Engine) -> None:
    row_id = _insert(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(reversal_attempts).values(**_audit(row_id, status_after="reversed"))
        )
    with pytest.raises(sa.exc.IntegrityError, match="uq_reversal_attempts_one_reversed"):
        with engine.begin() as connection:
            connection.execute(
                sa.insert(reversal_attempts).values(
                    **_audit(row_id, status_after="reversed", action="resolve")
                )
            )


def test_audit_trail_is_append_only(engine: sa.Engine) -> None:
    row_id = _insert(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(reversal_attempts).values(**_audit(row_id)))
    for statement in (
        sa.update(reversal_attempts).values(outcome="x"),
        sa.delete(reversal_attempts),
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as connection:
                connection.execute(statement)


def test_updated_at_is_kept_by_the_database(engine: sa.Engine) -> None:
    row_id = _insert(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET updated_at = '2000-01-01' WHERE id = :id"),
            {"id": row_id},
        )
        updated = connection.execute(
            sa.select(seller_transfers.c.updated_at).where(seller_transfers.c.id == row_id)
        ).scalar_one()
    assert updated.year > 2000
