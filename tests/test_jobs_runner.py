"""``jobs_runner``: the one line a terminal shows when a job run fails.

Read from the first failed step's own event data (typed, issue 16), not through
``getattr`` on whatever event came first: a real in-process run makes the events.
The line is the root cause, not Dagster's "Error occurred while executing op" wrapper.
"""

from __future__ import annotations

import dagster as dg

from reversal_pipeline.jobs_runner import _first_failure


@dg.asset
def fails_with_a_description() -> None:
    raise dg.Failure(description="3 rows could not be written: see the failures table")


@dg.asset
def fails_with_an_exception() -> None:
    raise RuntimeError("first line of context\nthe database refused the write")


@dg.asset
def fails_from_a_cause() -> None:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as refused:
        raise RuntimeError("could not reach the database") from refused


@dg.asset
def succeeds() -> int:
    return 1


def _events(asset: dg.AssetsDefinition) -> list[dg.DagsterEvent]:
    result = dg.materialize([asset], raise_on_error=False)
    return list(result.all_events)


def test_a_failure_with_a_description_is_told_by_it() -> None:
    assert _first_failure(_events(fails_with_a_description)) == (
        "3 rows could not be written: see the failures table"
    )


def test_an_exception_is_told_by_its_root_cause_not_dagsters_wrapper() -> None:
    told = _first_failure(_events(fails_with_an_exception))
    assert told == ("RuntimeError: first line of context / the database refused the write")


def test_a_chained_exception_is_told_by_the_innermost_cause() -> None:
    assert _first_failure(_events(fails_from_a_cause)) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )


def test_no_failed_step_points_at_the_run_log() -> None:
    assert _first_failure(_events(succeeds)) == "see the run log"
