"""The bad-input catalogue of issue 7: one test per line, run through reversal_job itself.

Each test puts the bad input next to a good row, runs the job once (or twice
when the outcome needs a retry), and checks: the bad input gets its defined
outcome with an error that names the row, the good row is still reversed in
the same run (the run continues), and nothing is lost (no row or event
vanishes, nothing is reversed twice). The table is in ``docs/reliability.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main as cli
from reversal_pipeline.reconciliation.compare import compare
from reversal_pipeline.reconciliation.frames import db_transfers_frame, stripe_transfers_frame
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe.resource import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import materialization_metadata, run_reversal_job
from tests.plugins.marketplace import (
    SeededRow,
    advance_clock,
    attempts_of,
    row_state,
    seed_rows,
)

TRANSFER_DAY = datetime(2026, 11, 20, tzinfo=UTC)


def _reversals(emulator: EmulatorServer, transfer_id: str | None) -> list[dict]:
    assert transfer_id is not None
    return emulator.control().get_transfer(transfer_id)["reversals"]


def _row_count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM seller_transfers")).scalar())


def _failures_table(result: dg.ExecuteInProcessResult) -> str:
    """The ``failures`` table's rows as ``| cell | cell |`` lines (it is a typed table now)."""
    table = materialization_metadata(result, "reversal_outcomes")["failures"]
    return "\n".join(
        "| " + " | ".join(str(cell) for cell in record.data.values()) + " |"
        for record in table.records
    )


def _assert_good_row_reversed(emulator: EmulatorServer, engine: sa.Engine, row: SeededRow) -> None:
    assert row_state(engine, row.id)["status"] == "reversed"
    assert len(_reversals(emulator, row.stripe_transfer_id)) == 1


BAD_TRANSFER_IDS = [
    (None, "has no stripe_transfer_id"),
    ("", "has an empty stripe_transfer_id"),
    ("po_1Abc", "not shaped like tr_..."),
    ("tr_ab/../cd", "not shaped like tr_..."),
]


def test_missing_or_malformed_transfer_id_fails_the_row_without_calling_stripe(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [good] = seed_rows(engine, stripe_emulator.control(), 1)
    bad_rows = [
        (seed_rows(engine, None, 1, stripe_transfer_id=bad_id, order_prefix=f"bad{i}")[0], why)
        for i, (bad_id, why) in enumerate(BAD_TRANSFER_IDS)
    ]

    result = run_reversal_job(dagster_instance)

    assert result.success
    failures = _failures_table(result)
    for bad, why in bad_rows:
        state = row_state(engine, bad.id)
        assert state["status"] == "permanently_failed"
        assert state["next_retry_at"] is None
        assert f"seller transfer {bad.id} (order {bad.order_id})" in state["error_message"]
        assert why in state["error_message"]
        assert f"| {bad.id} |" in failures
        [audit] = attempts_of(engine, bad.id)
        assert (audit["action"], audit["status_after"]) == ("validation", "permanently_failed")
    _assert_good_row_reversed(stripe_emulator, engine, good)
    assert stripe_emulator.control().counters()["calls_total"] == 1  # the good row's only


def test_amount_or_currency_differing_from_the_transfer(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    stripe_api_key: str,
) -> None:
    """More than the transfer: refused by Stripe, nothing moves, the row fails for a person.

    Less than the transfer, or another currency: Stripe accepts a reversal of the
    row's amount (it cannot know), so the job records it; reconciliation's
    ``amount_or_currency_mismatch`` names the row the same day. See
    docs/reliability.md: the job does not pre-check the transfer (one more call
    per row), so for these two the error comes from reconciliation.
    """
    control = stripe_emulator.control()
    [good] = seed_rows(engine, control, 1)
    [larger] = seed_rows(engine, control, 1, amount=1_000, order_prefix="larger")
    [smaller] = seed_rows(engine, control, 1, amount=1_000, order_prefix="smaller")
    [other_currency] = seed_rows(engine, control, 1, currency="eur", order_prefix="cur")
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE seller_transfers SET amount = 5000 WHERE id = :id"), {"id": larger.id}
        )
        connection.execute(
            sa.text("UPDATE seller_transfers SET amount = 400 WHERE id = :id"), {"id": smaller.id}
        )
        connection.execute(
            sa.text("UPDATE seller_transfers SET currency = 'usd' WHERE id = :id"),
            {"id": other_currency.id},
        )
    settings = {"max_attempts": 2, "backoff_jitter": 0.0}

    first = run_reversal_job(dagster_instance, **settings)
    advance_clock(engine, 3600)
    second = run_reversal_job(dagster_instance, **settings)

    assert first.success
    assert second.success
    _assert_good_row_reversed(stripe_emulator, engine, good)
    state = row_state(engine, larger.id)
    assert state["status"] == "permanently_failed"
    assert "gave up after 2 attempt(s)" in state["error_message"]
    assert "greater than the amount that can be reversed" in state["error_message"]
    assert f"| {larger.id} |" in _failures_table(second)
    assert _reversals(stripe_emulator, larger.stripe_transfer_id) == []
    assert row_state(engine, smaller.id)["status"] == "reversed"
    assert [r["amount"] for r in _reversals(stripe_emulator, smaller.stripe_transfer_id)] == [400]
    other = row_state(engine, other_currency.id)
    assert other["status"] == "reversed"
    assert "the transfer is in EUR, not the row's USD" in other["error_message"]
    assert row_state(engine, good.id)["error_message"] is None

    stripe = StripeResource(api_key=stripe_api_key, api_base=stripe_emulator.url)
    day_end = TRANSFER_DAY + timedelta(days=1)
    stripe_frame = stripe_transfers_frame(stripe.iter_transfers_created(TRANSFER_DAY, day_end))
    with engine.connect() as connection:
        db_frame = db_transfers_frame(connection, TRANSFER_DAY, day_end)
    findings = compare(db_frame, stripe_frame, now=datetime.now(UTC))
    mismatched = set(
        findings.loc[findings["category"] == "amount_or_currency_mismatch", "seller_transfer_id"]
    )
    assert mismatched == {larger.id, smaller.id, other_currency.id}
    assert good.id not in set(findings["seller_transfer_id"])
    assert _row_count(engine) == 4


