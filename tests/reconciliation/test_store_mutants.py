"""``store``: what a stored run and its findings hold, field by field (from mutation survivors)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift, reconciliation_runs
from reversal_pipeline.reconciliation.compare import CATEGORY_DTYPE
from reversal_pipeline.reconciliation.store import (
    FindingScope,
    FindingSource,
    RunCounts,
    counts_as_drift,
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
    update_row,
)

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


# --------------------------------------------------------------- the refund side, the lock


def _as_refund_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """The same rows, as the refund side's findings (``store`` does not read categories)."""
    relabelled = findings.copy()
    relabelled["category"] = pd.Categorical(
        ["refund_not_received"] * len(findings), dtype=CATEGORY_DTYPE
    )
    return relabelled


def test_each_side_records_its_runs_and_reads_only_its_own(engine: sa.Engine) -> None:
    store_findings(
        engine,
        DAY,
        drift_findings_for([db_row(1)], []),
        now=NOW,
        started_at=NOW,
        run_id="transfers",
        counts=COUNTS,
    )
    refund_stored = store_findings(
        engine,
        DAY,
        _as_refund_findings(drift_findings_for([db_row(2)], [])),
        now=NOW,
        started_at=NOW - timedelta(hours=2),
        run_id="refunds",
        counts=RunCounts(db_rows=1, stripe_calls=2, stripe_refunds=4, pending_refunds=1),
        source=FindingSource.REFUNDS,
    )
    record_incomplete_run(
        engine,
        DAY,
        started_at=NOW - timedelta(hours=1),
        finished_at=NOW,
        run_id="refunds-failed",
        error_message="listing failed",
        source=FindingSource.REFUNDS,
    )

    assert [(r["run_id"], r["source"]) for r in _runs(engine)] == [
        ("transfers", "transfers"),
        ("refunds", "refunds"),
        ("refunds-failed", "refunds"),
    ]
    assert refund_stored.superseded_by is None  # the transfer run started later: not its side
    refund_run = _runs(engine)[1]
    assert refund_stored.run_row_id == refund_run["id"]
    assert (refund_run["stripe_refunds"], refund_run["pending_refunds"]) == (4, 1)
    with engine.connect() as connection:
        refunds = open_findings(connection, source=FindingSource.REFUNDS)
        transfers = open_findings(connection, source=FindingSource.TRANSFERS)
        refund_day = latest_findings_for_day(
            connection, DAY, as_of=NOW, source=FindingSource.REFUNDS
        )
        transfer_day = latest_findings_for_day(connection, DAY, as_of=NOW)
    assert (refunds["finding_key"].tolist(), refunds["source"].tolist()) == (["2"], ["refunds"])
    assert transfers["finding_key"].tolist() == ["1"]
    assert refund_day.partition_day == DAY
    assert refund_day.latest_run is not None
    assert refund_day.last_complete_run is not None
    assert (refund_day.latest_run["run_id"], refund_day.last_complete_run["run_id"]) == (
        "refunds-failed",
        "refunds",
    )
    assert transfer_day.latest_run is not None
    assert transfer_day.latest_run["run_id"] == "transfers"
    assert sorted(transfer_day.findings["finding_key"]) == ["1", "2"]  # both sides' findings


def test_a_superseded_refund_run_is_recorded_on_the_refund_side(engine: sa.Engine) -> None:
    later_start = NOW + timedelta(minutes=10)
    refund_finding = _as_refund_findings(drift_findings_for([db_row(1)], []))
    store_findings(
        engine,
        DAY,
        refund_finding,
        now=later_start,
        started_at=later_start,
        run_id=None,  # a run id is optional: superseded by a run without one
        counts=COUNTS,
        source=FindingSource.REFUNDS,
    )

    older = store_findings(
        engine,
        DAY,
        refund_finding.iloc[:0],
        now=later_start,
        started_at=NOW,
        run_id="older",
        counts=COUNTS,
        source=FindingSource.REFUNDS,
    )

    assert older.superseded_by == ""  # superseded, by a run that had no id
    superseded = _runs(engine)[-1]
    assert (superseded["run_id"], superseded["source"], superseded["complete"]) == (
        "older",
        "refunds",
        False,
    )
    assert older.run_row_id == superseded["id"]


def test_a_superseded_run_counts_findings_whose_grace_ended_by_its_end(
    engine: sa.Engine,
) -> None:
    later_start = NOW + timedelta(minutes=10)
    in_grace = drift_findings_for([db_row(1, updated_at=NOW - timedelta(minutes=1))], [])
    grace_ends = in_grace["grace_ends_at"].iloc[0]
    store_findings(
        engine,
        DAY,
        in_grace,
        now=later_start,
        started_at=later_start,
        run_id="newer",
        counts=COUNTS,
    )

    older = store_findings(
        engine,
        DAY,
        in_grace.iloc[:0],
        now=grace_ends,
        started_at=NOW,
        run_id="older",
        counts=COUNTS,
    )

    assert older.superseded_by == "newer"
    assert older.open_findings == 1  # in grace when stored, its grace ended by now


