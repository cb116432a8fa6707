"""``jobs_runner``: the one line a terminal shows when a job run fails.

Read from the first failed step's own event data (typed, issue 16), not through
``getattr`` on whatever event came first: a real in-process run makes the events.
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
def succeeds() -> int:
    return 1


def _events(asset: dg.AssetsDefinition) -> list[dg.DagsterEvent]:
    result = dg.materialize([asset], raise_on_error=False)
    return list(result.all_events)


def test_a_failure_with_a_description_is_told_by_it() -> None:
    assert _first_failure(_events(fails_with_a_description)) == (
        "3 rows could not be written: see the failures table"
    )


def test_an_exception_is_told_by_the_last_line_of_the_step_error() -> None:
    # Dagster wraps the exception: the line names the failed step, not the cause (the
    # cause is in the run log). Kept as it was; a candidate for a better message.
    told = _first_failure(_events(fails_with_an_exception))
    assert told.startswith("dagster._core.errors.DagsterExecutionStepExecutionError: ")
    assert told.endswith('while executing op "fails_with_an_exception":')


def test_no_failed_step_points_at_the_run_log() -> None:
    assert _first_failure(_events(succeeds)) == "see the run log"
