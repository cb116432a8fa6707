"""``store``: what a stored run and its findings hold, field by field (from mutation survivors)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift, reconciliation_runs
from reversal_pipeline.reconciliation.store import (
    FindingScope,
    RunCounts,
    counts_as_drift,
    latest_findings_for_day,
    open_findings,
    record_incomplete_run,
    store_findings,
)
from tests.reconciliation.builders import DAY, NOW, db_row, drift_findings_for, snapshot

COUNTS = RunCounts(db_rows=7, stripe_transfers=5, stripe_calls=3)


def _runs(engine: sa.Engine) -> list[dict]:
    with engine.connect() as connection:
        query = sa.select(reconciliation_runs).order_by(reconciliation_runs.c.id)
        return [dict(r) for r in connection.execute(query).mappings()]


def _drift(engine: sa.Engine) -> list[dict]:
    with engine.connect() as connection:
        query = sa.select(reconciliation_drift).order_by(
            reconciliation_drift.c.category, reconciliation_drift.c.finding_key
        )
        return [dict(r) for r in connection.execute(query).mappings()]


def test_a_stored_finding_keeps_every_column(engine: sa.Engine) -> None:
    findings = drift_findings_for(
        [db_row(1, currency="usd", updated_at=NOW - timedelta(minutes=10))],
        [snapshot("tr_1", 1000, currency="eur")],
    )

    stored = store_findings(
        engine, DAY, findings, now=NOW, started_at=NOW, run_id="run-1", counts=COUNTS
    )

    [row] = _drift(engine)
    assert row["partition_day"] == DAY
    assert (row["category"], row["severity"], row["finding_key"]) == (
        "amount_or_currency_mismatch",
        "high",
        "1",
    )
    assert (row["seller_transfer_id"], row["stripe_transfer_id"]) == (1, "tr_1")
    assert row["stripe_reversal_ids"] is None
    assert (row["amount"], row["currency"]) == (1000, "usd")
    assert row["explanation"] == findings["explanation"].iloc[0]
    assert row["details"] == {
        "status": "completed",
        "stripe_amount": 1000,
        "stripe_currency": "eur",
        "reversal_target": 0,
        "db_amount_reversed": 0,
    }
    assert (row["in_grace"], row["grace_ends_at"]) == (True, NOW + timedelta(minutes=50))
    assert (row["first_seen_at"], row["last_seen_at"], row["resolved_at"]) == (NOW, NOW, None)
    assert stored.open_findings == 0  # in grace


def test_a_rerun_refreshes_every_changing_column_of_a_finding(engine: sa.Engine) -> None:
    in_grace = drift_findings_for(
        [db_row(1, amount=5, updated_at=NOW - timedelta(minutes=10))], [snapshot("tr_1", 1000)]
    )
    store_findings(engine, DAY, in_grace, now=NOW, started_at=NOW, run_id="a", counts=COUNTS)
    later = NOW + timedelta(hours=3)
    settled = drift_findings_for(
        [db_row(1, amount=6, updated_at=NOW - timedelta(minutes=10))],
        [snapshot("tr_1", 1000, reversals=[])],
        now=later,
    )

    store_findings(engine, DAY, settled, now=later, started_at=later, run_id="b", counts=COUNTS)

    [row] = _drift(engine)
    assert (row["amount"], row["in_grace"], row["grace_ends_at"]) == (6, False, None)
    assert (row["first_seen_at"], row["last_seen_at"], row["last_run_id"]) == (NOW, later, "b")


def test_a_run_row_records_the_kind_the_counts_and_its_coverage(engine: sa.Engine) -> None:
    covered = NOW - timedelta(minutes=3)

    store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=NOW + timedelta(minutes=1),
        started_at=NOW,
        run_id="run-1",
        counts=COUNTS,
        covered_until=covered,
    )
    store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=NOW + timedelta(minutes=3),
        started_at=NOW + timedelta(minutes=2),
        run_id="run-2",
        counts=RunCounts(),
    )

    first, second = _runs(engine)
    assert (first["kind"], first["complete"], first["error_message"]) == ("full", True, None)
    assert (first["db_rows"], first["stripe_transfers"], first["stripe_calls"]) == (7, 5, 3)
    assert (first["started_at"], first["finished_at"]) == (NOW, NOW + timedelta(minutes=1))
    assert first["covered_until"] == covered
    assert second["covered_until"] == NOW + timedelta(minutes=2)  # default: its start
    assert (second["db_rows"], second["stripe_transfers"], second["stripe_calls"]) == (
        None,
        None,
        None,
    )


def test_an_incomplete_run_records_its_counts_and_kind(engine: sa.Engine) -> None:
    record_incomplete_run(
        engine,
        DAY,
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=5),
        run_id="r",
        error_message="boom",
        counts=COUNTS,
    )
    record_incomplete_run(
        engine, DAY, started_at=NOW, finished_at=NOW, run_id=None, error_message="no counts"
    )

    first, second = _runs(engine)
    assert (first["db_rows"], first["stripe_transfers"], first["stripe_calls"]) == (7, 5, 3)
    assert (first["kind"], first["finished_at"], first["run_id"]) == (
        "full",
        NOW + timedelta(seconds=5),
        "r",
    )
    assert (second["db_rows"], second["run_id"], second["error_message"]) == (
        None,
        None,
        "no counts",
    )


def test_a_superseded_run_names_the_later_run_and_its_start(engine: sa.Engine) -> None:
    later_start = NOW + timedelta(minutes=10)
    store_findings(
        engine,
        DAY,
        drift_findings_for([db_row(1)], []),
        now=later_start,
        started_at=later_start,
        run_id="newer",
        counts=COUNTS,
    )

    older = store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=later_start + timedelta(minutes=1),
        started_at=NOW,
        run_id="older",
        counts=COUNTS,
    )

    assert (older.superseded_by, older.upserted, older.resolved, older.open_findings) == (
        "newer",
        0,
        0,
        1,
    )
    superseded = _runs(engine)[-1]
    assert (superseded["complete"], superseded["open_findings"]) == (False, None)
    assert superseded["finished_at"] == later_start + timedelta(minutes=1)
    assert (superseded["db_rows"], superseded["kind"]) == (7, "full")
    assert superseded["error_message"] == (
        f"superseded: run newer of {DAY} started later (2026-11-23 06:10:00) and already "
        "stored its findings; this older snapshot stored nothing"
    )
    assert _drift(engine)[0]["resolved_at"] is None


def test_a_run_of_the_same_start_is_not_superseded(engine: sa.Engine) -> None:
    """Strictly later: a run stored twice with one start (a retried store) stores again."""
    for _ in range(2):
        stored = store_findings(
            engine,
            DAY,
            drift_findings_for([db_row(1)], []),
            now=NOW,
            started_at=NOW,
            run_id="same",
            counts=COUNTS,
        )
        assert stored.superseded_by is None
    assert [r["complete"] for r in _runs(engine)] == [True, True]


def test_an_incremental_run_is_superseded_by_a_later_incremental_one(engine: sa.Engine) -> None:
    scope = FindingScope(seller_transfer_ids=(1,), stripe_transfer_ids=("tr_1",))
    later_start = NOW + timedelta(minutes=5)
    store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=later_start,
        started_at=later_start,
        run_id="newer",
        counts=COUNTS,
        scope=scope,
    )

    older = store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=later_start,
        started_at=NOW,
        run_id="older",
        counts=COUNTS,
        scope=scope,
    )
    full = store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=later_start,
        started_at=NOW,
        run_id="full",
        counts=COUNTS,
    )

    assert older.superseded_by == "newer"
    assert _runs(engine)[1]["kind"] == "incremental"
    assert full.superseded_by is None  # a full run is superseded only by a full one


def test_findings_without_details_store_an_empty_object_and_text_is_kept(
    engine: sa.Engine,
) -> None:
    findings = drift_findings_for([db_row(1), db_row(2)], [])
    findings["details"] = [None, '{"from": "csv"}']

    store_findings(engine, DAY, findings, now=NOW, started_at=NOW, run_id="r", counts=COUNTS)

    assert [r["details"] for r in _drift(engine)] == [{}, {"from": "csv"}]


def test_open_findings_puts_unknown_amounts_last_and_reads_typed_columns(
    engine: sa.Engine,
) -> None:
    findings = drift_findings_for([db_row(1, amount=10), db_row(2, amount=20)], [])
    findings["amount"] = pd.array([pd.NA, 20], dtype="Int64")
    store_findings(engine, DAY, findings, now=NOW, started_at=NOW, run_id="r", counts=COUNTS)
    other_day = DAY - timedelta(days=1)
    store_findings(
        engine,
        other_day,
        drift_findings_for([db_row(3, amount=5)], []),
        now=NOW,
        started_at=NOW,
        run_id="r",
        counts=COUNTS,
    )

    with engine.connect() as connection:
        day_only = open_findings(connection, DAY)
        every_day = open_findings(connection)

    assert day_only["finding_key"].tolist() == ["2", "1"]
    assert every_day["finding_key"].tolist() == ["2", "3", "1"]
    assert str(day_only["seller_transfer_id"].dtype) == "Int64"
    assert day_only["in_grace"].dtype == bool


def test_latest_run_is_the_latest_started_then_the_last_written(engine: sa.Engine) -> None:
    for run_id, started in (("late", NOW), ("early", NOW - timedelta(hours=1)), ("tie", NOW)):
        record_incomplete_run(
            engine, DAY, started_at=started, finished_at=NOW, run_id=run_id, error_message="x"
        )
    store_findings(
        engine,
        DAY,
        drift_findings_for([], []),
        now=NOW,
        started_at=NOW - timedelta(hours=2),
        run_id="complete",
        counts=COUNTS,
    )

    with engine.connect() as connection:
        day = latest_findings_for_day(connection, DAY, as_of=NOW)
        other = latest_findings_for_day(connection, date(2026, 1, 1))

    assert day.latest_run is not None
    assert day.latest_run["run_id"] == "tie"
    assert day.last_complete_run is not None
    assert day.last_complete_run["run_id"] == "complete"
    assert day.as_of == NOW
    assert other.as_of > NOW - timedelta(days=365 * 10)  # defaults to the real now
    assert not day.is_clean


@pytest.mark.parametrize(
    ("in_grace", "ends", "drift"),
    [
        (False, None, True),
        (True, None, True),
        (True, NOW, True),
        (True, NOW + timedelta(microseconds=1), False),
        (True, NOW - timedelta(seconds=1), True),
    ],
)
def test_counts_as_drift_at_the_grace_boundary(in_grace: bool, ends: object, drift: bool) -> None:
    findings = pd.DataFrame({"in_grace": [in_grace], "grace_ends_at": [ends]})

    assert counts_as_drift(findings, NOW).tolist() == [drift]


def test_a_day_with_only_in_grace_findings_counts_them_as_drift_at_grace_end(
    engine: sa.Engine,
) -> None:
    findings = drift_findings_for([db_row(1, updated_at=NOW - timedelta(minutes=1))], [])
    ends = NOW + timedelta(minutes=59)
    store_findings(engine, DAY, findings, now=NOW, started_at=NOW, run_id="a", counts=COUNTS)

    at_end = store_findings(
        engine,
        DAY - timedelta(days=1),
        drift_findings_for([], []),
        now=ends,
        started_at=ends,
        run_id="b",
        counts=COUNTS,
    )
    again = store_findings(
        engine,
        DAY,
        findings,
        now=ends,
        started_at=ends,
        run_id="c",
        counts=COUNTS,
    )

    assert at_end.open_findings == 0  # another day's count
    assert again.open_findings == 1  # its grace ends exactly now: drift
