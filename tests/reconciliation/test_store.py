"""Storing findings in real PostgreSQL: upsert, idempotence, resolution, incomplete runs."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift, reconciliation_runs
from reversal_pipeline.reconciliation.store import (
    FindingScope,
    RunCounts,
    StoredRun,
    latest_findings_for_day,
    open_findings,
    record_incomplete_run,
    store_findings,
)
from tests.reconciliation.builders import (
    DAY,
    NOW,
    db_row,
    drift_findings_for,
    insert_rows,
    snapshot,
)

LATER = NOW + timedelta(days=1)
COUNTS = RunCounts(db_rows=2, stripe_transfers=1, stripe_calls=1)


def two_findings() -> pd.DataFrame:
    """missing_at_stripe for row 1 and an amount mismatch for row 2."""
    return drift_findings_for([db_row(1), db_row(2, amount=5)], [snapshot("tr_2")])


def one_finding() -> pd.DataFrame:
    """Row 1's transfer showed up at Stripe; only row 2's amount mismatch remains."""
    return drift_findings_for(
        [db_row(1), db_row(2, amount=5)], [snapshot("tr_1"), snapshot("tr_2")]
    )


def store(engine: sa.Engine, findings: pd.DataFrame, *, now=NOW, day: date = DAY) -> StoredRun:
    return store_findings(
        engine, day, findings, now=now, started_at=now, run_id=f"run-{now:%d}", counts=COUNTS
    )


def drift_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        query = sa.select(reconciliation_drift).order_by(reconciliation_drift.c.finding_key)
        return [dict(row) for row in connection.execute(query).mappings()]


def run_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        query = sa.select(reconciliation_runs).order_by(reconciliation_runs.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def test_store_writes_each_finding_with_first_and_last_seen(engine: sa.Engine) -> None:
    stored = store(engine, two_findings())

    rows = drift_rows(engine)
    assert [(r["finding_key"], r["category"]) for r in rows] == [
        ("1", "missing_at_stripe"),
        ("2", "amount_or_currency_mismatch"),
    ]
    assert all(r["first_seen_at"] == r["last_seen_at"] == NOW for r in rows)
    assert all(r["resolved_at"] is None and r["last_run_id"] == "run-23" for r in rows)
    assert rows[1]["details"] == {
        "status": "completed",
        "stripe_amount": 1000,
        "stripe_currency": "eur",
        "reversal_target": 0,
        "db_amount_reversed": 0,
    }
    assert (rows[1]["amount"], rows[1]["stripe_transfer_id"]) == (5, "tr_2")
    assert (stored.upserted, stored.resolved, stored.open_findings) == (2, 0, 2)


def test_store_records_a_complete_run_with_its_counts(engine: sa.Engine) -> None:
    store(engine, two_findings())

    [run] = run_rows(engine)
    assert run["complete"] is True
    assert (run["partition_day"], run["started_at"], run["finished_at"]) == (DAY, NOW, NOW)
    assert (run["db_rows"], run["stripe_transfers"], run["stripe_calls"]) == (2, 1, 1)
    assert run["open_findings"] == 2


def test_rerun_with_the_same_data_only_moves_last_seen(engine: sa.Engine) -> None:
    store(engine, two_findings())
    before = drift_rows(engine)

    store(engine, two_findings(), now=LATER)

    after = drift_rows(engine)
    moving = {"last_seen_at", "last_run_id"}
    assert [{k: v for k, v in r.items() if k not in moving} for r in after] == [
        {k: v for k, v in r.items() if k not in moving} for r in before
    ]
    assert all(r["last_seen_at"] == LATER and r["first_seen_at"] == NOW for r in after)


def test_finding_no_longer_seen_is_resolved_not_deleted(engine: sa.Engine) -> None:
    store(engine, two_findings())

    stored = store(engine, one_finding(), now=LATER)

    resolved, still_open = drift_rows(engine)
    assert (resolved["finding_key"], resolved["resolved_at"]) == ("1", LATER)
    assert resolved["last_seen_at"] == NOW
    assert still_open["resolved_at"] is None
    assert (stored.resolved, stored.open_findings) == (1, 1)


def test_resolved_finding_seen_again_reopens_and_keeps_first_seen(engine: sa.Engine) -> None:
    store(engine, two_findings())
    store(engine, one_finding(), now=LATER)

    store(engine, two_findings(), now=LATER + timedelta(days=1))

    reopened = drift_rows(engine)[0]
    assert reopened["resolved_at"] is None
    assert reopened["first_seen_at"] == NOW


def test_clean_run_resolves_every_open_finding_of_the_day_only(engine: sa.Engine) -> None:
    other_day = DAY - timedelta(days=1)
    store(engine, two_findings())
    store(engine, two_findings(), day=other_day)

    store(engine, drift_findings_for([], []), now=LATER)

    with engine.connect() as connection:
        assert open_findings(connection, DAY).empty
        assert len(open_findings(connection, other_day)) == 2
        assert latest_findings_for_day(connection, DAY).is_clean


def test_incomplete_run_resolves_nothing_and_the_day_is_not_clean(engine: sa.Engine) -> None:
    store(engine, two_findings())

    record_incomplete_run(
        engine,
        DAY,
        started_at=LATER,
        finished_at=LATER,
        run_id="run-failed",
        error_message="Stripe listing failed after 3 pages: 500",
    )

    assert [r["resolved_at"] for r in drift_rows(engine)] == [None, None]
    incomplete = run_rows(engine)[-1]
    assert (incomplete["complete"], incomplete["open_findings"]) == (False, None)
    assert incomplete["error_message"].startswith("Stripe listing failed")
    with engine.connect() as connection:
        day = latest_findings_for_day(connection, DAY)
    assert not day.is_clean
    assert day.latest_run is not None
    assert day.latest_run["run_id"] == "run-failed"
    assert day.last_complete_run is not None
    assert day.last_complete_run["run_id"] == "run-23"
    assert len(day.findings) == 2


def test_day_whose_only_run_failed_is_not_clean_even_without_findings(engine: sa.Engine) -> None:
    record_incomplete_run(
        engine, DAY, started_at=NOW, finished_at=NOW, run_id="r", error_message="401"
    )

    with engine.connect() as connection:
        day = latest_findings_for_day(connection, DAY)
        never_run = latest_findings_for_day(connection, DAY - timedelta(days=5))

    assert day.findings.empty
    assert not day.is_clean
    assert never_run.latest_run is None
    assert not never_run.is_clean


def test_findings_in_grace_do_not_make_the_day_dirty_until_their_grace_ends(
    engine: sa.Engine,
) -> None:
    findings = drift_findings_for([db_row(1, updated_at=NOW - timedelta(minutes=5))], [])

    stored = store(engine, findings)

    [row] = drift_rows(engine)
    assert row["in_grace"] is True
    assert row["grace_ends_at"] == NOW + timedelta(minutes=55)
    assert stored.open_findings == 0
    with engine.connect() as connection:
        assert latest_findings_for_day(connection, DAY, as_of=NOW).is_clean
        ends = NOW + timedelta(minutes=55)
        assert latest_findings_for_day(connection, DAY, as_of=ends - timedelta(seconds=1)).is_clean
        # Grace over: the finding is drift, though no run has looked again yet.
        assert not latest_findings_for_day(connection, DAY, as_of=ends).is_clean


def test_an_older_run_stored_last_never_overwrites_a_later_started_runs_findings(
    engine: sa.Engine,
) -> None:
    """Run B started after run A but stored first; A's older snapshot must not resolve B's."""
    run_a_started, run_b_started = NOW, NOW + timedelta(minutes=10)
    newer = store_findings(
        engine,
        DAY,
        two_findings(),
        now=run_b_started + timedelta(minutes=1),
        started_at=run_b_started,
        run_id="run-b",
        counts=COUNTS,
    )
    older = store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=run_b_started + timedelta(minutes=2),
        started_at=run_a_started,
        run_id="run-a",
        counts=COUNTS,
    )

    assert [r["resolved_at"] for r in drift_rows(engine)] == [None, None]
    assert {r["last_run_id"] for r in drift_rows(engine)} == {"run-b"}
    assert older.superseded_by == "run-b"
    assert (older.upserted, older.resolved, older.open_findings) == (0, 0, 2)
    runs = run_rows(engine)
    assert [(r["run_id"], r["complete"]) for r in runs] == [("run-b", True), ("run-a", False)]
    assert runs[1]["error_message"].startswith("superseded: run run-b")
    assert newer.superseded_by is None


def test_full_run_stored_after_a_later_incremental_run_keeps_what_that_run_saw(
    engine: sa.Engine,
) -> None:
    """Row 1 changed between the two starts: only the later (incremental) run saw it."""
    insert_rows(engine, [db_row(1, updated_at=NOW + timedelta(minutes=5)), db_row(2)])
    incremental = store_findings(
        engine,
        DAY,
        drift_findings_for([db_row(1)], []),  # row 1's transfer missing at Stripe
        now=NOW + timedelta(minutes=11),
        started_at=NOW + timedelta(minutes=10),
        run_id="incremental",
        counts=COUNTS,
        scope=FindingScope(seller_transfer_ids=(1,), stripe_transfer_ids=("tr_1",)),
    )
    full = store_findings(
        engine,
        DAY,
        drift_findings_for([db_row(1), db_row(2, amount=5)], [snapshot("tr_1"), snapshot("tr_2")]),
        now=NOW + timedelta(minutes=15),
        started_at=NOW,
        run_id="full",
        counts=COUNTS,
    )

    assert incremental.superseded_by is None
    assert full.superseded_by is None  # it still stores what it alone checked
    open_rows = {
        (r["finding_key"], r["category"], r["last_run_id"])
        for r in drift_rows(engine)
        if r["resolved_at"] is None
    }
    assert open_rows == {
        ("1", "missing_at_stripe", "incremental"),
        ("2", "amount_or_currency_mismatch", "full"),
    }


def test_incremental_run_resolves_only_findings_of_the_rows_it_rechecked(
    engine: sa.Engine,
) -> None:
    store(engine, two_findings())  # rows 1 and 2 both have a finding

    stored = store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=LATER,
        started_at=LATER,
        run_id="incremental",
        counts=COUNTS,
        scope=FindingScope(seller_transfer_ids=(1,), stripe_transfer_ids=("tr_1",)),
    )

    assert stored.resolved == 1
    open_keys = [r["finding_key"] for r in drift_rows(engine) if r["resolved_at"] is None]
    assert open_keys == ["2"]
    assert run_rows(engine)[-1]["kind"] == "incremental"


def test_open_findings_lists_most_severe_then_largest_first(engine: sa.Engine) -> None:
    rows = [
        db_row(1, amount=100),
        db_row(2, amount=900),
        db_row(3, status="reversed", stripe_reversal_id="trr_3", amount=50),
    ]
    store(engine, drift_findings_for(rows, [snapshot("tr_3", 50)]))

    with engine.connect() as connection:
        listed = open_findings(connection)

    assert listed["finding_key"].tolist() == ["3", "2", "1", "3"]
    assert listed["severity"].tolist() == ["critical", "high", "high", "high"]
    assert str(listed["amount"].dtype) == "Int64"


def test_many_findings_are_stored_in_one_batch(engine: sa.Engine) -> None:
    rows = [db_row(i) for i in range(1, 5001)]

    stored = store(engine, drift_findings_for(rows, []))

    assert (stored.upserted, stored.open_findings) == (5000, 5000)