def test_refund_events_unknown_order_duplicate_and_not_completed_stay_open(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    control = stripe_emulator.control()
    [good] = seed_rows(engine, control, 1, status="completed")
    [unpaid] = seed_rows(engine, None, 1, status="pending", stripe_transfer_id=None)
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_good", order_id=good.order_id)
        duplicate = request_reversal(connection, refund_id="re_good", order_id=good.order_id)
        request_reversal(connection, refund_id="re_unknown", order_id="ord_nobody")
        request_reversal(connection, refund_id="re_unpaid", order_id=unpaid.order_id)
    assert duplicate.duplicate

    result = run_reversal_job(dagster_instance)

    assert result.success
    _assert_good_row_reversed(stripe_emulator, engine, good)
    with engine.connect() as connection:
        events = {
            e.refund_id: e
            for e in connection.execute(
                sa.text(
                    "SELECT refund_id, outcome, outcome_detail, processed_at FROM refund_events"
                )
            )
        }
    assert set(events) == {"re_good", "re_unknown", "re_unpaid"}  # the duplicate is one event
    assert events["re_good"].outcome == "reversal_requested"
    assert events["re_good"].processed_at is not None
    # Early refunds stay open until their order's transfer appears or is paid out.
    assert events["re_unknown"].outcome == "waiting_for_transfer"
    assert events["re_unknown"].processed_at is None
    assert "'ord_nobody'" in events["re_unknown"].outcome_detail
    assert events["re_unpaid"].outcome == "waiting_for_payout"
    assert events["re_unpaid"].processed_at is None
    assert f"transfer(s) {unpaid.id} of order" in events["re_unpaid"].outcome_detail
    assert row_state(engine, unpaid.id)["status"] == "pending"  # untouched, not reversed
    warnings = [
        e.message for e in dagster_instance.all_logs(result.run_id) if e.level >= 30
    ]  # WARNING and above
    assert any("refund re_unknown: waiting_for_transfer" in w for w in warnings)
    assert any("refund re_unpaid: waiting_for_payout" in w for w in warnings)
    intake = materialization_metadata(result, "refund_intake")
    assert (intake["events_processed"], intake["rows_requested"]) == (3, 1)


BAD_BODIES = ("malformed_json", "html_502", "truncated", "wrong_object")


def test_unreadable_stripe_answers_are_retried_and_never_double_reverse(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    """Transient for the row; whether or not Stripe committed, the retry ends with one reversal."""
    control = stripe_emulator.control()
    good, *bad_rows = seed_rows(engine, control, 1 + len(BAD_BODIES))
    for row, body in zip(bad_rows, BAD_BODIES, strict=True):
        # Every SDK attempt of the first run gets the bad answer (3 = 1 + max_network_retries).
        control.add_script(respond=body, method="POST", transfer_id=row.stripe_transfer_id, times=3)

    first = run_reversal_job(dagster_instance, backoff_jitter=0.0)

    assert first.success
    _assert_good_row_reversed(stripe_emulator, engine, good)
    failures = _failures_table(first)
    for row in bad_rows:
        state = row_state(engine, row.id)
        assert state["status"] == "reversal_pending"
        assert state["retry_count"] == 1
        assert state["error_message"].startswith("attempt 1 failed, retrying in 60s:")
        assert f"| {row.id} |" in failures
        [create] = [a for a in attempts_of(engine, row.id) if a["action"] == "create_reversal"]
        assert create["outcome"] == "transient"

    control.clear_scripts()
    advance_clock(engine, 61)
    assert run_reversal_job(dagster_instance).success

    for row, body in zip(bad_rows, BAD_BODIES, strict=True):
        state = row_state(engine, row.id)
        [reversal] = _reversals(stripe_emulator, row.stripe_transfer_id)
        assert state["status"] == "reversed", body
        assert state["stripe_reversal_id"] == reversal["id"]
        lookups = [a for a in attempts_of(engine, row.id) if a["action"] == "lookup_reversal"]
        # After-commit damage (all but the 502 page) is found by the lookup, not sent again.
        assert lookups[0]["outcome"] == ("not_found" if body == "html_502" else "found_existing")


def test_pending_row_with_null_next_retry_at_is_surfaced_not_lost(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [good] = seed_rows(engine, stripe_emulator.control(), 1)
    [edited] = seed_rows(engine, stripe_emulator.control(), 1, order_prefix="edited")
    # A row edited by hand before the NOT VALID constraint existed (it checks new writes).
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "ALTER TABLE seller_transfers"
                " DROP CONSTRAINT chk_reversal_pending_has_next_retry_at"
            )
        )
        connection.execute(
            sa.text("UPDATE seller_transfers SET next_retry_at = NULL WHERE id = :id"),
            {"id": edited.id},
        )
        connection.execute(
            sa.text(
                "ALTER TABLE seller_transfers ADD CONSTRAINT chk_reversal_pending_has_next_retry_at"
                " CHECK (status <> 'reversal_pending' OR next_retry_at IS NOT NULL) NOT VALID"
            )
        )

    result = run_reversal_job(dagster_instance)

    assert result.success
    _assert_good_row_reversed(stripe_emulator, engine, good)
    [check] = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == "no_pending_without_next_retry_at"
    ]
    assert not check.passed
    assert check.metadata["violating_ids"].value == [edited.id]
    assert row_state(engine, edited.id)["status"] == "reversal_pending"  # kept, not dropped

    monkeypatch.setenv("REVERSAL_DATABASE_URL", database_url)
    outcome = CliRunner().invoke(cli, ["validate-constraints"])
    assert outcome.exit_code == 1
    assert "chk_reversal_pending_has_next_retry_at" in outcome.output
    assert f"id={edited.id}" in outcome.output
    assert "not validated: fix the rows above first" in outcome.output
    with engine.connect() as connection:
        validated = connection.execute(
            sa.text(
                "SELECT convalidated FROM pg_constraint"
                " WHERE conname = 'chk_reversal_pending_has_next_retry_at'"
            )
        ).scalar()
    assert validated is False


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_rows_per_run": 0}, "max_rows_per_run"),
        ({"backoff_base_seconds": -5.0}, "backoff_base_seconds"),
    ],
    ids=["batch-0", "negative-backoff"],
)
def test_out_of_range_run_config_is_rejected_before_any_claim(
    settings: dict[str, float],
    named: str,
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)

    result = run_reversal_job(dagster_instance, **settings)

    assert not result.success
    text = "\n".join(str(e.event_specific_data) for e in result.all_events if e.is_failure)
    text += "\n".join(
        str(e.message) for e in dagster_instance.all_logs(result.run_id) if e.level >= 40
    )
    assert named in text
    state = row_state(engine, row.id)
    assert (state["claimed_by"], state["stripe_attempts"]) == (None, 0)
    assert attempts_of(engine, row.id) == []
    assert stripe_emulator.control().counters()["calls_total"] == 0
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