def test_the_refund_side_resolves_a_finding_of_a_row_changed_since_its_start(
    engine: sa.Engine,
) -> None:
    """Only the transfer side skips rows changed since its start; refund findings are
    about refunds, and a changed row makes the refund day stale instead."""
    insert_rows(engine, [db_row(1)])
    update_row(engine, 1, amount=1001)  # stamped changed now, after the run's start (NOW)
    refund_finding = _as_refund_findings(drift_findings_for([db_row(1)], []))
    store_findings(
        engine,
        DAY,
        refund_finding,
        now=NOW - timedelta(hours=1),
        started_at=NOW - timedelta(hours=1),
        run_id="saw-it",
        counts=COUNTS,
        source=FindingSource.REFUNDS,
    )

    stored = store_findings(
        engine,
        DAY,
        refund_finding.iloc[:0],
        now=NOW,
        started_at=NOW,
        run_id="gone",
        counts=COUNTS,
        source=FindingSource.REFUNDS,
    )

    assert (stored.upserted, stored.resolved) == (0, 1)
    assert _drift(engine)[0]["resolved_at"] == NOW


def _store_a_run(engine: sa.Engine, day: date, *, complete: bool) -> None:
    if complete:
        empty = drift_findings_for([], [])
        store_findings(engine, day, empty, now=NOW, started_at=NOW, run_id="r", counts=COUNTS)
    else:
        record_incomplete_run(
            engine, day, started_at=NOW, finished_at=NOW, run_id="r", error_message="x"
        )


@pytest.mark.parametrize("complete", [True, False])
def test_storing_a_day_waits_for_that_days_lock(
    engine: sa.Engine, database_url: str, complete: bool
) -> None:
    """Two stores of one day are serialised by a two-key advisory lock on the day.

    The store gives up after 200 ms (``lock_timeout``) instead of waiting: no sleep,
    and a store that took no lock, or another one, finishes instead of failing.
    """
    impatient = sa.create_engine(
        database_url, poolclass=sa.pool.NullPool, connect_args={"options": "-c lock_timeout=200"}
    )
    try:
        with engine.begin() as holder:
            holder.execute(sa.select(sa.func.pg_advisory_xact_lock(0x5245434F, DAY.toordinal())))
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                _store_a_run(impatient, DAY, complete=complete)
            _store_a_run(impatient, DAY + timedelta(days=1), complete=complete)  # not blocked
    finally:
        impatient.dispose()
    assert [r["partition_day"] for r in _runs(engine)] == [DAY + timedelta(days=1)]


def test_open_findings_break_ties_by_day_then_category_then_id(engine: sa.Engine) -> None:
    # Equal severity (high) and amount (10.00): the order comes from the tie-breakers,
    # and the rows are written against it (the later day first, the later category first).
    mismatch = drift_findings_for([db_row(1, currency="usd")], [snapshot("tr_1")])
    missing = drift_findings_for([db_row(2)], [])
    for day, findings, run_id in (
        (DAY + timedelta(days=1), mismatch, "a"),
        (DAY, missing, "b"),
        (DAY, pd.concat([missing, mismatch], ignore_index=True), "c"),
    ):
        store_findings(engine, day, findings, now=NOW, started_at=NOW, run_id=run_id, counts=COUNTS)

    with engine.connect() as connection:
        listed = open_findings(connection)

    assert listed[["partition_day", "category"]].to_numpy().tolist() == [
        [DAY, "amount_or_currency_mismatch"],
        [DAY, "missing_at_stripe"],
        [DAY + timedelta(days=1), "amount_or_currency_mismatch"],
    ]
    assert list(listed.columns) == [c.name for c in reconciliation_drift.columns]


def test_of_runs_with_one_start_the_last_written_is_the_latest(engine: sa.Engine) -> None:
    # Runs written earlier are rewritten after the last one (an UPDATE of an indexed
    # column moves a row to the table's and the index's end among equal starts), so
    # only the id, not the storage order, says which came last.
    names = [f"run-{n}" for n in range(8)]
    for run_id in names:
        record_incomplete_run(
            engine, DAY, started_at=NOW, finished_at=NOW, run_id=run_id, error_message="x"
        )
    rewritten = reconciliation_runs.c.run_id.in_(names[:-1:2])
    with engine.begin() as connection:
        for started_at in (NOW + timedelta(microseconds=1), NOW):  # via another start
            connection.execute(
                sa.update(reconciliation_runs).where(rewritten).values(started_at=started_at)
            )

    with engine.connect() as connection:
        day = latest_findings_for_day(connection, DAY, as_of=NOW)

    assert day.latest_run is not None
    assert day.latest_run["run_id"] == "run-7"
